"""LMActorCriticPolicy: an HF causal LM as an SB3 actor-critic policy on LMBandit-v0."""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import TRPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.distributions import kl_divergence

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs
from lmgym.error import ModelLoadError
from lmgym.models.generation import DecodingConfig
from lmgym.models.loading import load_model
from lmgym.models.scoring import completion_logprobs
from lmgym.seeding import set_seed
from tests.conftest import PROMPTS, build_tiny_model, build_tiny_tokenizer, count_great

KWARGS = {
    "prompts": PROMPTS,
    "reward_fn": count_great,
    "max_prompt_tokens": 8,
    "max_new_tokens": 6,
}


def make_env(tiny_lm_dir: Path, **kwargs) -> gym.Env:
    return gym.make("LMBandit-v0", model=tiny_lm_dir, **{**KWARGS, **kwargs})


def make_policy(env: gym.Env, **kwargs) -> LMActorCriticPolicy:
    return LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **kwargs)


def lm_state(policy: LMActorCriticPolicy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.lm.state_dict().items()}


def teacher_forced(policy: LMActorCriticPolicy, obs: np.ndarray, actions: np.ndarray):
    """(B, T) log-probs of the completions from a fresh teacher-forced pass (tiny tokenizer)."""
    return completion_logprobs(
        policy.lm,
        torch.as_tensor(obs),
        torch.as_tensor(actions),
        pad_token_id=0,
        eos_token_id=2,
        full=False,
    )


ALGOS = {
    "ppo": lambda env, kw: PPO(
        LMActorCriticPolicy, env, n_steps=16, batch_size=16, n_epochs=2, seed=0, policy_kwargs=kw
    ),
    "a2c": lambda env, kw: A2C(LMActorCriticPolicy, env, n_steps=4, seed=0, policy_kwargs=kw),
    # TRPO differentiates twice: eager attention (SDPA has no double backward on CPU), and a
    # value head that does not move the actor's weights in TRPO's separate value step.
    "trpo": lambda env, kw: TRPO(
        LMActorCriticPolicy,
        env,
        n_steps=32,
        batch_size=32,
        seed=0,
        policy_kwargs={**kw, "attn_implementation": "eager", "value_trunk": "detached"},
    ),
}


@pytest.mark.parametrize("algo", ALGOS.values(), ids=ALGOS.keys())
def test_algorithms_train_the_lm_with_policy_kl(tiny_lm_dir: Path, algo) -> None:
    env = make_env(tiny_lm_dir)
    model = algo(env, lm_policy_kwargs(env))
    policy = model.policy
    before = lm_state(policy)
    env_before = {k: v.clone() for k, v in env.unwrapped.models.model.state_dict().items()}
    policy.attach_to(env)
    model.learn(64)
    assert model.num_timesteps >= 64
    assert any(not torch.equal(before[k], v) for k, v in policy.lm.state_dict().items())
    # The env's model object was deep-copied, never trained.
    for k, v in env.unwrapped.models.model.state_dict().items():
        assert torch.equal(env_before[k], v), k
    # Every env step found the sampled completion's log-probs in the cache.
    assert policy.logprob_cache_hits >= 64 and policy.logprob_cache_misses == 0
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["kl_form"] == "policy"


def test_vector_env_through_adapter(tiny_lm_dir: Path) -> None:
    vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=4, model=tiny_lm_dir, **KWARGS))
    model = PPO(
        LMActorCriticPolicy,
        vec,
        n_steps=8,
        batch_size=16,
        n_epochs=1,
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir),
    )
    model.policy.attach_to(vec)
    model.learn(64)
    # One batched env step per rollout step, each served from the cache.
    assert model.policy.logprob_cache_hits == 16 and model.policy.logprob_cache_misses == 0


def test_logprobs_and_values_agree_between_sampling_and_scoring(tiny_lm_dir: Path) -> None:
    vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=8, model=tiny_lm_dir, **KWARGS))
    policy = make_policy(vec, model=tiny_lm_dir)
    vec.seed(0)
    obs = vec.reset()
    obs_tensor = torch.as_tensor(obs)
    set_seed(0)
    with torch.no_grad():
        actions, values, log_prob = policy(obs_tensor)
        fresh = teacher_forced(policy, obs, actions.numpy())
        cached = policy.kl_logprobs(obs, actions.numpy())
        # The rollout buffer stores actions as floats: evaluate_actions must cope.
        values2, log_prob2, entropy = policy.evaluate_actions(obs_tensor, actions.float())
    torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_prob2, log_prob, atol=1e-5, rtol=0)
    torch.testing.assert_close(values2, values, atol=1e-5, rtol=0)
    assert values.shape == (8, 1) and log_prob.shape == (8,) and entropy.shape == (8,)
    assert bool((entropy > 0).all())
    # Rows not sampled by forward() fall back to a teacher-forced pass.
    other = np.roll(actions.numpy(), 1, axis=1)
    torch.testing.assert_close(policy.kl_logprobs(obs, other), teacher_forced(policy, obs, other))
    assert policy.logprob_cache_misses == 1
    full = policy.full_logprobs(obs, actions.numpy())
    assert full.shape == (8, 6, vec.action_space.nvec[0])
    assert policy.logprob_cache_misses == 1  # full distributions are never cached nor counted


def test_rollout_takes_the_value_from_generation(tiny_lm_dir: Path) -> None:
    """The critic reads the prefill's hidden state: no forward of the trunk alone on a rollout."""
    env = make_env(tiny_lm_dir)
    policy = make_policy(env, model=tiny_lm_dir)
    obs, _ = env.reset(seed=0)
    calls = {"lm": 0, "trunk": 0}
    hooks = [
        policy.lm.register_forward_pre_hook(lambda *_: calls.__setitem__("lm", calls["lm"] + 1)),
        policy.trunk.register_forward_pre_hook(
            lambda *_: calls.__setitem__("trunk", calls["trunk"] + 1)
        ),
    ]
    try:
        with torch.no_grad():
            _, values, _ = policy(torch.as_tensor(obs[None]))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls["lm"] >= 1 and calls["trunk"] == calls["lm"]  # every trunk pass is generate's
    with torch.no_grad():
        torch.testing.assert_close(
            values, policy.predict_values(torch.as_tensor(obs[None])), atol=1e-5, rtol=0
        )


def test_evaluate_actions_gradient_flows(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    policy = make_policy(env, model=tiny_lm_dir)
    obs = torch.as_tensor(np.stack([env.observation_space.sample() * 0 + 5] * 2))
    actions = torch.as_tensor(np.stack([env.action_space.sample() for _ in range(2)]))
    values, log_prob, entropy = policy.evaluate_actions(obs, actions)
    (values.sum() + log_prob.sum() + entropy.sum()).backward()
    assert policy.lm.transformer.h[0].attn.c_attn.weight.grad is not None
    assert policy.value_net.weight.grad is not None


def test_value_trunk_options(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    obs = torch.full((2, 8), 5)
    actions = torch.full((2, 6), 6)
    detached = make_policy(env, model=tiny_lm_dir, value_trunk="detached")
    values, _, _ = detached.evaluate_actions(obs, actions)
    values.sum().backward()
    assert all(p.grad is None for p in detached.lm.parameters())
    separate = make_policy(env, model=tiny_lm_dir, value_trunk="separate")
    values, _, _ = separate.evaluate_actions(obs, actions)
    values.sum().backward()
    assert all(p.grad is None for p in separate.lm.parameters())
    assert separate.value_trunk is not None
    assert any(p.grad is not None for p in separate.value_trunk.parameters())


def test_dropout_is_zero_in_train_mode(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    tokenizer = build_tiny_tokenizer()
    raw = build_tiny_model(len(tokenizer))
    assert raw.config.resid_pdrop > 0  # GPT-2's default 0.1, which would break the PPO ratio
    for policy in (
        make_policy(env, model=tiny_lm_dir),
        make_policy(env, model=raw, tokenizer=tokenizer),
    ):
        obs = torch.full((3, 8), 7)
        actions = torch.as_tensor(np.stack([env.action_space.sample() for _ in range(3)]))
        policy.set_training_mode(True)
        _, train_logp, _ = policy.evaluate_actions(obs, actions)
        policy.set_training_mode(False)
        _, eval_logp, _ = policy.evaluate_actions(obs, actions)
        torch.testing.assert_close(train_logp, eval_logp, atol=0, rtol=0)
    assert raw.config.resid_pdrop > 0  # the caller's model object is left untouched


def test_freeze_layers(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    model = PPO(
        LMActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir, freeze_layers=1),
    )
    lm = model.policy.lm
    frozen = [lm.transformer.wte, lm.transformer.wpe, lm.transformer.h[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in lm.transformer.h[1].parameters())
    in_optimizer = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in in_optimizer for m in frozen for p in m.parameters())
    before = lm_state(model.policy)
    model.learn(32)
    after = lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("transformer.h.0"))
    assert any(
        not torch.equal(before[k], after[k]) for k in before if k.startswith("transformer.h.1")
    )


@pytest.mark.parametrize("source", ["directory", "env_model_object"])
def test_save_load_round_trip(tiny_lm_dir: Path, tmp_path: Path, source: str) -> None:
    env = make_env(tiny_lm_dir)
    lm_kwargs = dict(model=tiny_lm_dir) if source == "directory" else lm_policy_kwargs(env)
    kwargs = dict(**lm_kwargs, decoding=DecodingConfig(temperature=1.0), freeze_layers=1)
    model = PPO(
        LMActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        policy_kwargs=kwargs,
    )
    model.learn(16)
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", env=env)
    assert loaded.policy.freeze_layers == 1
    obs, _ = env.reset(seed=1)
    for deterministic in (False, True):
        set_seed(4)
        expected, _ = model.predict(obs, deterministic=deterministic)
        set_seed(4)
        actual, _ = loaded.predict(obs, deterministic=deterministic)
        np.testing.assert_array_equal(actual, expected)
    # The policy alone round-trips through SB3's policy.save / Policy.load too.
    model.policy.save(str(tmp_path / "policy.pt"))
    policy = LMActorCriticPolicy.load(str(tmp_path / "policy.pt"))
    for k, v in model.policy.state_dict().items():
        assert torch.equal(policy.state_dict()[k], v), k


def test_save_pretrained_then_load_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    env = make_env(tiny_lm_dir)
    model = A2C(LMActorCriticPolicy, env, n_steps=4, seed=0, policy_kwargs=dict(model=tiny_lm_dir))
    model.learn(16)
    model.policy.save_pretrained(tmp_path / "tuned")
    lm, tokenizer = load_model(tmp_path / "tuned")
    for k, v in model.policy.lm.state_dict().items():
        assert torch.equal(lm.state_dict()[k], v), k
    assert tokenizer.get_vocab() == env.unwrapped.models.tokenizer.get_vocab()
    # The tuned directory builds an env and a policy like any other model directory.
    make_policy(make_env(tmp_path / "tuned"), model=tmp_path / "tuned")


def test_same_seed_same_training(tiny_lm_dir: Path) -> None:
    def train() -> dict[str, torch.Tensor]:
        env = make_env(tiny_lm_dir)
        model = PPO(
            LMActorCriticPolicy,
            env,
            n_steps=16,
            batch_size=16,
            n_epochs=1,
            seed=3,
            policy_kwargs=dict(model=tiny_lm_dir),
        )
        model.policy.attach_to(env)
        model.learn(32)
        return lm_state(model.policy)

    first, second = train(), train()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_full_kl_estimator_attachment(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir, kl_estimator="full")
    policy = make_policy(env, model=tiny_lm_dir)
    policy.attach_to(env, full_distribution=True)
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        actions, _, _ = policy(torch.as_tensor(obs[None]))
    _, _, _, _, info = env.step(actions[0].numpy())
    assert info["kl_form"] == "policy"
    assert info["kl"] == pytest.approx(0.0, abs=1e-5)  # π_θ is still the reference


def test_kl_between_completion_distributions(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    policy = make_policy(env, model=tiny_lm_dir, attn_implementation="eager")
    obs = torch.full((4, 8), 5)
    with torch.no_grad():
        old = policy.get_distribution(obs)
        actions = old.sample()
    old = copy.copy(old)  # as TRPO keeps its old distribution
    new = policy.get_distribution(obs)
    new.log_prob(actions)
    kl = kl_divergence(new, old)
    assert kl.shape == (4,)
    torch.testing.assert_close(kl, torch.zeros(4), atol=1e-5, rtol=0)


def test_bad_arguments_raise(tiny_lm_dir: Path, tmp_path: Path) -> None:
    env = make_env(tiny_lm_dir)
    with pytest.raises(ValueError, match="freeze_layers=-1"):
        make_policy(env, model=tiny_lm_dir, freeze_layers=-1)
    with pytest.raises(ValueError, match="freeze_layers=3"):
        make_policy(env, model=tiny_lm_dir, freeze_layers=3)
    with pytest.raises(TypeError, match="freeze_layers"):
        make_policy(env, model=tiny_lm_dir, freeze_layers=1.0)
    with pytest.raises(ModelLoadError, match="does not exist"):
        make_policy(env, model=tmp_path / "missing")
    with pytest.raises(TypeError, match="model="):
        make_policy(env, model=42)
    with pytest.raises(ValueError, match="value_trunk"):
        make_policy(env, model=tiny_lm_dir, value_trunk="both")
    with pytest.raises(TypeError, match="decoding"):
        make_policy(env, model=tiny_lm_dir, decoding=0.7)
    completions = make_policy(env, model=tiny_lm_dir).get_distribution(torch.full((1, 8), 5))
    with pytest.raises(ValueError, match="max_new_tokens=3 differs"):
        completions.distribution.decode(DecodingConfig(max_new_tokens=3))
    with pytest.raises(ValueError, match="ortho_init"):
        make_policy(env, model=tiny_lm_dir, ortho_init=True)
    with pytest.raises(ValueError, match="pad_token_id"):
        make_policy(env, model=env.unwrapped.models.model)  # a model object, no tokenizer
    with pytest.raises(ValueError, match="embedding has 10 rows"):
        make_policy(env, model=build_tiny_model(10), pad_token_id=0, eos_token_id=2)
    with pytest.raises(TypeError, match="MultiDiscrete"):
        LMActorCriticPolicy(env.observation_space, spaces.Discrete(4), lambda _: 1e-3)
    with pytest.raises(TypeError, match="not an lmgym LM env"):
        lm_policy_kwargs(gym.make("CatGrid-v0"))


TEMPERED = DecodingConfig(temperature=0.3, top_k=3)


def test_decoding_leaves_rollouts_sampling_from_the_policy(tiny_lm_dir: Path) -> None:
    # Issue 13, item 6: PPO's ratio and the KL score rollouts under π_θ, so rollouts must be
    # sampled from π_θ itself; a tempered decoding= used to leak into them.
    env = make_env(tiny_lm_dir)
    plain = make_policy(env, model=tiny_lm_dir)
    tempered = make_policy(env, model=tiny_lm_dir, decoding=TEMPERED)
    obs = torch.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(8)]))
    rollouts = []
    for policy in (plain, tempered):
        set_seed(0)
        with torch.no_grad():
            actions, _, log_prob = policy(obs)
        generation = policy.action_dist.distribution.generation
        assert generation is not None
        # The log-prob PPO stores is that of the distribution that drew the sample.
        torch.testing.assert_close(log_prob, generation.sampling_logprobs.sum(-1))
        rollouts.append((actions, log_prob))
    torch.testing.assert_close(rollouts[1], rollouts[0], atol=0, rtol=0)


def test_decoding_applies_to_predict(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    greedy_only = make_policy(env, model=tiny_lm_dir, decoding=dict(top_k=1))
    plain = make_policy(env, model=tiny_lm_dir)
    greedy, _ = plain.predict(obs, deterministic=True)
    set_seed(0)
    top_1, _ = greedy_only.predict(obs, deterministic=False)
    set_seed(0)
    sampled, _ = plain.predict(obs, deterministic=False)
    np.testing.assert_array_equal(top_1, greedy)  # top-k 1 sampling is greedy decoding
    assert not np.array_equal(sampled, greedy)


@pytest.mark.parametrize("change", ["optimizer_step", "load_state_dict"])
def test_logprob_cache_is_dropped_when_parameters_change(tiny_lm_dir: Path, change: str) -> None:
    # Issue 13, item 11: log-probs cached by a rollout are stale once the parameters move.
    env = make_env(tiny_lm_dir)
    policy = make_policy(env, model=tiny_lm_dir)
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    set_seed(0)
    with torch.no_grad():
        actions, _, _ = policy(torch.as_tensor(obs))
    acts = actions.numpy()
    before = policy.kl_logprobs(obs, acts)
    assert policy.logprob_cache_hits == 1
    if change == "optimizer_step":
        _, log_prob, _ = policy.evaluate_actions(torch.as_tensor(obs), actions)
        (-log_prob.sum()).backward()
        policy.optimizer.step()
    else:  # what PPO.load / set_parameters do
        state = {
            k: v * 1.5 if k.endswith("c_attn.weight") else v for k, v in policy.state_dict().items()
        }
        policy.load_state_dict(state)
    after = policy.kl_logprobs(obs, acts)
    torch.testing.assert_close(after, teacher_forced(policy, obs, acts))
    assert policy.logprob_cache_misses == 1
    assert (after - before).abs().max() > 1e-3  # the parameters did move the log-probs
