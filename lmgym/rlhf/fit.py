"""The one AdamW training loop of SFT, the reward model, DPO and pre-training.

:func:`fit` runs ``loss_fn`` over batches with AdamW (weight decay on matrices only, as GPT-2
and nanoGPT do), a warm-up then linear or cosine decay (InstructGPT's SFT and RM stages use the
linear one), global gradient-norm clipping and a progress bar; the stages differ only in their
batches and their loss. :func:`shuffled_batches` is the seeded batch order the RLHF stages
share, and :func:`save_model_dir` their atomic save of a model directory that
``lmgym.load_model`` (or ``AutoModelForSequenceClassification``) loads.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

__all__ = [
    "fit",
    "n_batches",
    "resolve_out",
    "save_model_dir",
    "shuffled_batches",
]

logger = logging.getLogger(__name__)

B = TypeVar("B")


def fit(
    model: torch.nn.Module,
    batches: Iterable[B],
    loss_fn: Callable[[B], torch.Tensor],
    *,
    total_steps: int,
    lr: float,
    weight_decay: float,
    max_grad_norm: float,
    warmup_steps: int = 0,
    warmup_fraction: float | None = None,
    schedule: Literal["linear", "cosine"] = "linear",
    betas: tuple[float, float] = (0.9, 0.999),
    desc: str = "fit",
    progress: bool = True,
) -> list[float]:
    """Train ``model`` for ``total_steps`` steps of ``loss_fn`` on ``batches``; the step losses.

    Each step: forward and backward through ``loss_fn(batch)``, clip the gradients' global L2
    norm to ``max_grad_norm``, step AdamW (weight decay on matrices only, as GPT-2 and nanoGPT
    do) and the schedule (``warmup_steps``, or ``warmup_fraction`` of the steps, of linear
    warm-up, then a ``linear`` or ``cosine`` decay to 0), clear the gradients. ``batches`` may
    be endless (only ``total_steps`` are drawn). The model is in train mode while it trains and
    in eval mode afterwards. ``desc`` labels the progress bar and the log line.

    Example:
        >>> layer = torch.nn.Linear(1, 1)
        >>> x = torch.ones(4, 1)
        >>> losses = fit(layer, itertools.repeat(x), lambda b: (layer(b) - 3).pow(2).mean(),
        ...              total_steps=50, lr=0.1, weight_decay=0.0, max_grad_norm=1.0,
        ...              progress=False)
        >>> len(losses), losses[-1] < losses[0]
        (50, True)
    """
    if warmup_fraction is not None:
        warmup_steps = int(warmup_fraction * total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=betas,
    )
    make_schedule: Callable[..., torch.optim.lr_scheduler.LambdaLR] = (
        get_cosine_schedule_with_warmup if schedule == "cosine" else get_linear_schedule_with_warmup
    )
    scheduler = make_schedule(optimizer, warmup_steps, max(total_steps, 1))
    losses: list[float] = []
    model.train()
    with tqdm(total=total_steps, desc=desc, disable=not progress) as bar:
        for batch in itertools.islice(batches, total_steps):
            loss = loss_fn(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
    model.eval()
    if losses:
        logger.info("%s: %d steps, mean loss of the last 50 %.4f", desc, len(losses),
                    np.mean(losses[-50:]))  # fmt: skip
    return losses


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
    from lmgym.models.pretrain import save_model_dir_atomically

    was_training = model.training
    model.eval()
    save_model_dir_atomically(out, model, tokenizer, summary)
    model.train(was_training)
    logger.info("saved %s", out)
    return out
