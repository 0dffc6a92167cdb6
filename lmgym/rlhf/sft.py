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

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.models.generation import DecodingConfig
from lmgym.models.loading import DEFAULT_MODEL_DIR, disable_dropout, load_model
from lmgym.rlhf.config import SFTConfig, StageResult, check_int
from lmgym.rlhf.fit import fit, n_batches, resolve_out, save_model_dir, shuffled_batches
from lmgym.rlhf.labelers import BradleyTerryLabeler
from lmgym.rlhf.rankings import sample_completions
from lmgym.seeding import set_seed

__all__ = [
    "SFTConfig",
    "encode_demonstrations",
    "make_demonstrations",
    "response_loss",
    "run_sft",
    "sft_loss",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label of positions the loss skips (prompt and padding), as Hugging Face models expect."""

ScoreFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


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
    logger.info("%d demonstrations, each the best of %d samples", len(prompts), n_candidates)
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
    on = model.device
    # HF shifts the labels inside: position t's logits are scored against labels[t + 1].
    return model(input_ids=input_ids.to(on), attention_mask=mask.to(on), labels=labels.to(on)).loss


def run_sft(
    config: SFTConfig,
    demonstrations: Sequence[tuple[str, str]],
    out: str | Path | None = None,
    *,
    model: str | Path | PreTrainedModel = DEFAULT_MODEL_DIR,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
) -> StageResult:
    """Fine-tune the LM on ``(prompt, response)`` demonstrations and save it to ``out``.

    A model object passed as ``model`` is trained in place (and saved).

    Args:
        config: Training settings.
        demonstrations: ``(prompt, response)`` text pairs (:func:`make_demonstrations`).
        out: Directory to save the model to; ``None``: a new temporary directory.
        model: The LM to start from: a directory or a model object.
        tokenizer: The LM's tokenizer, when ``model`` is a model object.

    Returns:
        A :class:`~lmgym.rlhf.config.StageResult`: the directory the model, tokenizer and
        ``training_summary.json`` were saved to (it loads with ``lmgym.load_model``), the
        first and final epoch's mean loss, and the loss of every step.

    Raises:
        ValueError: ``demonstrations`` is empty or holds an empty response.

    Example:
        >>> import tempfile
        >>> result = run_sft(SFTConfig(epochs=1, progress=False),
        ...                  [("the soup was", "great ."), ("the staff were", "friendly .")],
        ...                  tempfile.mkdtemp())
        >>> (result.path / "model.safetensors").is_file(), len(result.history["loss"])
        (True, 1)
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
    lm, tok = load_model(model, tokenizer, device=config.device)
    disable_dropout(lm)
    rows = encode_demonstrations(tok, demonstrations, append_eos=config.append_eos)
    set_seed(config.seed)
    pad = int(tok.pad_token_id)
    losses = fit(
        lm,
        shuffled_batches(len(rows), config.batch_size, config.epochs, config.seed),
        lambda batch: sft_loss(lm, [rows[i] for i in batch], pad),
        total_steps=n_batches(len(rows), config.batch_size, config.epochs),
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        warmup_fraction=config.warmup_fraction,
        desc="sft",
        progress=config.progress,
    )
    path = resolve_out(out, "sft")
    per_epoch = len(losses) // config.epochs
    metrics = {
        "n_demonstrations": len(rows),
        "first_epoch_loss": float(np.mean(losses[:per_epoch])),
        "final_epoch_loss": float(np.mean(losses[-per_epoch:])),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    summary = {"stage": "sft", "config": {**config.as_dict(), "out": str(path)}, **metrics}
    return StageResult(save_model_dir(path, lm, tok, summary), metrics, {"loss": losses})


def response_loss(
    model: str | Path | PreTrainedModel,
    demonstrations: Sequence[tuple[str, str]],
    *,
    append_eos: bool = True,
    batch_size: int = 64,
) -> float:
    """Mean cross-entropy per response token of ``model`` on demonstrations (e.g. held out).

    Example:
        >>> response_loss(DEFAULT_MODEL_DIR, [("the soup was", "great .")]) > 0
        True
    """
    lm, tok = load_model(model)
    rows = encode_demonstrations(tok, demonstrations, append_eos=append_eos)
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            # HF scores labels[1:] against the logits before them: count those positions.
            n = sum(label != IGNORE_INDEX for _, labels in batch for label in labels[1:])
            total += float(sft_loss(lm, batch, int(tok.pad_token_id))) * n
            tokens += n
    return total / max(tokens, 1)
