"""The reward of a whole completion: reward model minus the KL penalty, for a batch at once.

``R = r_φ(x, y) − β · Σ_t k_t`` (see :mod:`lmgym.rewards.kl`). One teacher-forced forward of the
reference model and one reward-function call serve the whole batch, which is what lets the vector
env run them once per batch instead of once per env.

A completion's text ends at its first EOS **or pad id** (the pad id is no text token; the token
env ends an episode on either, and both envs must count the same tokens). Both distributions of
the KL are normalised over the tokenizer's tokens, whatever the width of the models' embedding
tables (:func:`lmgym.rewards.kl.vocab_log_softmax`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmgym.envs.step_info import KLForm, StepRecord
from lmgym.error import short_repr
from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import score_completions
from lmgym.rewards import RewardLike, WeightedSum, as_reward_fn, call_reward_fn
from lmgym.rewards.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    KLEstimator,
    kl_per_token,
    reference_only_kl,
    sequence_kl,
    vocab_log_softmax,
)

if TYPE_CHECKING:  # lm_env_parts builds the rewarder, so it imports this module
    from lmgym.envs.lm_env_parts import LMModels

__all__ = [
    "SINGLE_ENV_KL_BATCH",
    "PolicyLogProbFn",
    "SequenceRewardBatch",
    "SequenceRewarder",
    "check_finite_kl",
    "check_kl_batch_size",
    "check_kl_estimator",
    "combine_reward",
    "default_kl_batch_size",
    "make_kl_controller",
    "policy_kl_per_token",
    "policy_output_tensor",
]

PolicyLogProbFn = Callable[[np.ndarray, np.ndarray], torch.Tensor]
"""``f(observations, actions) -> log π_θ`` for a batch, where observations are (B, P) prompt ids
and actions are (B, T) completion ids. Return (B, T) log-probs of the chosen tokens, normalised
over the tokenizer's tokens ``[0, len(tokenizer))``, or (B, T, V) full log-distributions (which
the ``full`` estimator needs; columns past ``len(tokenizer)``, from an embedding padded past the
tokenizer, are dropped and the rest renormalised). Attach one with
``env.unwrapped.attach_policy(f)`` or :func:`lmgym.agents.attach_sb3`."""

SINGLE_ENV_KL_BATCH = 64
"""Finished episodes per adaptive-β update in a single env (a vector env uses ``num_envs``).

Enough that the batch's mean, not the ±0.2 clip of one episode's error, decides each update.
Either default is capped at ``kl_horizon`` (see :func:`default_kl_batch_size`)."""


@dataclass
class SequenceRewardBatch(StepRecord):
    """Reward parts for a batch of whole completions (arrays are (B,)); see :class:`StepRecord`.

    ``kl`` is Σ_t k_t over each completion's counted tokens, and every row is scored.
    """


def policy_output_tensor(output: Any, *, expected: str, protocol: str) -> torch.Tensor:
    """An attached policy's output as a float tensor, or a ``TypeError`` saying what it must be.

    Accepts a floating-point torch tensor or NumPy array; anything else (a string, a list, an
    integer or complex tensor) is refused here with the protocol's name, not deep in torch.

    Example:
        >>> policy_output_tensor(np.zeros((1, 2)), expected="(B, V) log-probs", protocol="f")
        tensor([[0., 0.]])
    """
    if isinstance(output, np.ndarray) and output.dtype.kind == "f":
        output = torch.from_numpy(output)
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        if isinstance(output, (torch.Tensor, np.ndarray)):
            got = f"a {type(output).__name__} of dtype {output.dtype}, shape {tuple(output.shape)}"
        else:
            got = f"{short_repr(output)} (type {type(output).__name__})"
        raise TypeError(
            f"the attached policy returned {got}; expected a floating-point torch.Tensor of "
            f"{expected} (see {protocol}). Fix the function given to attach_policy, or attach "
            "an SB3 model with lmgym.agents.attach_sb3(model)."
        )
    output = output.detach().float()
    if torch.isnan(output).any():
        raise ValueError(
            f"the attached policy returned NaN log-probs (shape {tuple(output.shape)}); expected "
            f"finite {expected} (see {protocol}). Check the policy for diverged weights."
        )
    return output


def check_finite_kl(kl: np.ndarray, actions: np.ndarray) -> None:
    """Raise a ``ValueError`` naming the env if a KL term is not finite (before any change)."""
    if np.isfinite(kl).all():
        return
    bad = int(np.flatnonzero(~np.isfinite(kl))[0])
    raise ValueError(
        f"the KL term of env {bad} is {kl[bad]} for the action "
        f"{short_repr(np.asarray(actions)[bad].tolist())}; "
        "expected a finite value. The attached policy or the reference gives one of its "
        "tokens probability 0 (e.g. a masked token); check the action mask and the policy's "
        "log-probs."
    )


def combine_reward(reward_model: np.ndarray, kl: np.ndarray, kl_coef: float) -> np.ndarray:
    """``reward_model - kl_coef * kl``, or a ``ValueError`` if it overflows (before any change).

    Example:
        >>> combine_reward(np.array([1.0]), np.array([2.0]), kl_coef=0.25)
        array([0.5])
    """
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, with the values
        reward = reward_model - kl_coef * kl
    if np.isfinite(reward).all():
        return reward
    bad = int(np.flatnonzero(~np.isfinite(reward))[0])
    raise ValueError(
        f"the reward of env {bad} is {reward[bad]}: reward_model={reward_model[bad]:g} - "
        f"kl_coef={kl_coef:g} * kl={kl[bad]:g} overflows; expected a finite reward. Lower "
        "kl_coef (or kl_target's horizon), or scale the reward function down."
    )


def make_kl_controller(
    kl_coef: float, kl_target: float | None, kl_horizon: int
) -> FixedKLController | AdaptiveKLController:
    """A fixed β, or Ziegler et al.'s adaptive β when ``kl_target`` is given."""
    if kl_target is None:
        return FixedKLController(kl_coef)
    return AdaptiveKLController(kl_coef, kl_target, kl_horizon)


def default_kl_batch_size(episodes: int, kl_horizon: float) -> int:
    """``episodes`` per adaptive-β update, capped at the horizon so one update moves β ≤ 20 %.

    Example:
        >>> default_kl_batch_size(64, kl_horizon=10_000), default_kl_batch_size(64, kl_horizon=16)
        (64, 16)
    """
    return max(1, min(int(episodes), int(kl_horizon)))


def check_kl_batch_size(kl_batch_size: Any, kl_target: float | None, kl_horizon: int) -> int:
    """Return ``kl_batch_size`` (episodes per adaptive-β update) if valid, else raise naming it.

    With an adaptive β the batch must stay below ``5 × kl_horizon``: one update multiplies β by
    ``1 + e · n / horizon``, which could reach 0 for larger n.

    Example:
        >>> check_kl_batch_size(8, kl_target=6.0, kl_horizon=10_000)
        8
    """
    if isinstance(kl_batch_size, bool) or not isinstance(kl_batch_size, (int, np.integer)):
        raise ValueError(
            f"kl_batch_size={short_repr(kl_batch_size)} must be an int >= 1: the number of "
            "finished episodes per adaptive-β update, e.g. kl_batch_size=64."
        )
    if kl_batch_size < 1:
        raise ValueError(
            f"kl_batch_size={short_repr(kl_batch_size)} must be an int >= 1: the number of "
            "finished episodes per adaptive-β update, e.g. kl_batch_size=64."
        )
    if kl_target is not None and kl_batch_size >= 5 * kl_horizon:
        raise ValueError(
            f"kl_batch_size={kl_batch_size} reaches 5 × kl_horizon={kl_horizon}; expected fewer "
            "episodes per update, else one update (β · (1 + e · n / horizon)) can make β zero "
            "or negative. Lower kl_batch_size or raise kl_horizon."
        )
    return int(kl_batch_size)


def check_kl_estimator(kl_estimator: str) -> KLEstimator:
    """Return ``kl_estimator`` if it is a known estimator name, else raise naming the choices."""
    if not isinstance(kl_estimator, str):
        raise TypeError(
            f"kl_estimator={short_repr(kl_estimator)} (type {type(kl_estimator).__name__}) is "
            f"not a str; expected one of {list(KL_ESTIMATORS)}, e.g. kl_estimator='k3'."
        )
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"kl_estimator={short_repr(kl_estimator)} is unknown; expected one of "
            f"{list(KL_ESTIMATORS)} (Schulman's k1/k2/k3, or 'full' for the exact per-position "
            "KL)."
        )
    return kl_estimator  # type: ignore[return-value]


class SequenceRewarder:
    """Scores batches of (prompt, completion) pairs: reward model, KL and their combination.

    Args:
        models: The models that serve the reward (the reference LM) and the tokenizer.
        reward_fn: Anything :func:`lmgym.rewards.as_reward_fn` accepts.
        kl_coef: Initial β (>= 0).
        kl_estimator: ``"k1" | "k2" | "k3" | "full"``.
        kl_target: Target of the adaptive controller, as KL summed over a completion; ``None``
            keeps β fixed.
        kl_horizon: Horizon (in completions) of the adaptive controller.
        kl_batch_size: Finished episodes per adaptive-β update (``None``:
            :data:`SINGLE_ENV_KL_BATCH`, or ``num_envs`` in a vector env, capped at
            ``kl_horizon``).
        minibatch_size: Rows per forward of the reference when it scores a batch (``None``:
            the whole batch in one forward, or a few length buckets); see
            :func:`lmgym.models.scoring.score_completions`. Checked by the env.

    The adaptive controller is updated once per ``kl_batch_size`` finished episodes, with their
    mean sequence KL (Ziegler et al. 2019, TRL): see :meth:`record_episode_kls`. It never runs
    on the cross-entropy form (no policy attached): :meth:`check_kl_form` refuses that.
    """

    def __init__(
        self,
        models: LMModels,
        reward_fn: RewardLike,
        *,
        kl_coef: float,
        kl_estimator: str,
        kl_target: float | None,
        kl_horizon: int,
        kl_batch_size: int | None = None,
        minibatch_size: int | None = None,
    ) -> None:
        self.models = models
        self.minibatch_size = minibatch_size
        self.kl_estimator = check_kl_estimator(kl_estimator)
        self._controller_args = (kl_coef, kl_target, kl_horizon)
        self.controller = make_kl_controller(*self._controller_args)
        self.kl_target = kl_target
        self.kl_horizon = kl_horizon
        if kl_batch_size is None:
            kl_batch_size = default_kl_batch_size(SINGLE_ENV_KL_BATCH, kl_horizon)
        self.kl_batch_size = check_kl_batch_size(kl_batch_size, kl_target, kl_horizon)
        self.pending_kls: list[float] = []  # finished episodes not yet fed to the controller
        self.reward_fn = as_reward_fn(reward_fn)
        self.policy: PolicyLogProbFn | None = None

    def use_default_kl_batch_size(self, episodes: int) -> None:
        """Update β once per ``episodes`` (capped at the horizon): a vector env's ``num_envs``."""
        self.kl_batch_size = default_kl_batch_size(episodes, self.kl_horizon)

    def reset_controller(self) -> None:
        """Put β back to its initial value (a seeded ``reset`` restarts the env's whole state)."""
        self.controller = make_kl_controller(*self._controller_args)
        self.pending_kls = []

    def check_kl_form(self, kl_form: KLForm) -> None:
        """Refuse to feed an adaptive controller a cross-entropy (no policy attached).

        Called before anything changes, on every step that would count towards β, so a
        policy attached after construction (the usual flow: build the env, then the agent,
        then attach it) is fine.
        """
        if kl_form == "cross_entropy" and self.kl_target is not None:
            raise ValueError(
                f"kl_target={self.kl_target!r} sets an adaptive β, but no policy is attached to "
                "the env, so its KL term is the cross-entropy −log π_ref(y) (info['kl_form'] == "
                "'cross_entropy'), not a KL: the controller would chase the policy's entropy. "
                "Expected π_θ attached before stepping: model.policy.attach_to(env) for "
                "lmgym's LM policy, lmgym.agents.attach_sb3(model, env) for another SB3 "
                "policy, or env.unwrapped.attach_policy(f). Or keep β fixed: kl_target=None."
            )

    def record_episode_kls(self, kls: np.ndarray) -> None:
        """Queue finished episodes' sequence KLs; update β once per ``kl_batch_size`` of them.

        One update from the batch's mean KL, not one per episode: the controller clips its
        error, so averaging per-episode clipped errors biases β whenever the KLs are spread
        out (Ziegler et al. and TRL update once per batch, from its mean).
        """
        if self.kl_target is None:  # a fixed β: nothing to update
            return
        self.pending_kls.extend(float(kl) for kl in kls)
        n = self.kl_batch_size
        while len(self.pending_kls) >= n:
            batch, self.pending_kls = self.pending_kls[:n], self.pending_kls[n:]
            self.controller.update(float(np.mean(batch)), n)

    def __call__(
        self,
        prompts: list[str],
        observations: np.ndarray,
        actions: np.ndarray,
        *,
        update_controller: bool = True,
    ) -> SequenceRewardBatch:
        """Score a batch: ``observations`` (B, P) padded prompt ids, ``actions`` (B, T) ids.

        ``update_controller=False`` leaves an adaptive β where it is (for evaluation); it
        also allows the cross-entropy form with an adaptive β, since nothing is fed to it.
        """
        models = self.models
        kl_form: KLForm = "cross_entropy" if self.policy is None else "policy"
        if update_controller:
            self.check_kl_form(kl_form)
        device = models.device  # ids cross from NumPy once, to where the reference runs
        prompt_ids = torch.from_numpy(np.ascontiguousarray(observations, dtype=np.int64))
        prompt_mask = (prompt_ids != models.pad_token_id).long()
        completion_ids = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))
        # The text ends at the first EOS or pad id, as in the token env: the pad id is no text
        # token, and counting it (and what follows) would make the two envs disagree.
        ends = torch.where(
            completion_ids == models.pad_token_id, models.eos_token_id, completion_ids
        )
        completion_mask = completion_mask_from_ids(ends, models.eos_token_id)
        ended = ((ends == models.eos_token_id) & completion_mask.bool()).any(1)

        with torch.inference_mode():
            ref = score_completions(
                models.ref_model,
                prompt_ids.to(device),
                prompt_mask.to(device),
                completion_ids.to(device),
                completion_mask.to(device),
                pad_token_id=models.pad_token_id,
                # Only the ``full`` estimator reads π_ref's whole distribution: at a 50k
                # vocabulary the (B, T, V) logits are the largest tensor of the step.
                keep_logits=self.kl_estimator == "full",
                # The tokenizer's tokens, even where the embedding is padded past them.
                vocab_size=models.vocab_size,
                # Micro-batches bound the forward's activations (and its logits) for a large B.
                minibatch_size=self.minibatch_size,
            )
            ref_logits, ref_logprobs = ref.logits, ref.logprobs  # (B, T, V) or None; (B, T)
            per_token = self._kl_per_token(ref_logprobs, ref_logits, observations, actions)
            kl = sequence_kl(per_token.cpu(), completion_mask).double().numpy()

        lengths = completion_mask.sum(1)
        id_lists = [
            row[:n].tolist() for row, n in zip(completion_ids, lengths.tolist(), strict=True)
        ]
        prompt_id_lists = [
            row[m.bool()].tolist() for row, m in zip(prompt_ids, prompt_mask, strict=True)
        ]
        check_finite_kl(kl, actions)
        completions, reward_model, parts = self.score_texts(prompts, prompt_id_lists, id_lists)
        kl_coef = float(self.controller.value)
        reward = combine_reward(reward_model, kl, kl_coef)
        if update_controller:
            self.record_episode_kls(kl)
        has_eos = ((completion_ids == models.eos_token_id) & completion_mask.bool()).any(1)
        return SequenceRewardBatch(
            prompts=list(prompts),
            reward=reward,
            reward_model=reward_model,
            kl=kl,
            kl_coef=kl_coef,
            kl_form=kl_form,
            completions=completions,
            completion_lengths=lengths.numpy(),
            eos=has_eos.numpy(),
            length_limited=(~ended).numpy(),
            reward_parts=parts,
        )

    def score_texts(
        self,
        prompts: list[str],
        prompt_ids: list[list[int]],
        completion_ids: list[list[int]],
    ) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        """Decode completions and run the reward function once over the batch.

        Args:
            prompts: Prompt texts (B).
            prompt_ids: Unpadded prompt ids, one list per pair.
            completion_ids: Counted completion ids (up to and including the first EOS or pad).

        Returns:
            ``(completions, reward_model, reward_parts)``: the decoded texts (special tokens
            removed), r_φ per pair (B,), and each part's scores for a ``WeightedSum`` reward.
        """
        completions = self.models.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        reward_model = call_reward_fn(
            self.reward_fn,
            prompts,
            completions,
            prompt_ids=prompt_ids,
            completion_ids=completion_ids,
        )
        combined = self.reward_fn.fn
        parts = dict(combined.last_parts) if isinstance(combined, WeightedSum) else {}
        return completions, reward_model, parts

    def _kl_per_token(
        self,
        ref_logprobs: torch.Tensor,
        ref_logits: torch.Tensor | None,
        observations: np.ndarray,
        actions: np.ndarray,
    ) -> torch.Tensor:
        if self.policy is None:
            return reference_only_kl(ref_logprobs)
        policy_out = policy_output_tensor(
            self.policy(observations, actions),
            expected="(B, T) log-probs of the chosen tokens or (B, T, V) log-distributions",
            protocol="lmgym.envs.sequence_reward.PolicyLogProbFn",
        )
        chosen = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))
        return policy_kl_per_token(
            self.kl_estimator,
            policy_out.to(ref_logprobs.device),
            ref_logprobs,
            ref_logits,
            chosen.to(ref_logprobs.device),
            vocab_size=self.models.vocab_size,
            what="(batch, max_new_tokens)",
        )


def policy_kl_per_token(
    estimator: KLEstimator,
    policy_out: torch.Tensor,
    ref_logprobs: torch.Tensor,
    ref_logits: torch.Tensor | None,
    actions: torch.Tensor,
    *,
    vocab_size: int,
    what: str,
) -> torch.Tensor:
    """k_t (B, T) from an attached policy's output and the reference's log-probs.

    Both distributions live on the tokenizer's tokens ``[0, vocab_size)``: a (B, T, V') policy
    output with V' > vocab_size (an embedding padded past the tokenizer) is cut to them and
    renormalised, like the reference.

    Args:
        estimator: ``"k1" | "k2" | "k3" | "full"``.
        policy_out: (B, T) log π_θ of the chosen tokens, or (B, T, V') log-distributions.
        ref_logprobs: (B, T) log π_ref of the chosen tokens, normalised over the tokenizer's
            tokens.
        ref_logits: (B, T, V) reference logits over the tokenizer's tokens; ``full`` needs them,
            the other estimators take None.
        actions: (B, T) chosen token ids.
        vocab_size: V, the number of tokens of the tokenizer.
        what: How the error messages name the expected (B, T) shape.
    """
    if policy_out.ndim == 3:  # (B, T, V') full log-distributions
        if policy_out.shape[-1] < vocab_size:
            raise ValueError(
                f"the attached policy returned log-distributions of shape "
                f"{tuple(policy_out.shape)}; expected {vocab_size} columns or more (one per "
                f"token of the tokenizer) on {what}."
            )
        policy_logp = vocab_log_softmax(policy_out, vocab_size)  # (B, T, V)
        if estimator == "full":
            assert ref_logits is not None, "the full estimator needs the reference's logits"
            return kl_per_token(
                "full", logits=policy_logp, ref_logits=ref_logits, vocab_size=vocab_size
            )
        logp = torch.gather(policy_logp, 2, actions.unsqueeze(-1)).squeeze(-1)
        return kl_per_token(estimator, logp, ref_logprobs)
    if estimator == "full":
        raise ValueError(
            "kl_estimator='full' needs the attached policy to return (B, T, V) "
            f"log-distributions, but it returned shape {tuple(policy_out.shape)}; return "
            "full log-probs from the policy, or use kl_estimator='k1'/'k2'/'k3'."
        )
    if policy_out.shape != ref_logprobs.shape:
        raise ValueError(
            f"the attached policy returned log-probs of shape {tuple(policy_out.shape)}; "
            f"expected {tuple(ref_logprobs.shape)} {what}."
        )
    return kl_per_token(estimator, policy_out, ref_logprobs)
