"""ILQL training (Snell et al. 2022) and its baseline, filtered behaviour cloning.

Both train with the RLHF stages' one AdamW loop, :func:`lmgym.rlhf.fit.fit`, on batches of
logged episodes (:class:`~lmgym.offline.dataset.EpisodeDataset`): the same optimiser, schedule,
clipping and batch order, so the two differ only in their loss and their data. The target Q
heads are Polyak-averaged once per optimizer step; ``fit`` has no per-step hook, so the update
runs at the start of each loss call, which is right after the previous step (the first call
averages the targets with the very weights they were copied from: no change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.models.loading import DEFAULT_MODEL_DIR, disable_dropout, load_model
from lmgym.offline.config import ILQLConfig
from lmgym.offline.dataset import Episode, EpisodeDataset
from lmgym.offline.losses import bellman_targets, cql_loss, expectile_loss, masked_mean
from lmgym.offline.model import ILQLModel, token_outputs
from lmgym.rlhf.config import StageResult
from lmgym.rlhf.fit import fit, n_batches, resolve_out, save_model_dir, shuffled_batches
from lmgym.seeding import set_seed

__all__ = [
    "EpisodeBatch",
    "bc_loss",
    "collate",
    "ilql_loss",
    "train_filtered_bc",
    "train_ilql",
]

logger = logging.getLogger(__name__)

LOSS_PARTS = ("loss_q", "loss_v", "loss_cql", "loss_bc")


@dataclass
class EpisodeBatch:
    """Episodes as padded tensors; completion tensors are (B, T), right-padded.

    Attributes:
        prompt_ids: (B, P) prompt ids, right-padded.
        prompt_mask: (B, P) 1 for prompt tokens.
        actions: (B, T) completion token ids.
        mask: (B, T) 1 for the episodes' tokens.
        rewards: (B, T) reward paid at each token.
        dones: (B, T) 1 where the episode ended.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor


def collate(
    episodes: Sequence[Episode], pad_token_id: int, device: torch.device | str = "cpu"
) -> EpisodeBatch:
    """Pad ``episodes`` into one :class:`EpisodeBatch` on ``device``.

    Example:
        >>> b = collate([Episode("p", [1, 4], [5, 2], [0.0, 1.0]), Episode("p", [1], [6], [0.5])],
        ...             pad_token_id=0)
        >>> b.actions.tolist(), b.mask.tolist(), b.dones.tolist()
        ([[5, 2], [6, 0]], [[1, 1], [1, 0]], [[0.0, 1.0], [1.0, 0.0]])
    """
    n = len(episodes)
    width = max(len(e.prompt_ids) for e in episodes)
    length = max(len(e.completion_ids) for e in episodes)
    prompt_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, width), dtype=torch.long)
    actions = torch.full((n, length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.long)
    rewards = torch.zeros((n, length))
    dones = torch.zeros((n, length))
    for i, episode in enumerate(episodes):
        p, t = len(episode.prompt_ids), len(episode.completion_ids)
        prompt_ids[i, :p] = torch.tensor(episode.prompt_ids)
        prompt_mask[i, :p] = 1
        actions[i, :t] = torch.tensor(episode.completion_ids)
        mask[i, :t] = 1
        rewards[i, :t] = torch.tensor(episode.rewards)
        dones[i, :t] = torch.tensor(episode.dones or [], dtype=torch.float32)
    return EpisodeBatch(*(x.to(device) for x in (prompt_ids, prompt_mask, actions, mask,
                                                  rewards, dones)))  # fmt: skip


def ilql_loss(
    model: ILQLModel, batch: EpisodeBatch, config: ILQLConfig, pad_token_id: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """ILQL's loss on a batch: ``L_Q + L_V + α L_CQL + c_BC L_BC``, and each part's value.

    * ``L_Q``: squared error of each Q head's Q(s_t, a_t) against
      ``r_t + γ (1 − d_t) V(s_{t+1})`` (V without gradient);
    * ``L_V``: expectile regression (τ) of V(s_t) onto min target Q(s_t, a_t);
    * ``L_CQL``: logsumexp Q(s_t, ·) − Q(s_t, a_t), summed over the Q heads;
    * ``L_BC``: cross-entropy of the LM's logits on a_t.
    """
    out = model.token_outputs(
        batch.prompt_ids, batch.prompt_mask, batch.actions, pad_token_id=pad_token_id
    )
    now = out.states[:, :-1]  # (B, T, H): s_0 .. s_{T-1}
    actions, mask = batch.actions, batch.mask
    values = model.heads.v(out.states)  # (B, T + 1)
    targets = bellman_targets(batch.rewards, batch.dones, values[:, 1:], config.gamma)
    q_all = model.heads.q(now)  # each (B, T, V)
    loss_q = sum(
        (masked_mean((_taken(q, actions) - targets).pow(2), mask) for q in q_all),
        torch.zeros((), device=mask.device),
    )
    with torch.no_grad():
        target_q = _taken(model.heads.target_q(now), actions)  # (B, T)
    loss_v = expectile_loss(target_q - values[:, :-1], config.tau, mask)
    loss_cql = sum((cql_loss(q, actions, mask) for q in q_all), torch.zeros((), device=mask.device))
    loss_bc = bc_loss(out.logits, actions, mask)
    total = loss_q + loss_v + config.cql_alpha * loss_cql + config.bc_coef * loss_bc
    parts = dict(zip(LOSS_PARTS, (loss_q, loss_v, loss_cql, loss_bc), strict=True))
    return total, {name: float(value.detach()) for name, value in parts.items()}


def bc_loss(logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (B, T, V) on the logged ``actions`` (B, T).

    Example:
        >>> round(bc_loss(torch.zeros(1, 1, 4), torch.tensor([[2]]), torch.ones(1, 1)).item(), 4)
        1.3863
    """
    per_token = F.cross_entropy(logits.float().transpose(1, 2), actions, reduction="none")
    return masked_mean(per_token, mask)


def _taken(values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.gather(values, -1, actions.unsqueeze(-1)).squeeze(-1)


def _load_lm(
    config: ILQLConfig,
    data: EpisodeDataset,
    model: str | Path | PreTrainedModel,
    tokenizer: str | Path | PreTrainedTokenizerBase | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    lm, tok = load_model(model, tokenizer, device=config.device)
    disable_dropout(lm)
    data.check_tokenizer(tok, min(len(tok), int(lm.config.vocab_size)))
    return lm, tok


def train_ilql(
    config: ILQLConfig,
    data: EpisodeDataset,
    out: str | Path | None = None,
    *,
    model: str | Path | PreTrainedModel = DEFAULT_MODEL_DIR,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
) -> StageResult:
    """Train an ILQL model on logged episodes and save it to ``out``.

    The data is checked against the model's tokenizer before anything trains. A model object
    passed as ``model`` is trained in place.

    Returns:
        A :class:`~lmgym.rlhf.config.StageResult`: the saved directory
        (:func:`lmgym.offline.model.load_ilql_model` loads it; ``lmgym.load_model`` loads its
        LM), the final losses, and every step's loss and loss parts.

    Example:
        >>> import tempfile
        >>> from lmgym.offline.dataset import Episode
        >>> from lmgym.models.loading import load_tokenizer
        >>> from lmgym.offline.dataset import tokenizer_fingerprint
        >>> tok = load_tokenizer(DEFAULT_MODEL_DIR)
        >>> data = EpisodeDataset([Episode("the soup was", [1, 5], [7, 2], [0.0, 1.0])],
        ...                       tokenizer_fingerprint(tok))
        >>> result = train_ilql(ILQLConfig(epochs=2, progress=False), data, tempfile.mkdtemp())
        >>> len(result.history["loss"])
        2
    """
    started = time.perf_counter()
    lm, tok = _load_lm(config, data, model, tokenizer)
    set_seed(config.seed)
    ilql = ILQLModel(lm, beta=config.beta, two_qs=config.two_qs)
    pad = int(tok.pad_token_id)
    history: dict[str, list[Any]] = {name: [] for name in LOSS_PARTS}

    def loss_fn(rows: list[int]) -> torch.Tensor:
        ilql.heads.update_targets(config.polyak_rate)  # after the previous optimizer step
        batch = collate([data.episodes[i] for i in rows], pad, lm.device)
        loss, parts = ilql_loss(ilql, batch, config, pad)
        for name, value in parts.items():
            history[name].append(value)
        return loss

    losses = fit(
        ilql,
        shuffled_batches(len(data), config.batch_size, config.epochs, config.seed),
        loss_fn,
        total_steps=n_batches(len(data), config.batch_size, config.epochs),
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        warmup_fraction=config.warmup_fraction,
        desc="ilql",
        progress=config.progress,
    )
    history["loss"] = losses
    path = resolve_out(out, "ilql")
    metrics: dict[str, Any] = {
        "n_episodes": len(data),
        "data_mean_return": data.mean_return(),
        **{f"final_{name}": float(np.mean(history[name][-10:])) for name in LOSS_PARTS},
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    summary = {"stage": "ilql", "config": {**config.as_dict(), "out": str(path)}, **metrics}
    ilql.save(path, tok, summary)
    return StageResult(path, metrics, history)


def train_filtered_bc(
    config: ILQLConfig,
    data: EpisodeDataset,
    top_fraction: float,
    out: str | Path | None = None,
    *,
    steps: int | None = None,
    model: str | Path | PreTrainedModel = DEFAULT_MODEL_DIR,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
) -> StageResult:
    """Filtered BC: fine-tune the LM by cross-entropy on the ``top_fraction`` best episodes.

    The baseline ILQL has to beat (Snell et al. compare against it too): supervised learning
    on the episodes with the highest returns. ``config`` gives the optimiser settings; ``steps``
    (default: ``config.epochs`` passes over the kept episodes) sets the optimizer steps, so
    that it can be given as many steps as ILQL had.

    Example:
        >>> import tempfile
        >>> from lmgym.models.loading import load_tokenizer
        >>> from lmgym.offline.dataset import tokenizer_fingerprint
        >>> tok = load_tokenizer(DEFAULT_MODEL_DIR)
        >>> data = EpisodeDataset([Episode("the soup was", [1, 5], [7, 2], [0.0, 1.0]),
        ...                        Episode("the soup was", [1, 5], [9, 2], [0.0, 0.0])],
        ...                       tokenizer_fingerprint(tok))
        >>> result = train_filtered_bc(ILQLConfig(progress=False), data, 0.5, tempfile.mkdtemp())
        >>> result.metrics["n_episodes"], result.metrics["kept_mean_return"]
        (1, 1.0)
    """
    started = time.perf_counter()
    kept = data.top_fraction(top_fraction)
    lm, tok = _load_lm(config, data, model, tokenizer)
    set_seed(config.seed)
    pad = int(tok.pad_token_id)
    per_epoch = n_batches(len(kept), config.batch_size, 1)
    total = steps if steps is not None else per_epoch * config.epochs
    epochs = -(-total // per_epoch)

    def loss_fn(rows: list[int]) -> torch.Tensor:
        batch = collate([kept.episodes[i] for i in rows], pad, lm.device)
        scores = token_outputs(
            lm, batch.prompt_ids, batch.prompt_mask, batch.actions, pad_token_id=pad
        )
        return bc_loss(scores.logits, batch.actions, batch.mask)

    losses = fit(
        lm,
        shuffled_batches(len(kept), config.batch_size, epochs, config.seed),
        loss_fn,
        total_steps=total,
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        warmup_fraction=config.warmup_fraction,
        desc="filtered-bc",
        progress=config.progress,
    )
    path = resolve_out(out, "filtered-bc")
    metrics: dict[str, Any] = {
        "n_episodes": len(kept),
        "top_fraction": top_fraction,
        "kept_mean_return": kept.mean_return(),
        "final_loss": float(np.mean(losses[-10:])),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    summary = {"stage": "filtered-bc", "config": config.as_dict(), **metrics}
    return StageResult(save_model_dir(path, lm, tok, summary), metrics, {"loss": losses})
