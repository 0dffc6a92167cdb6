"""The LM policy's action heads: what depends on the action space, chosen once at construction.

As SB3's ``make_proba_distribution`` picks one distribution for an action space, :func:`make_head`
picks one head, and :class:`~lmgym.agents.LMActorCriticPolicy` calls it without asking which:

- :class:`CompletionHead`: the action is a whole completion (``LMBandit-v0``, ``MultiDiscrete``).
  It samples with a KV cache and scores with one teacher-forced forward
  (:class:`~lmgym.agents.completion_distribution.CompletionDistribution`).
- :class:`NextTokenHead`: the action is the next token (``LMToken-v0``, ``Discrete(V)``), a
  categorical over the LM's logits at the observation's last real token
  (:mod:`lmgym.agents.token_head`); masked for sb3-contrib's ``MaskablePPO``.

Both return per-token log-probs (B, T) with a mask (T = 1 for the next-token head), not only their
sum over the action: a per-token PPO ratio needs them.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from torch import nn

from lmgym.agents.completion_distribution import CompletionDistribution
from lmgym.agents.lora import causal_lm
from lmgym.agents.token_head import NextTokenOutputs, next_token_outputs, trunk_last_hidden
from lmgym.models.generation import DecodingConfig
from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import completion_logprobs

__all__ = [
    "ActionMasks",
    "CompletionHead",
    "Evaluation",
    "LMHead",
    "NextTokenHead",
    "Rollout",
    "make_head",
]

ActionMasks = np.ndarray | torch.Tensor | None
"""``MaskablePPO``'s action masks (B, V), or None; only :class:`NextTokenHead` takes them."""


@dataclasses.dataclass
class Rollout:
    """Actions a head sampled, with what the policy needs from the same forward pass.

    Attributes:
        actions: (B, T) completions or (B,) next tokens.
        logprobs: (B, T) log π_θ of each action token; 0 where ``mask`` is 0 (T = 1 for a
            next token).
        mask: (B, T) 1 for the tokens that count.
        hidden: (B, H) the value head's feature if this forward computed it, else None.
        kl_rows: (B, L) the rows the env's KL term will ask about (see
            :class:`~lmgym.agents.lm_policy_setup.LogProbCache`).
        kl_logprobs: What the env's KL term gets for those rows: (B, T) per-token or (B, V)
            next-token log-probs.
    """

    actions: torch.Tensor
    logprobs: torch.Tensor
    mask: torch.Tensor
    hidden: torch.Tensor | None
    kl_rows: torch.Tensor
    kl_logprobs: torch.Tensor

    @property
    def log_prob(self) -> torch.Tensor:
        """The log-prob of each whole action (B,): ``logprobs`` summed over its tokens."""
        return self.logprobs.sum(-1)


@dataclasses.dataclass
class Evaluation:
    """A head's scores of given actions, from one forward pass with gradients.

    Attributes:
        logprobs: (B, T) log π_θ of each action token; 0 where ``mask`` is 0.
        mask: (B, T) 1 for the tokens that count.
        entropy: (B,) entropy of the action distribution (summed over positions).
        hidden: (B, H) the value head's feature at the last real observation token.
    """

    logprobs: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor
    hidden: torch.Tensor

    @property
    def log_prob(self) -> torch.Tensor:
        """The log-prob of each whole action (B,): ``logprobs`` summed over its tokens."""
        return self.logprobs.sum(-1)


class LMHead(abc.ABC):
    """What an LM policy does that depends on its action space.

    A head holds no parameters: every method takes the policy's LM (a transformers model or a
    peft model around one) and a batch of observations (B, L) of token ids.

    Attributes:
        action_dist: The SB3 distribution the policy exposes as ``action_dist``.
    """

    action_dist: Distribution

    def __init__(self, *, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    @abc.abstractmethod
    def distribution(
        self, lm: nn.Module, obs: torch.Tensor, action_masks: ActionMasks = None
    ) -> Distribution:
        """The action distribution conditioned on ``obs`` (SB3's ``get_distribution``)."""

    @abc.abstractmethod
    def act(
        self, lm: nn.Module, obs: torch.Tensor, deterministic: bool, action_masks: ActionMasks
    ) -> Rollout:
        """Sample actions from π_θ itself (what SB3 collects rollouts with)."""

    @abc.abstractmethod
    def evaluate(
        self, lm: nn.Module, obs: torch.Tensor, actions: torch.Tensor, action_masks: ActionMasks
    ) -> Evaluation:
        """Per-token log-probs, entropies and value features of ``actions``, with gradients."""

    @abc.abstractmethod
    def predict(
        self, lm: nn.Module, obs: torch.Tensor, deterministic: bool, action_masks: ActionMasks
    ) -> torch.Tensor:
        """Actions for ``predict()`` (evaluation, not training)."""

    @abc.abstractmethod
    def action_token_mask(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, T) 1 for the tokens of ``actions`` that count: the mask :meth:`evaluate` returns."""

    @abc.abstractmethod
    def features(self, lm: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """The value head's feature (B, H): the LM's last hidden state at the last real token."""

    @abc.abstractmethod
    def kl_rows(
        self, observations: np.ndarray, actions: np.ndarray | None, *, full: bool
    ) -> np.ndarray | None:
        """How a :meth:`act` rollout keyed what the env's KL term now asks about.

        None when the rollout cached no such log-probs (then every call is a forward pass).
        """

    @abc.abstractmethod
    def kl_logprobs(
        self, lm: nn.Module, obs: torch.Tensor, actions: torch.Tensor | None, *, full: bool
    ) -> torch.Tensor:
        """The log-probs the env's KL term asks for, on the CPU, without gradients (a forward)."""


class CompletionHead(LMHead):
    """The action is a whole completion: ``π_θ(y | x) = Π_t π_θ(y_t | x, y_<t)``.

    Observations are left-padded prompts (B, P) and actions completions (B, T). The value
    feature is the hidden state at the last real prompt token.

    Args:
        decoding: How :meth:`predict` samples when not deterministic (evaluation only:
            :meth:`act` always samples from π_θ itself at temperature 1).
        pad_token_id: Padding id of the observations.
        eos_token_id: Ends a completion.
        n_actions: V, the action space's number of tokens: sampling and log-probs stay on them
            where the model's embedding is padded past the tokenizer.
    """

    action_dist: CompletionDistribution

    def __init__(
        self,
        decoding: DecodingConfig,
        *,
        pad_token_id: int,
        eos_token_id: int,
        n_actions: int | None = None,
    ) -> None:
        super().__init__(pad_token_id=pad_token_id)
        self.decoding = decoding
        self.eos_token_id = eos_token_id
        self.action_dist = CompletionDistribution(
            decoding.max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            vocab_size=n_actions,
        )

    def distribution(
        self, lm: nn.Module, obs: torch.Tensor, action_masks: ActionMasks = None
    ) -> CompletionDistribution:
        """Completions given the prompts ``obs``; ``action_masks`` must be None."""
        assert action_masks is None, "only the next-token head takes action masks"
        # Token ids, not features: no preprocess_obs (which casts Box observations to float).
        prompt_ids = obs.long().reshape(obs.shape[0], -1)  # (B, P)
        prompt_mask = (prompt_ids != self.pad_token_id).long()
        model: Any = lm  # a peft model is called (and generates) like the LM it wraps
        return self.action_dist.proba_distribution(model, prompt_ids, prompt_mask)

    def act(
        self, lm: nn.Module, obs: torch.Tensor, deterministic: bool, action_masks: ActionMasks
    ) -> Rollout:
        """Completions (B, T) from π_θ (KV cache), with their per-token log-probs.

        The value feature comes from the same generation: the prefill over the prompts already
        computes the hidden state at the last prompt token, so the critic costs no forward.
        """
        completion = self.distribution(lm, obs, action_masks).distribution
        if deterministic:
            actions = completion.greedy(keep_prompt_hidden=True)
        else:
            actions = completion.sample(keep_prompt_hidden=True)
        generation = completion.generation
        assert generation is not None, "sample() / greedy() generate"
        return Rollout(
            actions=actions,
            logprobs=generation.logprobs,
            mask=generation.mask,
            hidden=generation.prompt_hidden,  # (B, H): what features() would compute
            kl_rows=torch.cat([completion.prompt_ids, actions.long()], dim=1),  # (B, P + T)
            kl_logprobs=generation.logprobs,
        )

    def evaluate(
        self, lm: nn.Module, obs: torch.Tensor, actions: torch.Tensor, action_masks: ActionMasks
    ) -> Evaluation:
        """One teacher-forced forward gives the log-probs, the entropies and the features."""
        distribution = self.distribution(lm, obs, action_masks)
        scores = distribution.distribution.score(actions)
        entropy = distribution.entropy()  # along the same scored actions: no second forward
        assert scores.hidden is not None, "score() keeps hidden states"
        # Completion position 0 is read at the last real prompt token (left padding): exactly
        # the feature features() reads during rollouts.
        return Evaluation(scores.logprobs, scores.mask, entropy, scores.hidden[:, 0])

    def predict(
        self, lm: nn.Module, obs: torch.Tensor, deterministic: bool, action_masks: ActionMasks
    ) -> torch.Tensor:
        """Greedy completions, or completions sampled with ``decoding``."""
        distribution = self.distribution(lm, obs, action_masks)
        if deterministic:
            return distribution.mode()
        return distribution.distribution.decode(self.decoding)

    def action_token_mask(self, actions: torch.Tensor) -> torch.Tensor:
        """Up to and including each completion's first EOS (B, T), as :meth:`evaluate` counts."""
        completions = actions.long().reshape(actions.shape[0], -1)
        return completion_mask_from_ids(completions, self.eos_token_id)

    def features(self, lm: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """Hidden state (B, H) at the last real prompt token, from the LM's body alone."""
        return trunk_last_hidden(causal_lm(lm).base_model, obs, pad_token_id=self.pad_token_id)

    def kl_rows(
        self, observations: np.ndarray, actions: np.ndarray | None, *, full: bool
    ) -> np.ndarray | None:
        """Prompt and completion (B, P + T); None for full distributions (never cached)."""
        assert actions is not None, "LMBandit-v0's KL term passes the completions"
        if full:
            return None
        obs = observations.reshape(-1, observations.shape[-1])
        return np.concatenate([obs, actions.reshape(obs.shape[0], -1)], axis=1)

    def kl_logprobs(
        self, lm: nn.Module, obs: torch.Tensor, actions: torch.Tensor | None, *, full: bool
    ) -> torch.Tensor:
        """(B, T) log-probs of the completion tokens, or (B, T, V) with ``full``."""
        assert actions is not None, "LMBandit-v0's KL term passes the completions"
        prompt_ids = obs.long().reshape(-1, obs.shape[-1])
        model: Any = lm
        return completion_logprobs(
            model,
            prompt_ids,
            actions.long().reshape(prompt_ids.shape[0], -1),
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            full=full,
        ).cpu()


class NextTokenHead(LMHead):
    """The action is the next token: a categorical over the LM's logits at the last real token.

    Observations are the prompt and the completion so far (B, L), each right-padded; actions
    are token ids (B,). The value feature is the hidden state at the last real token, from the
    same forward as the logits.

    Args:
        n_actions: V, the action space's number of tokens (the logits are sliced to it).
        pad_token_id: Padding id of the observations.
        distribution_class: SB3's ``CategoricalDistribution``, or sb3-contrib's
            ``MaskableCategoricalDistribution`` for ``MaskablePPO``.
    """

    def __init__(
        self,
        n_actions: int,
        *,
        pad_token_id: int,
        distribution_class: type[CategoricalDistribution]
        | type[MaskableCategoricalDistribution] = CategoricalDistribution,
    ) -> None:
        super().__init__(pad_token_id=pad_token_id)
        self.n_actions = n_actions
        self.action_dist = distribution_class(n_actions)

    def distribution(
        self, lm: nn.Module, obs: torch.Tensor, action_masks: ActionMasks = None
    ) -> Distribution:
        """The next-token distribution, masked when ``action_masks`` is given."""
        return self._from_logits(self._forward(lm, obs).logits, action_masks)

    def act(
        self, lm: nn.Module, obs: torch.Tensor, deterministic: bool, action_masks: ActionMasks
    ) -> Rollout:
        """Next tokens (B,) with their log-probs; the KL term gets the whole distribution."""
        out = self._forward(lm, obs)
        distribution = self._from_logits(out.logits, action_masks)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return Rollout(
            actions=actions,
            logprobs=log_prob.unsqueeze(-1),  # (B, 1)
            mask=torch.ones_like(log_prob).unsqueeze(-1),
            hidden=out.hidden,
            kl_rows=obs.long().reshape(obs.shape[0], -1),
            # The LM's own log-probs, unmasked also under MaskablePPO: the KL penalty measures
            # how far the LM itself moved from π_ref.
            kl_logprobs=torch.log_softmax(out.logits.float(), -1),  # (B, V)
        )

    def evaluate(
        self, lm: nn.Module, obs: torch.Tensor, actions: torch.Tensor, action_masks: ActionMasks
    ) -> Evaluation:
        """Log-probs (B, 1), entropies and features of next tokens ``actions`` (B,)."""
        out = self._forward(lm, obs)
        distribution = self._from_logits(out.logits, action_masks)
        log_prob = distribution.log_prob(actions.long().reshape(-1))
        entropy = distribution.entropy()
        assert entropy is not None, "a categorical has an entropy"
        mask = torch.ones_like(log_prob).unsqueeze(-1)
        return Evaluation(log_prob.unsqueeze(-1), mask, entropy, out.hidden)

    def predict(
        self, lm: nn.Module, obs: torch.Tensor, deterministic: bool, action_masks: ActionMasks
    ) -> torch.Tensor:
        """Next tokens sampled (or the most likely ones) from the (masked) distribution."""
        return self.distribution(lm, obs, action_masks).get_actions(deterministic=deterministic)

    def action_token_mask(self, actions: torch.Tensor) -> torch.Tensor:
        """Ones (B, 1): a next token is one token."""
        return torch.ones((actions.shape[0], 1), dtype=torch.long, device=actions.device)

    def features(self, lm: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """Hidden state (B, H) at the last real token."""
        return self._forward(lm, obs).hidden

    def kl_rows(
        self, observations: np.ndarray, actions: np.ndarray | None, *, full: bool
    ) -> np.ndarray | None:
        """The observations: a rollout caches the full next-token distribution of each."""
        return observations

    def kl_logprobs(
        self, lm: nn.Module, obs: torch.Tensor, actions: torch.Tensor | None, *, full: bool
    ) -> torch.Tensor:
        """(B, V) next-token log-probs, ``full`` or not (every KL estimator works with them)."""
        with torch.inference_mode():
            logits = self._forward(lm, obs.reshape(-1, obs.shape[-1])).logits
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def _forward(self, lm: nn.Module, obs: torch.Tensor) -> NextTokenOutputs:
        return next_token_outputs(lm, obs, pad_token_id=self.pad_token_id, n_actions=self.n_actions)

    def _from_logits(self, logits: torch.Tensor, action_masks: ActionMasks) -> Distribution:
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        if action_masks is not None:
            distribution.apply_masking(action_masks)  # type: ignore[attr-defined]
        return distribution


def make_head(
    action_space: spaces.Space,
    *,
    decoding: DecodingConfig | None,
    pad_token_id: int,
    eos_token_id: int,
    maskable: bool = False,
) -> LMHead:
    """The head for ``action_space``: ``Discrete(V)`` a next token, ``MultiDiscrete`` a completion.

    Args:
        action_space: A checked action space (see
            :func:`~lmgym.agents.lm_policy_setup.check_spaces`).
        decoding: :class:`CompletionHead` only: ``predict()``'s decoding, with
            ``max_new_tokens`` set to the action's length (see
            :func:`~lmgym.agents.lm_policy_setup.resolve_decoding`).
        pad_token_id: Padding id of the observations.
        eos_token_id: Ends a completion.
        maskable: :class:`NextTokenHead` only: a masked categorical, for ``MaskablePPO``.

    Example:
        >>> head = make_head(spaces.Discrete(8), decoding=None, pad_token_id=0, eos_token_id=2)
        >>> type(head).__name__, type(head.action_dist).__name__
        ('NextTokenHead', 'CategoricalDistribution')
    """
    if isinstance(action_space, spaces.Discrete):
        assert decoding is None, "resolve_decoding() refuses decoding= with a Discrete space"
        distribution_class = (
            MaskableCategoricalDistribution if maskable else CategoricalDistribution
        )
        return NextTokenHead(
            int(action_space.n), pad_token_id=pad_token_id, distribution_class=distribution_class
        )
    assert decoding is not None and not maskable, "checked by the policy's constructor"
    assert isinstance(action_space, spaces.MultiDiscrete)
    return CompletionHead(
        decoding,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        n_actions=int(action_space.nvec.max()),
    )
