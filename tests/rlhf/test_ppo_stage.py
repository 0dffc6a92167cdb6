"""PPO against a reward function on LMBandit-v0, recording RM and true score over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmgym.models.loading import load_model
from lmgym.rlhf.ppo_stage import (
    NormalizedReward,
    PPOStageConfig,
    run_ppo_stage,
)

PROMPTS = ["the food was", "i thought the staff", "the soup is"]


def count_great(prompts: list[str], completions: list[str]) -> list[float]:
    return [float(c.split().count("great")) for c in completions]


def n_words(prompts, completions) -> np.ndarray:
    return np.array([float(len(c.split())) for c in completions])


def tiny_config(**kwargs) -> PPOStageConfig:
    defaults = dict(
        steps=32,
        n_envs=4,
        n_steps=4,
        batch_size=8,
        n_epochs=1,
        max_new_tokens=5,
        learning_rate=1e-3,
        progress=False,
    )
    return PPOStageConfig(**{**defaults, **kwargs})


def test_run_records_every_rollout_and_saves_a_loadable_policy(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    seen: list[tuple[str, str]] = []

    def truth(prompts, completions):
        seen.extend(zip(prompts, completions, strict=True))
        return n_words(prompts, completions)

    result = run_ppo_stage(
        tiny_config(), count_great, tmp_path, model=tiny_lm_dir, prompts=PROMPTS,
        true_score_fn=truth,
    )  # fmt: skip
    h = result.history
    assert h["timesteps"] == [16, 32]  # one record per rollout of n_envs × n_steps completions
    assert len(h["reward_model"]) == len(h["true_score"]) == len(h["kl"]) == len(h["fluency"]) == 2
    assert len(seen) == 32 and {p for p, _ in seen} <= set(PROMPTS)
    first = seen[:16]
    assert h["true_score"][0] == pytest.approx(np.mean([len(c.split()) for _, c in first]))
    assert h["kl"][0] == pytest.approx(0.0, abs=1e-4)  # the first rollout is the reference itself
    assert all(0.0 <= f <= 1.0 for f in h["fluency"])
    model, _ = load_model(result.path)
    assert model.config.vocab_size == load_model(tiny_lm_dir)[0].config.vocab_size
    assert result.metrics["kl_coef"] == 0.05 and result.metrics["ptx_coef"] == 0.0


def test_same_seed_same_run(tiny_lm_dir: Path, tmp_path: Path) -> None:
    runs = [
        run_ppo_stage(
            tiny_config(),
            count_great,
            tmp_path / str(i),
            model=tiny_lm_dir,
            prompts=PROMPTS,
            true_score_fn=n_words,
        )  # fmt: skip
        for i in range(2)
    ]
    assert runs[0].history == runs[1].history
    a, b = (load_model(r.path)[0].state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ptx_coef_switches_to_ppo_ptx(tiny_lm_dir: Path, tmp_path: Path) -> None:
    kwargs = dict(model=tiny_lm_dir, prompts=PROMPTS, true_score_fn=n_words)
    plain = run_ppo_stage(tiny_config(), count_great, tmp_path / "a", **kwargs)
    ptx = run_ppo_stage(
        tiny_config(ptx_coef=1.0, ptx_batch_size=4), count_great, tmp_path / "b", **kwargs
    )
    assert ptx.metrics["ptx_coef"] == 1.0 and plain.metrics["ptx_coef"] == 0.0
    # The first rollout is sampled before any update, so it is the same; the weights are not.
    assert ptx.history["reward_model"][0] == plain.history["reward_model"][0]
    a, b = load_model(plain.path)[0].state_dict(), load_model(ptx.path)[0].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_normalized_reward_standardises_and_forwards_token_ids() -> None:
    received = {}

    def by_ids(prompts, completions, completion_ids):
        received["ids"] = completion_ids
        return [float(len(ids)) for ids in completion_ids]

    ids = [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]
    prompts, texts = ["p"] * 4, ["a", "b c", "d e f", "g h i j"]
    reward = NormalizedReward(by_ids, mean=2.5, std=0.5)
    scores = reward(prompts, texts, completion_ids=ids)
    assert received["ids"] == ids
    np.testing.assert_allclose(scores, [-3.0, -1.0, 1.0, 3.0])
    fitted = NormalizedReward.fit(lambda text: float(len(text.split())), prompts, texts)
    standardised = fitted(prompts, texts)
    assert standardised.mean() == pytest.approx(0.0) and standardised.std() == pytest.approx(1.0)
    assert "mean=2.5" in repr(fitted)


def test_normalized_reward_rejects_a_constant_reward() -> None:
    with pytest.raises(ValueError, match="std=0.0"):
        NormalizedReward.fit(lambda text: 1.0, ["p", "p"], ["a", "b"])
    with pytest.raises(ValueError, match="at least 2"):
        NormalizedReward.fit(lambda text: 1.0, ["p"], ["a"])
    with pytest.raises(ValueError, match="std=-1"):
        NormalizedReward(lambda text: 1.0, 0.0, -1)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"steps": 0}, "steps=0"),
        ({"kl_coef": -0.1}, "kl_coef=-0.1"),
        ({"ptx_coef": float("inf")}, "ptx_coef=inf"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"n_envs": 4, "n_steps": 4, "batch_size": 5}, "batch_size=5 does not divide"),
        ({"steps": 8, "n_envs": 4, "n_steps": 4, "batch_size": 8}, "less than one rollout"),
        ({"seed": -1}, "seed=-1"),
    ],
    ids=["steps", "kl_neg", "ptx_inf", "lr0", "batch", "rollout", "seed"],
)
def test_config_rejects_bad_values(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        PPOStageConfig(**kwargs)


def test_a_kl_coef_of_zero_warns() -> None:
    with pytest.warns(UserWarning, match="kl_coef=0: PPO trains without a KL penalty"):
        PPOStageConfig(kl_coef=0.0)
