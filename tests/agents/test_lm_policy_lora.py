"""LoRA adapters on LMActorCriticPolicy (peft), and π_ref as the base with adapters disabled."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents.lm_policy import LMActorCriticPolicy
from lmgym.agents.lora import AdapterDisabledReference
from lmgym.models.loading import load_model
from lmgym.models.scoring import score_completions
from lmgym.seeding import set_seed
from tests.conftest import PROMPTS, count_great

KWARGS = {
    "prompts": PROMPTS,
    "reward_fn": count_great,
    "max_prompt_tokens": 8,
    "max_new_tokens": 4,
}
LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"])


def make_ppo(env, tiny_lm_dir: Path, **kwargs) -> PPO:
    return PPO(
        LMActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=2,
        learning_rate=1e-2,
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir, lora=LORA, **kwargs),
    )


def base_state(policy: LMActorCriticPolicy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.lm.state_dict().items()}


def scores(model, prompt: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return score_completions(
            model,
            prompt,
            (prompt != 0).long(),
            completion,
            torch.ones_like(completion),
            pad_token_id=0,
            keep_logits=True,
        ).logits


def test_only_adapters_and_value_head_train(tiny_lm_dir: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, **KWARGS)
    model = make_ppo(env, tiny_lm_dir)
    policy = model.policy
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_net.") for n in trainable)
    assert any(n.startswith("value_net.") for n in trainable)
    in_optimizer = {id(p) for g in policy.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in policy.parameters() if p.requires_grad}
    before = base_state(policy)
    policy.attach_to(env)
    model.learn(64)
    after = policy.lm.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)


@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_reference_with_adapters_disabled(tiny_lm_dir: Path, env_id: str) -> None:
    env = gym.make(env_id, model=tiny_lm_dir, **KWARGS)
    model = make_ppo(env, tiny_lm_dir)
    policy = model.policy
    reference = policy.reference_model()
    env = gym.make(env_id, model=tiny_lm_dir, ref_model=reference, **KWARGS, kl_estimator="k3")
    model.set_env(env)
    assert env.unwrapped.models.ref_model is reference
    # No second copy of the weights: the reference owns no parameters and reads the policy's.
    assert list(reference.parameters()) == []
    base = policy.lm.get_base_model()
    shared = reference.get_input_embeddings().weight
    assert shared.data_ptr() == base.transformer.wte.weight.data_ptr()
    # The env's set-up froze nothing of the policy through the reference.
    assert any(p.requires_grad for n, p in policy.lm.named_parameters() if "lora_" in n)

    original, _ = load_model(tiny_lm_dir)
    prompt = torch.tensor([[1, 4, 8, 9, 0, 0, 0, 0]])
    completion = torch.tensor([[12, 13, 5, 2]])
    torch.testing.assert_close(
        scores(reference, prompt, completion), scores(original, prompt, completion)
    )

    # At the start the policy is its base (LoRA's B matrices start at 0): KL 0 at every step.
    policy.attach_to(env)
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        action, _, _ = policy(torch.as_tensor(obs[None]))
    action = action.numpy()[0]
    *_, info = env.step(action)
    assert info["kl_form"] == "policy"
    assert info["kl"] == pytest.approx(0.0, abs=1e-5)

    model.learn(64)
    # Training moved the adapters, not the reference: it is still the original model ...
    torch.testing.assert_close(
        scores(reference, prompt, completion), scores(original, prompt, completion)
    )
    # ... while the policy (adapters on) moved away from it.
    assert not torch.allclose(
        scores(policy.lm, prompt, completion), scores(original, prompt, completion), atol=1e-4
    )


def test_save_pretrained_merges_adapters(tiny_lm_dir: Path, tmp_path: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, **KWARGS)
    model = make_ppo(env, tiny_lm_dir)
    model.learn(32)
    policy = model.policy
    policy.save_pretrained(tmp_path / "tuned")
    merged, _ = load_model(tmp_path / "tuned")
    assert type(merged).__name__ == "GPT2LMHeadModel"
    assert not any("lora_" in k for k in merged.state_dict())
    prompt = torch.tensor([[1, 4, 8, 9, 0, 0, 0, 0]])
    completion = torch.tensor([[12, 13, 5, 2]])
    torch.testing.assert_close(
        scores(merged, prompt, completion), scores(policy.lm, prompt, completion), atol=1e-5, rtol=0
    )
    assert any("lora_" in k for k in policy.lm.state_dict())  # the policy keeps its adapters


def test_sb3_save_load_round_trip(tiny_lm_dir: Path, tmp_path: Path) -> None:
    env = gym.make("LMToken-v0", model=tiny_lm_dir, **KWARGS)
    model = make_ppo(env, tiny_lm_dir)
    model.learn(16)
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", env=env)
    for k, v in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[k], v), k
    obs, _ = env.reset(seed=1)
    set_seed(4)
    expected, _ = model.predict(obs)
    set_seed(4)
    actual, _ = loaded.predict(obs)
    np.testing.assert_array_equal(actual, expected)


def test_bad_arguments_raise(tiny_lm_dir: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, **KWARGS)

    def make(**kwargs) -> LMActorCriticPolicy:
        return LMActorCriticPolicy(
            env.observation_space, env.action_space, lambda _: 1e-3, **kwargs
        )

    with pytest.raises(ValueError, match="freeze_layers"):
        make(model=tiny_lm_dir, lora=LORA, freeze_layers=1)
    with pytest.raises(ValueError, match="lora_dropout"):
        make(model=tiny_lm_dir, lora=dict(r=4, lora_dropout=0.1))
    with pytest.raises(TypeError, match="LoraConfig"):
        make(model=tiny_lm_dir, lora=dict(rank=4))
    with pytest.raises(TypeError, match="not a dict"):
        make(model=tiny_lm_dir, lora=8)
    with pytest.raises(ValueError, match="LoRA"):
        make(model=tiny_lm_dir).reference_model()
    with pytest.raises(TypeError, match="peft model"):
        AdapterDisabledReference(env.unwrapped.models.model)
