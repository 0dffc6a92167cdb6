"""LoRA adapters for the LM policy (through ``peft``), and a reference model that costs no memory.

``policy_kwargs=dict(lora=dict(r=8))`` wraps the policy's LM in LoRA adapters (Hu et al. 2021,
"LoRA: Low-Rank Adaptation of Large Language Models"): the base weights are frozen and only the
adapters (and the value head) train. The base weights then never change, so the base model with
its adapters switched off *is* the initial model: :class:`AdapterDisabledReference` serves it as
the env's π_ref (``gym.make(..., ref_model=policy.reference_model())``), and the env holds no
second copy of the weights (the memory saving asked for in TRL issue #1444).

``peft`` is an optional dependency: ``pip install peft`` (or ``pip install -e '.[lora]'`` in
a clone).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

__all__ = [
    "AdapterDisabledReference",
    "apply_lora",
    "causal_lm",
    "is_lora",
    "merged_copy",
]

_INSTALL = "LoRA needs the peft package: pip install peft (or pip install -e '.[lora]' in a clone)."


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:  # pragma: no cover - peft is in the dev extra
        raise ImportError(_INSTALL) from err
    return peft


def apply_lora(lm: PreTrainedModel, lora: dict[str, Any]) -> nn.Module:
    """Wrap ``lm`` in ``peft`` LoRA adapters; only the adapters stay trainable.

    Args:
        lm: A causal LM (modified in place: peft injects the adapter layers into it).
        lora: :class:`peft.LoraConfig` fields, e.g. ``dict(r=8, lora_alpha=16,
            target_modules=["c_attn"])``. ``task_type`` defaults to ``"CAUSAL_LM"`` and
            ``lora_dropout`` to 0 (dropout would shift log-probs between rollout and update and
            break the PPO ratio). ``target_modules`` defaults to peft's choice
            for the architecture.

    Returns:
        A ``peft.PeftModelForCausalLM``.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> lm, _ = load_default_model()
        >>> lora_lm = apply_lora(lm, dict(r=4))
        >>> trainable = [n for n, p in lora_lm.named_parameters() if p.requires_grad]
        >>> all("lora_" in n for n in trainable)
        True
    """
    peft = _peft()
    if not isinstance(lora, dict):
        raise TypeError(
            f"lora={lora!r} is not a dict; expected peft.LoraConfig fields, e.g. dict(r=8)."
        )
    fields = {"task_type": "CAUSAL_LM", "lora_dropout": 0.0, **lora}
    if fields["lora_dropout"] != 0:
        raise ValueError(
            f"lora_dropout={fields['lora_dropout']!r}; expected 0. Dropout makes the log-probs "
            "of the update differ from the rollout's and breaks the PPO ratio."
        )
    try:
        config = peft.LoraConfig(**fields)
    except TypeError as err:
        raise TypeError(
            f"lora={lora!r} is not a valid peft.LoraConfig: {err}. Expected LoraConfig fields "
            "such as r, lora_alpha, target_modules."
        ) from err
    return peft.get_peft_model(lm, config)


def is_lora(lm: nn.Module) -> bool:
    """Whether ``lm`` is a ``peft`` model (without importing peft when it is not installed)."""
    return type(lm).__module__.startswith("peft.")


def causal_lm(lm: nn.Module) -> PreTrainedModel:
    """The transformers model inside ``lm`` (``lm`` itself unless it is a peft model)."""
    inner = lm.get_base_model() if is_lora(lm) else lm  # type: ignore[operator]
    assert isinstance(inner, PreTrainedModel), type(inner)
    return inner


def merged_copy(lm: nn.Module) -> PreTrainedModel:
    """A plain transformers model with the adapters merged in (``lm`` is left as it is).

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> lm, _ = load_default_model()
        >>> type(merged_copy(apply_lora(lm, dict(r=4)))).__name__
        'GPT2LMHeadModel'
    """
    if not is_lora(lm):
        assert isinstance(lm, PreTrainedModel), type(lm)
        return lm
    merged = copy.deepcopy(lm).merge_and_unload()  # type: ignore[operator]
    assert isinstance(merged, PreTrainedModel), type(merged)
    return merged


class AdapterDisabledReference(nn.Module):
    """π_ref as the policy's own base model with its LoRA adapters switched off.

    Called like a causal LM (the env's reference model is only ever called), it runs the policy's
    peft model inside ``disable_adapter()`` and without gradients. The weights are the policy's
    frozen base weights, shared, not copied. The peft model is held outside ``nn.Module``'s
    registry, so the env's set-up (``requires_grad_(False)``, ``eval()``) cannot touch the
    policy's parameters through it.

    Args:
        lora_lm: A ``peft`` model whose base weights stay frozen (as
            :func:`apply_lora` leaves them).

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> lm, tok = load_default_model()
        >>> ref = AdapterDisabledReference(apply_lora(lm, dict(r=4)))
        >>> ids = torch.tensor([tok.encode("the food was")])
        >>> ref(input_ids=ids).logits.shape[:2]
        torch.Size([1, 4])
    """

    def __init__(self, lora_lm: nn.Module) -> None:
        super().__init__()
        if not is_lora(lora_lm):
            raise TypeError(
                f"lora_lm is a {type(lora_lm).__name__}; expected a peft model (an LM policy "
                "built with policy_kwargs=dict(lora=dict(r=8)))."
            )
        self._lora_lm = (lora_lm,)  # a tuple: not registered as a sub-module

    @property
    def lora_lm(self) -> nn.Module:
        """The policy's peft model this reference runs."""
        return self._lora_lm[0]

    @property
    def config(self) -> Any:
        """The base model's config."""
        return causal_lm(self.lora_lm).config

    def get_input_embeddings(self) -> nn.Module:
        """The (shared) input embedding of the base model."""
        return causal_lm(self.lora_lm).get_input_embeddings()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The base model's outputs (adapters off, no gradients)."""
        with torch.no_grad(), self.lora_lm.disable_adapter():  # type: ignore[operator]
            return self.lora_lm(*args, **kwargs)
