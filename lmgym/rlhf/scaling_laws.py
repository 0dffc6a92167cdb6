"""The functional forms of reward-model over-optimisation (Gao et al. 2022) and their fits.

Gao, Schulman and Hilton ("Scaling Laws for Reward Model Overoptimization", 2022) measure the
gold (true) score a policy gains over its initial policy as a function of
``d = √KL(π ‖ π_init)`` and find two forms:

* best-of-n sampling: ``R_bon(d) = d (α − β d)``;
* RL (PPO): ``R_RL(d) = d (α − β log d)``.

Both are linear in ``(α, β)``, so an ordinary least-squares fit on measured ``(d, gain)`` points
gives them directly. ``β > 0`` means the gold score bends down: it peaks at ``d* = α / 2β``
(best-of-n) or ``d* = exp(α/β − 1)`` (RL), and a reward model trained on more data should move
that peak to larger ``d``. This module holds only the arithmetic; :mod:`lmgym.rlhf.overoptimisation`
measures the points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lmgym.training.best_of_n import expected_best

__all__ = [
    "ScalingFit",
    "best_of_n_picks",
    "fit_scaling_law",
]

Form = Literal["bon", "rl"]
_FORMS = ("bon", "rl")


def best_of_n_picks(
    proxy: np.ndarray, gold: np.ndarray, ns: Sequence[int]
) -> list[tuple[int, float, float]]:
    """Best-of-n by the proxy score: for each n, the expected proxy and gold score of the pick.

    The pick of an n-subset of a prompt's N samples is its proxy argmax. Rather than take one
    subset (say the first n samples), every n-subset is averaged, as in
    :func:`lmgym.training.best_of_n.expected_best`: with the samples sorted by proxy score, the
    i-th lowest is the pick of a random n-subset with probability ``C(i−1, n−1) / C(N, n)``.
    That is an unbiased estimate of best-of-n with less variance than one draw of n samples.
    Proxy ties are broken at random, so samples tied on the proxy count with their mean gold.

    Args:
        proxy: (P, N) proxy (reward-model) scores of N samples of each of P prompts.
        gold: (P, N) gold scores of the same samples.
        ns: Each 1 ≤ n ≤ N.

    Returns:
        ``[(n, mean proxy of the picks, mean gold of the picks), ...]`` in the order of ``ns``;
        n = 1 gives the means of all samples.

    Example:
        >>> proxy = np.array([[0.0, 2.0], [1.0, 0.0]])
        >>> gold = np.array([[1.0, -1.0], [0.0, 3.0]])
        >>> best_of_n_picks(proxy, gold, [1, 2])
        [(1, 0.75, 0.75), (2, 1.5, -0.5)]
    """
    proxy, gold = np.asarray(proxy, dtype=float), np.asarray(gold, dtype=float)
    if proxy.ndim != 2 or proxy.shape != gold.shape:
        raise ValueError(
            f"proxy {proxy.shape} and gold {gold.shape} must both be (prompts, samples) arrays "
            "of the same shape."
        )
    if not np.isfinite(gold).all():
        raise ValueError("gold must hold finite scores; got NaN or inf.")
    gold_by_proxy = np.stack([_tied_mean_by_rank(p, g) for p, g in zip(proxy, gold, strict=True)])
    picks = []
    for n in ns:
        best_proxy = expected_best(proxy, n)  # checks 1 <= n <= N and finite proxy scores
        size = proxy.shape[1]
        weights = np.array([math.comb(i - 1, n - 1) for i in range(1, size + 1)], dtype=float)
        best_gold = gold_by_proxy @ (weights / math.comb(size, n))
        picks.append((int(n), float(best_proxy.mean()), float(best_gold.mean())))
    return picks


def _tied_mean_by_rank(proxy: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """One prompt's gold scores in ascending proxy order, each replaced by its proxy tie's mean."""
    _, level = np.unique(proxy, return_inverse=True)
    level_gold = np.bincount(level, weights=gold) / np.bincount(level)
    return level_gold[level][np.argsort(proxy, kind="stable")]


@dataclass(frozen=True)
class ScalingFit:
    """A least-squares fit of one of Gao et al.'s forms to ``(d, gain)`` points.

    Attributes:
        form: ``"bon"``: ``gain = d (α − β d)``; ``"rl"``: ``gain = d (α − β log d)``.
        alpha: α of the fit.
        beta: β of the fit; > 0 means the gain bends down and peaks.
        d_max: The largest ``d`` measured: a peak past it is extrapolated, not observed.
    """

    form: Form
    alpha: float
    beta: float
    d_max: float

    def __call__(self, d: np.ndarray) -> np.ndarray:
        """The fitted gain at ``d`` (``d = 0`` gives 0 for both forms)."""
        d = np.asarray(d, dtype=float)
        shape = d if self.form == "bon" else _log_or_zero(d)
        return d * (self.alpha - self.beta * shape)

    @property
    def peak_d(self) -> float | None:
        """Where the fitted gain peaks, or None if it never turns down (β ≤ 0).

        Example:
            >>> ScalingFit("bon", alpha=2.0, beta=0.5, d_max=3.0).peak_d
            2.0
            >>> round(ScalingFit("rl", alpha=1.0, beta=0.5, d_max=3.0).peak_d, 4)  # e^(2 − 1)
            2.7183
            >>> ScalingFit("rl", alpha=1.0, beta=-0.1, d_max=3.0).peak_d is None
            True
        """
        if self.beta <= 0:
            return None
        if self.form == "bon":
            return self.alpha / (2 * self.beta)
        exponent = self.alpha / self.beta - 1
        return math.exp(exponent) if exponent < 700 else math.inf

    @property
    def peak_observed(self) -> bool:
        """True when the fitted peak lies within the measured range of ``d``."""
        peak = self.peak_d
        return peak is not None and peak <= self.d_max


def fit_scaling_law(d: Sequence[float], gain: Sequence[float], form: Form) -> ScalingFit:
    """Fit ``gain = d (α − β d)`` (``form="bon"``) or ``d (α − β log d)`` (``"rl"``).

    Ordinary least squares on the two columns ``d`` and ``−d·d`` (or ``−d·log d``); ``d = 0``
    points carry no information (both columns vanish) and are kept harmlessly.

    Example:
        >>> d = np.array([0.5, 1.0, 1.5, 2.0])
        >>> fit = fit_scaling_law(d, d * (1.0 - 0.25 * d), "bon")
        >>> round(fit.alpha, 6), round(fit.beta, 6), round(fit.peak_d, 6)
        (1.0, 0.25, 2.0)
    """
    if form not in _FORMS:
        raise ValueError(f"form={form!r} is not one of {_FORMS}; expected 'bon' or 'rl'.")
    d_arr, gain_arr = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    if d_arr.shape != gain_arr.shape or d_arr.ndim != 1:
        raise ValueError(f"d {d_arr.shape} and gain {gain_arr.shape} must be 1-D and equal.")
    if np.any(d_arr < 0) or not np.all(np.isfinite(d_arr)):
        raise ValueError("d holds negative or non-finite values; d = √KL is >= 0 and finite.")
    informative = d_arr > 0
    if np.unique(d_arr[informative]).size < 2:
        raise ValueError(
            f"got {np.unique(d_arr[informative]).size} distinct d > 0; a two-parameter fit "
            "needs at least 2 (more evaluation points, or a longer run)."
        )
    shape = d_arr if form == "bon" else _log_or_zero(d_arr)
    design = np.stack([d_arr, -d_arr * shape], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, gain_arr, rcond=None)
    return ScalingFit(form, float(alpha), float(beta), float(d_arr.max()))


def _log_or_zero(d: np.ndarray) -> np.ndarray:
    """The log of d where d > 0, else 0 (d · log d → 0 as d → 0)."""
    return np.log(np.where(d > 0, d, 1.0))
