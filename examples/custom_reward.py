"""Plug your own reward function into LMBandit-v0 and train SB3's PPO on it.

The reward here prefers completions that mention the staff kindly. Any function of the completion
text works; for the batch form, define ``reward(prompts, completions, **kwargs)`` instead.

    python examples/custom_reward.py            # about 50 s on 2 CPU cores
    LMGYM_SMOKE=1 python examples/custom_reward.py   # a few seconds (used by the tests)
"""

import os

import gymnasium as gym
from stable_baselines3 import PPO

import lmgym  # noqa: F401  (registers LMBandit-v0)
from lmgym.agents import SB3VecEnv, attach_sb3


def kind_to_staff(completion: str) -> float:
    """+1 for 'friendly' or 'helpful', -1 for 'rude', per occurrence."""
    words = completion.split()
    return float(words.count("friendly") + words.count("helpful") - words.count("rude"))


steps = 256 if os.environ.get("LMGYM_SMOKE") else 8_192
# 16 envs stepped as one batch: the reference LM scores all 16 completions in one forward.
envs = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=16, reward_fn=kind_to_staff,
                              kl_coef=0.02, max_new_tokens=8))  # fmt: skip
model = PPO("MlpPolicy", envs, n_steps=16, batch_size=64, gamma=1.0, seed=0)
attach_sb3(model)  # the KL penalty uses this agent's log-probs
model.learn(steps, progress_bar=True)

env = gym.make("LMBandit-v0", reward_fn=kind_to_staff, kl_coef=0.02, max_new_tokens=8)
attach_sb3(model, env)

obs, info = env.reset(seed=1)
action, _ = model.predict(obs, deterministic=True)
_, reward, _, _, info = env.step(action)
print(f"{info['prompt']!r} -> {info['completion']!r}")
print(f"reward {reward:.3f} = {info['reward_model']:.3f} - {info['kl_coef']} * {info['kl']:.2f}")
