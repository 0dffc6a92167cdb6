"""The checks ``lmgym rlhf`` reports, and when a run is too small to judge them.

Each check is a plain function of the run's numbers that returns a :class:`Check`: its text,
whether the numbers pass, and, when the run's budget is below the one the check's threshold was
set for, why it is *not judged*. A ``--quick`` run trains each stage for a few steps only
(PPO for one rollout, the reward model for one epoch over one ranking per prompt), so its
policies cannot be told apart from the SFT model within two standard errors and its reward model
stays near chance; reporting those checks as failures would blame the pipeline for the budget
the user chose. :func:`shortfall` names the sizes that fall short.

Example:
    >>> gain_check("PPO", "SFT", "true score", diff=0.2, se=0.05).line()
    'PASS: PPO raises the true score over SFT: +0.200 (2 SE = 0.100)'
    >>> gain_check("PPO", "SFT", "true score", diff=0.0, se=0.05).line()
    'FAIL: PPO raises the true score over SFT: +0.000 (2 SE = 0.100)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "RM_ACCURACY_THRESHOLD",
    "Check",
    "accuracy_check",
    "gain_check",
    "identical_policies",
    "lower_loss_check",
    "shortfall",
]

RM_ACCURACY_THRESHOLD = 0.6
"""Held-out pairwise accuracy that counts as "well above chance" (50%)."""


@dataclass(frozen=True)
class Check:
    """One line of the report's checks.

    Attributes:
        text: What is checked, with the measured numbers.
        passed: Whether the numbers pass the threshold.
        not_judged: Why the run is too small for the threshold to mean anything; None when the
            check is judged.
    """

    text: str
    passed: bool
    not_judged: str | None = None

    @property
    def verdict(self) -> Literal["PASS", "FAIL", "not judged"]:
        """``PASS`` or ``FAIL``, or ``not judged`` for a run too small to judge."""
        if self.not_judged is not None:
            return "not judged"
        return "PASS" if self.passed else "FAIL"

    def line(self) -> str:
        """The check as one line: verdict, text, and the reason when it is not judged.

        Example:
            >>> Check("x rises", False, "--quick size: ppo_steps 128 < 2048").line()
            'not judged: x rises [--quick size: ppo_steps 128 < 2048]'
        """
        reason = f" [{self.not_judged}]" if self.not_judged else ""
        return f"{self.verdict}: {self.text}{reason}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy, with the verdict."""
        return {"check": self.text, "verdict": self.verdict, "passed": self.passed,
                "not_judged": self.not_judged}  # fmt: skip


def shortfall(
    sizes: Mapping[str, int], calibrated: Mapping[str, int], *, quick: bool = False
) -> str | None:
    """Why a check is not judged: the sizes below those its threshold was set for, or None.

    Args:
        sizes: The run's stage sizes the check depends on, e.g. ``{"ppo_steps": 128}``.
        calibrated: The sizes the threshold was set for (the default run's).
        quick: The sizes come from ``--quick``; the reason then says so.

    Example:
        >>> shortfall({"ppo_steps": 128}, {"ppo_steps": 2048}, quick=True)
        "--quick size: ppo_steps 128 < 2048, the default run's sizes that the check is set for"
        >>> shortfall({"ppo_steps": 4096}, {"ppo_steps": 2048}) is None
        True
    """  # noqa: E501 - a doctest output line cannot be wrapped
    short = [f"{name} {sizes[name]} < {calibrated[name]}" for name in sizes
             if sizes[name] < calibrated[name]]  # fmt: skip
    if not short:
        return None
    where = "--quick size" if quick else "below the default run's sizes"
    return f"{where}: {', '.join(short)}, the default run's sizes that the check is set for"


def accuracy_check(accuracy: float, ceiling: float, *, not_judged: str | None = None) -> Check:
    """Is the reward model's held-out pairwise accuracy well above chance (>= 60%)?

    Example:
        >>> accuracy_check(0.48, 0.74).verdict
        'FAIL'
    """
    text = (
        f"RM held-out pairwise accuracy {accuracy:.1%} is well above chance "
        f"(>= {RM_ACCURACY_THRESHOLD:.0%}; the noisy labeler's own ceiling is {ceiling:.1%})"
    )
    return Check(text, accuracy >= RM_ACCURACY_THRESHOLD, not_judged)


def gain_check(
    a: str, b: str, score: str, *, diff: float, se: float, not_judged: str | None = None
) -> Check:
    """Does policy ``a`` beat ``b`` on ``score`` by more than two standard errors?

    Args:
        a: The policy that should gain.
        b: The policy it is compared with.
        score: The score's name, e.g. ``"true score"``.
        diff: ``a``'s mean minus ``b``'s.
        se: Standard error of ``diff``.
        not_judged: Why the run is too small to judge (:func:`shortfall`); None judges it.

    Example:
        >>> gain_check("DPO", "SFT", "true score", diff=-0.02, se=0.08).verdict
        'FAIL'
    """
    text = f"{a} raises the {score} over {b}: {diff:+.3f} (2 SE = {2 * se:.3f})"
    return Check(text, diff > 2 * se, not_judged)


def lower_loss_check(ptx_loss: float, ppo_loss: float, *, not_judged: str | None = None) -> Check:
    """Does PPO-ptx keep a lower pre-training loss than PPO?

    Example:
        >>> lower_loss_check(2.55, 3.05).verdict
        'PASS'
    """
    text = f"PPO-ptx keeps a lower pre-training loss than PPO: {ptx_loss:.3f} vs {ppo_loss:.3f}"
    return Check(text, ptx_loss < ppo_loss, not_judged)


def identical_policies(completions: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Groups of two or more policies that wrote the same completion for every sample.

    Such policies are one policy as far as the evaluation can tell: their rows of the table
    match, and any gap between their Elo ratings is the judge's noise.

    Example:
        >>> identical_policies({"a": ["x", "y"], "b": ["x", "z"], "c": ["x", "y"]})
        [['a', 'c']]
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, texts in completions.items():
        groups.setdefault(tuple(texts), []).append(name)
    return [names for names in groups.values() if len(names) > 1]
