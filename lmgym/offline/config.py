"""The ILQL stage's config: the loss's coefficients, the targets' averaging and the optimiser.

It is an RLHF stage config (:class:`lmgym.rlhf.config.OptimizerOptions`: epochs, lr,
batch size, ... validated when built), so ``lmgym ilql`` builds its options from it. This
module imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lmgym.rlhf.config import OptimizerOptions, checked, integer, number

__all__ = ["ILQLConfig"]


def _open_unit(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(
            f"{name}={value!r} must lie in (0, 1), e.g. {name}=0.7: the expectile of V "
            "(0.5 is the mean, values near 1 approach the best action in the data)."
        )
    return value


def _unit(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r} must lie in [0, 1], e.g. {name}=1.0.")
    return value


def _rate(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"{name}={value!r} must lie in (0, 1], e.g. {name}=0.05: the share of the Q heads "
            "the target heads take at each step (1 copies them)."
        )
    return value


def _beta(name: str, value: Any) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0:
        raise ValueError(
            f"{name}={value!r} must be a finite number >= 0: decoding adds {name} * (Q - V) to "
            f"the LM's logits, and 0 decodes as the LM does; pass e.g. {name}=4.0."
        )
    return float(value)


@dataclass(frozen=True, kw_only=True)
class ILQLConfig(OptimizerOptions):
    """How ILQL trains (Snell et al. 2022); the CLI is built from these fields.

    The loss is ``L_Q + L_V + cql_alpha · L_CQL + bc_coef · L_BC`` (lmgym.offline.losses).

    Attributes:
        tau: Expectile τ in (0, 1) of V's regression onto the target Q (0.7, as in IQL and
            ILQL): above 0.5 V leans towards the best logged token.
        gamma: Discount γ in [0, 1] between the tokens of one episode; 1: the episodes are
            short and pay at their end.
        cql_alpha: Weight α >= 0 of the CQL term, which keeps Q low on tokens the data never
            took.
        bc_coef: Weight >= 0 of the behaviour-cloning (cross-entropy) term on the LM head: the
            LM stays the data's policy π_β that decoding re-weights.
        polyak_rate: Share of the Q heads the target Q heads take each step, in (0, 1]; larger
            than the papers' 0.005 because these runs are hundreds, not many thousands, of
            steps.
        two_qs: Twin Q heads; the minimum of their targets is used.
        beta: β >= 0 of decoding saved with the model: the logits move by β·(Q − V).
        epochs: Passes over the episodes.
        lr: Peak AdamW learning rate of the LM and the heads.
        batch_size: Episodes per optimizer step.

    Example:
        >>> ILQLConfig(tau=1.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: tau=1.0 must lie in (0, 1), e.g. tau=0.7: the expectile of V ...
    """

    tau: float = checked(0.7, _open_unit)
    gamma: float = checked(1.0, _unit)
    cql_alpha: float = number(0.1, allow_zero=True)
    bc_coef: float = number(1.0, allow_zero=True)
    polyak_rate: float = checked(0.05, _rate)
    two_qs: bool = True
    beta: float = checked(4.0, _beta)
    epochs: int = integer(4)
    lr: float = number(5e-4)
    batch_size: int = integer(32)
