"""Where an env's models run (device, dtype) and how many copies of the weights it holds."""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import transformers

import lmgym  # noqa: F401  (registers the envs)
from lmgym.models.loading import load_model

KWARGS = dict(prompts=["the food was", "the staff were"], max_prompt_tokens=8, max_new_tokens=4)


@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_a_loaded_model_is_the_frozen_reference_not_a_second_copy(
    tiny_lm_dir: Path, env_id: str
) -> None:
    models = gym.make(env_id, model=tiny_lm_dir, **KWARGS).unwrapped.models
    assert models.model is models.ref_model  # one copy of the weights
    assert not any(p.requires_grad for p in models.ref_model.parameters())


def test_a_callers_model_object_is_copied_so_training_it_never_moves_the_reference(
    tiny_lm_dir: Path,
) -> None:
    model, tokenizer = load_model(tiny_lm_dir)
    env = gym.make("LMBandit-v0", model=model, tokenizer=tokenizer, **KWARGS).unwrapped
    assert env.models.model is model and env.models.ref_model is not model
    assert all(p.requires_grad for p in model.parameters())  # the caller's object is untouched


@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_a_device_that_is_not_here_fails_at_construction_before_loading(
    tiny_lm_dir: Path, env_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loads: list[object] = []
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a)
    )
    with pytest.raises(ValueError, match=r"^device='cuda' but this machine has no CUDA GPU"):
        gym.make(env_id, model=tiny_lm_dir, device="cuda", **KWARGS)
    with pytest.raises(ValueError, match=r"^dtype='float16' cannot run on device 'cpu'"):
        gym.make(env_id, model=tiny_lm_dir, dtype="float16", **KWARGS)
    assert loads == []


def test_bfloat16_env_keeps_float32_kl_close_to_the_float32_env(tiny_lm_dir: Path) -> None:
    rewards = {}
    for dtype in ("float32", "bfloat16"):
        env = gym.make("LMBandit-v0", model=tiny_lm_dir, device="cpu", dtype=dtype, **KWARGS)
        assert next(env.unwrapped.models.ref_model.parameters()).dtype == getattr(torch, dtype)
        env.reset(seed=0)
        _, reward, *_, info = env.step(np.array([7, 8, 9, 2]))
        assert isinstance(info["kl"], float) and np.isfinite(info["kl"])
        rewards[dtype] = (reward, info["kl"])
    # bf16 keeps ~3 significant digits of each log-prob: near float32's sum, not equal.
    assert rewards["bfloat16"][1] == pytest.approx(rewards["float32"][1], rel=0.05)


def test_vector_envs_take_device_and_dtype(tiny_lm_dir: Path) -> None:
    envs = gym.make_vec(
        "LMToken-v0", 2, model=tiny_lm_dir, device="cpu", dtype="bfloat16", **KWARGS
    )
    assert next(envs.models.ref_model.parameters()).dtype == torch.bfloat16
    envs.reset(seed=0)
    _, reward, *_ = envs.step(np.array([7, 2]))
    assert np.isfinite(reward).all()


def test_model_and_reference_on_different_devices_is_refused_up_front(tiny_lm_dir: Path) -> None:
    model, tokenizer = load_model(tiny_lm_dir)
    elsewhere = copy.deepcopy(model).to("meta")  # a device the policy model is not on
    with pytest.raises(ValueError, match=r"model is on cpu but ref_model is on meta.*device="):
        gym.make("LMBandit-v0", model=model, tokenizer=tokenizer, ref_model=elsewhere, **KWARGS)
