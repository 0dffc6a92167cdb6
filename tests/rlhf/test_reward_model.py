"""Rankings, the pairwise loss, reward-model training and the learned RM as a reward function."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

import lmgym  # noqa: F401  (registers the envs)
from lmgym.error import ModelLoadError
from lmgym.models.loading import load_tokenizer
from lmgym.rlhf.labelers import BradleyTerryLabeler
from lmgym.rlhf.reward_model import (
    LearnedRewardModel,
    Ranking,
    RewardModelConfig,
    collect_rankings,
    init_reward_model,
    pairwise_ranking_loss,
    preference_pairs,
    ranking_batch_loss,
    reward_scores,
    train_reward_model,
)
from tests.conftest import TINY_WORDS

WORD_SCORE = {"great": 3.0, "good": 2.0, "bad": 1.0, "awful": 0.0}
COMPLETIONS = ["great .", "good .", "bad .", "awful ."]
TRAIN_PROMPTS = ["the food was", "the soup was", "the service was"]
HELDOUT_PROMPT = "the staff were"


def word_score(prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """A hidden score for the tiny vocabulary: great > good > bad > awful."""
    return np.array([WORD_SCORE[c.split()[0]] for c in completions])


def ranked(prompt: str, completions: Sequence[str]) -> Ranking:
    order = np.argsort(-word_score([prompt] * len(completions), completions), kind="stable")
    return Ranking(prompt, list(completions), [int(i) for i in order])


def word_rankings(prompts: Sequence[str], n: int, seed: int = 0) -> list[Ranking]:
    rng = np.random.default_rng(seed)
    return [
        ranked(p, [COMPLETIONS[i] for i in rng.permutation(4)]) for p in prompts for _ in range(n)
    ]


def config(**kwargs) -> RewardModelConfig:
    kwargs.setdefault("progress", False)
    return RewardModelConfig(**kwargs)


# --- Rankings --------------------------------------------------------------------------------


def test_ranking_pairs_are_all_k_choose_2() -> None:
    r = Ranking("the food was", ["a", "b", "c", "d"], order=[2, 0, 3, 1])
    pairs = r.pairs()
    assert len(pairs) == math.comb(4, 2)
    assert pairs[:3] == [(2, 0), (2, 3), (2, 1)]
    assert all(r.order.index(w) < r.order.index(lo) for w, lo in pairs)


@pytest.mark.parametrize(
    ("completions", "order", "error", "match"),
    [
        (["a", "b", "c"], [0, 0, 1], ValueError, "duplicate index 0 and misses index 2"),
        (["a", "b", "c"], [0, 1], ValueError, r"order=\[0, 1\] has misses index 2"),
        (["a", "b"], [0, 1, 2], ValueError, "index 2 out of range"),
        (["a"], [0], ValueError, "K=1"),
        ([], [], ValueError, "K=0"),
        (["a", "b"], [0, 1.0], TypeError, "non-int"),
    ],
    ids=["duplicate", "missing", "out-of-range", "k1", "k0", "float-index"],
)
def test_ranking_validation(completions, order, error, match) -> None:
    with pytest.raises(error, match=match):
        Ranking("the food was", completions, order)


def test_preference_pairs_skip_identical_texts() -> None:
    r = Ranking("p", ["great .", "bad .", "great ."], order=[0, 2, 1])
    assert preference_pairs([r]) == [("p", "great .", "bad ."), ("p", "great .", "bad .")]


# --- The pairwise loss ------------------------------------------------------------------------


def test_pairwise_loss_hand_computed() -> None:
    scores = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    loss = pairwise_ranking_loss(scores, [0, 2, 1])
    # pairs (w, l): (0, 2): r_w - r_l = 1; (0, 1): 2; (2, 1): 1. -log σ(d) = log(1 + e^-d).
    expected = (math.log(1 + math.exp(-1)) * 2 + math.log(1 + math.exp(-2))) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.2511505, abs=1e-6)
    loss.backward()
    assert scores.grad is not None
    assert scores.grad[0] < 0 < scores.grad[1]  # the best goes up, the worst goes down


def test_pairwise_loss_leaves_out_pairs_of_identical_texts() -> None:
    # "great ." was sampled twice: its two copies have the same score, so their pair only
    # adds log 2 to a 1/C(K,2) mean. Left out, the mean is over the two real pairs.
    scores = torch.tensor([2.0, 0.0, 2.0])
    loss = pairwise_ranking_loss(scores, [0, 2, 1], ["great .", "bad .", "great ."])
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    kept = pairwise_ranking_loss(scores, [0, 2, 1])  # without the texts: all C(3,2) pairs
    assert kept.item() == pytest.approx((2 * math.log(1 + math.exp(-2)) + math.log(2)) / 3)
    with pytest.raises(ValueError, match="all 1 pairs of the ranking are of identical texts"):
        pairwise_ranking_loss(torch.zeros(2), [0, 1], ["ok .", "ok ."])
    with pytest.raises(ValueError, match="completions has 2 texts but order has 3"):
        pairwise_ranking_loss(torch.zeros(3), [0, 1, 2], ["a", "b"])


def test_ranking_batch_loss_leaves_out_identical_pairs(tiny_lm_dir: Path) -> None:
    model, tok = init_reward_model(tiny_lm_dir)
    with torch.no_grad():
        model.score.weight.mul_(1000.0)  # spread the untrained scores: pairs then differ
    texts = ["great .", "bad .", "great .", "awful ."]  # one pair of identical texts
    with_copy = Ranking("the food was", texts, [0, 2, 1, 3])
    copies = Ranking("the soup was", ["good ."] * 3, [2, 0, 1])  # nothing to learn from
    scores = reward_scores(model, tok, [with_copy.prompt] * 4, texts)
    ranked = scores[[0, 2, 1, 3]]
    real_pairs = [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]  # ranked positions; (0, 1) are copies
    expected = torch.stack([-F.logsigmoid(ranked[w] - ranked[lo]) for w, lo in real_pairs]).mean()
    loss = ranking_batch_loss(model, tok, [with_copy, copies])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(expected.item() - math.log(2)) > 0.05  # far from what a copy pair adds
    alone = ranking_batch_loss(model, tok, [copies])
    alone.backward()  # a batch of only copies: loss 0, and no error
    assert alone.item() == 0.0
    assert with_copy.identical_pairs == 1 and copies.identical_pairs == 3


def test_reward_model_counts_the_identical_pairs_it_leaves_out(tiny_lm_dir, tmp_path) -> None:
    train = [ranked(p, ["great .", "bad .", "great ."]) for p in TRAIN_PROMPTS]  # 1 copy pair
    train += [ranked(p, ["good .", "awful ."]) for p in TRAIN_PROMPTS]
    held = [ranked(HELDOUT_PROMPT, ["good .", "good .", "good .", "bad ."])]  # 3 copy pairs
    result = train_reward_model(
        config(epochs=1), train, tmp_path, model=tiny_lm_dir, heldout=held, true_score_fn=word_score
    )
    assert (result.metrics["n_train_pairs"], result.metrics["n_train_identical_pairs"]) == (
        3 * 2 + 3,
        3,
    )
    assert (result.metrics["n_heldout_pairs"], result.metrics["n_heldout_identical_pairs"]) == (
        3,
        3,
    )
    assert result.metrics["n_train_identical_pairs"] == 3


def test_pairwise_loss_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="expected scores of shape"):
        pairwise_ranking_loss(torch.zeros(3), [0, 1])


def test_k_choose_2_pairs_take_k_forward_rows(tiny_lm_dir: Path) -> None:
    model, tok = init_reward_model(tiny_lm_dir)
    calls: list[int] = []

    def count_rows(module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(int(ids.shape[0]))

    model.base_model.register_forward_pre_hook(count_rows, with_kwargs=True)
    rankings = [
        Ranking("the food was", COMPLETIONS, [0, 1, 2, 3]),  # K=4: 6 pairs
        Ranking("the soup was", [*COMPLETIONS, "very good ."], [0, 4, 1, 2, 3]),  # K=5: 10 pairs
    ]
    loss = ranking_batch_loss(model, tok, rankings)
    assert calls == [4 + 5]  # one forward pass, one row per completion
    assert sum(calls) < 4 * 3 + 5 * 4  # not K(K-1) rows (two per pair)

    # Same loss as scoring each completion on its own and averaging per ranking.
    expected = []
    for r in rankings:
        scores = torch.stack([reward_scores(model, tok, [r.prompt], [c])[0] for c in r.completions])
        expected.append(pairwise_ranking_loss(scores, r.order))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)


# --- Collecting rankings ----------------------------------------------------------------------


def test_collect_rankings(tiny_lm_dir: Path) -> None:
    def collect(seed: int) -> list[Ranking]:
        return collect_rankings(
            tiny_lm_dir, TRAIN_PROMPTS, k=4, labeler=BradleyTerryLabeler(seed=0), seed=seed
        )

    rankings = collect(0)
    assert [r.prompt for r in rankings] == TRAIN_PROMPTS
    assert all(r.k == 4 and sorted(r.order) == [0, 1, 2, 3] for r in rankings)
    assert rankings == collect(0)
    assert rankings != collect(1)


@pytest.mark.parametrize("k", [1, 0, 2.5, True])
def test_collect_rankings_rejects_bad_k(tiny_lm_dir: Path, k) -> None:
    with pytest.raises(ValueError, match=f"k={k!r} must be an int >= 2"):
        collect_rankings(tiny_lm_dir, TRAIN_PROMPTS, k=k, labeler=BradleyTerryLabeler())


def test_collect_rankings_rejects_no_prompts(tiny_lm_dir: Path) -> None:
    with pytest.raises(ValueError, match="prompts is empty"):
        collect_rankings(tiny_lm_dir, [], k=4, labeler=BradleyTerryLabeler())


# --- Training ---------------------------------------------------------------------------------


def test_reward_model_learns_the_hidden_order(tiny_lm_dir: Path, tmp_path: Path) -> None:
    result = train_reward_model(
        config(epochs=8, lr=3e-3, batch_size=4),
        word_rankings(TRAIN_PROMPTS, 4),
        tmp_path,
        model=tiny_lm_dir,
        heldout=word_rankings([HELDOUT_PROMPT], 2, seed=1),
        true_score_fn=word_score,
    )
    assert result.metrics["heldout_accuracy"] >= 0.9
    assert result.metrics["heldout_true_accuracy"] >= 0.9
    assert result.metrics["oracle_accuracy"] == 1.0  # noise-free labels
    assert result.metrics["true_score_correlation"] > 0.8
    assert result.metrics["n_train_rankings"] == 12 and result.metrics["n_heldout_rankings"] == 2
    assert (result.path / "model.safetensors").is_file()
    assert (result.path / "training_summary.json").is_file()


def test_same_seed_same_reward_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    def train(seed: int, name: str) -> tuple[dict, dict]:
        result = train_reward_model(
            RewardModelConfig(epochs=1, seed=seed, progress=False),
            word_rankings(TRAIN_PROMPTS, 2),
            tmp_path / name,
            model=tiny_lm_dir,
            true_score_fn=word_score,
        )
        model = GPT2ForSequenceClassification.from_pretrained(result.path)
        metrics = dict(result.metrics)
        del metrics["wall_time_s"]
        return model.state_dict(), metrics

    (first, m1), (again, m2), (other, _) = train(0, "a"), train(0, "b"), train(1, "c")
    assert m1 == m2
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["score.weight"], other["score.weight"])


def test_heldout_split_is_by_prompt(tiny_lm_dir: Path, tmp_path: Path) -> None:
    result = train_reward_model(
        config(epochs=1, heldout_fraction=0.3),
        word_rankings(TRAIN_PROMPTS, 2),
        tmp_path,
        model=tiny_lm_dir,
        true_score_fn=word_score,
    )
    assert (result.metrics["n_train_rankings"], result.metrics["n_heldout_rankings"]) == (
        4,
        2,
    )  # 1 of 3 prompts


def test_train_reward_model_bad_input(tiny_lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rankings is empty"):
        train_reward_model(config(), [], tmp_path, model=tiny_lm_dir)
    with pytest.raises(ValueError, match="1 distinct prompt"):
        rankings = word_rankings(["the food was"], 3)
        train_reward_model(config(), rankings, tmp_path, model=tiny_lm_dir)
    with pytest.raises(ValueError, match="heldout is empty"):
        rankings = word_rankings(TRAIN_PROMPTS, 1)
        train_reward_model(config(), rankings, tmp_path, model=tiny_lm_dir, heldout=[])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"batch_size": -1}, "batch_size=-1"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"heldout_fraction": 1.0}, "heldout_fraction=1.0"),
        ({"warmup_fraction": -0.1}, "warmup_fraction=-0.1"),
        ({"seed": -1}, "seed=-1"),
        ({"max_grad_norm": 0}, "max_grad_norm=0"),
        ({"eval_batch_size": 0}, "eval_batch_size=0"),
    ],
    ids=lambda v: str(v),
)
def test_reward_model_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RewardModelConfig(**kwargs)


# --- The learned RM as a reward function ------------------------------------------------------


@pytest.fixture(scope="module")
def rm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rm")
    return train_reward_model(
        RewardModelConfig(epochs=2, lr=3e-3, progress=False),
        word_rankings(TRAIN_PROMPTS, 2),
        out / "rm",
        model=tiny_lm_dir,
        true_score_fn=word_score,
    ).path


def permuted_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny vocabulary with other ids: a policy tokenizer that differs from the RM's."""
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + TINY_WORDS[::-1])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>",
    )  # fmt: skip


def ids_of(tokenizer, prompts: list[str], completions: list[str]) -> dict[str, list[list[int]]]:
    """Token ids as LMBandit-v0 passes them: the prompt with BOS, the completion then EOS."""
    return {
        "prompt_ids": [tokenizer(p)["input_ids"] for p in prompts],
        "completion_ids": [
            [*tokenizer(c, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            for c in completions
        ],
    }


PROMPTS = ["the food was", "the staff were", "the soup was"]
TEXTS = ["great .", "awful .", "good and friendly ."]


def test_learned_rm_matches_training_scores(rm_dir: Path) -> None:
    rm = LearnedRewardModel(rm_dir)
    model = GPT2ForSequenceClassification.from_pretrained(rm_dir).eval()
    with torch.inference_mode():
        expected = reward_scores(model, load_tokenizer(rm_dir), PROMPTS, TEXTS).double().numpy()
    np.testing.assert_allclose(rm(PROMPTS, TEXTS), expected, rtol=1e-6)
    assert rm(PROMPTS, TEXTS).dtype == np.float64
    assert rm([], []).shape == (0,)


def test_same_policy_tokenizer_uses_the_ids(rm_dir: Path) -> None:
    rm = LearnedRewardModel(rm_dir, policy_tokenizer=rm_dir)
    assert rm.uses_policy_ids
    tok = load_tokenizer(rm_dir)
    by_ids = rm(PROMPTS, TEXTS, **ids_of(tok, PROMPTS, TEXTS))
    np.testing.assert_allclose(by_ids, LearnedRewardModel(rm_dir)(PROMPTS, TEXTS), rtol=1e-6)
    # The ids are what is scored (no decode + re-encode): ids of other texts give other scores.
    swapped = rm(PROMPTS, TEXTS, **ids_of(tok, PROMPTS, TEXTS[::-1]))
    np.testing.assert_allclose(swapped, LearnedRewardModel(rm_dir)(PROMPTS, TEXTS[::-1]), rtol=1e-6)
    assert not np.allclose(swapped, by_ids)


def test_different_policy_tokenizer_retokenizes_the_texts(rm_dir: Path) -> None:
    policy_tok = permuted_tokenizer()
    rm = LearnedRewardModel(rm_dir, policy_tokenizer=policy_tok)
    assert not rm.uses_policy_ids
    policy_ids = ids_of(policy_tok, PROMPTS, TEXTS)
    scores = rm(PROMPTS, TEXTS, **policy_ids)
    # Same scores as the RM's own tokenizer on the texts ...
    np.testing.assert_allclose(scores, LearnedRewardModel(rm_dir)(PROMPTS, TEXTS), rtol=1e-6)
    # ... and not what feeding the policy's ids to the RM would give.
    naive = LearnedRewardModel(rm_dir, policy_tokenizer=rm_dir)
    assert not np.allclose(scores, naive(PROMPTS, TEXTS, **policy_ids))


def test_learned_rm_as_env_reward(rm_dir: Path, tiny_lm_dir: Path) -> None:
    rm = LearnedRewardModel(rm_dir, policy_tokenizer=tiny_lm_dir)
    env = gym.make(
        "LMBandit-v0",
        model=tiny_lm_dir,
        prompts=PROMPTS,
        reward_fn=rm,
        max_prompt_tokens=8,
        max_new_tokens=6,
    )
    _, info = env.reset(seed=0)
    _, _, _, _, step_info = env.step(env.action_space.sample())
    expected = LearnedRewardModel(rm_dir)([info["prompt"]], [step_info["completion"]])[0]
    assert step_info["reward_model"] == pytest.approx(expected, rel=1e-5)


def test_learned_rm_bad_input(rm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        LearnedRewardModel(tmp_path / "missing")
    model = GPT2ForSequenceClassification.from_pretrained(rm_dir)
    with pytest.raises(ValueError, match="tokenizer=None with a model object"):
        LearnedRewardModel(model)
    with pytest.raises(TypeError, match="expected a reward-model directory"):
        LearnedRewardModel(42)  # type: ignore[arg-type]
    two_labels = GPT2ForSequenceClassification(
        GPT2Config(vocab_size=30, n_layer=1, n_embd=8, n_head=2, num_labels=2)
    )
    with pytest.raises(ValueError, match="num_labels=2"):
        LearnedRewardModel(two_labels, rm_dir)
    with pytest.raises(ValueError, match="batch_size=0"):
        LearnedRewardModel(rm_dir, batch_size=0)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        LearnedRewardModel(rm_dir)(PROMPTS[:2], TEXTS[:1])
