"""PPO-ptx: the pre-training term changes the update (and only when γ > 0)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import lmgym  # noqa: F401
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv
from lmgym.models.loading import load_tokenizer
from lmgym.rlhf.ptx import CorpusBatches, PPOPtx, corpus_lm_loss

PROMPTS = ["the food was", "i thought the staff", "the soup is"]
CORPUS = [
    "the food was great .",
    "the staff were rude .",
    "i thought the soup was very good .",
    "the service is bad but the food is great .",
    "i loved it .",
    "i hated the soup .",
    "the staff were friendly and the food was good .",
    "it was awful .",
]


def count_great(text: str) -> float:
    return float(text.split().count("great"))


def make_model(tiny_lm_dir: Path, algo: type[PPO] = PPO, **kwargs) -> PPO:
    vec = SB3VecEnv(
        gym.make_vec(
            "LMBandit-v0",
            num_envs=4,
            model=tiny_lm_dir,
            prompts=PROMPTS,
            reward_fn=count_great,
            max_prompt_tokens=8,
            max_new_tokens=5,
            kl_coef=0.05,
        )
    )
    model = algo(
        LMActorCriticPolicy,
        vec,
        n_steps=4,
        batch_size=8,
        n_epochs=2,
        learning_rate=1e-3,
        gamma=1.0,
        seed=0,
        policy_kwargs={"model": tiny_lm_dir},
        **kwargs,
    )
    model.policy.attach_to(vec)
    return model


def lm_weights(model: PPO) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def corpus_loss(model: PPO, tiny_lm_dir: Path) -> float:
    ids, mask = CorpusBatches(CORPUS, load_tokenizer(tiny_lm_dir), batch_size=len(CORPUS)).next()
    with torch.no_grad():
        return float(corpus_lm_loss(model.policy.lm, ids, mask))


def test_ptx_coef_zero_is_plain_ppo_bit_for_bit(tiny_lm_dir: Path) -> None:
    plain = make_model(tiny_lm_dir).learn(32)
    ptx0 = make_model(tiny_lm_dir, PPOPtx, ptx_coef=0.0, ptx_corpus=CORPUS, ptx_batch_size=4)
    ptx0.learn(32)
    expected, actual = lm_weights(plain), lm_weights(ptx0)
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name
    assert np.isfinite(ptx0.logger.name_to_value["train/ptx_loss"])  # logged even at γ=0


def test_ptx_term_changes_the_update_and_lowers_the_corpus_loss(tiny_lm_dir: Path) -> None:
    ptx0 = make_model(tiny_lm_dir, PPOPtx, ptx_coef=0.0, ptx_corpus=CORPUS, ptx_batch_size=4)
    ptx = make_model(tiny_lm_dir, PPOPtx, ptx_coef=2.0, ptx_corpus=CORPUS, ptx_batch_size=4)
    before = corpus_loss(ptx, tiny_lm_dir)
    ptx0.learn(64)
    ptx.learn(64)
    differs = [k for k, v in lm_weights(ptx0).items() if not torch.equal(lm_weights(ptx)[k], v)]
    assert differs  # the ptx gradient reached the LM
    loss0, loss_ptx = corpus_loss(ptx0, tiny_lm_dir), corpus_loss(ptx, tiny_lm_dir)
    assert loss_ptx < loss0 - 0.05, (before, loss0, loss_ptx)
    assert loss_ptx < before
    assert ptx.logger.name_to_value["train/ptx_coef"] == 2.0
    # The proxy is gone after training: SB3 saves and steps the real optimizer.
    assert isinstance(ptx.policy.optimizer, torch.optim.Optimizer)


def test_same_seed_same_ptx_training(tiny_lm_dir: Path) -> None:
    runs = []
    for _ in range(2):
        model = make_model(tiny_lm_dir, PPOPtx, ptx_coef=1.0, ptx_corpus=CORPUS, ptx_batch_size=4)
        runs.append(lm_weights(model.learn(32)))
    for name, value in runs[0].items():
        assert torch.equal(runs[1][name], value), name


def test_save_and_load_keep_the_ptx_settings(tiny_lm_dir: Path, tmp_path: Path) -> None:
    model = make_model(tiny_lm_dir, PPOPtx, ptx_coef=0.5, ptx_corpus=CORPUS, ptx_batch_size=4)
    model.learn(16)
    model.save(tmp_path / "ptx")
    loaded = PPOPtx.load(tmp_path / "ptx", env=model.get_env())
    assert loaded.ptx_coef == 0.5 and loaded.ptx_corpus == CORPUS
    loaded.learn(16)  # the corpus batches are rebuilt after loading
    assert np.isfinite(loaded.logger.name_to_value["train/ptx_loss"])


def test_corpus_batches_are_seeded_and_mask_padding(tiny_lm_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_lm_dir)
    a = CorpusBatches(CORPUS, tokenizer, batch_size=3, seed=1)
    b = CorpusBatches(CORPUS, tokenizer, batch_size=3, seed=1)
    for _ in range(5):  # crosses an epoch boundary
        (ids_a, mask_a), (ids_b, mask_b) = a.next(), b.next()
        assert torch.equal(ids_a, ids_b) and torch.equal(mask_a, mask_b)
        ends = mask_a.sum(1) - 1
        assert (ids_a[torch.arange(3), ends] == tokenizer.eos_token_id).all()
        assert (ids_a[mask_a == 0] == tokenizer.pad_token_id).all()


def test_corpus_lm_loss_ignores_padding(tiny_lm_dir: Path) -> None:
    from lmgym.models.loading import load_model

    lm, tokenizer = load_model(tiny_lm_dir)
    short = CorpusBatches(["i loved it ."], tokenizer, batch_size=1).next()
    both = CorpusBatches(["i loved it .", CORPUS[3]], tokenizer, batch_size=2, seed=0)
    ids, mask = both.ids, (torch.arange(both.ids.shape[1])[None] < both.lengths[:, None]).long()
    with torch.no_grad():
        alone = corpus_lm_loss(lm, *short)
        padded_row = corpus_lm_loss(lm, ids[:1], mask[:1])
    assert float(padded_row) == pytest.approx(float(alone), abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"ptx_coef": -1.0}, ValueError, "ptx_coef=-1.0"),
        ({"ptx_coef": float("nan")}, ValueError, "ptx_coef=nan"),
        ({"ptx_batch_size": 0}, ValueError, "ptx_batch_size=0"),
        ({"ptx_corpus_size": -3}, ValueError, "ptx_corpus_size=-3"),
        ({"ptx_corpus": ["a ."], "ptx_batch_size": 4}, ValueError, "fewer than ptx_batch_size"),
        ({"ptx_corpus": "the food was great ."}, TypeError, "not a list of texts"),
    ],
    ids=["coef_neg", "coef_nan", "batch0", "size_neg", "corpus_small", "corpus_str"],
)
def test_bad_ptx_arguments_are_rejected(tiny_lm_dir: Path, kwargs, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        make_model(tiny_lm_dir, PPOPtx, **kwargs)


def test_ptx_needs_an_lm_policy(tiny_lm_dir: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, prompts=PROMPTS, max_prompt_tokens=8)
    with pytest.raises(TypeError, match="needs an LM policy"):
        PPOPtx("MlpPolicy", env, n_steps=8, batch_size=8)


def test_corpus_batches_reject_bad_input(tiny_lm_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_lm_dir)
    with pytest.raises(ValueError, match="batch_size=0"):
        CorpusBatches(CORPUS, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="fewer than batch_size=9"):
        CorpusBatches(CORPUS, tokenizer, batch_size=9)
