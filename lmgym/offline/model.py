"""The ILQL model: a causal LM with Q, target-Q and V heads on its last hidden states.

The heads share the LM's transformer, as in Snell et al. (and trlx): one forward gives the LM's
logits (the behaviour-cloning policy π_β), the Q values of every next token, and V. Each head
is a two-layer MLP (hidden → 2·hidden → out). Two Q heads (twin Qs) and their Polyak-averaged
target copies: the targets (their minimum) drive V's regression and the decoding, so neither
chases the Q heads' own noise.

The model saves as a model directory that ``lmgym.load_model`` loads as the plain LM (π_β),
plus ``ilql_heads.safetensors`` and ``ilql.json`` for :func:`load_ilql_model`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList, PreTrainedModel

from lmgym.models.padding import position_ids_from_mask
from lmgym.models.scoring import trimmed_left_padding

__all__ = [
    "HEADS_FILE",
    "ILQLHeads",
    "ILQLModel",
    "TokenOutputs",
    "load_ilql_model",
    "token_outputs",
]

HEADS_FILE = "ilql_heads.safetensors"
"""The heads' weights inside a saved ILQL model directory."""


def _mlp(hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, out))


class ILQLHeads(nn.Module):
    """Q heads (one or two), their target copies and a V head, on hidden states (..., H).

    Example:
        >>> heads = ILQLHeads(hidden_size=8, vocab_size=5)
        >>> h = torch.zeros(2, 3, 8)
        >>> heads.q(h)[0].shape, heads.v(h).shape, heads.advantage(h).shape
        (torch.Size([2, 3, 5]), torch.Size([2, 3]), torch.Size([2, 3, 5]))
    """

    def __init__(self, hidden_size: int, vocab_size: int, two_qs: bool = True) -> None:
        super().__init__()
        self.hidden_size, self.vocab_size, self.two_qs = hidden_size, vocab_size, two_qs
        self.q_heads = nn.ModuleList(_mlp(hidden_size, vocab_size) for _ in range(1 + two_qs))
        self.target_q_heads = copy.deepcopy(self.q_heads).requires_grad_(False)
        self.v_head = _mlp(hidden_size, 1)

    def q(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Every Q head's values of all next tokens, each (..., V)."""
        return [head(hidden) for head in self.q_heads]

    def target_q(self, hidden: torch.Tensor) -> torch.Tensor:
        """The minimum over the target Q heads (..., V), without gradients to them."""
        values = [head(hidden.detach()) for head in self.target_q_heads]
        return torch.stack(values).amin(0) if len(values) > 1 else values[0]

    def v(self, hidden: torch.Tensor) -> torch.Tensor:
        """V of each state (...)."""
        return self.v_head(hidden).squeeze(-1)

    def advantage(self, hidden: torch.Tensor) -> torch.Tensor:
        """``min target Q(s, ·) − V(s)`` (..., V): what decoding adds to the logits, times β."""
        return self.target_q(hidden) - self.v(hidden).unsqueeze(-1)

    @torch.no_grad()
    def update_targets(self, rate: float) -> None:
        """Polyak averaging: ``θ' ← (1 − rate) θ' + rate θ`` for every target Q head."""
        for target, online in zip(self.target_q_heads, self.q_heads, strict=True):
            for t, o in zip(target.parameters(), online.parameters(), strict=True):
                t.lerp_(o, rate)


@dataclass
class TokenOutputs:
    """The ILQL model's outputs along completions (T tokens, T + 1 states).

    Attributes:
        states: (B, T + 1, H) last hidden states of s_0 .. s_T (s_t: prompt + tokens < t).
        logits: (B, T, V) the LM's next-token logits at s_0 .. s_{T−1}.
    """

    states: torch.Tensor
    logits: torch.Tensor


class ILQLModel(nn.Module):
    """A causal LM plus :class:`ILQLHeads`; decoding adds β·(Q − V) to the LM's logits.

    ``generate`` takes what a Hugging Face model's ``generate`` takes and adds the
    perturbation as a logits processor (:class:`lmgym.offline.decoding.ILQLLogitsProcessor`),
    so the one ``lmgym.models.generation.generate`` utility samples from it unchanged.

    Args:
        lm: The causal LM (π_β after training).
        heads: The value heads; ``None`` builds fresh ones for ``lm``.
        beta: β of decoding (>= 0); 0 decodes as ``lm`` does.
        two_qs: Twin Q heads (with fresh heads only).

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> lm, _ = load_default_model()
        >>> ILQLModel(lm, beta=1.0).heads.vocab_size == lm.config.vocab_size
        True
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        heads: ILQLHeads | None = None,
        *,
        beta: float = 1.0,
        two_qs: bool = True,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.heads = heads or ILQLHeads(lm.config.hidden_size, lm.config.vocab_size, two_qs)
        self.heads.to(lm.device)
        self.beta = check_beta(beta)

    @property
    def config(self) -> Any:
        """The LM's config (what ``generate`` reads)."""
        return self.lm.config

    @property
    def device(self) -> torch.device:
        """Where the LM runs."""
        return self.lm.device

    def token_outputs(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        *,
        pad_token_id: int,
    ) -> TokenOutputs:
        """The LM's states and logits along ``completion_ids`` (see :func:`token_outputs`)."""
        return token_outputs(
            self.lm, prompt_ids, prompt_mask, completion_ids, pad_token_id=pad_token_id
        )

    def generate(self, *args: Any, logits_processor: Any = None, **kwargs: Any) -> Any:
        """The LM's ``generate`` with the logits moved by β·(min target Q − V) at every step."""
        from lmgym.offline.decoding import perturbed_by_advantage

        processors = LogitsProcessorList(logits_processor or [])
        with perturbed_by_advantage(self, processors):
            return self.lm.generate(*args, logits_processor=processors, **kwargs)  # type: ignore[operator]

    def save(self, out: str | Path, tokenizer: Any, summary: dict[str, Any]) -> Path:
        """Save the LM as a model directory, plus the heads and their sizes; returns ``out``."""
        from safetensors.torch import save_file

        from lmgym.rlhf.fit import save_model_dir

        path = save_model_dir(Path(out), self.lm, tokenizer, summary)
        state = {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
        save_file(state, str(path / HEADS_FILE))
        sizes = {
            "hidden_size": self.heads.hidden_size,
            "vocab_size": self.heads.vocab_size,
            "two_qs": self.heads.two_qs,
            "beta": self.beta,
        }
        (path / "ilql.json").write_text(json.dumps(sizes, indent=2) + "\n")
        return path


def token_outputs(
    lm: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    pad_token_id: int,
) -> TokenOutputs:
    """One teacher-forced forward of ``lm``: the states and logits along ``completion_ids``.

    Prompts (B, P) may be padded on either side; they are left-padded and trimmed as
    :func:`lmgym.models.scoring.score_completions` does, so positions match sampling.
    Completions (B, T) are right-padded; what follows a row's last token is never read by
    an earlier position (causal LM).

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> lm, _ = load_default_model()
        >>> prompt, completion = torch.tensor([[1, 5]]), torch.tensor([[7, 2]])
        >>> out = token_outputs(lm, prompt, torch.ones(1, 2), completion, pad_token_id=0)
        >>> out.states.shape, out.logits.shape
        (torch.Size([1, 3, 192]), torch.Size([1, 2, 239]))
    """
    left_ids, left_mask = trimmed_left_padding(prompt_ids, prompt_mask, pad_token_id)
    n_prompt, n_completion = left_ids.shape[1], completion_ids.shape[1]
    input_ids = torch.cat([left_ids, completion_ids], dim=1)  # (B, P' + T)
    attention_mask = torch.cat([left_mask, torch.ones_like(completion_ids)], dim=1)
    out = lm(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        output_hidden_states=True,
        use_cache=False,
        logits_to_keep=n_completion + 1,
    )
    hidden = out.hidden_states[-1]  # (B, P' + T, H), after the final norm
    return TokenOutputs(
        states=hidden[:, n_prompt - 1 :],  # s_0 is the last prompt token's state
        logits=out.logits[:, :-1],  # the logits at s_t predict token t
    )


def load_ilql_model(path: str | Path, *, beta: float | None = None) -> tuple[ILQLModel, Any]:
    """Load a saved ILQL model directory; returns ``(model, tokenizer)``.

    Example:
        >>> import tempfile
        >>> from lmgym.models.loading import load_default_model
        >>> lm, tok = load_default_model()
        >>> out = ILQLModel(lm, beta=2.0).save(Path(tempfile.mkdtemp()) / "ilql", tok, {})
        >>> load_ilql_model(out)[0].beta
        2.0
    """
    from safetensors.torch import load_file

    from lmgym.models.loading import load_model

    path = Path(path)
    sizes_file = path / "ilql.json"
    if not sizes_file.is_file():
        raise ValueError(
            f"path={str(path)!r} holds no ilql.json; expected a directory saved by "
            "ILQLModel.save (the --out of `lmgym ilql`)."
        )
    sizes = json.loads(sizes_file.read_text())
    lm, tokenizer = load_model(path)
    heads = ILQLHeads(sizes["hidden_size"], sizes["vocab_size"], sizes["two_qs"])
    heads.load_state_dict(load_file(str(path / HEADS_FILE)))
    return ILQLModel(lm, heads, beta=sizes["beta"] if beta is None else beta), tokenizer


def check_beta(beta: Any) -> float:
    """``beta`` if it is a finite number >= 0, else a ValueError naming it.

    Example:
        >>> check_beta(-1)
        Traceback (most recent call last):
        ...
        ValueError: beta=-1 must be a finite number >= 0: decoding adds beta * (Q - V) to the logits; 0 decodes as the LM does, e.g. beta=1.0.
    """  # noqa: E501 - a doctest traceback line cannot be wrapped
    ok = not isinstance(beta, bool) and isinstance(beta, (int, float)) and 0 <= beta < float("inf")
    if not ok:
        raise ValueError(
            f"beta={beta!r} must be a finite number >= 0: decoding adds beta * (Q - V) to the "
            "logits; 0 decodes as the LM does, e.g. beta=1.0."
        )
    return float(beta)
