"""PPO-ptx: SB3's PPO with a pre-training loss mixed into every gradient step (InstructGPT).

Ouyang et al. (2022, eq. 2) maximise

    objective(φ) = E_(x,y)~π_φ [ r_θ(x, y) − β · log(π_φ(y|x) / π_SFT(y|x)) ]
                   + γ · E_x~D_pretrain [ log π_φ(x) ]

so that RL against the reward model does not erode what the model learnt in pre-training (the
"alignment tax"). The first term is what PPO on ``LMBandit-v0`` already optimises (the env pays
the reward minus the KL penalty). :class:`PPOPtx` adds the second as γ times the mean per-token
negative log-likelihood of a batch of pre-training documents (the corpus the embedded model was
pre-trained on, :func:`lmgym.models.corpus.generate_corpus` with seed 0), one batch per PPO
minibatch step.

How, without copying ``PPO.train``: SB3's minibatch step is ``optimizer.zero_grad();
loss.backward(); clip_grad_norm_(...); optimizer.step()``. During :meth:`PPOPtx.train` the
policy's optimizer is wrapped in a proxy whose ``zero_grad`` clears the gradients and then
back-propagates ``γ · L_ptx`` of the next corpus batch. PPO's own ``backward`` adds its gradient
to that, so the gradient that is clipped and stepped is the gradient of the summed loss
``L_PPO + γ · L_ptx``: exactly the InstructGPT objective. With γ = 0 nothing is back-propagated
and the update is plain PPO's, bit for bit; the corpus loss is still computed (without a graph)
and logged as ``train/ptx_loss``, so PPO and PPO-ptx runs can be compared on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from torch.nn import functional as F  # noqa: N812
from transformers import PreTrainedTokenizerBase

from lmgym.agents.lm_policy import LMPolicyMixin
from lmgym.models.corpus import generate_corpus

__all__ = ["CorpusBatches", "PPOPtx", "corpus_lm_loss"]

PRETRAIN_CORPUS_SEED = 0
"""Seed of the corpus the embedded default model was pre-trained on (``PretrainConfig.seed``)."""


def corpus_lm_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token negative log-likelihood of ``ids`` under a causal LM (the LM loss).

    Every real token after the first is predicted from those before it; padding (``mask`` 0)
    is neither predicted nor attended to.

    Args:
        model: A causal LM (or a peft wrapper of one).
        ids: (B, L) token ids, right-padded.
        mask: (B, L) 1 for real tokens.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> model, tok = load_default_model()
        >>> ids, mask = CorpusBatches(["the soup was good ."], tok, batch_size=1).next()
        >>> float(corpus_lm_loss(model, ids, mask).detach()) < 2.0
        True
    """
    logits = model(input_ids=ids, attention_mask=mask).logits  # (B, L, V)
    labels = ids.masked_fill(mask == 0, -100)  # (B, L)
    return F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels[:, 1:])


class CorpusBatches:
    """Endless random batches of a tokenized text corpus, epoch after epoch, from a seed.

    Each document is encoded as the tokenizer encodes it (the default one prepends ``<bos>``)
    followed by EOS, as in pre-training. Batches are trimmed to their longest document.

    Args:
        texts: The documents (at least ``batch_size``).
        tokenizer: The policy's tokenizer (needs EOS and pad tokens).
        batch_size: Documents per batch.
        seed: Seed of the batch order.

    Example:
        >>> from lmgym.models.loading import load_tokenizer, DEFAULT_MODEL_DIR
        >>> batches = CorpusBatches(generate_corpus(8), load_tokenizer(DEFAULT_MODEL_DIR),
        ...                         batch_size=4)
        >>> ids, mask = batches.next()
        >>> ids.shape[0], bool(mask[:, 0].all())
        (4, True)
    """

    def __init__(
        self,
        texts: Sequence[str],
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int,
        seed: int = 0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r} must be an int > 0, e.g. 16.")
        if len(texts) < batch_size:
            raise ValueError(
                f"the corpus has {len(texts)} documents, fewer than batch_size={batch_size}; "
                "pass more documents or a smaller batch size."
            )
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no EOS or pad token; corpus batches end each document with "
                "EOS and pad with the pad token. Use the policy's tokenizer (lmgym.load_model)."
            )
        rows = [list(r) + [tokenizer.eos_token_id] for r in tokenizer(list(texts))["input_ids"]]
        self.lengths = torch.tensor([len(row) for row in rows])  # (N,)
        self.ids = torch.full(
            (len(rows), int(self.lengths.max())), int(tokenizer.pad_token_id), dtype=torch.long
        )  # (N, L)
        for index, row in enumerate(rows):
            self.ids[index, : len(row)] = torch.tensor(row)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: ids (B, L') and attention mask (B, L'), L' its longest document."""
        if len(self._order) < self.batch_size:
            self._order = torch.randperm(len(self.ids), generator=self.generator)
        rows, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        length = int(self.lengths[rows].max())
        mask = (torch.arange(length)[None, :] < self.lengths[rows, None]).long()  # (B, L')
        return self.ids[rows, :length], mask


class _PtxOptimizer:
    """The policy's optimizer during ``PPO.train``, with a ``zero_grad`` that adds γ · L_ptx.

    ``zero_grad`` clears the gradients and back-propagates the pre-training loss, so PPO's own
    ``backward`` then accumulates onto it; everything else is the wrapped optimizer's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, ptx_backward: Callable[[], None]):
        self.optimizer = optimizer
        self.ptx_backward = ptx_backward

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self.ptx_backward()

    def __getattr__(self, name: str) -> Any:  # step, param_groups, state_dict ...
        return getattr(self.optimizer, name)


class PPOPtx(PPO):
    """SB3 PPO whose every minibatch step also descends γ × the LM loss on pre-training text.

    Use it as ``PPO``, with an LM policy (:class:`~lmgym.agents.LMActorCriticPolicy`); the
    extra arguments are keyword-only. See the module docstring for the objective and how the
    gradient is combined.

    Args:
        policy: An LM policy class (``LMActorCriticPolicy``).
        env: The env (``LMBandit-v0``, batched or not).
        *args: Other positional arguments of :class:`stable_baselines3.PPO`.
        ptx_coef: γ >= 0, the weight of the pre-training loss (InstructGPT used 27.8 with
            their loss scaling; here the loss is a per-token mean, so ~0.1-1 is a fair range).
            0 gives plain PPO.
        ptx_corpus: Pre-training documents; ``None``: the first ``ptx_corpus_size`` reviews
            of the embedded model's own pre-training corpus.
        ptx_corpus_size: Documents drawn when ``ptx_corpus`` is None.
        ptx_batch_size: Documents per PPO minibatch step.
        **kwargs: Other keyword arguments of :class:`stable_baselines3.PPO` (``seed`` also
            seeds the corpus batch order).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from lmgym.agents import LMActorCriticPolicy, lm_policy_kwargs
        >>> env = gym.make("LMBandit-v0")
        >>> model = PPOPtx(LMActorCriticPolicy, env, n_steps=8, batch_size=8, n_epochs=1,
        ...                ptx_coef=0.5, ptx_corpus_size=32, policy_kwargs=lm_policy_kwargs(env))
        >>> _ = model.policy.attach_to(env)
        >>> _ = model.learn(8)
        >>> "train/ptx_loss" in model.logger.name_to_value
        True
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        ptx_coef: float = 0.0,
        ptx_corpus: Sequence[str] | None = None,
        ptx_corpus_size: int = 2000,
        ptx_batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        if (
            isinstance(ptx_coef, bool)
            or not isinstance(ptx_coef, (int, float))
            or not math.isfinite(ptx_coef)
            or ptx_coef < 0
        ):
            raise ValueError(
                f"ptx_coef={ptx_coef!r} must be a finite number >= 0 (γ of PPO-ptx; 0 is plain "
                "PPO), e.g. ptx_coef=0.5."
            )
        for name, value in (
            ("ptx_corpus_size", ptx_corpus_size),
            ("ptx_batch_size", ptx_batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be an int > 0, e.g. {name}=16.")
        if ptx_corpus is not None:
            if isinstance(ptx_corpus, str) or not all(isinstance(t, str) for t in ptx_corpus):
                raise TypeError(
                    f"ptx_corpus={ptx_corpus!r:.80} is not a list of texts; expected e.g. "
                    "generate_corpus(2000) or None for the default corpus."
                )
            if len(ptx_corpus) < ptx_batch_size:
                raise ValueError(
                    f"ptx_corpus has {len(ptx_corpus)} documents, fewer than ptx_batch_size="
                    f"{ptx_batch_size}; pass more documents or a smaller ptx_batch_size."
                )
        self.ptx_coef = float(ptx_coef)
        self.ptx_batch_size = ptx_batch_size
        self.ptx_corpus_size = ptx_corpus_size
        self.ptx_corpus = None if ptx_corpus is None else list(ptx_corpus)
        self._ptx_batches: CorpusBatches | None = None
        super().__init__(policy, env, *args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, LMPolicyMixin):
            raise TypeError(
                f"PPOPtx needs an LM policy, got {type(self.policy).__name__}; the pre-training "
                "loss is the policy's language-model loss. Use PPOPtx(LMActorCriticPolicy, env)."
            )
        if self.policy.tokenizer is None:
            raise ValueError(
                "the policy has no tokenizer to encode the pre-training corpus with; build it "
                "with policy_kwargs=lm_policy_kwargs(env) or dict(model=..., tokenizer=...)."
            )

    def _excluded_save_params(self) -> list[str]:
        # The tokenized corpus is rebuilt from ptx_corpus on first use after PPO.load.
        return [*super()._excluded_save_params(), "_ptx_batches"]

    def ptx_batches(self) -> CorpusBatches:
        """The corpus batch stream (built on first use, seeded with the model's ``seed``)."""
        if self._ptx_batches is None:
            assert isinstance(self.policy, LMPolicyMixin) and self.policy.tokenizer is not None
            if self.ptx_corpus is None:
                self.ptx_corpus = generate_corpus(self.ptx_corpus_size, PRETRAIN_CORPUS_SEED)
            self._ptx_batches = CorpusBatches(
                self.ptx_corpus,
                self.policy.tokenizer,
                batch_size=self.ptx_batch_size,
                seed=0 if self.seed is None else self.seed,
            )
        return self._ptx_batches

    def train(self) -> None:
        """PPO's update, with γ × the LM loss of one corpus batch added to every minibatch."""
        batches = self.ptx_batches()
        policy = self.policy
        assert isinstance(policy, LMPolicyMixin)
        losses: list[float] = []

        def ptx_backward() -> None:
            ids, mask = batches.next()
            ids, mask = ids.to(self.device), mask.to(self.device)
            if self.ptx_coef > 0:
                loss = corpus_lm_loss(policy.lm, ids, mask)
                (self.ptx_coef * loss).backward()
            else:  # plain PPO's update exactly; the loss is only logged
                with torch.no_grad():
                    loss = corpus_lm_loss(policy.lm, ids, mask)
            losses.append(float(loss.detach()))

        optimizer = policy.optimizer
        policy.optimizer = _PtxOptimizer(optimizer, ptx_backward)  # type: ignore[assignment]
        try:
            super().train()
        finally:
            policy.optimizer = optimizer
        if losses:
            self.logger.record("train/ptx_loss", float(np.mean(losses)))
        self.logger.record("train/ptx_coef", self.ptx_coef)
