"""The small training loop parts the RLHF stages share: checks, optimizer, batches, saving.

SFT, the reward model and DPO each run a plain AdamW loop with a linear warm-up and decay (the
schedule of InstructGPT's SFT and RM stages), seeded batch order and an atomic save of a model
directory that ``lmgym.load_model`` (or ``AutoModelForSequenceClassification``) loads.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from lmgym.models.pretrain import save_model_dir_atomically

__all__ = [
    "check_fraction",
    "check_int",
    "check_positive",
    "make_optimizer",
    "n_batches",
    "resolve_out",
    "save_model_dir",
    "shuffled_batches",
]


def check_int(name: str, value: object, *, minimum: int) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= ``minimum``.

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


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite number > 0 (or >= 0).

    Example:
        >>> check_positive("lr", float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: lr=nan must be a finite number > 0.
    """
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        raise ValueError(
            f"{name}={value!r} must be a finite number {'>=' if allow_zero else '>'} 0."
        )


def check_fraction(name: str, value: object) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` lies in [0, 1).

    Example:
        >>> check_fraction("warmup_fraction", 1.0)
        Traceback (most recent call last):
        ...
        ValueError: warmup_fraction=1.0 must lie in [0, 1), e.g. warmup_fraction=0.1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r} must lie in [0, 1), e.g. {name}=0.1.")


def make_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float,
    total_steps: int,
    warmup_fraction: float,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decay on matrices only, as GPT-2 and nanoGPT do) plus linear warm-up and decay.

    Example:
        >>> opt, sched = make_optimizer(torch.nn.Linear(2, 2), lr=1e-3, weight_decay=0.0,
        ...                             total_steps=10, warmup_fraction=0.1)
        >>> sched.get_last_lr()
        [0.0, 0.0]
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    warmup = int(warmup_fraction * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


def shuffled_batches(n: int, batch_size: int, epochs: int, seed: int) -> Iterator[list[int]]:
    """Indices ``0..n-1`` in batches, reshuffled every epoch by a generator seeded with ``seed``.

    The last batch of an epoch may be smaller.

    Example:
        >>> list(shuffled_batches(3, 2, epochs=1, seed=0))
        [[2, 0], [1]]
    """
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def n_batches(n: int, batch_size: int, epochs: int) -> int:
    """How many batches :func:`shuffled_batches` yields.

    Example:
        >>> n_batches(5, 2, epochs=3)
        9
    """
    return epochs * math.ceil(n / batch_size)


def resolve_out(out: str | Path | None, stage: str) -> Path:
    """``out`` as a Path, or a new temporary directory named after ``stage`` when ``None``.

    Example:
        >>> resolve_out("runs/sft", "sft")
        PosixPath('runs/sft')
    """
    if out is None:
        return Path(tempfile.mkdtemp(prefix=f"lmgym-{stage}-")) / "model"
    return Path(out)


def save_model_dir(
    out: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    summary: dict[str, Any],
) -> Path:
    """Save model, tokenizer and ``training_summary.json`` to ``out`` atomically; return ``out``.

    ``out`` ends up either the old or the new directory, never a half-written one.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR, load_tokenizer
        >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=239, n_layer=1, n_embd=8, n_head=2))
        >>> out = save_model_dir(Path(tempfile.mkdtemp()) / "m", model,
        ...                      load_tokenizer(DEFAULT_MODEL_DIR), {"stage": "example"})
        >>> (out / "training_summary.json").is_file(), (out / "model.safetensors").is_file()
        (True, True)
    """
    was_training = model.training
    model.eval()
    save_model_dir_atomically(out, model, tokenizer, summary)
    model.train(was_training)
    return out
