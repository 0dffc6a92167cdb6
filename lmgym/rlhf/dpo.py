"""Direct preference optimisation (DPO): the policy learns from preference pairs, no RM, no RL.

Rafailov et al. 2023 ("Direct Preference Optimization: Your Language Model is Secretly a Reward
Model") show that the KL-regularised RL objective of RLHF has the closed-form optimum
π*(y|x) ∝ π_ref(y|x) exp(r(x,y)/β), so the reward is implicitly ``β log π/π_ref`` and the
Bradley-Terry likelihood of the preferences becomes a loss on the policy itself:

    L = -log σ(β [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])

averaged over the pairs. The reference is the frozen SFT model; β plays the role of the KL
coefficient of PPO (small β: far from the reference). Log-probs are summed over the response
tokens, teacher-forced by :func:`lmgym.models.scoring.score_completions` (the layout the envs
and the LM policy use). Responses are texts without EOS (a ranked completion may have been cut
at the length limit), so the end of a text is not scored.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.models.loading import DEFAULT_MODEL_DIR, disable_dropout, load_model
from lmgym.models.scoring import score_completions
from lmgym.rlhf.config import DPOConfig, StageResult
from lmgym.rlhf.fit import fit, resolve_out, save_model_dir
from lmgym.rlhf.rankings import Ranking, preference_pairs
from lmgym.seeding import set_seed

__all__ = ["DPOConfig", "dpo_loss", "evaluate_dpo", "run_dpo", "sequence_logprobs"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """The DPO loss (Rafailov et al. 2023, eq. 7), averaged over the batch.

    Args:
        policy_chosen_logps: log π(y_w | x) summed over the response tokens (B,).
        policy_rejected_logps: log π(y_l | x) (B,).
        ref_chosen_logps: log π_ref(y_w | x) (B,).
        ref_rejected_logps: log π_ref(y_l | x) (B,).
        beta: β > 0, the strength of the implicit KL penalty.

    Example:
        >>> t = torch.tensor
        >>> round(dpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5).item(), 4)
        0.3133
    """
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * logits).mean()


def sequence_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
) -> torch.Tensor:
    """Log π(response | prompt) summed over the response tokens, one forward pass (B,).

    The prompt is encoded as the envs encode it (with BOS), the response without special
    tokens. Gradients flow unless called under ``torch.inference_mode()``.

    Example:
        >>> model, tok = load_model(DEFAULT_MODEL_DIR)
        >>> lp = sequence_logprobs(model, tok, ["the soup was"] * 2, ["great .", ""])
        >>> bool(lp[0] < 0), lp[1].item()
        (True, 0.0)
    """
    pad = int(tokenizer.pad_token_id)
    prompt_ids, prompt_mask = _right_pad(tokenizer(list(prompts))["input_ids"], pad)
    response_rows = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    response_ids, response_mask = _right_pad(response_rows, pad)
    on = model.device
    scores = score_completions(
        model,
        prompt_ids.to(on),
        prompt_mask.to(on),
        response_ids.to(on),
        response_mask.to(on),
        pad_token_id=pad,
    )
    return scores.logprobs.sum(1)  # (B,); logprobs are 0 where the mask is 0


def _right_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(row) for row in rows))  # an all-empty batch keeps one masked column
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


@dataclass
class _Groups:
    """Preference pairs grouped so that each text is scored once per step.

    Pairs are linked when they share a ``(prompt, text)``; a group is a connected set of them.
    The pairs of a ranking of K completions form one group of K texts, so a step over it costs
    K forward rows instead of 2·C(K,2); a lone triple is a group of two texts. The loss stays
    the mean over the batch's pairs: grouping only saves compute.
    """

    prompts: list[str]  # one per distinct (prompt, text), grouped: group g is spans[g]
    texts: list[str]
    spans: list[tuple[int, int]]  # each group's [start, stop) into prompts/texts
    pairs: list[list[tuple[int, int]]]  # each group's (chosen, rejected) indices into texts


def _as_triples(
    data: Sequence[tuple[str, str, str]] | Sequence[Ranking],
) -> list[tuple[str, str, str]]:
    triples: list[tuple[str, str, str]] = []
    for index, item in enumerate(data):
        if isinstance(item, Ranking):
            triples += preference_pairs([item])
        elif isinstance(item, tuple) and len(item) == 3 and all(isinstance(t, str) for t in item):
            triples.append(item)
        else:
            raise TypeError(
                f"pairs[{index}]={item!r:.80} is neither a (prompt, chosen, rejected) triple of "
                "str nor a Ranking."
            )
    return triples


def _groups(data: Sequence[tuple[str, str, str]] | Sequence[Ranking]) -> _Groups:
    if not data:
        raise ValueError(
            "pairs is empty; expected (prompt, chosen, rejected) text triples, e.g. "
            "preference_pairs(rankings), or the rankings themselves."
        )
    triples = _as_triples(data)
    if not triples:
        raise ValueError(
            "pairs holds no preference: every ranking's completions are identical texts. "
            "Sample more varied completions (a higher temperature or a larger K)."
        )
    nodes: dict[tuple[str, str], int] = {}
    edges = [
        (nodes.setdefault((p, c), len(nodes)), nodes.setdefault((p, r), len(nodes)))
        for p, c, r in triples
    ]
    parent = list(range(len(nodes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for a, b in edges:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = {}
    for node in range(len(nodes)):
        members.setdefault(root(node), []).append(node)
    keys = list(nodes)
    groups = _Groups([], [], [], [])
    position: dict[int, int] = {}
    for component in members.values():  # in order of first appearance of the root
        groups.spans.append((len(groups.texts), len(groups.texts) + len(component)))
        for node in component:
            position[node] = len(groups.texts)
            groups.prompts.append(keys[node][0])
            groups.texts.append(keys[node][1])
        groups.pairs.append([])
    group_of = {root_: g for g, root_ in enumerate(members)}
    for a, b in edges:
        groups.pairs[group_of[root(a)]].append((position[a], position[b]))
    return groups


def _group_batches(
    spans: Sequence[tuple[int, int]], batch_size: int, epochs: int, seed: int
) -> list[list[int]]:
    """Group indices in seeded random order, cut into batches of about ``batch_size`` texts."""
    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    for _ in range(epochs):
        batch: list[int] = []
        size = 0
        for g in torch.randperm(len(spans), generator=generator).tolist():
            batch.append(g)
            size += spans[g][1] - spans[g][0]
            if size >= batch_size:
                batches.append(batch)
                batch, size = [], 0
        if batch:
            batches.append(batch)
    return batches


def _load_reference(
    reference: str | Path | PreTrainedModel | None,
    model_dir: str | Path | PreTrainedModel,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
) -> PreTrainedModel:
    """The frozen reference: a given model, one loaded from a directory, or the policy's copy.

    A reference loaded from a directory goes to the policy's device.
    """
    if reference is None:
        if isinstance(model_dir, PreTrainedModel):
            ref = copy.deepcopy(policy)
        else:
            ref, _ = load_model(model_dir, device=policy.device)
    elif isinstance(reference, PreTrainedModel):
        shared = {id(p) for p in reference.parameters()} & {id(p) for p in policy.parameters()}
        if reference is policy or shared:
            raise ValueError(
                "reference is the model being trained (or shares its parameters); DPO needs a "
                "frozen copy, or the reference would move with the policy and the loss would "
                "be constant. Pass reference=None for a frozen copy of the starting model, or "
                "copy.deepcopy(model)."
            )
        ref = reference
    else:
        ref, ref_tokenizer = load_model(reference, device=policy.device)
        if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"reference={str(reference)!r} has a different tokenizer than the policy; DPO "
                "scores the same token ids under both models. Pass a reference saved with the "
                "policy's tokenizer (usually the SFT model)."
            )
    disable_dropout(ref)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def run_dpo(
    config: DPOConfig,
    pairs: Sequence[tuple[str, str, str]] | Sequence[Ranking],
    out: str | Path | None = None,
    *,
    model: str | Path | PreTrainedModel = DEFAULT_MODEL_DIR,
    reference: str | Path | PreTrainedModel | None = None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
) -> StageResult:
    """Train the policy with DPO on preference pairs and save it to ``out``.

    ``pairs`` are ``(prompt, chosen, rejected)`` triples, or the
    :class:`~lmgym.rlhf.rankings.Ranking` objects they come from. Either way, pairs that share
    a text are batched together (a ranking's C(K,2) pairs become one group of K texts), so each
    text takes one forward row per step, as in reward-model training: the same loss, the mean
    over the batch's pairs, at about (K-1)x less compute than scoring each pair's two texts.

    Args:
        config: Training settings.
        pairs: Preference triples (``preference_pairs(rankings)``) or rankings.
        out: Where to save the trained policy; ``None``: a new temporary directory.
        model: The policy to start from (the SFT model): a directory, or a model object,
            which is then trained in place.
        reference: The frozen reference π_ref: ``None`` for a frozen copy of the starting
            policy, a directory, or a model object other than the policy.
        tokenizer: The policy's tokenizer, when ``model`` is a model object.

    Returns:
        A :class:`~lmgym.rlhf.config.StageResult`: the saved policy's directory; ``n_groups``,
        ``n_pairs``, the last epoch's mean loss and implicit-reward accuracy; each step's loss
        and accuracy.

    Raises:
        ValueError: No pairs; a reference that is (or shares parameters with) the trained
            model; a reference directory with another tokenizer.

    Example:
        >>> import tempfile
        >>> pairs = [("the soup was", "great .", "cold ."), ("the staff were", "nice .", "rude .")]
        >>> result = run_dpo(DPOConfig(epochs=1, progress=False), pairs, tempfile.mkdtemp())
        >>> (result.path / "training_summary.json").is_file(), result.metrics["n_pairs"]
        (True, 2)
    """
    started = time.perf_counter()
    groups = _groups(pairs)
    policy, tok = load_model(model, tokenizer, device=config.device)
    ref = _load_reference(reference, model, policy, tok)
    disable_dropout(policy)

    ref_parts = []
    with torch.inference_mode():
        for start in range(0, len(groups.texts), config.ref_batch_size):
            stop = start + config.ref_batch_size
            ref_parts.append(
                sequence_logprobs(ref, tok, groups.prompts[start:stop], groups.texts[start:stop])
            )
    ref_logps = torch.cat(ref_parts)  # (N texts,)

    set_seed(config.seed)
    batches = _group_batches(groups.spans, config.batch_size, config.epochs, config.seed)
    accuracies: list[float] = []

    def loss_fn(rows: list[int]) -> torch.Tensor:
        spans = [groups.spans[g] for g in rows]
        text_index = torch.cat([torch.arange(a, b) for a, b in spans])  # (n,)
        logps = sequence_logprobs(
            policy,
            tok,
            [groups.prompts[i] for i in text_index],
            [groups.texts[i] for i in text_index],
        )  # (n,): every text of the batch in one forward pass
        local = torch.empty(len(groups.texts), dtype=torch.long)  # text index -> row of logps
        local[text_index] = torch.arange(len(text_index))
        w, lo = torch.as_tensor([pair for g in rows for pair in groups.pairs[g]]).T  # (P,) each
        chosen, rejected = logps[local[w]], logps[local[lo]]
        implicit = ((chosen - ref_logps[w]) - (rejected - ref_logps[lo])).detach()
        accuracies.append(float((implicit > 0).float().mean()))
        return dpo_loss(chosen, rejected, ref_logps[w], ref_logps[lo], config.beta)

    losses = fit(
        policy,
        batches,
        loss_fn,
        total_steps=len(batches),
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        warmup_fraction=config.warmup_fraction,
        desc=f"dpo β={config.beta:g}",
        progress=config.progress,
    )
    path = resolve_out(out, "dpo")
    per_epoch = max(1, len(batches) // config.epochs)
    metrics = {
        "n_groups": len(groups.spans),
        "n_pairs": sum(len(p) for p in groups.pairs),
        "final_epoch_loss": float(np.mean(losses[-per_epoch:])),
        "final_epoch_reward_accuracy": float(np.mean(accuracies[-per_epoch:])),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    summary = {"stage": "dpo", "config": {**config.as_dict(), "out": str(path)}, **metrics}
    history = {"loss": losses, "reward_accuracy": accuracies}
    return StageResult(save_model_dir(path, policy, tok, summary), metrics, history)


def evaluate_dpo(
    model: str | Path | PreTrainedModel,
    reference: str | Path | PreTrainedModel,
    pairs: Sequence[tuple[str, str, str]],
    beta: float,
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """DPO loss and implicit-reward accuracy of ``model`` on held-out ``(prompt, w, l)`` pairs.

    The implicit reward is ``β log π/π_ref``; the accuracy is the share of pairs whose chosen
    text gets the higher one (a tie counts half, so the reference itself scores 50%).

    Example:
        >>> pairs = [("the soup was", "great .", "cold .")]
        >>> evaluate_dpo(DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIR, pairs, beta=0.1)["reward_accuracy"]
        0.5
    """
    policy, tok = load_model(model)
    ref, _ = load_model(reference)
    margins = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            prompts, chosen, rejected = zip(*pairs[start : start + batch_size], strict=True)
            texts, doubled = [*chosen, *rejected], [*prompts, *prompts]
            logratio = sequence_logprobs(policy, tok, doubled, texts) - sequence_logprobs(
                ref, tok, doubled, texts
            )  # (2B,): chosen first, then rejected
            margins.append(beta * (logratio[: len(chosen)] - logratio[len(chosen) :]))
    margin = torch.cat(margins)  # (P,)
    accuracy = (margin > 0).float() + 0.5 * (margin == 0).float()
    return {
        "loss": float(-F.logsigmoid(margin).mean()),
        "reward_accuracy": float(accuracy.mean()),
    }
