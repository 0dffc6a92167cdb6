"""``lmgym ppo-rm`` and ``lmgym rlhf`` take ``--device`` and ``--dtype``, checked before work."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import lmgym.rlhf.ppo_stage as ppo_stage
from lmgym.cli import build_parser, main
from lmgym.models.loading import DEFAULT_MODEL_DIR
from lmgym.rlhf.fit import save_model_dir
from lmgym.rlhf.learned_reward import LearnedRewardModel, init_reward_model
from lmgym.rlhf.pipeline import RLHFConfig
from lmgym.rlhf.ppo_stage import PPOStageConfig, run_ppo_stage

PPO_RM = ["ppo-rm", "--policy", str(DEFAULT_MODEL_DIR), "--reward-model", str(DEFAULT_MODEL_DIR)]
ARGS = {"ppo-rm": PPO_RM, "rlhf": ["rlhf", "--quick"]}


@pytest.fixture
def no_gpu_and_no_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """A machine without CUDA; every model load is recorded (and does nothing)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loads: list[object] = []
    for auto in (
        transformers.AutoModelForCausalLM,
        transformers.AutoModelForSequenceClassification,
    ):
        monkeypatch.setattr(auto, "from_pretrained", lambda *a, **k: loads.append(a))
    return loads


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "cuda"], "device='cuda' but this machine has no CUDA GPU"),
        (["--dtype", "float16"], "dtype='float16' cannot run on device 'cpu'"),
        (["--device", "tpu"], "device='tpu' is not a device"),
    ],
    ids=["cuda-without-gpu", "float16-on-cpu", "no-such-device"],
)
@pytest.mark.parametrize("command", ["ppo-rm", "rlhf"])
def test_a_device_or_dtype_that_cannot_run_fails_in_one_line_before_loading(
    command: str, flags: list[str], message: str, no_gpu_and_no_loads: list[object], capsys
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*ARGS[command], *flags, "--out", "never-written"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert no_gpu_and_no_loads == []
    assert not Path("never-written").exists()


def test_rlhf_hands_device_and_dtype_to_its_stages() -> None:
    args = build_parser("rlhf").parse_args(["rlhf", "--device", "cpu", "--dtype", "bfloat16"])
    config = RLHFConfig(**{k: v for k, v in vars(args).items() if k != "command"})
    assert (config.device, config.dtype) == ("cpu", "bfloat16")
    assert RLHFConfig().device == "cpu" and RLHFConfig().dtype == "auto"


def test_ppo_stage_puts_the_reference_in_dtype_and_trains_a_float32_policy(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    original = ppo_stage.SB3VecEnv
    monkeypatch.setattr(ppo_stage, "SB3VecEnv", lambda venv: built.append(venv) or original(venv))
    sizes = dict(steps=16, n_envs=4, n_steps=4, batch_size=16, n_epochs=1, max_new_tokens=4)
    config = PPOStageConfig(**sizes, progress=False, device="cpu", dtype="bfloat16")
    result = run_ppo_stage(config, lambda p, c: [float(len(t)) for t in c], tmp_path / "ppo",
                           model=tiny_lm_dir, prompts=["the food was"])  # fmt: skip
    assert result.history["timesteps"] == [16]
    (venv,) = built
    assert next(venv.unwrapped.models.ref_model.parameters()).dtype == torch.bfloat16
    saved = json.loads((result.path / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "float32"  # the trained policy


def test_learned_reward_model_runs_where_it_is_told(tmp_path: Path) -> None:
    rm_dir = save_model_dir(tmp_path / "rm", *init_reward_model(DEFAULT_MODEL_DIR), {})
    prompts, completions = ["the soup was", "the staff were"], ["great .", "cold and slow ."]
    float32 = LearnedRewardModel(rm_dir, device="cpu", dtype="float32")
    bf16 = LearnedRewardModel(rm_dir, device="cpu", dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    expected, got = float32(prompts, completions), bf16(prompts, completions)
    assert got.dtype == np.float64 and got.shape == (2,)
    np.testing.assert_allclose(got, expected, atol=0.1)


def test_ppo_rm_runs_with_device_cpu_and_bfloat16(tiny_lm_dir: Path, tmp_path: Path) -> None:
    rm_dir = save_model_dir(tmp_path / "rm", *init_reward_model(tiny_lm_dir), {})
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        code = main([
            "ppo-rm", "--policy", str(tiny_lm_dir), "--reward-model", str(rm_dir),
            "--out", str(tmp_path / "ppo"), "--steps", "16", "--n-envs", "4", "--n-steps", "4",
            "--batch-size", "16", "--n-epochs", "1", "--norm-samples", "1", "--eval-samples",
            "0", "--device", "cpu", "--dtype", "bfloat16", "--no-progress",
        ])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "ppo" / "metrics.json").read_text())
    assert metrics["config"]["device"] == "cpu" and metrics["config"]["dtype"] == "bfloat16"
    assert metrics["history"]["timesteps"] == [16]
