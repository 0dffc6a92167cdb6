from __future__ import annotations

import gc
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import lmgym  # noqa: F401
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs, lm_token_logprobs
from lmgym.envs.token_vector import LMTokenVectorEnv
from lmgym.error import ResetNeeded
from lmgym.models.scoring import score_completions
from lmgym.rewards.kl import AdaptiveKLController
from lmgym.seeding import set_seed
from tests.conftest import PROMPTS, build_tiny_model, count_great
from tests.envs.conftest import EOS, PAD, P, make_token

KWARGS = {"prompts": PROMPTS, "reward_fn": count_great, "max_prompt_tokens": P}


def make_vec(tiny_lm_dir: Path, n: int, **kwargs) -> LMTokenVectorEnv:
    kwargs = {"max_new_tokens": 4, **KWARGS, **kwargs}
    return gym.make_vec("LMToken-v0", num_envs=n, model=tiny_lm_dir, **kwargs)


def random_actions(rng: np.random.Generator, n: int, p_eos: float = 0.3) -> np.ndarray:
    """Tokens that end episodes at different times: EOS with probability p_eos, else a word."""
    words = rng.integers(4, 27, size=n)
    return np.where(rng.random(n) < p_eos, EOS, words)


def test_make_vec_returns_batched_env(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 3)
    assert isinstance(envs, LMTokenVectorEnv)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, P + 4) and set(info["prompt"]) <= set(PROMPTS)
    assert envs.action_masks().shape == (3, 27)
    obs, rewards, terminated, truncated, infos = envs.step(np.array([EOS, 5, 5]))
    assert terminated.tolist() == [True, False, False] and not truncated.any()
    assert infos["_final_info"].tolist() == [True, False, False]
    assert infos["_kl"].tolist() == [False, True, True]  # env 0's step info is in final_info
    final = infos["final_info"]
    assert final["eos"][0] and final["completion_length"][0] == 1
    assert (infos["final_obs"][0][P:] == [EOS, PAD, PAD, PAD]).all()
    assert (obs[0, P:] == PAD).all() and obs[1, P] == 5  # env 0 restarted, env 1 goes on
    np.testing.assert_allclose(
        rewards[1:], infos["reward_model"][1:] - infos["kl_coef"][1:] * infos["kl"][1:]
    )
    assert rewards[0] == pytest.approx(
        final["reward_model"][0] - final["kl_coef"][0] * final["kl"][0]
    )


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no_cache"])
def test_vector_matches_single_envs_across_autoresets(tiny_lm_dir: Path, cache: bool) -> None:
    n, seed, steps = 4, 11, 14
    envs = make_vec(tiny_lm_dir, n, kl_estimator="k3", reference_cache=cache)
    singles = [
        make_token(tiny_lm_dir, **KWARGS, max_new_tokens=4, kl_estimator="k3") for _ in range(n)
    ]
    obs, _ = envs.reset(seed=seed)
    np.testing.assert_array_equal(obs, [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)])
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(steps):
        actions = random_actions(rng, n)
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        for i, (env, action) in enumerate(zip(singles, actions, strict=True)):
            s_obs, s_reward, s_term, s_trunc, s_info = env.step(int(action))
            assert rewards[i] == pytest.approx(s_reward, rel=1e-5, abs=1e-6)
            assert (terminated[i], truncated[i]) == (s_term, s_trunc)
            if s_term or s_trunc:
                ended += 1
                np.testing.assert_array_equal(infos["final_obs"][i], s_obs)
                assert infos["final_info"]["completion"][i] == s_info["completion"]
                s_obs, _ = env.reset()
            else:
                assert infos["completion"][i] == s_info["completion"]
            np.testing.assert_array_equal(obs[i], s_obs)
    assert ended >= 2 * n  # several auto-resets, at different steps


@pytest.mark.parametrize("table", ["prompt_table", "one_prompt_table"])
def test_cached_logprobs_equal_teacher_forced_scores_across_resets(
    tiny_lm_dir: Path, table: str
) -> None:
    # A prompt that fills the whole prompt block leaves no padding column to spare in the cache.
    long_prompt = "i thought the food was very very great and good"
    envs = make_vec(tiny_lm_dir, 5, max_new_tokens=5, prompts=[*PROMPTS, long_prompt],
                    truncate_prompts=True)  # fmt: skip
    if table == "one_prompt_table":  # evicts on every new prompt: exercises the LRU and misses
        envs.batch.reference.prompt_cache_bytes = 0
    model = envs.models.ref_model
    obs, _ = envs.reset(seed=3)
    rng = np.random.default_rng(1)
    episodes: list[tuple[np.ndarray, list[int], list[float]]] = []
    current: list[tuple[np.ndarray, list[int], list[float]]] = [(o, [], []) for o in obs]
    for _ in range(25):
        actions = random_actions(rng, 5, p_eos=0.2)
        obs, _, terminated, truncated, infos = envs.step(actions)
        for i in range(5):
            done = terminated[i] or truncated[i]
            kl = infos["final_info"]["kl"][i] if done else infos["kl"][i]
            current[i][1].append(int(actions[i]))
            current[i][2].append(kl)
            if done:
                episodes.append(current[i])
                current[i] = (obs[i], [], [])
    assert len({len(e[1]) for e in episodes}) >= 3  # episodes of different lengths
    assert any((e[0][:P] != PAD).all() for e in episodes)  # and full-width prompts
    assert len(envs.batch.reference.prompt_states) <= (1 if table == "one_prompt_table" else 5)
    for prompt_obs, tokens, kls in episodes:
        prompt = torch.tensor(prompt_obs)[None, :P]
        completion = torch.tensor(tokens)[None]
        with torch.inference_mode():
            scores = score_completions(
                model, prompt, (prompt != PAD).long(), completion, torch.ones_like(completion),
                pad_token_id=PAD,
            )  # fmt: skip
        np.testing.assert_allclose(-np.array(kls), scores.logprobs[0], rtol=1e-5, atol=1e-5)


def test_one_reference_forward_and_one_reward_call_per_step(tiny_lm_dir: Path) -> None:
    calls = {"reward": 0, "forward": 0}

    def counting_reward(prompts, completions):
        calls["reward"] += 1
        return [0.0] * len(prompts)

    drawn = iter(f"the {a} {b} was" for a in ("food", "soup", "staff", "service", "it")
                 for b in ("great", "good", "bad", "awful", "rude", "friendly"))  # fmt: skip
    envs = make_vec(tiny_lm_dir, 8, reward_fn=counting_reward, prompts=lambda rng: next(drawn))
    envs.models.ref_model.register_forward_hook(
        lambda *a: calls.__setitem__("forward", calls["forward"] + 1)
    )
    envs.reset(seed=0)
    assert calls == {"reward": 0, "forward": 1}  # one batched prefill of every prompt
    envs.step(np.full(8, 5))
    assert calls == {"reward": 0, "forward": 2}  # nobody ended: one incremental forward
    envs.step(np.array([EOS, EOS, EOS, 5, 5, 5, 5, 5]))
    assert calls == {"reward": 1, "forward": 4}  # + one prefill for the 3 new prompts
    envs.step(np.full(8, 5))
    envs.step(np.full(8, 5))  # envs 3..7 reach the length limit at 4 tokens
    assert calls["reward"] == 2


def test_known_prompts_are_not_encoded_again(tiny_lm_dir: Path) -> None:
    calls = {"forward": 0}
    envs = make_vec(tiny_lm_dir, 4, prompts=["the food was"])
    envs.models.ref_model.register_forward_hook(
        lambda *a: calls.__setitem__("forward", calls["forward"] + 1)
    )
    envs.reset(seed=0)
    envs.step(np.array([EOS, EOS, 5, 5]))
    assert calls["forward"] == 2  # the first prefill, then the step: the resets were free
    assert len(envs.batch.reference.prompt_states) == 1


def test_memory_is_bounded_over_1000_episodes(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 16, max_new_tokens=3)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    limit = P + 3 - 1
    episodes, numels, tensors = 0, [], []
    while episodes < 1_000:
        _, _, terminated, truncated, _ = envs.step(random_actions(rng, 16))
        episodes += int((terminated | truncated).sum())
        assert envs.batch.reference.num_columns <= limit
        numels.append(envs.batch.reference.cache_numel())
        if len(numels) in (20, 200) or episodes >= 1_000:
            gc.collect()
            tensors.append(sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects()))
    assert max(numels) == numels[-1] <= 2 * 2 * 16 * 32 * limit  # layers · k/v · B · width · C
    assert tensors[-1] <= tensors[0] + 5, tensors


def test_sb3_adapter_reports_terminal_observation(tiny_lm_dir: Path) -> None:
    vec = SB3VecEnv(make_vec(tiny_lm_dir, 2, max_new_tokens=2))
    vec.seed(0)
    vec.reset()
    _, _, dones, infos = vec.step(np.array([5, EOS]))
    assert dones.tolist() == [False, True]
    assert infos[1]["TimeLimit.truncated"] is False and infos[1]["eos"]
    _, _, dones, infos = vec.step(np.array([5, 5]))
    assert dones.tolist() == [True, False]
    # The length limit ends the task: SB3 must not bootstrap a value past it.
    assert infos[0]["TimeLimit.truncated"] is False and infos[0]["length_limited"]
    assert infos[0]["terminal_observation"][P:].tolist() == [5, 5]
    masks = vec.env_method("action_masks")
    assert len(masks) == 2 and masks[0].shape == (27,)


def test_bad_vector_input_leaves_env_usable(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 2)
    with pytest.raises(ResetNeeded, match="before reset"):
        envs.step(np.array([5, 5]))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(2,\)"):
        envs.step(np.array([5, 5, 5]))
    with pytest.raises(ValueError, match=r"actions\[1\]=27 is not a token id"):
        envs.step(np.array([5, 27]))
    with pytest.raises(TypeError, match="dtype float64"):
        envs.step(np.array([5.0, 5.0]))
    with pytest.raises(ValueError, match="num_envs=2"):
        envs.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="num_envs=0"):
        make_vec(tiny_lm_dir, 0)
    _, _, _, _, infos = envs.step(np.array([5, 5]))
    assert infos["completion_length"].tolist() == [1, 1]


class RolloutRecorder(BaseCallback):
    """Keeps the first rollout's buffer rewards and how each step's episodes ended."""

    def __init__(self) -> None:
        super().__init__()
        self.dones: list[np.ndarray] = []
        self.eos: list[list[bool]] = []
        self.lengths: list[list[int]] = []
        self.rewards: np.ndarray | None = None

    def _on_step(self) -> bool:
        self.dones.append(np.asarray(self.locals["dones"], dtype=bool).copy())
        self.eos.append([bool(info["eos"]) for info in self.locals["infos"]])
        self.lengths.append([int(info["completion_length"]) for info in self.locals["infos"]])
        return True

    def _on_rollout_end(self) -> None:
        if self.rewards is None:
            self.rewards = self.model.rollout_buffer.rewards.copy()  # (n_steps, n_envs)


def test_ppo_stores_the_reward_model_score_for_both_endings() -> None:
    """A length-limited completion is scored once: no γ·V(s_T) added on top (TRL: next value 0).

    With a constant reward of 1, β = 0 and a value head that says 5 everywhere, the buffer must
    hold 1.0 at every episode end, whether it ended with EOS or at the length limit.
    """
    set_seed(0)
    vec = SB3VecEnv(
        gym.make_vec(
            "LMToken-v0", num_envs=8, max_new_tokens=4, kl_coef=0.0, reward_fn=lambda text: 1.0
        )  # fmt: skip
    )
    vec.seed(0)
    model = PPO(LMActorCriticPolicy, vec, n_steps=8, batch_size=64, n_epochs=1, seed=0,
                policy_kwargs=lm_policy_kwargs(vec))  # fmt: skip
    with torch.no_grad():
        model.policy.value_net.weight.zero_()
        model.policy.value_net.bias.fill_(5.0)
    recorder = RolloutRecorder()
    model.learn(64, callback=recorder)
    assert recorder.rewards is not None
    dones = np.stack(recorder.dones[:8])  # (n_steps, n_envs)
    eos = np.array(recorder.eos[:8])
    limited = dones & ~eos & (np.array(recorder.lengths[:8]) == 4)
    assert limited.sum() >= 3 and (dones & eos).sum() >= 3  # both endings occurred
    np.testing.assert_allclose(recorder.rewards[dones & eos], 1.0)
    np.testing.assert_allclose(recorder.rewards[limited], 1.0)  # was 1 + γ·5 = 5.95
    np.testing.assert_allclose(recorder.rewards[~dones], 0.0)


def play_vector_episodes(envs: LMTokenVectorEnv) -> tuple[list[float], list[float]]:
    """Three envs whose episodes end at steps 1, 2 and 4; returns the KLs and each step's β."""
    envs.reset(seed=0)
    kls, betas = [], []
    for actions in ([EOS, 5, 5], [5, EOS, 5], [5, 5, 5], [5, 5, 5]):
        _, _, terminated, truncated, infos = envs.step(np.array(actions))
        done = terminated | truncated
        final = infos.get("final_info", {})
        for i in range(3):
            betas.append(final["kl_coef"][i] if done[i] else infos["kl_coef"][i])
            if done[i]:
                kls.append(final["episode_kl"][i])
    return kls[:3], betas


def test_vector_adaptive_beta_updates_once_per_batch_of_episodes(tiny_lm_dir: Path) -> None:
    other = build_tiny_model(27, seed=1).eval()  # no dropout: the same KLs twice
    fixed = make_vec(tiny_lm_dir, 3, kl_estimator="k3", kl_coef=0.1)
    fixed.attach_policy(lm_token_logprobs(other, fixed.models))
    kls, _ = play_vector_episodes(fixed)
    target = float(np.mean(kls)) / 1.1
    envs = make_vec(tiny_lm_dir, 3, kl_estimator="k3", kl_coef=0.1, kl_target=target,
                    kl_horizon=10)  # fmt: skip
    envs.attach_policy(lm_token_logprobs(other, envs.models))
    kls_again, betas = play_vector_episodes(envs)
    assert kls_again == pytest.approx(kls)
    # The three episodes end at different steps; β moves once, after the third (num_envs).
    assert betas == [0.1] * len(betas)
    from_mean = AdaptiveKLController(0.1, target=target, horizon=10)
    from_mean.update(float(np.mean(kls)), 3)
    clipped_errors = AdaptiveKLController(0.1, target=target, horizon=10)
    for kl in kls:
        clipped_errors.update(kl, 1)
    assert abs(from_mean.value - clipped_errors.value) > 0.2 * (from_mean.value - 0.1)
    assert envs.rewarder.controller.value == pytest.approx(from_mean.value, rel=1e-9)


def test_vector_adaptive_beta_without_a_policy_is_refused(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 2, kl_target=3.0)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"kl_target=3\.0 .*cross_entropy"):
        envs.step(np.array([5, EOS]))
    envs.attach_policy(lm_token_logprobs(envs.models.model, envs.models))
    _, _, terminated, _, infos = envs.step(np.array([5, EOS]))
    assert terminated.tolist() == [False, True] and infos["completion_length"][0] == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint64, np.int64], ids=str)
def test_integer_action_dtypes_are_the_same_actions(tiny_lm_dir: Path, dtype) -> None:
    envs, twin = make_vec(tiny_lm_dir, 3), make_vec(tiny_lm_dir, 3)
    for e in (envs, twin):
        e.reset(seed=0)
    for step in range(6):
        actions = np.array([5, EOS, 6], dtype=np.int64) if step % 3 else np.full(3, 7)
        got, want = envs.step(actions.astype(dtype)), twin.step(actions)
        for a, b in zip(got[:4], want[:4], strict=True):
            np.testing.assert_array_equal(a, b)
        assert got[4]["prompt"].tolist() == want[4]["prompt"].tolist()
