"""The KL penalty: per-token estimators, the sequence sum, and the β controllers.

The penalty keeps the policy π_θ near the frozen reference π_ref: ``R = r_φ(x, y) − β · Σ_t k_t``.
Only the sampled token's log-probability is usually at hand, so the KL is estimated per token
from the log-ratio ``ℓ_t = log π_θ(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)`` of a token drawn
from π_θ, with ``r_t = exp(−ℓ_t) = π_ref / π_θ``. The estimators are those of J. Schulman,
"Approximating KL divergence" (2020, http://joschu.net/blog/kl-approx.html):

* ``k1 = ℓ``: unbiased, high variance, negative for some tokens;
* ``k2 = ℓ² / 2``: biased (it is the f-divergence with f = ½ log² r), low variance, ≥ 0;
* ``k3 = (r − 1) − log r``: unbiased (E_π[r] = 1), low variance, ≥ 0 for every token;
* ``full``: the exact KL(π_θ(·|prefix) ‖ π_ref(·|prefix)) at each position from both full
  next-token distributions, when the logits of both are available.

**One support for both distributions.** Models are often stored with an embedding padded past
the tokenizer (GPT-2 style tables rounded up to a multiple of 64 or 128). Those extra rows are no
tokens: no action can pick them and no text contains them. Both π_θ and π_ref are therefore
normalised over the tokenizer's ids ``[0, len(tokenizer))`` only (:func:`vocab_log_softmax`).
Normalising one over every row and the other over the tokens would report a KL of
``log Z_tokens − log Z_rows`` per token between a policy and itself.

With no policy attached, the envs pay :func:`reference_only_kl`, a cross-entropy, not a KL.

All functions here are pure torch and keep gradients, so a policy loss can use them too.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, Protocol, get_args

import numpy as np
import torch

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "KLEstimator",
    "kl_per_token",
    "log_ratio",
    "reference_only_kl",
    "sequence_kl",
    "vocab_log_softmax",
]

KLEstimator = Literal["k1", "k2", "k3", "full"]
"""Name of a per-token KL estimator; see the module docstring."""

KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)


def log_ratio(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``ℓ_t = logp − ref_logp`` for the sampled tokens, shapes checked.

    Example:
        >>> log_ratio(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]]))
        tensor([[0.5000, 0.0000]])
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"logp has shape {tuple(logp.shape)} but ref_logp has {tuple(ref_logp.shape)}; "
            "expected the log-probs of the same tokens under the policy and the reference, "
            "both (B, T)."
        )
    return logp - ref_logp


def vocab_log_softmax(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Log-probabilities over the ids ``[0, vocab_size)`` only, renormalised: shape (..., V).

    The support every KL in lmgym is computed on: the tokenizer's tokens. A model whose
    embedding is padded past the tokenizer gives logits for rows that are no tokens; they are
    dropped before normalising. Log-probabilities are valid input too (renormalising them over
    all their columns changes nothing).

    Raises:
        ValueError: ``logits`` has fewer than ``vocab_size`` columns.

    Example:
        >>> vocab_log_softmax(torch.tensor([[0.0, 0.0, 9.0]]), 2).exp()
        tensor([[0.5000, 0.5000]])
    """
    if logits.shape[-1] < vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} but logits has {logits.shape[-1]} columns; expected at "
            "least one column per token of the tokenizer (a model's embedding may be padded "
            "past the tokenizer, never smaller). Pass vocab_size=len(tokenizer)."
        )
    return torch.log_softmax(logits[..., :vocab_size], dim=-1)


def kl_per_token(
    estimator: KLEstimator,
    logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    *,
    logits: torch.Tensor | None = None,
    ref_logits: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimate k_t, shape (B, T).

    Args:
        estimator: ``"k1"``, ``"k2"``, ``"k3"`` (from ``logp`` and ``ref_logp``) or ``"full"``
            (from ``logits`` and ``ref_logits``).
        logp: log π_θ of the sampled tokens (B, T); the tokens must be drawn from π_θ for the
            estimates to be unbiased.
        ref_logp: log π_ref of the same tokens (B, T).
        logits: Policy next-token logits (or log-probs) at each position (B, T, V).
        ref_logits: Reference next-token logits (or log-probs) at each position (B, T, V).
        vocab_size: ``full`` only: normalise both distributions over the ids
            ``[0, vocab_size)`` (the tokenizer's tokens), dropping the columns of embedding
            rows past them, so two models with differently padded tables compare on one
            support. ``None`` takes both as they are, which then must have the same width.

    Returns:
        k_t for every position, padding included: mask it with :func:`sequence_kl`.

    Raises:
        ValueError: Unknown ``estimator`` (the valid names are listed), missing inputs for it,
            or mismatched shapes.

    Example:
        >>> logp, ref_logp = torch.tensor([[-1.0, -3.0]]), torch.tensor([[-2.0, -1.0]])
        >>> kl_per_token("k1", logp, ref_logp)
        tensor([[ 1., -2.]])
        >>> kl_per_token("k3", logp, ref_logp)
        tensor([[0.3679, 4.3891]])
        >>> logits = torch.tensor([[[0.0, 0.0]]])
        >>> kl_per_token("full", logits=logits, ref_logits=torch.tensor([[[0.0, 1.0]]]))
        tensor([[0.1201]])
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"estimator={estimator!r} is unknown; expected one of {list(KL_ESTIMATORS)} "
            "(Schulman's k1/k2/k3 from sampled-token log-probs, or 'full' from both logit "
            "tensors)."
        )
    if estimator == "full":
        if logits is None or ref_logits is None:
            raise ValueError(
                "estimator='full' needs logits= and ref_logits= (B, T, V) from both the policy "
                "and the reference; pass both, or use estimator='k1', 'k2' or 'k3' with "
                "logp and ref_logp."
            )
        if vocab_size is not None:
            for name, tensor in (("logits", logits), ("ref_logits", ref_logits)):
                if tensor.shape[-1] < vocab_size:
                    raise ValueError(
                        f"vocab_size={vocab_size} but {name} has {tensor.shape[-1]} columns; "
                        "expected both to cover every token id below vocab_size. Pass "
                        "vocab_size=len(tokenizer)."
                    )
            logits, ref_logits = logits[..., :vocab_size], ref_logits[..., :vocab_size]
        return _full_kl(logits, ref_logits)
    if logp is None or ref_logp is None:
        raise ValueError(
            f"estimator={estimator!r} needs logp and ref_logp (B, T), the sampled tokens' "
            "log-probs under the policy and the reference; pass both, or use estimator='full' "
            "with logits= and ref_logits=."
        )
    ell = log_ratio(logp, ref_logp)
    if estimator == "k1":
        return ell
    if estimator == "k2":
        return 0.5 * ell.square()
    # k3 = (r - 1) - log r with r = exp(-ℓ), i.e. expm1(-ℓ) + ℓ. Written naively as
    # exp(-ℓ) - 1 + ℓ it cancels catastrophically near ℓ = 0 (the usual case): measured on
    # 5e7 draws, it came out negative for ~19 % of them in float32; expm1 for none. The clamp
    # makes k3 >= 0 a guarantee rather than an observation.
    return (torch.expm1(-ell) + ell).clamp_min(0.0)


def _full_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact Σ_v π(v) (log π(v) − log π_ref(v)) per position, stable for any logit scale."""
    if logits.shape != ref_logits.shape or logits.ndim != 3:
        raise ValueError(
            f"logits has shape {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)}; "
            "expected both (B, T, V) over the same vocabulary. If one model's embedding is "
            "padded past the tokenizer, pass vocab_size=len(tokenizer): both are then "
            "normalised over the tokenizer's tokens."
        )
    dtype = torch.promote_types(logits.dtype, torch.float32)  # never sum a vocab in fp16
    logq_policy = torch.log_softmax(logits.to(dtype), dim=-1)  # (B, T, V)
    logq_ref = torch.log_softmax(ref_logits.to(dtype), dim=-1)  # (B, T, V)
    p = logq_policy.exp()
    # Tokens the policy never emits (p = 0, e.g. logits masked to -inf) contribute 0, not
    # 0 · (−inf) = NaN; tokens it emits that the reference forbids give +inf, as they should.
    terms = torch.where(p > 0, p * (logq_policy - logq_ref), torch.zeros_like(p))
    return terms.sum(-1)  # (B, T)


def reference_only_kl(ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token penalty when no policy is attached: ``−log π_ref(y_t)``, shape (B, T).

    This is a **cross-entropy, not a KL**. KL(π_θ ‖ π_ref) = E_π[log π_θ − log π_ref] =
    CE(π_θ, π_ref) − H(π_θ); without π_θ's log-probs only the cross-entropy term can be
    estimated, by ``−log π_ref`` of the sampled token. It exceeds the KL by the policy's entropy,
    so the envs name it (``info["kl_form"] == "cross_entropy"``) and refuse an adaptive β on
    it: a controller would chase the entropy, not the drift from π_ref.

    An entropy bonus with coefficient β (``ent_coef``) restores the objective's *value* on
    average (CE − H = KL), not its *gradient*. The bonus enters the loss as the entropy of
    each visited state's next-token distribution, with the visited states held fixed. In the
    KL, the entropy term −log π_θ(y_t) is part of the reward, so its gradient also carries
    how each token changes the states (and entropies) that follow, through the returns of
    the tokens before them. The bonus leaves that part out. Attach the policy to get the KL.

    Example:
        >>> reference_only_kl(torch.tensor([[-0.5, -2.0]]))
        tensor([[0.5000, 2.0000]])
    """
    return -ref_logp


def sequence_kl(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t k_t over the counted completion tokens of each sequence, shape (B,).

    Positions where ``mask`` is 0 (padding, tokens after the first EOS) count for nothing, even
    when their k_t is NaN or inf (a masked-out position's logits need not be meaningful).

    Args:
        per_token: k_t (B, T), e.g. from :func:`kl_per_token`.
        mask: 1 for counted completion tokens, 0 elsewhere (B, T); bool, int or float.

    Example:
        >>> sequence_kl(torch.tensor([[0.1, 0.2, 9.0]]), torch.tensor([[1, 1, 0]]))
        tensor([0.3000])
    """
    if per_token.shape != mask.shape:
        raise ValueError(
            f"per_token has shape {tuple(per_token.shape)} but mask has {tuple(mask.shape)}; "
            "expected the same (B, T) shape."
        )
    return torch.where(mask.bool(), per_token, torch.zeros_like(per_token)).sum(-1)


class KLController(Protocol):
    """What an env needs from a β controller: the current ``value`` and an ``update``."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adjust β after ``n_steps`` episodes whose mean sequence KL was ``current_kl``."""
        ...


def _check_finite(name: str, value: float, expected: str) -> float:
    # numbers.Real: NumPy scalars (np.float32(0.1), np.int64(100)) are numbers as well.
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name}={value!r}; expected {expected}.")
    return float(value)


class FixedKLController:
    """A constant β.

    Args:
        kl_coef: β ≥ 0; 0 turns the penalty off.

    Example:
        >>> controller = FixedKLController(0.1)
        >>> controller.update(current_kl=50.0, n_steps=64)
        >>> controller.value
        0.1
    """

    def __init__(self, kl_coef: float) -> None:
        self.value = _check_finite("kl_coef", kl_coef, "a finite float >= 0")
        if self.value < 0:
            raise ValueError(
                f"kl_coef={kl_coef!r}; expected a finite float >= 0 (a negative β would "
                "reward drifting away from the reference). Use 0 to turn the penalty off."
            )

    def update(self, current_kl: float, n_steps: int) -> None:
        """Do nothing: β is fixed."""

    def __repr__(self) -> str:
        return f"FixedKLController(kl_coef={self.value})"


class AdaptiveKLController:
    """β adapted toward a KL target (Ziegler et al. 2019).

    D. Ziegler et al., "Fine-Tuning Language Models from Human Preferences" (2019,
    https://arxiv.org/abs/1909.08593, section 2.2). After ``n_steps`` episodes whose mean KL
    was ``current_kl``::

        e = clip(current_kl / target − 1, −0.2, 0.2)
        β ← β · (1 + e · n_steps / horizon)

    so β grows when the policy drifts further than the target and shrinks when it stays
    closer, by at most 20 % per ``horizon`` episodes.

    **The target is the KL summed over a sequence** (per episode, ``sequence_kl``), averaged
    over the episodes of the update, as in Ziegler et al. (target 6 nats) and TRL's former
    ``PPOTrainer``. Peers differ: some frameworks feed the controller a per-token mean, whose
    targets are smaller by about the completion length, so targets do not carry over.

    **Call it once per batch, with the batch's mean.** The clip is not linear: n updates of
    one episode each average the *clipped* errors, which differs from one update with the
    clipped error of the mean whenever the episodes' KLs are spread out (skewed KLs then
    hold the mean KL above or below the target). The envs collect finished episodes and
    update once per batch (see ``kl_batch_size`` of the LM envs).

    Args:
        init_kl_coef: Initial β, ≥ 0.
        target: Target mean sequence KL in nats, > 0.
        horizon: Episodes over which β may change by up to 20 %, > 0.

    Raises:
        ValueError: ``init_kl_coef < 0``, ``target <= 0`` or ``horizon <= 0`` (or non-finite).

    Example:
        >>> controller = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
        >>> controller.update(current_kl=12.0, n_steps=1_000)  # e = clip(1.0) = 0.2
        >>> round(controller.value, 6)
        0.102
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = _check_finite("init_kl_coef", init_kl_coef, "a finite float >= 0")
        if self.value < 0:
            raise ValueError(
                f"init_kl_coef={init_kl_coef!r}; expected a finite float >= 0 (a negative β "
                "would reward drifting away from the reference)."
            )
        self.target = _check_finite("target", target, "a finite KL in nats > 0")
        if self.target <= 0:
            raise ValueError(
                f"target={target!r}; expected a KL summed per sequence, in nats, > 0 (e.g. 6.0 "
                "as in Ziegler et al. 2019). For no adaptation use FixedKLController."
            )
        self.horizon = _check_finite("horizon", horizon, "a number of episodes > 0")
        if self.horizon <= 0:
            raise ValueError(
                f"horizon={horizon!r}; expected a number of episodes > 0 (e.g. 10000)."
            )

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move β toward the target after ``n_steps`` episodes of mean sequence KL ``current_kl``.

        Raises:
            ValueError: ``current_kl`` is not finite, ``n_steps < 0``, or ``n_steps`` reaches
                5 × ``horizon``, where the multiplier ``1 + e · n_steps / horizon`` could reach
                zero or below and zero or flip the sign of β.
        """
        current = _check_finite("current_kl", current_kl, "a finite mean sequence KL")
        if n_steps < 0:
            raise ValueError(f"n_steps={n_steps!r}; expected a number of episodes >= 0.")
        if n_steps >= 5 * self.horizon:
            raise ValueError(
                f"n_steps={n_steps!r} reaches 5 × horizon={self.horizon:g}; expected fewer "
                "episodes per update, else 1 + e · n_steps / horizon can make β zero or "
                "negative. Update more often, or raise horizon."
            )
        error = min(max(current / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def __repr__(self) -> str:
        return (
            f"AdaptiveKLController(kl_coef={self.value:g}, target={self.target:g}, "
            f"horizon={self.horizon:g})"
        )
