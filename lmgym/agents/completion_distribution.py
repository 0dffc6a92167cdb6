"""The action distribution of an LM policy on ``LMBandit-v0``: whole completions.

``π_θ(y | x) = Π_t π_θ(y_t | x, y_<t)``. :class:`AutoregressiveCompletion` is a torch
distribution over completions (it samples with a KV cache through the shared
:func:`~lmgym.models.generation.generate` and scores with one teacher-forced forward through
:func:`~lmgym.models.scoring.score_completions`); :class:`CompletionDistribution` is the SB3
:class:`~stable_baselines3.common.distributions.Distribution` around it. SB3's
``MultiCategoricalDistribution`` would treat positions as independent.

The distribution is π_θ itself: :meth:`~AutoregressiveCompletion.sample` draws at temperature 1
with no top-k / top-p, because ``log_prob`` scores under π_θ and PPO's ratio, A2C's gradient and
the env's KL all need the sample to come from the distribution they score. Other decoding
settings are for evaluation only (:meth:`AutoregressiveCompletion.decode`).
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.distributions import Distribution
from torch import nn
from torch.distributions import Distribution as TorchDistribution
from torch.distributions.kl import register_kl
from transformers import PreTrainedModel

from lmgym.models.generation import DecodingConfig, Generation, generate
from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import CompletionScores, score_completions

__all__ = [
    "AutoregressiveCompletion",
    "CompletionDistribution",
]

_NO_SHAPE = torch.Size()


class AutoregressiveCompletion(TorchDistribution):
    """The distribution of whole completions ``y`` given prompts ``x`` under a causal LM.

    A ``torch.distributions.Distribution`` (batch shape (B,), event shape (T,)) so that SB3's
    ``kl_divergence`` (TRPO) dispatches to the KL registered below.

    Teacher-forced scores are computed lazily, once per action tensor, and cached: PPO's
    ``log_prob`` and ``entropy`` share one forward pass. Lazy scoring runs in the autograd mode
    that was active when the distribution was built, so a distribution built under
    ``torch.no_grad()`` (TRPO's "old" policy) stays a constant even when it is scored later.

    Args:
        model: The causal LM (π_θ).
        prompt_ids: (B, P) prompt ids, padded on either side.
        prompt_mask: (B, P) 1 for real prompt tokens.
        max_new_tokens: T, the length of a completion.
        eos_token_id: Ends a completion; tokens after the first EOS do not count.
        pad_token_id: Fills padding.
        vocab_size: The action space's number of tokens, where the model's embedding has more
            rows: sampling and log-probs stay on those tokens (``None``: every logit).
    """

    arg_constraints: dict[str, Any] = {}

    def __init__(
        self,
        model: PreTrainedModel,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        *,
        eos_token_id: int,
        pad_token_id: int,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__(
            batch_shape=prompt_ids.shape[:1],
            event_shape=torch.Size([max_new_tokens]),
            validate_args=False,
        )
        self.model = model
        self.prompt_ids = prompt_ids
        self.prompt_mask = prompt_mask
        self.max_new_tokens = max_new_tokens
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.vocab_size = vocab_size
        self.grad_enabled = torch.is_grad_enabled()
        self.generation: Generation | None = None  # the last sample() / mode()
        self._scored_actions: torch.Tensor | None = None
        self._scores: CompletionScores | None = None

    def sample(
        self,
        sample_shape: torch.Size | list[int] | tuple[int, ...] = _NO_SHAPE,
        *,
        keep_prompt_hidden: bool = False,
    ) -> torch.Tensor:
        """Draw one completion per prompt (B, T) from π_θ itself (KV cache).

        ``keep_prompt_hidden=True`` also keeps the last hidden state at the last prompt token
        in ``generation.prompt_hidden`` (the LM policy's value feature, from the prefill).
        """
        if len(sample_shape) != 0:
            raise ValueError(
                f"sample_shape={tuple(sample_shape)} is not supported; expected () (one "
                "completion per prompt). Repeat the prompts to draw several."
            )
        decoding = DecodingConfig(max_new_tokens=self.max_new_tokens)
        return self.decode(decoding, keep_prompt_hidden=keep_prompt_hidden)

    def greedy(self, *, keep_prompt_hidden: bool = False) -> torch.Tensor:
        """Greedy decoding (B, T): the deterministic action (see :meth:`sample`)."""
        decoding = DecodingConfig(max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.decode(decoding, keep_prompt_hidden=keep_prompt_hidden)

    def decode(self, decoding: DecodingConfig, *, keep_prompt_hidden: bool = False) -> torch.Tensor:
        """Completions (B, T) drawn with other decoding settings: for evaluation only.

        With a temperature other than 1, or top-k / top-p, the draw does not come from this
        distribution, so :meth:`log_prob` is not its log-probability: never train on it.
        """
        if decoding.max_new_tokens != self.max_new_tokens:
            raise ValueError(
                f"decoding.max_new_tokens={decoding.max_new_tokens} differs from the "
                f"completion length {self.max_new_tokens}; expected max_new_tokens="
                f"{self.max_new_tokens}."
            )
        self.generation = generate(
            self.model,
            self.prompt_ids,
            self.prompt_mask,
            decoding,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            vocab_size=self.vocab_size,
            keep_prompt_hidden=keep_prompt_hidden,
        )
        return self.generation.completion_ids

    def score(self, actions: torch.Tensor) -> CompletionScores:
        """Teacher-forced scores of ``actions`` (B, T), with logits and hidden states (cached)."""
        actions = actions.long().reshape(self.prompt_ids.shape[0], -1)
        cached = self._scored_actions
        if cached is not None and self._scores is not None and torch.equal(cached, actions):
            return self._scores
        with torch.set_grad_enabled(self.grad_enabled):
            self._scores = score_completions(
                self.model,
                self.prompt_ids,
                self.prompt_mask,
                actions,
                completion_mask_from_ids(actions, self.eos_token_id),
                pad_token_id=self.pad_token_id,
                keep_logits=True,
                keep_hidden=True,
                vocab_size=self.vocab_size,
            )
        self._scored_actions = actions
        return self._scores

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log π_θ(y | x)`` (B,): per-token log-probs summed over counted tokens."""
        return self.score(value).logprobs.sum(-1)

    def entropy(self) -> torch.Tensor:
        """Σ_t H(π_θ(· | x, y_<t)) (B,), teacher-forced on the last scored or sampled actions.

        The exact entropy of a sequence distribution is intractable. By the chain rule,
        ``H(Y) = E_{y~π_θ} Σ_t H(π_θ(· | x, y_<t))``, so this sum over the full next-token
        distributions along a completion drawn from π_θ is an unbiased one-sample estimate of it;
        it is exact in expectation for the rollout's own actions, which is what PPO and A2C pass.
        """
        actions = self._scored_actions
        if actions is None and self.generation is not None:
            actions = self.generation.completion_ids
        if actions is None:
            raise ValueError(
                "entropy() needs completions to condition on; call log_prob(actions) or "
                "sample() first (the entropy of a whole completion is estimated along one)."
            )
        scores = self.score(actions)
        assert scores.logits is not None, "score() keeps logits"
        return _masked_entropy(scores.logits, scores.mask)


def _masked_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    per_position = -(logp.exp() * logp).sum(-1)  # (B, T)
    return (per_position * mask).sum(-1)  # (B,)


@register_kl(AutoregressiveCompletion, AutoregressiveCompletion)
def _kl_completions(p: AutoregressiveCompletion, q: AutoregressiveCompletion) -> torch.Tensor:
    """Σ_t KL(p(· | x, y_<t) ‖ q(· | x, y_<t)) along the completions ``p`` (or ``q``) scored.

    With completions drawn from one of the two policies this is the chain-rule estimate of the
    sequence KL; TRPO uses it as its trust-region constraint, where it is exact to second order
    around the old policy (the Fisher matrix is the same).
    """
    actions = p._scored_actions if p._scored_actions is not None else q._scored_actions
    if actions is None:
        raise ValueError(
            "KL between completion distributions needs completions to condition on; call "
            "log_prob(actions) on one of them first (TRPO does)."
        )
    p_scores, q_scores = p.score(actions), q.score(actions)
    assert p_scores.logits is not None and q_scores.logits is not None
    p_logp = torch.log_softmax(p_scores.logits.float(), dim=-1)
    q_logp = torch.log_softmax(q_scores.logits.float(), dim=-1)
    per_position = (p_logp.exp() * (p_logp - q_logp)).sum(-1)  # (B, T)
    return (per_position * p_scores.mask).sum(-1)


class CompletionDistribution(Distribution):
    """SB3 action distribution over whole completions (see :class:`AutoregressiveCompletion`).

    ``sample()`` draws from π_θ with the shared ``generate`` (KV cache), ``log_prob(actions)`` one
    teacher-forced forward summed over the counted tokens, ``entropy()`` the per-position
    entropies summed along the completion, ``mode()`` greedy decoding.

    Args:
        max_new_tokens: T, the length of a completion (the action space's).
        eos_token_id: Ends a completion.
        pad_token_id: Fills padding.
        vocab_size: The action space's number of tokens (``None``: every logit of the model).

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> lm, tok = load_default_model()
        >>> dist = CompletionDistribution(4,
        ...     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        >>> ids = torch.tensor([tok.encode("the food was")])
        >>> actions = dist.proba_distribution(lm, ids, torch.ones_like(ids)).sample()
        >>> dist.log_prob(actions).shape
        torch.Size([1])
    """

    distribution: AutoregressiveCompletion  # type: ignore[assignment]

    def __init__(
        self,
        max_new_tokens: int,
        *,
        eos_token_id: int,
        pad_token_id: int,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        self.max_new_tokens = max_new_tokens
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.vocab_size = vocab_size

    def proba_distribution_net(self, *args: Any, **kwargs: Any) -> nn.Module:
        """Not used: the language model itself parametrises this distribution."""
        raise NotImplementedError(
            "CompletionDistribution has no separate network: the LM is the distribution's "
            "network; build it with proba_distribution(model, prompt_ids, prompt_mask)."
        )

    def proba_distribution(  # type: ignore[override]
        self, model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
    ) -> CompletionDistribution:
        """Condition on a batch of prompts; returns ``self`` (SB3's convention)."""
        self.distribution = AutoregressiveCompletion(
            model,
            prompt_ids,
            prompt_mask,
            self.max_new_tokens,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            vocab_size=self.vocab_size,
        )
        return self

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """``log π_θ(y | x)`` of completions (B, T) -> (B,)."""
        return self.distribution.log_prob(actions)

    def entropy(self) -> torch.Tensor:
        """Estimated sequence entropy (B,); see :meth:`AutoregressiveCompletion.entropy`."""
        return self.distribution.entropy()

    def sample(self) -> torch.Tensor:
        """Sampled completions (B, T)."""
        return self.distribution.sample()

    def mode(self) -> torch.Tensor:
        """Greedy completions (B, T)."""
        return self.distribution.greedy()

    def actions_from_params(  # type: ignore[override]
        self,
        model: PreTrainedModel,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        deterministic: bool = False,
    ) -> torch.Tensor:
        """Condition on prompts and return sampled (or greedy) completions."""
        self.proba_distribution(model, prompt_ids, prompt_mask)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(  # type: ignore[override]
        self, model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled completions and their log-probs (from the sampling pass, no second forward)."""
        actions = self.actions_from_params(model, prompt_ids, prompt_mask)
        assert self.distribution.generation is not None
        return actions, self.distribution.generation.logprobs.sum(-1)
