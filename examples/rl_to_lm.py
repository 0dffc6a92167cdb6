"""One RL loop, two worlds: a cat walking to the meat, and a language model writing a review.

Both trajectories come from real environments and are printed in the same format,
state -> action -> reward, side by side:

- CatGrid-v0: the state is the cat's cell, the action a move, the policy the optimal one from
  value iteration.
- LMToken-v0: the state is the prompt plus the tokens written so far, the action the next
  token, the policy the embedded language model itself (sampled at temperature 1). Nothing is
  attached as π_θ, so each token pays the cross-entropy term ``-β · (-log π_ref(token))`` in
  place of a KL (``info["kl_form"]`` says ``"cross_entropy"``),
  and the last step adds the reward model's score (lexicon sentiment) of the whole completion.

    python examples/rl_to_lm.py
    python examples/rl_to_lm.py --seed 3 --prompt "i thought the soup"
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import lmgym  # noqa: F401  (registers CatGrid-v0 and LMToken-v0)
from lmgym.envs.catgrid import ACTION_NAMES
from lmgym.envs.catgrid_planning import value_iteration
from lmgym.models.generation import DecodingConfig, generate


@dataclass
class Args:
    """Command-line arguments."""

    seed: int = 0
    """Seeds both envs and the language model's sampling."""
    prompt: str = "the pizza was"
    """The review opening the language model continues."""
    kl_coef: float = 0.05
    """β of LMToken-v0's KL penalty."""


@dataclass
class Step:
    """One transition, in the words both worlds share."""

    state: str
    action: str
    reward: float

    def line(self, width: int) -> str:
        """``state -> action -> reward``, cut to ``width`` characters."""
        text = f"{self.state} -> {self.action} -> {self.reward:+.2f}"
        return textwrap.shorten(text, width=width, placeholder="...")


def cat_trajectory(seed: int) -> list[Step]:
    """The optimal cat, from the start cell until it eats (or the time limit)."""
    env = gym.make("CatGrid-v0")
    policy = value_iteration(env.unwrapped, gamma=0.99).policy
    cell, info = env.reset(seed=seed)
    steps, done = [], False
    while not done:
        action = int(policy[cell])
        position = info["position"]
        cell, reward, terminated, truncated, info = env.step(action)
        steps.append(Step(f"cell {position}", ACTION_NAMES[action], float(reward)))
        done = terminated or truncated
    return steps


def lm_trajectory(seed: int, prompt: str, kl_coef: float) -> list[Step]:
    """The default LM writing one completion, token by token, through LMToken-v0."""
    env = gym.make("LMToken-v0", kl_coef=kl_coef)
    lm = env.unwrapped.models
    obs, info = env.reset(seed=seed, options={"prompt": prompt})
    # The policy is the LM: sample its completion (KV cache) and feed it to the env token by token.
    torch.manual_seed(seed)
    ids = torch.from_numpy(obs[None, : env.unwrapped.max_prompt_tokens])
    completion = generate(
        lm.model,
        ids,
        (ids != lm.pad_token_id).long(),
        DecodingConfig(max_new_tokens=env.unwrapped.max_new_tokens),
        eos_token_id=lm.eos_token_id,
        pad_token_id=lm.pad_token_id,
    ).completion_ids[0]
    steps, text = [], prompt
    for token in completion.tolist():
        _, reward, terminated, truncated, info = env.step(np.int64(token))
        steps.append(Step(repr(text), repr(lm.tokenizer.convert_ids_to_tokens(token)), reward))
        text = f"{prompt} {info['completion']}".strip()
        if terminated or truncated:
            break
    return steps


def main() -> None:
    """Print both trajectories side by side, with their returns."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = Args(**vars(parser.parse_args()))

    cat = cat_trajectory(args.seed)
    lm = lm_trajectory(args.seed, args.prompt, args.kl_coef)
    width = 56
    print(f"{'t':>2}  {'CatGrid-v0: state -> action -> reward':<{width}}  LMToken-v0")
    for t in range(max(len(cat), len(lm))):
        left = cat[t].line(width) if t < len(cat) else ""
        right = lm[t].line(width + 20) if t < len(lm) else ""
        print(f"{t:>2}  {left:<{width}}  {right}")
    cat_return = sum(s.reward for s in cat)
    lm_return = sum(s.reward for s in lm)
    print(f"{'':>2}  {'return: ' + format(cat_return, '+.2f'):<{width}}  return: {lm_return:+.2f}")


if __name__ == "__main__":
    main()
