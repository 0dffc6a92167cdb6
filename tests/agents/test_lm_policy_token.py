"""LMActorCriticPolicy on LMToken-v0: the LM picks the next token (Discrete(V) action)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import TRPO, MaskablePPO
from stable_baselines3 import A2C, PPO

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import (
    LMActorCriticPolicy,
    MaskableLMActorCriticPolicy,
    SB3VecEnv,
    lm_policy_kwargs,
)
from lmgym.agents.token_head import next_token_outputs
from lmgym.models.scoring import score_completions
from lmgym.seeding import set_seed
from tests.conftest import PROMPTS, build_tiny_model, build_tiny_tokenizer, count_great

KWARGS = {
    "prompts": PROMPTS,
    "reward_fn": count_great,
    "max_prompt_tokens": 8,
    "max_new_tokens": 4,
    "kl_estimator": "k3",
}


def make_env(tiny_lm_dir: Path, **kwargs) -> gym.Env:
    return gym.make("LMToken-v0", model=tiny_lm_dir, **{**KWARGS, **kwargs})


def make_vec(tiny_lm_dir: Path, num_envs: int = 4, **kwargs) -> SB3VecEnv:
    return SB3VecEnv(
        gym.make_vec("LMToken-v0", num_envs=num_envs, model=tiny_lm_dir, **{**KWARGS, **kwargs})
    )


def make_policy(env, cls=LMActorCriticPolicy, **kwargs) -> LMActorCriticPolicy:
    return cls(env.observation_space, env.action_space, lambda _: 1e-3, **kwargs)


def lm_state(policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.lm.state_dict().items()}


ALGOS = {
    "ppo": lambda env, kw: PPO(
        LMActorCriticPolicy, env, n_steps=16, batch_size=16, n_epochs=2, seed=0, policy_kwargs=kw
    ),
    "a2c": lambda env, kw: A2C(LMActorCriticPolicy, env, n_steps=4, seed=0, policy_kwargs=kw),
    "maskable_ppo": lambda env, kw: MaskablePPO(
        MaskableLMActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=2,
        seed=0,
        policy_kwargs=kw,
    ),
    # Double backward: eager attention; a value step that leaves the actor alone.
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
def test_algorithms_train_the_lm_on_single_env(tiny_lm_dir: Path, algo) -> None:
    env = make_env(tiny_lm_dir)
    model = algo(env, lm_policy_kwargs(env))
    policy = model.policy
    before = lm_state(policy)
    policy.attach_to(env)
    model.learn(64)
    assert model.num_timesteps >= 64
    assert any(not torch.equal(before[k], v) for k, v in policy.lm.state_dict().items())
    # Every env step found the log-probs of the state it acted in in the forward's cache.
    assert policy.logprob_cache_hits >= 64 and policy.logprob_cache_misses == 0
    env.reset(seed=0)
    *_, info = env.step(5)
    assert info["kl_form"] == "policy"


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_make_vec_through_adapter(tiny_lm_dir: Path, algo: str) -> None:
    vec = make_vec(tiny_lm_dir)
    model = ALGOS[algo](vec, dict(model=tiny_lm_dir))
    model.policy.attach_to(vec)
    model.learn(64)
    # One batched env step per rollout step (64 / 4 envs), each served from the cache.
    assert model.policy.logprob_cache_hits == 16 and model.policy.logprob_cache_misses == 0


@pytest.mark.parametrize("estimator", ["k1", "k3", "full"])
def test_first_steps_kl_is_zero(tiny_lm_dir: Path, estimator: str) -> None:
    vec = make_vec(tiny_lm_dir, kl_estimator=estimator)
    policy = make_policy(vec, model=tiny_lm_dir)
    policy.attach_to(vec)
    vec.seed(0)
    obs = vec.reset()
    for _ in range(6):  # past the first episode end: the reference's cache restarts rows
        with torch.no_grad():
            actions, _, _ = policy(torch.as_tensor(obs))
        obs, _, _, infos = vec.step(actions.numpy())
        for info in infos:
            assert info["kl_form"] == "policy"
            assert info["kl"] == pytest.approx(0.0, abs=1e-5)


def test_logprobs_match_teacher_forcing_and_reference(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    policy = make_policy(env, model=tiny_lm_dir)
    tokens = [12, 13, 5, 2]
    obs, _ = env.reset(seed=1, options={"prompt": "the food was"})
    states, ref_logp = [], []
    for token in tokens:
        states.append(obs)
        ref_logits = env.unwrapped.batch.reference.next_logits
        ref_logp.append(torch.log_softmax(ref_logits[0], dim=-1))
        obs, *_ = env.step(token)
    logp = policy.kl_logprobs(np.stack(states))  # (4, V): one forward, no cache
    assert logp.shape == (4, env.action_space.n)
    torch.testing.assert_close(logp, torch.stack(ref_logp), atol=1e-5, rtol=0)
    prompt = torch.as_tensor(states[0][None, :8])
    completion = torch.tensor([tokens])
    with torch.no_grad():
        scores = score_completions(
            policy.lm,
            prompt,
            (prompt != 0).long(),
            completion,
            torch.ones_like(completion),
            pad_token_id=0,
        )
    chosen = logp[torch.arange(4), torch.tensor(tokens)]
    torch.testing.assert_close(chosen, scores.logprobs[0], atol=1e-5, rtol=0)


def test_forward_evaluate_and_gradients_agree(tiny_lm_dir: Path) -> None:
    vec = make_vec(tiny_lm_dir, num_envs=3)
    vec.seed(0)
    obs = vec.reset()
    obs, *_ = vec.step(np.array([12, 13, 2]))  # rows with and without completion tokens
    obs_tensor = torch.as_tensor(obs)
    for value_trunk in ("shared", "detached", "separate"):
        policy = make_policy(vec, model=tiny_lm_dir, value_trunk=value_trunk)
        with torch.no_grad():
            actions, values, log_prob = policy(obs_tensor)
        assert actions.shape == (3,) and values.shape == (3, 1) and log_prob.shape == (3,)
        values2, log_prob2, entropy = policy.evaluate_actions(obs_tensor, actions.float())
        torch.testing.assert_close(log_prob2, log_prob, atol=1e-5, rtol=0)
        torch.testing.assert_close(values2, values, atol=1e-5, rtol=0)
        torch.testing.assert_close(policy.predict_values(obs_tensor), values2)
        (values2.sum() + log_prob2.sum() + entropy.sum()).backward()
        assert policy.value_net.weight.grad is not None
        assert policy.lm.transformer.h[0].attn.c_attn.weight.grad is not None


def test_logits_beyond_the_tokenizer_are_sliced(tiny_lm_dir: Path) -> None:
    tokenizer = build_tiny_tokenizer()
    big = build_tiny_model(len(tokenizer) + 13)  # GPT-2 style: more embedding rows than tokens
    env = gym.make("LMToken-v0", model=big, tokenizer=tokenizer, **KWARGS)
    policy = make_policy(env, **lm_policy_kwargs(env))
    obs, _ = env.reset(seed=0)
    logp = policy.kl_logprobs(obs[None])
    assert logp.shape == (1, len(tokenizer))
    assert torch.logsumexp(logp, -1).item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        action, _, _ = policy(torch.as_tensor(obs[None]))
    assert 0 <= int(action) < len(tokenizer)


def test_maskable_ppo_never_emits_masked_tokens(tiny_lm_dir: Path) -> None:
    allowed = np.zeros(27, dtype=bool)
    allowed[[2, 12, 13]] = True  # eos, "great", "good"
    vec = make_vec(tiny_lm_dir, action_mask=allowed)
    model = ALGOS["maskable_ppo"](vec, dict(model=tiny_lm_dir))
    model.policy.attach_to(vec)
    model.learn(64)
    actions = model.rollout_buffer.actions.reshape(-1).astype(int)
    assert set(actions.tolist()) <= {2, 12, 13}
    obs = vec.reset()
    masks = np.stack(vec.env_method("action_masks"))
    for _ in range(5):
        predicted, _ = model.predict(obs, action_masks=masks)
        assert set(predicted.tolist()) <= {2, 12, 13}


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_save_load_same_actions(tiny_lm_dir: Path, tmp_path: Path, algo: str) -> None:
    env = make_env(tiny_lm_dir)
    model = ALGOS[algo](env, dict(model=tiny_lm_dir))
    model.learn(16)
    model.save(tmp_path / "model")
    loaded = type(model).load(tmp_path / "model", env=env)
    assert type(loaded.policy) is type(model.policy)
    obs, _ = env.reset(seed=1)
    for deterministic in (False, True):
        set_seed(4)
        expected, _ = model.predict(obs, deterministic=deterministic)
        set_seed(4)
        actual, _ = loaded.predict(obs, deterministic=deterministic)
        np.testing.assert_array_equal(actual, expected)
    for k, v in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[k], v), k


def test_bad_arguments_raise(tiny_lm_dir: Path) -> None:
    env = make_env(tiny_lm_dir)
    with pytest.raises(ValueError, match="decoding"):
        make_policy(env, model=tiny_lm_dir, decoding=dict(temperature=0.5))
    bandit = gym.make("LMBandit-v0", model=tiny_lm_dir, prompts=PROMPTS, max_new_tokens=4)
    with pytest.raises(TypeError, match="Discrete"):
        make_policy(bandit, MaskableLMActorCriticPolicy, model=tiny_lm_dir)
    with pytest.raises(ValueError, match="Policy must subclass MaskableActorCriticPolicy"):
        MaskablePPO(LMActorCriticPolicy, env, policy_kwargs=dict(model=tiny_lm_dir))


@pytest.mark.parametrize("change", ["optimizer_step", "load_state_dict"])
def test_logprob_cache_is_dropped_when_parameters_change(tiny_lm_dir: Path, change: str) -> None:
    # Issue 13, item 11: log-probs cached by a rollout are stale once the parameters move.
    vec = make_vec(tiny_lm_dir)
    policy = make_policy(vec, model=tiny_lm_dir)
    vec.seed(0)
    obs = vec.reset()
    set_seed(0)
    with torch.no_grad():
        actions, _, _ = policy(torch.as_tensor(obs))
    before = policy.kl_logprobs(obs)
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
    after = policy.kl_logprobs(obs)
    with torch.no_grad():
        out = next_token_outputs(
            policy.lm, torch.as_tensor(obs), pad_token_id=0, n_actions=vec.action_space.n
        )
    fresh = torch.log_softmax(out.logits.float(), -1)
    torch.testing.assert_close(after, fresh)
    assert policy.logprob_cache_misses == 1
    assert (after - before).abs().max() > 1e-3  # the parameters did move the log-probs
