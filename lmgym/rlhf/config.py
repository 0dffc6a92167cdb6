"""The RLHF stages' configs and the one way they validate themselves.

Every stage (SFT, reward model, DPO, PPO on the reward model) is a frozen config dataclass plus a
function ``run(config, inputs, out) -> StageResult``. A config checks itself in ``__post_init__``
through one mechanism, :class:`StageConfig`:

1. every field declares its check where it is declared (:func:`integer`, :func:`number`,
   :func:`fraction`, :func:`choice`, :func:`model_dir`, :func:`path`), so a config built from
   several classes checks every field of every class, and no check can be left out by a
   sub-class that forgets to call its parents;
2. then each class in the hierarchy that defines ``_validate`` (rules across fields) runs it,
   base classes first, found by the base class rather than chained by hand.

Every error names the parameter, the value given, what was expected and how to fix it. This
module imports nothing heavy (no torch), so ``lmgym sft --help`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DtypeName",
    "DPOConfig",
    "OptimizerOptions",
    "PPOStageConfig",
    "RewardModelConfig",
    "SFTConfig",
    "StageConfig",
    "StageResult",
    "check_fraction",
    "check_int",
    "check_positive",
    "check_device_dtype",
    "checked",
    "choice",
    "device",
    "dtype",
    "fraction",
    "integer",
    "model_dir",
    "number",
    "path",
]

Check = Callable[[str, Any], Any]


def check_int(name: str, value: object, *, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum``, else a ValueError naming ``name``.

    Example:
        >>> check_int("epochs", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: epochs=0 is not an int >= 1; pass one, e.g. epochs=1.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{name}={value!r} is not an int >= {minimum}; pass one, e.g. {name}={max(minimum, 1)}."
        )
    return value


def check_positive(
    name: str, value: object, *, allow_zero: bool = False, example: float | None = None
) -> float:
    """``value`` if it is a finite number > 0 (or >= 0), else a ValueError naming ``name``.

    Example:
        >>> check_positive("lr", float("nan"), example=1e-3)
        Traceback (most recent call last):
        ...
        ValueError: lr=nan must be a finite number > 0; pass one, e.g. lr=0.001.
    """
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        fix = f"; pass one, e.g. {name}={example!r}" if example is not None else ""
        raise ValueError(
            f"{name}={value!r} must be a finite number {'>=' if allow_zero else '>'} 0{fix}."
        )
    return value  # type: ignore[return-value]


def check_fraction(name: str, value: object) -> float:
    """``value`` if it lies in [0, 1), else a ValueError naming ``name``.

    Example:
        >>> check_fraction("warmup_fraction", 1.0)
        Traceback (most recent call last):
        ...
        ValueError: warmup_fraction=1.0 must lie in [0, 1), e.g. warmup_fraction=0.1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r} must lie in [0, 1), e.g. {name}=0.1.")
    return value


def checked(default: Any, check: Check) -> Any:
    """A field validated by ``check(name, value) -> value to store`` when a config is built.

    Example:
        >>> def even(name, value):
        ...     if value % 2:
        ...         raise ValueError(f"{name}={value!r} is odd; pass an even number, e.g. 2.")
        ...     return value
        >>> @dataclass(frozen=True)
        ... class C(StageConfig):
        ...     n: int = checked(2, even)
        >>> C(n=3)
        Traceback (most recent call last):
        ...
        ValueError: n=3 is odd; pass an even number, e.g. 2.
    """
    return dataclasses.field(default=default, metadata={"check": check})


def integer(default: Any = dataclasses.MISSING, *, minimum: int = 1, optional: bool = False) -> Any:
    """A field that must be an int >= ``minimum`` (or None, with ``optional``).

    Example:
        >>> @dataclass(frozen=True)
        ... class C(StageConfig):
        ...     steps: int = integer(8)
        >>> C(steps=0)
        Traceback (most recent call last):
        ...
        ValueError: steps=0 is not an int >= 1; pass one, e.g. steps=1.
    """

    def check(name: str, value: Any) -> Any:
        return None if optional and value is None else check_int(name, value, minimum=minimum)

    return checked(default, check)


def number(default: float, *, allow_zero: bool = False) -> Any:
    """A field that must be a finite number > 0 (>= 0 with ``allow_zero``)."""
    example = default if default or allow_zero else None
    return checked(
        default,
        lambda name, value: check_positive(name, value, allow_zero=allow_zero, example=example),
    )


def fraction(default: float) -> Any:
    """A field that must lie in [0, 1)."""
    return checked(default, check_fraction)


def choice(default: str, *options: str) -> Any:
    """A field that must be one of ``options`` (its type is the matching ``Literal``)."""

    def check(name: str, value: Any) -> Any:
        if value not in options:
            expected = " or ".join(repr(o) for o in options)
            raise ValueError(
                f"{name}={value!r} is unknown; expected {expected}, e.g. {name}={default!r}."
            )
        return value

    return checked(default, check)


def device(default: str = "cpu") -> Any:
    """A field naming where models run: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    The name is checked here; a device other than the CPU is also checked to exist on this
    machine (importing torch then, not when a parser is built).

    Example:
        >>> @dataclass(frozen=True)
        ... class C(StageConfig):
        ...     device: str = device()
        >>> C(device="tpu")
        Traceback (most recent call last):
        ...
        ValueError: device='tpu' is not a device; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', e.g. device='cpu'.
    """  # noqa: E501 - a doctest traceback line cannot be wrapped

    def check(name: str, value: Any) -> Any:
        if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(
                f"{name}={value!r} is not a device; expected 'auto', 'cpu', 'cuda', 'cuda:N' or "
                f"'mps', e.g. {name}='cpu'."
            )
        if value != "cpu":
            from lmgym.models.device import resolve_device  # torch: only for a device to find

            resolve_device(value, name)
        return value

    return checked(default, check)


DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
"""The precisions a stage's frozen models (the KL reference, the reward model) run in."""


def dtype(default: DtypeName = "auto") -> Any:
    """A field naming a precision: ``auto``, ``float32``, ``bfloat16`` or ``float16``.

    Whether the stage's device can run it is a rule across fields: :func:`check_device_dtype`.
    """
    return choice(default, "auto", "float32", "bfloat16", "float16")


def check_device_dtype(device_name: str, dtype_name: str) -> None:
    """Refuse a ``dtype`` that ``device`` cannot run (float16 on the CPU), before any work.

    torch is imported only off the defaults (``cpu`` and ``auto``, float32 on the CPU).

    Example:
        >>> check_device_dtype("cpu", "float16")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: dtype='float16' cannot run on device 'cpu': CPU kernels for float16 are ...
    """
    if (device_name, dtype_name) == ("cpu", "auto"):
        return
    from lmgym.models.device import resolve_device, resolve_dtype

    resolve_dtype(dtype_name, resolve_device(device_name))


def path(default: Any = None) -> Any:
    """A field holding a filesystem location (a str given is stored as a Path; None stays)."""
    return checked(default, lambda name, value: None if value is None else Path(value))


def model_dir(default: Any = dataclasses.MISSING) -> Any:
    """A field naming a saved model directory: checked to hold one (``config.json``), as a Path.

    None (where allowed) stays None. Errors are :class:`lmgym.error.ModelLoadError` naming the
    field.
    """

    def check(name: str, value: Any) -> Any:
        if value is None:
            return None
        from lmgym.models.loading import require_model_dir  # torch: only when a config is built

        require_model_dir(Path(value), name)
        return Path(value)

    return checked(default, check)


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """Base of every RLHF config: runs each field's check, then each class's ``_validate``.

    A check returns the value to store (a str path becomes a Path), so a frozen config is
    normalised once, here. Sub-classes declare checks on their fields and may define
    ``_validate(self)`` for rules across fields; they never override ``__post_init__``.
    """

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            if check is not None:
                object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))
        for klass in reversed(type(self).__mro__):
            rule = vars(klass).get("_validate")
            if rule is not None:
                rule(self)

    def _set(self, name: str, value: Any) -> None:
        """Store a value a ``_validate`` rule derived (the config is frozen)."""
        object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy: paths as strings."""
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class StageResult:
    """What a stage produced.

    Attributes:
        path: The saved model's directory (``lmgym.load_model`` or the reward model loads it).
        metrics: The stage's figures, JSON-ready (also in the model's ``training_summary.json``).
        history: Per-step (or per-rollout) curves, JSON-ready lists of equal length.
    """

    path: Path
    metrics: dict[str, Any]
    history: dict[str, list[Any]]


@dataclass(frozen=True, kw_only=True)
class OptimizerOptions(StageConfig):
    """How the AdamW stages (SFT, reward model, DPO) train.

    Attributes:
        epochs: Passes over the training data.
        lr: Peak AdamW learning rate.
        batch_size: Examples per optimizer step.
        weight_decay: AdamW weight decay on weight matrices.
        warmup_fraction: Fraction of the steps with a linear warm-up; the rate then decays
            linearly to 0.
        max_grad_norm: Gradients are clipped to this global L2 norm.
        seed: Seeds the batch order.
        progress: Show a progress bar.
        device: Where the stage trains: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or
            mps. Sampling the simulated data and the command's before/after evaluation run on
            the CPU.
    """

    epochs: int = integer(2)
    lr: float = number(1e-3)
    batch_size: int = integer(16)
    weight_decay: float = number(0.0, allow_zero=True)
    warmup_fraction: float = fraction(0.05)
    max_grad_norm: float = number(1.0)
    seed: int = integer(0, minimum=0)
    progress: bool = True
    device: str = device()


@dataclass(frozen=True, kw_only=True)
class SFTConfig(OptimizerOptions):
    """How the SFT stage trains; the CLI is built from these fields.

    Attributes:
        epochs: Passes over the demonstrations.
        batch_size: Demonstrations per optimizer step.
        append_eos: End each response with EOS, so the model also learns where to stop.

    Example:
        >>> SFTConfig(epochs=0)
        Traceback (most recent call last):
        ...
        ValueError: epochs=0 is not an int >= 1; pass one, e.g. epochs=1.
    """

    epochs: int = integer(3)
    append_eos: bool = True


@dataclass(frozen=True, kw_only=True)
class RewardModelConfig(OptimizerOptions):
    """How the reward model is trained; the CLI is built from these fields.

    Attributes:
        epochs: Passes over the training rankings.
        batch_size: Rankings per optimizer step; each brings its K completions (one row each).
        heldout_fraction: Fraction of the distinct prompts whose rankings are held out to
            measure accuracy, when no held-out rankings are passed.
        eval_batch_size: Rankings per forward pass when evaluating.
        seed: Seeds the head's initialisation, the held-out split and the batch order.
    """

    batch_size: int = integer(8)
    heldout_fraction: float = fraction(0.2)
    eval_batch_size: int = integer(64)


@dataclass(frozen=True, kw_only=True)
class DPOConfig(OptimizerOptions):
    """How the DPO stage trains; the CLI is built from these fields.

    Attributes:
        beta: β > 0 of the DPO loss: the implicit KL coefficient (smaller moves further from the
            reference).
        lr: Peak AdamW learning rate.
        epochs: Passes over the preference pairs.
        batch_size: Texts (forward rows) per optimizer step, roughly: whole groups of pairs
            that share texts (a ranking's K completions) are added until a batch has this many.
        ref_batch_size: Texts per forward pass when the reference log-probs are computed (once,
            before training).
    """

    beta: float = number(0.1)
    lr: float = number(3e-4)
    batch_size: int = integer(64)
    ref_batch_size: int = integer(256)


@dataclass(frozen=True, kw_only=True)
class PPOStageConfig(StageConfig):
    """One PPO run against the learned reward model.

    Attributes:
        steps: Env steps (completions) PPO trains for.
        kl_coef: β of the KL penalty to the SFT model (the initial policy).
        ptx_coef: γ of PPO-ptx's pre-training loss; 0 is plain PPO.
        n_envs: Envs stepped as one batch.
        n_steps: Steps per env in a rollout (a rollout is n_envs × n_steps completions).
        batch_size: Completions per PPO minibatch.
        n_epochs: PPO epochs over each rollout.
        learning_rate: Adam learning rate of the policy.
        ptx_batch_size: Pre-training documents per minibatch step (PPO-ptx only).
        max_new_tokens: Length limit of a completion, in tokens.
        seed: Seeds the env's prompts, the sampling and PPO.
        progress: Show a progress bar.
        device: Where the policy, the env's reference and the reward model run: auto (CUDA,
            else MPS, else CPU), cpu, cuda, cuda:N or mps.
        dtype: Precision of the env's reference and the reward model (the trained policy stays
            float32). auto: bfloat16 on a GPU that has it, else float32.

    Example:
        >>> PPOStageConfig(steps=8)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: steps=8 is less than one rollout (n_envs × n_steps = 128); ...
    """

    steps: int = integer(2048)
    kl_coef: float = number(0.05, allow_zero=True)
    ptx_coef: float = number(0.0, allow_zero=True)
    n_envs: int = integer(16)
    n_steps: int = integer(8)
    batch_size: int = integer(64)
    n_epochs: int = integer(2)
    learning_rate: float = number(3e-4)
    ptx_batch_size: int = integer(16)
    max_new_tokens: int = integer(16)
    seed: int = integer(0, minimum=0)
    progress: bool = True
    device: str = device()
    dtype: DtypeName = dtype()

    def _validate(self) -> None:
        check_device_dtype(self.device, self.dtype)
        rollout = self.n_envs * self.n_steps
        if rollout % self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} does not divide a rollout of n_envs × n_steps = "
                f"{rollout} completions; pick a divisor, e.g. batch_size={rollout}."
            )
        if self.steps < rollout:
            raise ValueError(
                f"steps={self.steps} is less than one rollout (n_envs × n_steps = {rollout}); "
                f"train for at least steps={rollout}."
            )
        if self.kl_coef == 0:
            warnings.warn(
                "kl_coef=0: PPO trains without a KL penalty, so nothing keeps the policy near "
                "the SFT model and it is free to over-optimise the reward model; pass e.g. "
                "kl_coef=0.05 unless that is the point.",
                stacklevel=3,
            )
