"""Pre-train the embedded default model: ``python -m lmgym.models.pretrain --out DIR``.

It generates the review corpus (:mod:`lmgym.models.corpus`), builds the word-level tokenizer
(:mod:`lmgym.models.tokenizer`), trains a small GPT-2 on ``<bos> review <eos>`` documents and
saves model, tokenizer and a ``training_summary.json`` to ``DIR``, atomically. The shipped
``lmgym/models/default`` is this script's output with its defaults (``make pretrain``); nothing is
ever downloaded.

Threads: on the 2-core machine this was written on, a training step of the default model took
0.13-0.14 s with ``torch.set_num_threads(1)``, steadily. With 2 threads it took 0.09 s while the
other core was idle but 1-2 s whenever another process ran, so ``num_threads`` defaults to 1
(docs/design.md, section 6). The defaults train in about 6-9 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmgym.config_cli import add_dataclass_arguments, dataclass_from_args
from lmgym.models.corpus import generate_corpus
from lmgym.models.tokenizer import build_tokenizer, save_tokenizer
from lmgym.rlhf.fit import fit
from lmgym.seeding import set_seed

__all__ = [
    "PretrainConfig",
    "encode_documents",
    "held_out_perplexity",
    "main",
    "pretrain",
    "save_model_dir_atomically",
]


@dataclass
class PretrainConfig:
    """Everything that decides the pre-trained default model; the CLI is built from these fields.

    Attributes:
        out: Directory to save the model, tokenizer and training summary to. It is replaced
            atomically: written next to it first, then renamed into place.
        seed: Seed of the training corpus, the weight initialisation and the batch order.
        eval_seed: Seed of the held-out corpus the final perplexity is measured on; must differ
            from seed.
        steps: Number of optimizer steps.
        batch_size: Reviews per step.
        learning_rate: Peak AdamW learning rate, reached after the warm-up.
        warmup_steps: Steps of linear warm-up from 0 to the peak learning rate.
        schedule: Decay after the warm-up, down to 0 at the last step: cosine or linear.
        weight_decay: AdamW weight decay, applied to weight matrices only (not biases or norms).
        max_grad_norm: Gradients are clipped to this global L2 norm.
        train_docs: Number of generated training reviews (>= batch_size); sampled without
            replacement, epoch by epoch.
        eval_docs: Number of held-out reviews for the final perplexity.
        max_words: Longest review in words; a review plus <bos> and <eos> must fit n_positions.
        n_layer: Transformer blocks.
        n_head: Attention heads per block; must divide n_embd.
        n_embd: Width of the residual stream.
        n_positions: Longest sequence the model takes, in tokens (prompt plus completion).
        num_threads: torch intra-op threads. 1 is steady on 2 CPU cores; 2 is faster only while
            nothing else runs (see the module docstring).
        progress: Show a progress bar.
    """

    out: Path
    seed: int = 0
    eval_seed: int = 1
    steps: int = 2500
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear"] = "cosine"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    train_docs: int = 100_000
    eval_docs: int = 2_000
    max_words: int = 40
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    n_positions: int = 64
    num_threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("seed", "eval_seed", "warmup_steps"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in (
            "steps", "batch_size", "train_docs", "eval_docs", "n_layer", "n_head", "n_embd",
            "num_threads",
        ):  # fmt: skip
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("max_words", self.max_words, minimum=8)
        _check_int("n_positions", self.n_positions, minimum=1)
        if self.n_positions < self.max_words + 2:
            raise ValueError(
                f"n_positions={self.n_positions} is too small for max_words={self.max_words}: a "
                f"review plus <bos> and <eos> needs {self.max_words + 2} positions. Raise "
                "n_positions or lower max_words."
            )
        if self.train_docs < self.batch_size:
            raise ValueError(
                f"train_docs={self.train_docs} is smaller than batch_size={self.batch_size}; "
                "expected at least one full batch of reviews. Raise train_docs or lower "
                "batch_size."
            )
        if self.eval_seed == self.seed:
            raise ValueError(
                f"eval_seed={self.eval_seed} equals seed={self.seed}; the held-out corpus must "
                "differ from the training corpus. Pass a different eval_seed, e.g. seed + 1."
            )
        if self.warmup_steps >= self.steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} is not below steps={self.steps}; expected a "
                "warm-up shorter than training, e.g. warmup_steps=steps // 10."
            )
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; every head "
                "gets n_embd // n_head dimensions. Pick e.g. n_embd=192 with n_head=4."
            )
        for name in ("learning_rate", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be a finite number > 0, e.g. 1e-3.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0, e.g. 0.01.")
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(
                f"schedule={self.schedule!r} is not a known schedule; expected 'cosine' or "
                "'linear'."
            )


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        default = PretrainConfig.__dataclass_fields__[name].default
        raise ValueError(
            f"{name}={value!r} is not an int >= {minimum}; pass one, e.g. the default "
            f"{name}={default!r}."
        )


def encode_documents(
    tokenizer: PreTrainedTokenizerBase, docs: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize reviews as ``<bos> review <eos>``, right-padded into one tensor.

    Args:
        tokenizer: The default tokenizer (its post-processor prepends ``<bos>``).
        docs: Review texts.

    Returns:
        ``(ids, lengths)``: ids of shape (N, L) padded with the pad id, and each row's length.

    Example:
        >>> from lmgym.models.tokenizer import build_tokenizer
        >>> docs = ["we came here .", "the soup was cold ."]
        >>> ids, lengths = encode_documents(build_tokenizer(), docs)
        >>> ids.shape, lengths.tolist()
        (torch.Size([2, 7]), [6, 7])
    """
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    rows = [row + [tokenizer.eos_token_id] for row in tokenizer(list(docs))["input_ids"]]
    lengths = torch.tensor([len(row) for row in rows])
    ids = torch.full((len(rows), int(lengths.max())), tokenizer.pad_token_id, dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
    return ids, lengths


def _length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, bucket_batches: int = 50
) -> Iterator[torch.Tensor]:
    """Endless batches of row indices, epoch after epoch, grouping reviews of similar length.

    Each epoch is shuffled, cut into chunks of ``bucket_batches`` batches, and each chunk is
    sorted by length before it is cut into batches (whose order is shuffled again). Batches then
    carry little padding: this halves the cost of a step on this corpus, whose reviews run from 4
    to 42 tokens.
    """
    n = len(lengths)
    assert n >= batch_size, f"{n} reviews cannot fill a batch of {batch_size}"
    chunk = batch_size * bucket_batches
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, chunk):
            rows = order[start : start + chunk]
            rows = rows[torch.argsort(lengths[rows], stable=True)]
            cut = [
                rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)
            ]
            for index in torch.randperm(len(cut), generator=generator).tolist():
                yield cut[index]


def _batch(
    ids: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of the padded corpus, trimmed to their longest: ids, attention mask, labels."""
    length = int(lengths[rows].max())
    batch_ids = ids[rows, :length]  # (B, T)
    mask = (torch.arange(length)[None, :] < lengths[rows, None]).long()  # (B, T)
    labels = batch_ids.masked_fill(mask == 0, -100)  # no loss on padding
    return batch_ids, mask, labels


@torch.inference_mode()
def held_out_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    docs: Sequence[str],
    *,
    batch_size: int = 64,
) -> float:
    """Per-token perplexity of ``model`` on ``docs`` encoded as ``<bos> review <eos>``.

    Every token after ``<bos>`` is predicted, ``<eos>`` included; the mean is over tokens, not
    documents.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> model, tokenizer = load_default_model()
        >>> held_out_perplexity(model, tokenizer, generate_corpus(50, seed=7)) < 10
        True
    """
    ids, lengths = encode_documents(tokenizer, docs)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(docs), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(docs)))
        batch_ids, mask, labels = _batch(ids, lengths, rows)
        logits = model(input_ids=batch_ids, attention_mask=mask).logits  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], reduction="sum"
        )
        total_nll += float(nll)
        total_tokens += int((labels[:, 1:] != -100).sum())
    return math.exp(total_nll / total_tokens)


def _build_model(config: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        # GPT-2's tanh GELU as torch's fused op: the same function as "gelu_new", faster.
        activation_function="gelu_pytorch_tanh",
        # Dropout off, also in the saved config: PPO's ratio breaks if train mode shifts
        # log-probs (docs/design.md, section 6).
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(model_config)
    model.loss_type = "ForCausalLM"  # what GPT-2 uses anyway; silences transformers' warning
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def save_model_dir_atomically(
    out: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    summary: dict[str, Any],
) -> None:
    """Save a model directory (model, tokenizer, ``training_summary.json``) atomically.

    Everything is written to a temporary sibling of ``out`` and then renamed into place, so a
    run killed while saving leaves the previous model (or none), never a half-written one.
    Used by pre-training and by the RLHF stages.

    Example:
        >>> import tempfile
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR, load_model
        >>> model, tokenizer = load_model(DEFAULT_MODEL_DIR)
        >>> out = Path(tempfile.mkdtemp()) / "copy"
        >>> save_model_dir_atomically(out, model, tokenizer, {"source": "default"})
        >>> (out / "training_summary.json").is_file(), load_model(out)[0].num_parameters()
        (True, 1838016)
    """
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        save_tokenizer(tokenizer, staging)
        (staging / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        # mkdtemp (and safetensors) make private files; a shipped model must be world-readable.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if not out.exists():
            staging.rename(out)
            return
        # A directory cannot be renamed over a non-empty one: retire the old one first, and put
        # it back if the swap fails, so ``out`` is always either the old or the new model.
        retired = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(retired)
        try:
            staging.rename(out)
        except BaseException:
            retired.rename(out)
            raise
        shutil.rmtree(retired)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def pretrain(config: PretrainConfig) -> dict[str, Any]:
    """Train the default model as ``config`` says and save it to ``config.out``.

    Args:
        config: What to train and where to save it.

    Returns:
        The training summary, also written to ``config.out / "training_summary.json"``.

    Example:
        >>> import tempfile
        >>> summary = pretrain(PretrainConfig(
        ...     out=tempfile.mkdtemp(), steps=3, warmup_steps=1, batch_size=8, train_docs=64,
        ...     eval_docs=16, n_layer=1, n_embd=16, n_head=2, progress=False))
        >>> summary["steps"]
        3
    """
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    tokenizer = build_tokenizer(model_max_length=config.n_positions)
    train_ids, train_lengths = encode_documents(
        tokenizer, generate_corpus(config.train_docs, config.seed, max_words=config.max_words)
    )
    eval_docs = generate_corpus(config.eval_docs, config.eval_seed, max_words=config.max_words)
    model = _build_model(config, tokenizer)
    n_parameters = sum(p.numel() for p in model.parameters())
    batches = _length_bucketed_batches(
        train_lengths, config.batch_size, torch.Generator().manual_seed(config.seed)
    )

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:
        batch_ids, mask, labels = _batch(train_ids, train_lengths, rows)
        return model(input_ids=batch_ids, attention_mask=mask, labels=labels).loss

    losses = fit(
        model,
        batches,
        loss_fn,
        total_steps=config.steps,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        warmup_steps=config.warmup_steps,
        schedule=config.schedule,
        betas=(0.9, 0.95),
        desc=f"pretrain {n_parameters / 1e6:.2f}M params",
        progress=config.progress,
    )
    recent_losses = losses[-50:]
    perplexity = held_out_perplexity(model, tokenizer, eval_docs)
    summary: dict[str, Any] = {
        "config": {**dataclasses.asdict(config), "out": str(config.out)},
        "parameters": n_parameters,
        "vocab_size": len(tokenizer),
        "steps": config.steps,
        "final_train_loss": sum(recent_losses) / len(recent_losses),
        "final_train_loss_window": len(recent_losses),
        "held_out_perplexity": perplexity,
        "held_out_docs": config.eval_docs,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    save_model_dir_atomically(config.out, model, tokenizer, summary)
    return summary


# --- CLI built from the dataclass -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one option per :class:`PretrainConfig` field.

    Example:
        >>> build_parser().parse_args(["--out", "m", "--steps", "10"]).steps
        10
    """
    parser = argparse.ArgumentParser(
        prog="python -m lmgym.models.pretrain", description=(__doc__ or "").splitlines()[0]
    )
    add_dataclass_arguments(parser, PretrainConfig)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: parse ``argv``, train, print the summary.

    Example:
        >>> import tempfile
        >>> main(["--out", tempfile.mkdtemp(), "--steps", "2", "--warmup-steps", "0",
        ...       "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--batch-size", "8",
        ...       "--train-docs", "32", "--eval-docs", "8", "--no-progress"])  # doctest: +ELLIPSIS
        saved ...-parameter model to ...
        0
    """
    args = build_parser().parse_args(argv)
    try:
        config = dataclass_from_args(PretrainConfig, args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = pretrain(config)
    print(
        f"saved {summary['parameters']:,}-parameter model to {config.out} "
        f"(final train loss {summary['final_train_loss']:.3f}, held-out perplexity "
        f"{summary['held_out_perplexity']:.3f}, {summary['wall_time_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
