"""Supervised fine-tuning (SFT) on demonstrations: the first stage of the RLHF recipe.

The model learns ``log π(response | prompt)`` by teacher forcing, with the loss on the response
tokens only (and the EOS that ends them): the prompt is context, not something to imitate
(Ouyang et al. 2022, section 3.5).

Demonstrations come from simulated demonstrators (:func:`make_demonstrations`): for each prompt,
the best of ``n_candidates`` samples of the base LM under the labeler's hidden true score, among
those that finished with EOS. Best-of-n keeps the demonstrations on the prompts and in the
model's own style (grammar, length) while moving them towards the preference, which is what
human demonstrators of the same task would write.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.models.generation import DecodingConfig
from lmgym.models.loading import DEFAULT_MODEL_DIR, disable_dropout, load_model
from lmgym.rlhf.labelers import BradleyTerryLabeler
from lmgym.rlhf.rankings import sample_completions
from lmgym.rlhf.training import (
    check_fraction,
    check_int,
    check_positive,
    make_optimizer,
    n_batches,
    resolve_out,
    save_model_dir,
    shuffled_batches,
)
from lmgym.seeding import set_seed

__all__ = ["SFTConfig", "encode_demonstrations", "make_demonstrations", "run_sft", "sft_loss"]

IGNORE_INDEX = -100
"""Label of positions the loss skips (prompt and padding), as Hugging Face models expect."""

ScoreFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclass
class SFTConfig:
    """How the SFT stage trains; the CLI is built from these fields.

    Attributes:
        out: Directory the fine-tuned model is saved to; None writes a new temporary directory.
        epochs: Passes over the demonstrations.
        lr: Peak AdamW learning rate.
        batch_size: Demonstrations per optimizer step.
        weight_decay: AdamW weight decay on weight matrices.
        warmup_fraction: Fraction of the steps with a linear warm-up; the rate then decays
            linearly to 0.
        max_grad_norm: Gradients are clipped to this global L2 norm.
        append_eos: End each response with EOS, so the model also learns where to stop.
        seed: Seeds the batch order.
        progress: Show a progress bar.
    """

    out: Path | None = None
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    append_eos: bool = True
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out is not None:
            self.out = Path(self.out)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("seed", self.seed, minimum=0)
        check_positive("lr", self.lr)
        check_positive("max_grad_norm", self.max_grad_norm)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_fraction("warmup_fraction", self.warmup_fraction)


def make_demonstrations(
    model_dir: str | Path | PreTrainedModel,
    prompts: Sequence[str],
    labeler_or_score: BradleyTerryLabeler | ScoreFn,
    n_candidates: int = 8,
    seed: int = 0,
    *,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    decoding: DecodingConfig | None = None,
) -> list[tuple[str, str]]:
    """Simulated demonstrations: per prompt, the best of ``n_candidates`` samples of the LM.

    "Best" is the highest hidden true score (noise-free) among the candidates that ended with
    EOS within the length limit; when none did, among all of them. A prompt listed n times
    gives n demonstrations.

    Args:
        model_dir: The base LM: a directory, or a model object (then pass ``tokenizer``).
        prompts: Prompt texts, e.g. ``lmgym.models.corpus.prompts("train")``.
        labeler_or_score: A :class:`~lmgym.rlhf.labelers.BradleyTerryLabeler` (its ``score``)
            or a function ``score(prompts, completions) -> (B,)``.
        n_candidates: Samples per prompt to pick the best from (1 = plain samples).
        seed: Seeds the sampling.
        tokenizer: The LM's tokenizer, when ``model_dir`` is a model object.
        decoding: How to sample; ``None`` samples at temperature 1 with 16 new tokens.

    Returns:
        ``(prompt, response)`` text pairs, one per prompt, in order.

    Example:
        >>> from lmgym.rlhf.labelers import true_score
        >>> demos = make_demonstrations(DEFAULT_MODEL_DIR, ["the soup was"], true_score, 4)
        >>> demos[0][0]
        'the soup was'
    """
    check_int("n_candidates", n_candidates, minimum=1)
    if not prompts:
        raise ValueError("prompts is empty; expected at least one prompt to demonstrate on.")
    score = (
        labeler_or_score.score
        if isinstance(labeler_or_score, BradleyTerryLabeler)
        else labeler_or_score
    )
    if not callable(score):
        raise TypeError(
            f"labeler_or_score={labeler_or_score!r:.80} is neither a BradleyTerryLabeler nor a "
            "function score(prompts, completions) -> one float per pair."
        )
    model, tok = load_model(model_dir, tokenizer)
    set_seed(seed)
    repeated = [prompt for prompt in prompts for _ in range(n_candidates)]
    texts, finished = sample_completions(model, tok, repeated, decoding or DecodingConfig())
    scores = np.asarray(score(repeated, texts), dtype=np.float64).reshape(len(prompts), -1)
    done = finished.numpy().reshape(len(prompts), -1)
    # Unfinished candidates rank below every finished one; argmax keeps the first of ties.
    ranked = np.where(done | ~done.any(1, keepdims=True), scores, -np.inf)
    best = ranked.argmax(1)
    return [
        (prompt, texts[i * n_candidates + int(b)])
        for i, (prompt, b) in enumerate(zip(prompts, best, strict=True))
    ]


def encode_demonstrations(
    tokenizer: PreTrainedTokenizerBase,
    demonstrations: Sequence[tuple[str, str]],
    *,
    append_eos: bool = True,
) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels of each demonstration; labels are ``-100`` on the prompt.

    The prompt is encoded as the envs encode it (with BOS), the response on its own (no
    special tokens), then EOS. For the word-level default tokenizer this equals encoding
    ``prompt + " " + response`` in one go.

    Example:
        >>> from lmgym.models.loading import load_tokenizer
        >>> tok = load_tokenizer(DEFAULT_MODEL_DIR)
        >>> ids, labels = encode_demonstrations(tok, [("the soup was", "great .")])[0]
        >>> labels[:4], tok.decode(labels[4:])
        ([-100, -100, -100, -100], 'great . <eos>')
    """
    encoded = []
    for prompt, response in demonstrations:
        prompt_ids = tokenizer(prompt)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        if append_eos:
            response_ids = [*response_ids, tokenizer.eos_token_id]
        ids = [*prompt_ids, *response_ids]
        encoded.append((ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids))
    return encoded


def sft_loss(
    model: PreTrainedModel, rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int
) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of a batch (right-padded, one forward pass).

    Example:
        >>> model, tok = load_model(DEFAULT_MODEL_DIR)
        >>> rows = encode_demonstrations(tok, [("the soup was", "great .")])
        >>> sft_loss(model, rows, tok.pad_token_id).item() > 0
        True
    """
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.as_tensor(ids)
        labels[i, : len(ids)] = torch.as_tensor(row_labels)
        mask[i, : len(ids)] = 1
    # HF shifts the labels inside: position t's logits are scored against labels[t + 1].
    return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss


def run_sft(
    config: SFTConfig,
    demonstrations: Sequence[tuple[str, str]],
    model_dir: str | Path | PreTrainedModel = DEFAULT_MODEL_DIR,
    *,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
) -> Path:
    """Fine-tune the LM on ``(prompt, response)`` demonstrations; return the saved model's dir.

    A model object passed as ``model_dir`` is trained in place (and saved).

    Args:
        config: Training settings.
        demonstrations: ``(prompt, response)`` text pairs (:func:`make_demonstrations`).
        model_dir: The LM to start from: a directory or a model object.
        tokenizer: The LM's tokenizer, when ``model_dir`` is a model object.

    Returns:
        The directory the model, tokenizer and ``training_summary.json`` were saved to; it
        loads with ``lmgym.load_model``.

    Raises:
        ValueError: ``demonstrations`` is empty or holds an empty response.

    Example:
        >>> import tempfile
        >>> out = run_sft(SFTConfig(out=tempfile.mkdtemp(), epochs=1, progress=False),
        ...               [("the soup was", "great ."), ("the staff were", "friendly .")])
        >>> (out / "model.safetensors").is_file()
        True
    """
    started = time.perf_counter()
    if not demonstrations:
        raise ValueError(
            "demonstrations is empty; expected (prompt, response) text pairs, e.g. from "
            "make_demonstrations(model_dir, prompts, labeler)."
        )
    for index, pair in enumerate(demonstrations):
        if not (
            isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(t, str) for t in pair)
        ):
            raise TypeError(
                f"demonstrations[{index}]={pair!r:.80} is not a (prompt, response) pair of str."
            )
        if not pair[1].strip() and not config.append_eos:
            raise ValueError(
                f"demonstrations[{index}] has an empty response for prompt {pair[0]!r:.60} and "
                "append_eos=False, so it has no token to learn; drop it or set append_eos=True."
            )
    model, tok = load_model(model_dir, tokenizer)
    disable_dropout(model)
    rows = encode_demonstrations(tok, demonstrations, append_eos=config.append_eos)
    set_seed(config.seed)
    total = n_batches(len(rows), config.batch_size, config.epochs)
    optimizer, scheduler = make_optimizer(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        total_steps=total,
        warmup_fraction=config.warmup_fraction,
    )
    losses: list[float] = []
    model.train()
    bar = tqdm(total=total, desc="sft", disable=not config.progress)
    for batch in shuffled_batches(len(rows), config.batch_size, config.epochs, config.seed):
        loss = sft_loss(model, [rows[i] for i in batch], int(tok.pad_token_id))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    out = resolve_out(config.out, "sft")
    per_epoch = total // config.epochs
    summary = {
        "stage": "sft",
        "config": {**dataclasses.asdict(config), "out": str(out)},
        "n_demonstrations": len(rows),
        "first_epoch_loss": float(np.mean(losses[:per_epoch])),
        "final_epoch_loss": float(np.mean(losses[-per_epoch:])),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return save_model_dir(out, model, tok, summary)
