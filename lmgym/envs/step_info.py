"""The reward parts of an LM env step, and its ``info``: one builder for every LM env.

A step of a batch of envs (the bandit's :class:`~lmgym.envs.sequence_reward.SequenceRewardBatch`,
the token env's :class:`~lmgym.envs.token_batch.TokenStepBatch`) is a :class:`StepRecord`: one
array entry per env. A single env's ``info`` is one row of it as plain Python values; a vector
env's is the columns themselves in Gymnasium's vector format, with a ``_key`` mask per key
saying which envs hold a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["KLForm", "StepRecord", "object_array"]

KLForm = Literal["policy", "cross_entropy"]
"""``info["kl_form"]``: ``"policy"`` when π_θ is attached and ``kl`` estimates KL(π_θ ‖ π_ref);
``"cross_entropy"`` when nothing is attached and ``kl`` is −log π_ref(y), a cross-entropy that
exceeds the KL by the policy's entropy (:func:`lmgym.rewards.kl.reference_only_kl`)."""


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (strings, arrays), as Gymnasium's vector infos hold them.

    Example:
        >>> object_array(["a", "b"])
        array(['a', 'b'], dtype=object)
    """
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclass
class StepRecord:
    """The reward parts of one step of B envs; arrays are (B,).

    Attributes:
        prompts: Prompt texts of the episodes stepped.
        completions: Completion texts (special tokens and tokens after the end removed).
        reward: ``reward_model - kl_coef * kl``.
        reward_model: r_φ(x, y) of the completions scored at this step (0 for the others).
        kl: The KL term of this step (see ``kl_form``).
        kl_coef: β used for this step (before an adaptive controller's update).
        kl_form: ``"policy"`` or ``"cross_entropy"`` (see :data:`KLForm`).
        completion_lengths: Counted tokens per completion (up to and including the first EOS
            or pad id).
        eos: Whether the completion's text ends with an EOS.
        length_limited: Whether the completion was cut at ``max_new_tokens`` (no EOS or pad id
            among its tokens).
        reward_parts: For a :class:`~lmgym.rewards.WeightedSum` reward, each part's unweighted
            scores by name (NaN for rows not scored); empty otherwise.

    Example:
        >>> record = StepRecord(prompts=["a"], completions=["b"], reward=np.array([0.0]),
        ...     reward_model=np.array([1.0]), kl=np.array([2.0]), kl_coef=0.5,
        ...     kl_form="policy", completion_lengths=np.array([1]), eos=np.array([True]),
        ...     length_limited=np.array([False]), reward_parts={})
        >>> record.info(0)["kl"], record.batched_info()["_kl"]
        (2.0, array([ True]))
    """

    prompts: list[str]
    completions: list[str]
    reward: np.ndarray
    reward_model: np.ndarray
    kl: np.ndarray
    kl_coef: float
    kl_form: KLForm
    completion_lengths: np.ndarray
    eos: np.ndarray
    length_limited: np.ndarray
    reward_parts: dict[str, np.ndarray]

    @property
    def scored(self) -> np.ndarray:
        """Rows whose completion the reward function scored at this step (B,) bool."""
        return np.ones(len(self.prompts), dtype=np.bool_)

    def columns(self) -> dict[str, np.ndarray]:
        """The ``info`` keys as (B,) arrays (new arrays, never views)."""
        n = len(self.prompts)
        return {
            "prompt": object_array(self.prompts),
            "completion": object_array(self.completions),
            "reward_model": np.asarray(self.reward_model, dtype=np.float64).copy(),
            "kl": np.asarray(self.kl, dtype=np.float64).copy(),
            "kl_coef": np.full(n, self.kl_coef, dtype=np.float64),
            "kl_form": object_array([self.kl_form] * n),
            "completion_length": np.asarray(self.completion_lengths, dtype=np.int64).copy(),
            "eos": np.asarray(self.eos, dtype=np.bool_).copy(),
            "length_limited": np.asarray(self.length_limited, dtype=np.bool_).copy(),
        }

    def info(self, index: int) -> dict[str, Any]:
        """The ``info`` dict of row ``index`` (new objects on every call).

        ``reward_parts`` is there only if the row was scored at this step.
        """
        info: dict[str, Any] = {}
        for key, column in self.columns().items():
            value = column[index]
            info[key] = value.item() if isinstance(value, np.generic) else value
        if self.reward_parts and self.scored[index]:
            info["reward_parts"] = {k: float(v[index]) for k, v in self.reward_parts.items()}
        return info

    def describe(self, index: int) -> str:
        """Row ``index`` as text: prompt, completion and the reward's parts (``ansi`` render)."""
        info = self.info(index)
        return (
            f"prompt:     {info['prompt']!r}\n"
            f"completion: {info['completion']!r}\n"
            f"reward = reward_model - kl_coef * kl = {info['reward_model']:.4f} - "
            f"{info['kl_coef']:.4f} * {info['kl']:.4f} = {float(self.reward[index]):.4f} "
            f"(kl form: {info['kl_form']}{self._kl_note(index)})"
        )

    def _kl_note(self, index: int) -> str:
        return ""

    def batched_info(self, rows: np.ndarray | None = None) -> dict[str, Any]:
        """The infos of the rows where ``rows`` is True (all by default), in vector format.

        Arrays over all rows plus a ``_key`` mask per key; built column by column rather than
        row by row, so a batch of 64 costs a few array copies, not 64 dict merges.
        ``reward_parts`` is a nested dict of the same form, held by the scored rows.
        """
        if rows is None:
            rows = np.ones(len(self.prompts), dtype=np.bool_)
        info: dict[str, Any] = self.columns()
        with_parts = rows & self.scored
        if self.reward_parts and with_parts.any():
            parts: dict[str, Any] = {k: v.astype(np.float64) for k, v in self.reward_parts.items()}
            parts.update({f"_{k}": with_parts.copy() for k in self.reward_parts})
            info["reward_parts"] = parts
        info.update({f"_{key}": rows.copy() for key in list(info)})
        return info
