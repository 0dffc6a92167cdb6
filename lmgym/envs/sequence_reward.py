"""The reward of a whole completion: reward model minus the KL penalty, for a batch at once.

``R = r_φ(x, y) − β · Σ_t k_t`` (DESIGN section 4). One teacher-forced forward of the reference
model and one reward-function call serve the whole batch, which is what lets the vector env run
them once per batch instead of once per env.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from lmgym.envs.lm_setup import LMSetup
from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import score_completions
from lmgym.rewards import WeightedSum, as_reward_fn, call_reward_fn
from lmgym.rewards.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    KLEstimator,
    kl_per_token,
    reference_only_kl,
    sequence_kl,
)

PolicyLogProbFn = Callable[[np.ndarray, np.ndarray], torch.Tensor]
"""``f(observations, actions) -> log π_θ`` for a batch, where observations are (B, P) prompt ids
and actions are (B, T) completion ids. Return (B, T) log-probs of the chosen tokens, or (B, T, V)
full log-distributions (which the ``full`` estimator needs). Attach one with
``env.unwrapped.attach_policy(f)`` or :func:`lmgym.agents.attach_sb3`."""

KLForm = Literal["policy", "reference_only"]


@dataclass
class SequenceRewardBatch:
    """Reward parts for a batch of completions (arrays are (B,)).

    Attributes:
        reward: ``reward_model - kl_coef * kl``.
        reward_model: r_φ(x, y) from the reward function.
        kl: Σ_t k_t over the completion's counted tokens (see ``kl_form``).
        kl_coef: β used for this batch (before the adaptive controller's update).
        kl_form: ``"policy"`` when a policy is attached (k_t from log π_θ − log π_ref), else
            ``"reference_only"`` (k_t = −log π_ref; the entropy half of the KL then comes from
            the agent's entropy bonus).
        completions: Decoded completion texts (special tokens and tokens after EOS removed).
        completion_lengths: Counted tokens per completion (up to and including the first EOS).
        terminated_by_eos: Whether each completion contains an EOS.
        reward_parts: For a :class:`~lmgym.rewards.WeightedSum` reward, each part's unweighted
            scores by name; empty otherwise.
    """

    reward: np.ndarray
    reward_model: np.ndarray
    kl: np.ndarray
    kl_coef: float
    kl_form: KLForm
    completions: list[str]
    completion_lengths: np.ndarray
    terminated_by_eos: np.ndarray
    reward_parts: dict[str, np.ndarray]

    def batched_info(self, prompts: list[str]) -> dict[str, Any]:
        """All envs' infos in Gymnasium's vector format (arrays plus ``_key`` masks).

        Built column by column rather than env by env, so a batch of 64 costs a few array
        constructions, not 64 dict merges.
        """
        n = len(prompts)
        columns: dict[str, Any] = {
            "prompt": object_array(prompts),
            "completion": object_array(self.completions),
            "reward_model": self.reward_model.astype(np.float64),
            "kl": self.kl.astype(np.float64),
            "kl_coef": np.full(n, self.kl_coef),
            "kl_form": object_array([self.kl_form] * n),
            "completion_length": self.completion_lengths.astype(np.int64),
            "eos": self.terminated_by_eos.astype(np.bool_),
        }
        if self.reward_parts:
            parts: dict[str, Any] = {k: v.astype(np.float64) for k, v in self.reward_parts.items()}
            parts.update({f"_{k}": np.ones(n, dtype=np.bool_) for k in self.reward_parts})
            columns["reward_parts"] = parts
        columns.update({f"_{k}": np.ones(n, dtype=np.bool_) for k in list(columns)})
        return columns

    def info(self, index: int, prompt: str) -> dict[str, Any]:
        """The ``info`` dict of one env of the batch (new objects on every call)."""
        info: dict[str, Any] = {
            "prompt": prompt,
            "completion": self.completions[index],
            "reward_model": float(self.reward_model[index]),
            "kl": float(self.kl[index]),
            "kl_coef": self.kl_coef,
            "kl_form": self.kl_form,
            "completion_length": int(self.completion_lengths[index]),
            "eos": bool(self.terminated_by_eos[index]),
        }
        if self.reward_parts:
            info["reward_parts"] = {k: float(v[index]) for k, v in self.reward_parts.items()}
        return info


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (strings, arrays), as Gymnasium's vector infos hold them.

    Example:
        >>> object_array(["a", "b"])
        array(['a', 'b'], dtype=object)
    """
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def make_kl_controller(
    kl_coef: float, kl_target: float | None, kl_horizon: int
) -> FixedKLController | AdaptiveKLController:
    """A fixed β, or Ziegler et al.'s adaptive β when ``kl_target`` is given."""
    if kl_target is None:
        return FixedKLController(kl_coef)
    return AdaptiveKLController(kl_coef, kl_target, kl_horizon)


def check_kl_estimator(kl_estimator: str) -> KLEstimator:
    """Return ``kl_estimator`` if it is a known estimator name, else raise naming the choices."""
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"kl_estimator={kl_estimator!r} is unknown; expected one of {list(KL_ESTIMATORS)} "
            "(Schulman's k1/k2/k3, or 'full' for the exact per-position KL)."
        )
    return kl_estimator  # type: ignore[return-value]


class SequenceRewarder:
    """Scores batches of (prompt, completion) pairs: reward model, KL and their combination.

    Args:
        setup: Models and tokenizer of the env.
        reward_fn: Anything :func:`lmgym.rewards.as_reward_fn` accepts.
        kl_coef: Initial β (>= 0).
        kl_estimator: ``"k1" | "k2" | "k3" | "full"``.
        kl_target: Target of the adaptive controller, as KL summed over a completion; ``None``
            keeps β fixed.
        kl_horizon: Horizon (in completions) of the adaptive controller.
    """

    def __init__(
        self,
        setup: LMSetup,
        reward_fn: Any,
        *,
        kl_coef: float,
        kl_estimator: str,
        kl_target: float | None,
        kl_horizon: int,
    ) -> None:
        self.setup = setup
        self.kl_estimator = check_kl_estimator(kl_estimator)
        self._controller_args = (kl_coef, kl_target, kl_horizon)
        self.controller = make_kl_controller(*self._controller_args)
        self.reward_fn = as_reward_fn(reward_fn)
        self.policy: PolicyLogProbFn | None = None

    def reset_controller(self) -> None:
        """Put β back to its initial value (a seeded ``reset`` restarts the env's whole state)."""
        self.controller = make_kl_controller(*self._controller_args)

    def __call__(
        self,
        prompts: list[str],
        observations: np.ndarray,
        actions: np.ndarray,
        *,
        update_controller: bool = True,
    ) -> SequenceRewardBatch:
        """Score a batch: ``observations`` (B, P) padded prompt ids, ``actions`` (B, T) ids.

        ``update_controller=False`` leaves an adaptive β where it is (for evaluation).
        """
        setup = self.setup
        prompt_ids = torch.from_numpy(np.ascontiguousarray(observations, dtype=np.int64))
        prompt_mask = (prompt_ids != setup.pad_token_id).long()
        completion_ids = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))
        completion_mask = completion_mask_from_ids(completion_ids, setup.eos_token_id)

        kl_form: KLForm = "reference_only" if self.policy is None else "policy"
        with torch.inference_mode():
            ref = score_completions(
                setup.ref_model,
                prompt_ids,
                prompt_mask,
                completion_ids,
                completion_mask,
                pad_token_id=setup.pad_token_id,
                keep_logits=self.kl_estimator == "full" and self.policy is not None,
            )
            per_token = self._kl_per_token(ref.logprobs, ref.logits, observations, actions)
            kl = sequence_kl(per_token, completion_mask).double().numpy()

        lengths = completion_mask.sum(1)
        id_lists = [
            row[:n].tolist() for row, n in zip(completion_ids, lengths.tolist(), strict=True)
        ]
        prompt_id_lists = [
            row[m.bool()].tolist() for row, m in zip(prompt_ids, prompt_mask, strict=True)
        ]
        completions, reward_model, parts = self.score_texts(prompts, prompt_id_lists, id_lists)
        kl_coef = float(self.controller.value)
        reward = reward_model - kl_coef * kl
        if update_controller:
            self.controller.update(float(kl.mean()), len(prompts))
        has_eos = (completion_ids == setup.eos_token_id).any(1).numpy()
        return SequenceRewardBatch(
            reward=reward,
            reward_model=reward_model,
            kl=kl,
            kl_coef=kl_coef,
            kl_form=kl_form,
            completions=completions,
            completion_lengths=lengths.numpy(),
            terminated_by_eos=has_eos,
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
            completion_ids: Counted completion ids (up to and including the first EOS).

        Returns:
            ``(completions, reward_model, reward_parts)``: the decoded texts (special tokens
            removed), r_φ per pair (B,), and each part's scores for a ``WeightedSum`` reward.
        """
        completions = self.setup.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
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
        policy_out = torch.as_tensor(self.policy(observations, actions)).float()
        chosen = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))
        return policy_kl_per_token(
            self.kl_estimator,
            policy_out,
            ref_logprobs,
            ref_logits,
            chosen,
            what="(batch, max_new_tokens)",
        )


def policy_kl_per_token(
    estimator: KLEstimator,
    policy_out: torch.Tensor,
    ref_logprobs: torch.Tensor,
    ref_logits: torch.Tensor | None,
    actions: torch.Tensor,
    *,
    what: str,
) -> torch.Tensor:
    """k_t (B, T) from an attached policy's output and the reference's log-probs.

    Args:
        estimator: ``"k1" | "k2" | "k3" | "full"``.
        policy_out: (B, T) log π_θ of the chosen tokens, or (B, T, V) log-distributions.
        ref_logprobs: (B, T) log π_ref of the chosen tokens.
        ref_logits: (B, T, V) reference logits; needed by ``full`` only.
        actions: (B, T) chosen token ids.
        what: How the error messages name the expected (B, T) shape.
    """
    if policy_out.ndim == 3:  # (B, T, V) full log-distributions
        if estimator == "full":
            return kl_per_token("full", logits=policy_out, ref_logits=ref_logits)
        logp = torch.gather(policy_out, 2, actions.unsqueeze(-1)).squeeze(-1)
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
