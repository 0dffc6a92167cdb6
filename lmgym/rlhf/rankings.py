"""Rankings of K completions per prompt: collecting them, their pairs, and the pairwise loss.

A labeler ranks K completions of one prompt; the ranking yields all C(K,2) preference pairs
(Ouyang et al. 2022, section 3.5). Keeping a prompt's pairs together as one batch element means
each completion is scored by the reward model once (K forward rows), not once per pair it is in
(K(K-1) rows), and the C(K,2) highly correlated pairs do not overfit the model as separate
shuffled examples would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.models.device import model_device
from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.loading import load_model
from lmgym.seeding import set_seed

__all__ = [
    "Labeler",
    "Ranking",
    "collect_rankings",
    "pairwise_ranking_loss",
    "preference_pairs",
    "sample_completions",
]


class Labeler(Protocol):
    """What :func:`collect_rankings` needs of a labeler (e.g. ``BradleyTerryLabeler``)."""

    def rank(self, prompt: str, completions: Sequence[str]) -> list[int]:
        """Indices into ``completions``, best first."""
        ...


@dataclass
class Ranking:
    """K >= 2 completions of one prompt and a labeler's order of them.

    Attributes:
        prompt: The prompt text.
        completions: The K completion texts (duplicate texts are allowed: samples may repeat).
        order: Indices into ``completions``, best first: a permutation of ``range(K)``.

    Example:
        >>> r = Ranking("the soup was", ["cold .", "great .", "fine ."], order=[1, 2, 0])
        >>> r.pairs()
        [(1, 2), (1, 0), (2, 0)]
        >>> Ranking("the soup was", ["cold .", "great ."], order=[1, 1])
        Traceback (most recent call last):
        ...
        ValueError: order=[1, 1] has duplicate index 1 and misses index 0; expected a permutation of range(2) (each completion's index once, best first).
    """  # noqa: E501 - a doctest traceback line cannot be wrapped

    prompt: str
    completions: list[str]
    order: list[int]

    def __post_init__(self) -> None:
        self.completions = list(self.completions)
        self.order = list(self.order)
        k = len(self.completions)
        if k < 2:
            raise ValueError(
                f"completions has K={k} item(s) for prompt {self.prompt!r:.60}; a ranking needs "
                "K >= 2 completions (InstructGPT used K in [4, 9]). Sample more completions."
            )
        bad = [i for i in self.order if isinstance(i, bool) or not isinstance(i, int)]
        if bad:
            raise TypeError(f"order={self.order!r} holds non-int value(s) {bad}; expected ints.")
        counts = Counter(self.order)
        seen = set(counts)
        duplicates = sorted(i for i, n in counts.items() if n > 1)
        out_of_range = sorted(i for i in seen if not 0 <= i < k)
        missing = sorted(set(range(k)) - seen)
        problems = []
        if duplicates:
            problems.append(f"duplicate index {', '.join(map(str, duplicates))}")
        if out_of_range:
            problems.append(f"index {', '.join(map(str, out_of_range))} out of range")
        if missing:
            problems.append(f"misses index {', '.join(map(str, missing))}")
        if problems:
            raise ValueError(
                f"order={self.order!r} has {' and '.join(problems)}; expected a permutation of "
                f"range({k}) (each completion's index once, best first)."
            )

    @property
    def k(self) -> int:
        """Number of completions K."""
        return len(self.completions)

    def pairs(self) -> list[tuple[int, int]]:
        """All C(K,2) ``(winner, loser)`` index pairs implied by the order."""
        return [(self.order[i], self.order[j]) for i in range(self.k) for j in range(i + 1, self.k)]

    @property
    def identical_pairs(self) -> int:
        """Pairs of identical texts (a sample drawn twice): they carry no preference.

        Example:
            >>> Ranking("p", ["great .", "bad .", "great ."], order=[0, 2, 1]).identical_pairs
            1
        """
        return sum(self.completions[w] == self.completions[lo] for w, lo in self.pairs())


def preference_pairs(rankings: Sequence[Ranking]) -> list[tuple[str, str, str]]:
    """Every ranking's C(K,2) pairs as ``(prompt, chosen, rejected)`` texts, e.g. for DPO.

    Pairs of identical texts (a sample drawn twice) carry no preference and are left out.

    Example:
        >>> preference_pairs([Ranking("the soup was", ["cold .", "great ."], [1, 0])])
        [('the soup was', 'great .', 'cold .')]
    """
    return [
        (r.prompt, r.completions[w], r.completions[lo])
        for r in rankings
        for w, lo in r.pairs()
        if r.completions[w] != r.completions[lo]
    ]


def pairwise_ranking_loss(
    scores: torch.Tensor, order: Sequence[int], completions: Sequence[str] | None = None
) -> torch.Tensor:
    """Mean of ``-log σ(r_w - r_l)`` over the ranking's pairs of different texts.

    A pair of identical texts (a sample drawn twice) has equal scores, so it adds the constant
    log 2 to the mean and nothing to the gradient: kept in a 1/C(K,2) mean it only dilutes the
    ranking's real pairs and inflates the loss. Given ``completions``, such pairs are left out.

    Args:
        scores: Reward-model scores of the K completions, shape (K,).
        order: Indices into ``scores``, best first.
        completions: The K completion texts, to drop pairs of identical texts; None: keep all
            C(K,2) pairs.

    Returns:
        A scalar tensor (differentiable in ``scores``).

    Raises:
        ValueError: ``scores`` and ``order`` differ in length, or every pair is of identical
            texts (nothing to learn from the ranking;
            ``lmgym.rlhf.reward_model.ranking_batch_loss`` skips such rankings).

    Example:
        >>> loss = pairwise_ranking_loss(torch.tensor([0.0, 1.0]), [1, 0])  # -log σ(1)
        >>> round(loss.item(), 4)
        0.3133
        >>> scores = torch.tensor([1.0, 0.0, 1.0])  # texts 0 and 2 are the same sample
        >>> loss = pairwise_ranking_loss(scores, [0, 2, 1], ["great .", "bad .", "great ."])
        >>> round(loss.item(), 4)  # -log σ(1), the pair (0, 2) left out
        0.3133
    """
    if scores.dim() != 1 or scores.shape[0] != len(order):
        raise ValueError(
            f"scores has shape {tuple(scores.shape)} but order has {len(order)} indices; "
            "expected scores of shape (K,), one per completion of the ranking."
        )
    ranked = scores[torch.as_tensor(list(order), dtype=torch.long)]  # (K,) best first
    winner, loser = torch.triu_indices(len(order), len(order), offset=1)  # (C(K,2),) each
    if completions is not None:
        if len(completions) != len(order):
            raise ValueError(
                f"completions has {len(completions)} texts but order has {len(order)} indices; "
                "expected the K texts the scores belong to, in the same order."
            )
        texts = [completions[i] for i in order]  # best first, as ranked
        pairs = zip(winner.tolist(), loser.tolist(), strict=True)
        keep = torch.tensor([texts[w] != texts[lo] for w, lo in pairs], dtype=torch.bool)
        if not keep.any():
            raise ValueError(
                f"all {len(keep)} pairs of the ranking are of identical texts; expected at least "
                "two different completions (a ranking of copies carries no preference: skip it)."
            )
        winner, loser = winner[keep], loser[keep]
    return -F.logsigmoid(ranked[winner] - ranked[loser]).mean()


def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    decoding: DecodingConfig,
    *,
    batch_size: int = 512,
) -> tuple[list[str], torch.Tensor]:
    """Sample one completion per prompt text, in batches, with the KV cache of ``generate``.

    Randomness is torch's global generator: seed it first (:func:`lmgym.seeding.set_seed`).

    Returns:
        ``(texts, finished)``: the decoded completions (special tokens removed, as the envs
        decode them) and a bool tensor (B,) that is True where the completion ended with EOS
        within ``decoding.max_new_tokens``.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> model, tok = load_default_model()
        >>> texts, finished = sample_completions(model, tok, ["the soup was"] * 2,
        ...                                      DecodingConfig(max_new_tokens=4))
        >>> len(texts), finished.shape
        (2, torch.Size([2]))
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1, e.g. batch_size=512.")
    texts: list[str] = []
    finished: list[torch.Tensor] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        encoded = tokenizer(chunk, padding=True, return_tensors="pt").to(model_device(model))
        out = generate(
            model,
            encoded["input_ids"],
            encoded["attention_mask"],
            decoding,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        # generate writes pad after the first EOS, so decoding drops exactly what the envs drop.
        texts += tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)
        finished.append((out.completion_ids == tokenizer.eos_token_id).any(1).cpu())
    return texts, torch.cat(finished) if finished else torch.zeros(0, dtype=torch.bool)


def collect_rankings(
    model_dir: str | Path | PreTrainedModel,
    prompts: Sequence[str],
    k: int,
    labeler: Labeler,
    seed: int = 0,
    decoding: DecodingConfig | None = None,
    *,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    batch_size: int = 512,
) -> list[Ranking]:
    """Sample K completions of each prompt from the policy and have ``labeler`` rank them.

    All prompts' completions are sampled together in batches of ``batch_size`` rows. A prompt
    listed n times gives n rankings.

    Args:
        model_dir: The policy: a model directory, or a model object (then pass ``tokenizer``).
        prompts: Prompt texts, e.g. ``lmgym.models.corpus.prompts("train")``.
        k: Completions per prompt, >= 2 (InstructGPT used K in [4, 9]).
        labeler: Anything with ``rank(prompt, completions) -> order``.
        seed: Seeds the sampling (torch's global generator, through ``set_seed``).
        decoding: How to sample; ``None`` samples at temperature 1 with 16 new tokens, as
            ``LMBandit-v0`` does by default.
        tokenizer: The policy's tokenizer; ``None`` loads it from ``model_dir``.
        batch_size: Rows per ``generate`` call.

    Returns:
        One :class:`Ranking` per prompt, in the order of ``prompts``.

    Raises:
        ValueError: ``k < 2`` or no prompts.

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> from lmgym.rlhf.labelers import BradleyTerryLabeler
        >>> rankings = collect_rankings(DEFAULT_MODEL_DIR, ["the soup was"], k=4,
        ...                             labeler=BradleyTerryLabeler(), seed=0)
        >>> rankings[0].k, sorted(rankings[0].order)
        (4, [0, 1, 2, 3])
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(
            f"k={k!r} must be an int >= 2: a ranking compares K completions of a prompt "
            "(InstructGPT used K in [4, 9]), e.g. k=4."
        )
    if not prompts:
        raise ValueError("prompts is empty; expected at least one prompt text to rank for.")
    model, tok = load_model(model_dir, tokenizer)
    set_seed(seed)
    repeated = [prompt for prompt in prompts for _ in range(k)]
    texts, _ = sample_completions(
        model, tok, repeated, decoding or DecodingConfig(), batch_size=batch_size
    )
    rankings = []
    for index, prompt in enumerate(prompts):
        completions = texts[index * k : (index + 1) * k]
        rankings.append(Ranking(prompt, completions, labeler.rank(prompt, completions)))
    return rankings
