"""A LoRA policy's base, adapters off, is π_ref of the env it was built on: one copy, one env."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import lmgym  # noqa: F401  (registers the envs)
import lmgym.envs.lm_env_parts as lm_env_parts
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs
from lmgym.agents.attach import attach_lora_reference
from lmgym.agents.lora import AdapterDisabledReference, causal_lm
from tests.conftest import PROMPTS, count_great

KWARGS = {"prompts": PROMPTS, "reward_fn": count_great, "max_prompt_tokens": 8,
          "max_new_tokens": 4}  # fmt: skip
LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"])


def _pointers(module: torch.nn.Module) -> set[int]:
    return {tensor.data_ptr() for tensor in module.state_dict().values()}


@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_the_env_it_was_built_on_takes_the_lora_base_as_its_reference(
    tiny_lm_dir: Path, env_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[object] = []
    build = lm_env_parts.build_lm_env_parts
    monkeypatch.setattr(
        lm_env_parts, "build_lm_env_parts", lambda **k: builds.append(k) or build(**k)
    )
    import lmgym.envs.lm_env as lm_env
    import lmgym.envs.lm_vector as lm_vector

    monkeypatch.setattr(lm_env, "build_lm_env_parts", lm_env_parts.build_lm_env_parts)
    monkeypatch.setattr(lm_vector, "build_lm_env_parts", lm_env_parts.build_lm_env_parts)

    env = SB3VecEnv(gym.make_vec(env_id, num_envs=2, model=tiny_lm_dir, **KWARGS))
    loaded = weakref.ref(env.venv.models.ref_model)
    model = PPO(LMActorCriticPolicy, env, n_steps=4, batch_size=8, n_epochs=1, seed=0,
                policy_kwargs=lm_policy_kwargs(env, lora=LORA))  # fmt: skip
    reference = attach_lora_reference(model)
    model.policy.attach_to(env)

    assert len(builds) == 1  # no second env was built to pass the reference
    models = env.venv.models
    assert isinstance(reference, AdapterDisabledReference)
    assert models.ref_model is reference and models.model is reference
    base = causal_lm(model.policy.lm)
    assert reference.get_input_embeddings().weight.data_ptr() == base.get_input_embeddings(
        ).weight.data_ptr()  # fmt: skip
    gc.collect()
    assert loaded() is None  # the env's own copy is gone: the policy's base is the only one
    assert _pointers(base) >= _pointers(causal_lm(reference.lora_lm))

    # At the start the policy is its base (LoRA's B is 0): the KL to the reference is 0.
    obs = env.reset()
    with torch.no_grad():
        actions, _, _ = model.policy(torch.as_tensor(obs))
    kls = []
    for _ in range(4 if env_id == "LMToken-v0" else 1):
        obs, _, dones, infos = env.step(actions.numpy())
        kls += [info["kl"] for info in infos]
        with torch.no_grad():
            actions, _, _ = model.policy(torch.as_tensor(obs))
    assert infos[0]["kl_form"] == "policy"
    np.testing.assert_allclose(kls, 0.0, atol=1e-5)
    model.learn(8)  # trains against the shared reference


def test_a_policy_without_lora_is_refused_and_the_env_is_unchanged(tiny_lm_dir: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, **KWARGS)
    before = env.unwrapped.models.ref_model
    model = PPO(LMActorCriticPolicy, env, n_steps=4, batch_size=4,
                policy_kwargs=lm_policy_kwargs(env))  # fmt: skip
    with pytest.raises(ValueError, match=r"reference_model\(\) needs LoRA adapters"):
        attach_lora_reference(model)
    assert env.unwrapped.models.ref_model is before
