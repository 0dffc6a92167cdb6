"""``run_train``: outputs, determinism, every fitting (env, algo, policy), resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.training import trainer as trainer_module
from lmgym.training.algorithms import ALGORITHMS, ENV_IDS, valid_algos
from lmgym.training.build import make_env
from lmgym.training.checkpoint import load_checkpoint
from lmgym.training.train import TrainConfig, run_train


def cat_config(out: Path, **kwargs) -> TrainConfig:
    base = dict(env="CatGrid-v0", algo="ppo", steps=1024, n_envs=2, eval_episodes=4,
                out=out, progress=False)  # fmt: skip
    return TrainConfig(**{**base, **kwargs})


def lm_config(out: Path, model: Path, **kwargs) -> TrainConfig:
    base = dict(env="LMBandit-v0", algo="ppo", steps=64, n_envs=4, eval_episodes=4, out=out,
                model=model, progress=False)  # fmt: skip
    return TrainConfig(**{**base, **kwargs})


def test_run_writes_metrics_curve_tensorboard_and_checkpoint(tmp_path: Path) -> None:
    metrics = run_train(cat_config(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("eval_reward_before", "eval_reward_after", "eval_kl_after", "steps", "wall_s",
                "config", "seed", "env", "algo", "policy", "curve"):  # fmt: skip
        assert key in saved, key
    assert saved["steps"] >= 1024 and saved["wall_s"] > 0
    assert saved["eval_kl_after"] is None and saved["kl_form"] == "none"
    assert len(saved["curve"]["steps"]) == len(saved["curve"]["reward"]) > 10
    assert (tmp_path / "run" / "curve.png").stat().st_size > 10_000
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.zip").state["steps_done"] >= 1024


def test_same_seed_same_curve(tmp_path: Path) -> None:
    a = run_train(cat_config(tmp_path / "a", seed=3))
    b = run_train(cat_config(tmp_path / "b", seed=3))
    c = run_train(cat_config(tmp_path / "c", seed=4))
    assert a["curve"] == b["curve"] and a["eval"] == b["eval"]
    assert a["curve"] != c["curve"]


def test_same_seed_same_curve_lm_policy(tmp_path: Path, tiny_lm_dir: Path) -> None:
    a = run_train(lm_config(tmp_path / "a", tiny_lm_dir, steps=128))
    b = run_train(lm_config(tmp_path / "b", tiny_lm_dir, steps=128))
    assert a["curve"] == b["curve"] and a["eval"] == b["eval"]
    assert a["eval_kl_before"] == pytest.approx(0.0, abs=1e-5)  # π_θ = π_ref before training
    assert a["kl_form"] == "policy"


def test_lm_runs_train_on_train_prompts_and_are_evaluated_on_held_out_ones(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    config = lm_config(tmp_path, tiny_lm_dir, steps=16, eval_episodes=32)
    assert make_env(config, 2).venv.prompt_source.texts == corpus_prompts("train")
    metrics = run_train(config)
    held_out, training = set(corpus_prompts("test")), set(corpus_prompts("train"))
    assert held_out.isdisjoint(training)
    for when in ("before", "after"):
        played = set(metrics["eval"][when]["prompts"])
        assert len(played) > 10 and played <= held_out, when  # 32 draws of 36 prompts
        assert not played & training, when
    assert metrics["eval"]["before"]["prompts"] == metrics["eval"]["after"]["prompts"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["eval_prompts"] == "test" and "held-out test prompts" in saved["eval"]["method"]


def test_a_run_evaluated_on_other_prompts_is_not_resumed(tmp_path, tiny_lm_dir) -> None:
    run_train(lm_config(tmp_path, tiny_lm_dir, steps=16))
    marker = json.loads((tmp_path / "run.json").read_text())
    del marker["identity"]["eval_prompts"]  # as an older lmgym wrote it
    (tmp_path / "run.json").write_text(json.dumps(marker))
    with pytest.raises(ValueError, match="eval_prompts: None in the run, 'test' now"):
        run_train(TrainConfig(resume=tmp_path, steps=32, progress=False))


COMBOS = [
    (env, algo, policy)
    for env in ENV_IDS
    for policy in ("lm", "mlp")
    if not (env == "CatGrid-v0" and policy == "lm")
    for algo in valid_algos(env, policy)
]


@pytest.mark.parametrize(("env", "algo", "policy"), COMBOS, ids=["-".join(c) for c in COMBOS])
def test_every_fitting_combination_trains(tmp_path, tiny_lm_dir, env, algo, policy) -> None:
    model = None if env == "CatGrid-v0" else tiny_lm_dir
    n_envs = ALGORITHMS[algo].group_size  # 1, or one group of GRPO / RLOO
    config = TrainConfig(env=env, algo=algo, policy=policy, steps=16, n_envs=n_envs,
                         eval_episodes=2, out=tmp_path, model=model, progress=False)  # fmt: skip
    metrics = run_train(config)
    assert metrics["steps"] >= 16 and metrics["eval"]["after"]["episodes"] == 2
    lm_env = env != "CatGrid-v0"
    assert (metrics["eval_kl_after"] is not None) == lm_env
    expected_form = "none" if not lm_env else (
        "cross_entropy" if algo in ("recurrent_ppo", "dqn") else "policy")  # fmt: skip
    assert metrics["kl_form"] == expected_form
    assert metrics["eval_prompts"] == ("test" if lm_env else None)
    if lm_env:
        assert set(metrics["eval"]["after"]["prompts"]) <= set(corpus_prompts("test"))


def test_interrupted_run_resumes_to_a_valid_metrics_json(tmp_path: Path, monkeypatch) -> None:
    config = cat_config(tmp_path, steps=2048, checkpoint_every=512)
    real_save = trainer_module.ckpt.save_checkpoint
    calls = []

    def save_then_die(path, model, state):
        calls.append(state["steps_done"])
        if len(calls) == 3:  # step 0, step 512, then the process is killed
            raise KeyboardInterrupt
        return real_save(path, model, state)

    monkeypatch.setattr(trainer_module.ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_train(config)
    assert not (tmp_path / "metrics.json").exists()
    saved = load_checkpoint(tmp_path / "checkpoint.zip").state
    assert saved["steps_done"] == calls[1] >= 512
    monkeypatch.setattr(trainer_module.ckpt, "save_checkpoint", real_save)

    with pytest.raises(ValueError, match="already holds"):
        run_train(config)  # neither --resume nor --overwrite
    metrics = run_train(TrainConfig(resume=tmp_path, progress=False))  # settings from run.json
    assert metrics["steps"] >= 2048 and metrics["resumed_at"] == [saved["steps_done"]]
    assert metrics["eval_reward_before"] == saved["eval_before"]["reward"]
    assert metrics["curve"]["steps"][-1] == 2048.0
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == metrics["steps"]


def test_resume_extends_a_run_and_restores_adaptive_beta(tmp_path, tiny_lm_dir, monkeypatch):
    run_train(lm_config(tmp_path, tiny_lm_dir, kl_target=0.01, kl_coef=0.5))
    saved = load_checkpoint(tmp_path / "checkpoint.zip").state
    assert saved["kl_coef"] < 0.5  # the adaptive β moved (KL far below target)
    seen = []
    real_start = trainer_module._CheckpointCallback._on_training_start

    def record(self) -> None:
        real_start(self)
        seen.append(float(self.run.env.venv.rewarder.controller.value))

    monkeypatch.setattr(trainer_module._CheckpointCallback, "_on_training_start", record)
    metrics = run_train(TrainConfig(resume=tmp_path, steps=128, progress=False))
    assert seen == [pytest.approx(saved["kl_coef"])]
    assert metrics["steps"] >= 128 and metrics["resumed_at"] == [saved["steps_done"]]


def test_out_dir_rules(tmp_path: Path) -> None:
    first = run_train(cat_config(tmp_path, steps=256))
    mtime = (tmp_path / "metrics.json").stat().st_mtime_ns
    again = run_train(cat_config(tmp_path, steps=256, resume=tmp_path))  # finished: reused
    assert again == json.loads(json.dumps(first))
    assert (tmp_path / "metrics.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"seed: 0 in the run, 1 given"):
        TrainConfig(resume=tmp_path, seed=1)
    with pytest.raises(ValueError, match=r"out: .* \(the run\), 'elsewhere' given"):
        TrainConfig(resume=tmp_path, out=Path("elsewhere"))
    with pytest.raises(ValueError, match=r"holds no train run"):
        TrainConfig(resume=tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"already holds a train run \(env='CatGrid-v0'"):
        run_train(cat_config(tmp_path, steps=256, seed=1))
    fresh = run_train(cat_config(tmp_path, steps=256, seed=1, overwrite=True))
    assert fresh["seed"] == 1 and fresh["resumed_at"] == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(steps=0), "steps=0"),
        (dict(seed=-1), "seed=-1"),
        (dict(n_envs=0), "n_envs=0"),
        (dict(eval_episodes=0), "eval_episodes=0"),
        (dict(learning_rate=0.0), "learning_rate=0.0"),
        (dict(kl_coef=-1.0), "kl_coef=-1.0"),
        (dict(kl_target=4.0), "has no KL penalty"),
        (dict(env="LMBandit-v0", kl_target=4.0, kl_horizon=0), "kl_horizon=0 must be an int"),
        (dict(env="LMBandit-v0", kl_target=4.0, kl_horizon=2.5), "kl_horizon=2.5 must be"),
        (dict(env="LMBandit-v0", kl_horizon=100), "kl_horizon=100 without kl_target"),
        (
            dict(env="LMToken-v0", algo="dqn", policy="mlp", kl_target=4.0),
            "algo='dqn', whose policy cannot give log π_θ",
        ),
        (dict(model=Path("m")), "has no language model"),
        (dict(resume=Path("r"), overwrite=True), "one of the two"),
        (dict(env="Pong-v5"), "env='Pong-v5' is unknown"),
        (dict(algo="sac"), "algo='sac' is unknown"),
        (dict(policy="lm"), "policy='lm' does not fit"),
        (dict(env="LMBandit-v0", algo="dqn", policy="mlp"), r"Valid algos for LMBandit-v0"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v),
)
def test_bad_config_raises(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        TrainConfig(**{"env": "CatGrid-v0", **kwargs})
