"""A language model learns to play the cat: SFT on the optimum's moves, then PPO in the text game.

The same ``CatGrid-v0`` that ``examples/cat_gridworld.py`` solves with a tabular agent, played
as a conversation (``TextCatGrid-v0``): the game opens with where the brooms and bathtubs are,
and each turn says where the cat is, the way to the meat and what is next to the cat; the LM
answers "up", "down", "left" or "right", the game moves the cat and describes the new cell. The
RLHF recipe, on a game:

1. SFT: a small GPT-2 (it knows only the game's words) learns from demonstrations on random
   training layouts: the moves of the value-iteration optimum
   (:mod:`lmgym.envs.catgrid_planning`), 30% of them replaced by random ones, as an imperfect
   demonstrator makes them; the SFT LM learns to read the game, and copies the mistakes too;
2. PPO: ``LMActorCriticPolicy`` (one reply per turn, a value head with GAE over turns) plays the
   game for its own reward, with a KL penalty to the SFT model, and learns which moves pay;
3. a table on held-out layouts that neither stage saw: the optimum, tabular PPO on
   ``CatGrid-v0`` (trained on each held-out layout itself: it reads only the cat's cell, so it
   cannot carry a path to a new layout), the SFT LM and the SFT + PPO LM. The measured table
   and what it shows are in docs/rl-to-lm.md.

Run:
    python examples/lm_plays_cat.py            # full run: about 3 minutes on one free CPU core
    python examples/lm_plays_cat.py --smoke    # seconds; also LMGYM_SMOKE=1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import lmgym
from lmgym.agents import LMActorCriticPolicy, lm_policy_kwargs
from lmgym.agents.lm_policy import ValueTrunk
from lmgym.config_cli import add_dataclass_arguments, dataclass_from_args
from lmgym.envs.catgrid import ACTION_NAMES, CatGridEnv
from lmgym.envs.catgrid_planning import policy_return, value_iteration
from lmgym.envs.text_game import TextGameEnv
from lmgym.envs.text_game_tokenizer import word_tokenizer
from lmgym.envs.text_games import CATGRID_ACTIONS, catgrid_rules, describe_catgrid
from lmgym.rlhf.config import StageResult
from lmgym.rlhf.sft import SFTConfig, run_sft


@dataclass
class Args:
    """Command-line arguments (``--seed``, ``--ppo-lr``, ...; ``--help`` shows this text).

    Attributes:
        seed: Seed of Python, NumPy and torch, of the layouts, the envs and the agents.
        size: The grids are size x size cells.
        train_layouts: Random layouts the demonstrations and PPO play on.
        test_layouts: Held-out layouts the table is measured on (none of them is a training layout).
        max_moves: Moves per episode (the game's time limit).
        positions: Positions of the small GPT-2: the longest text it reads, reply included (128
            holds the opening and one turn; a longer window needs about 30 more per turn).
        recent_turns: Turns the LM reads after the opening (the map): each of the cat's turns
            says all a move needs, so one is enough, and every turn costs the same few dozen
            tokens however long the game runs.
        demo_noise: Share of the demonstrated moves that are random instead of the optimum's:
            an imperfect demonstrator, as people are. The SFT LM copies the mistakes too; PPO,
            paid by the game, has to learn which moves pay.
        sft_epochs: Passes over the demonstrations.
        sft_lr: Peak learning rate of SFT.
        ppo_timesteps: Turns (replies) PPO trains for.
        ppo_lr: Learning rate of PPO.
        gamma: PPO's discount over turns (also the one VecNormalize scales returns with). A
            short horizon makes a step into the bathtub cost more than the detour round it:
            with 0.9, PPO learnt the way to the meat but not to keep out of the bathtub.
        value_trunk: What the value head reads (``LMActorCriticPolicy``'s ``value_trunk``):
            ``"separate"`` gives it its own copy of the LM body, which learns what a cell is
            worth; the SFT model's own features, ``"detached"``, are about which move to say.
        n_envs: Text games played side by side in PPO's rollouts.
        kl_coef: Beta of the KL penalty to the SFT model, per reply.
        tabular_timesteps: Steps tabular PPO trains on each held-out layout.
        eval_episodes: Sampled episodes per held-out layout and agent.
        output_dir: Where results.json and the models are written.
        threads: Torch intra-op threads; 1 is fastest for tiny models on a few cores.
        smoke: Tiny budgets so the script finishes in seconds, for tests (also: LMGYM_SMOKE=1).
    """

    seed: int = 0
    size: int = 4
    train_layouts: int = 200
    test_layouts: int = 24
    max_moves: int = 10
    positions: int = 128
    recent_turns: int = 1
    demo_noise: float = 0.3
    sft_epochs: int = 16
    sft_lr: float = 1e-3
    ppo_timesteps: int = 3072
    ppo_lr: float = 3e-4
    gamma: float = 0.7
    value_trunk: ValueTrunk = "separate"
    n_envs: int = 8
    kl_coef: float = 0.05
    tabular_timesteps: int = 3000
    eval_episodes: int = 8
    output_dir: str = "runs/lm_plays_cat"
    threads: int = 1
    smoke: bool = False


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """Parse ``argv`` into :class:`Args` (lmgym's own dataclass-to-argparse helper)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, Args)
    args = dataclass_from_args(Args, parser.parse_args(argv))
    if not 0.0 <= args.demo_noise <= 1.0:
        parser.error(f"--demo-noise {args.demo_noise} is not a share; expected 0 to 1, e.g. 0.3.")
    args.smoke = args.smoke or os.environ.get("LMGYM_SMOKE") == "1"
    if args.smoke:
        args.train_layouts, args.test_layouts, args.sft_epochs = 8, 2, 1
        args.ppo_timesteps, args.n_envs, args.tabular_timesteps, args.eval_episodes = 32, 2, 256, 1
    return args


# ---- the game: random layouts, one per episode -------------------------------------------------


def random_layouts(n: int, size: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """``n`` distinct solvable layouts: a cat, a meat, one or two brooms and one bathtub."""
    layouts: dict[tuple[str, ...], None] = {}
    while len(layouts) < n:
        cells = np.full(size * size, ".")
        picks = rng.choice(size * size, size=5, replace=False)
        cells[picks[0]], cells[picks[1]], cells[picks[2]] = "C", "M", "T"
        cells[picks[3 : 3 + int(rng.integers(1, 3))]] = "B"
        layout = tuple("".join(row) for row in cells.reshape(size, size))
        try:
            CatGridEnv(layout=layout)  # refuses a layout whose meat cannot be reached
        except ValueError:
            continue
        layouts[layout] = None
    return list(layouts)


def split_layouts(args: Args) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The training layouts and the held-out ones (distinct: no test layout is trained on)."""
    every = random_layouts(args.train_layouts + args.test_layouts, args.size,
                           np.random.default_rng(args.seed))  # fmt: skip
    return every[: args.train_layouts], every[args.train_layouts :]


class CatGridDeck(gym.Env):
    """``CatGrid-v0`` on a layout drawn from a deck at each reset (``options={"layout": i}``).

    The rules and rewards are ``CatGrid-v0``'s own: each layout is a ``CatGridEnv``. The deck
    shows the current one's ``layout``, ``nrow`` and ``ncol``, which the text game's words read.
    """

    def __init__(self, layouts: Sequence[Sequence[str]]) -> None:
        self.games = [CatGridEnv(layout=layout) for layout in layouts]
        self.current = self.games[0]
        self.observation_space = self.current.observation_space
        self.action_space = self.current.action_space

    @property
    def layout(self) -> tuple[str, ...]:
        """The current layout."""
        return self.current.layout

    @property
    def nrow(self) -> int:
        """The current layout's number of rows."""
        return self.current.nrow

    @property
    def ncol(self) -> int:
        """The current layout's number of columns."""
        return self.current.ncol

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw a layout (or take ``options["layout"]``, an index) and put the cat on its start."""
        super().reset(seed=seed)
        index = (options or {}).get("layout")
        if index is None:
            index = int(self.np_random.integers(len(self.games)))
        self.current = self.games[index]
        return self.current.reset(seed=int(self.np_random.integers(2**31)))

    def step(self, action: int):
        """``CatGrid-v0``'s move on the current layout."""
        return self.current.step(action)


def text_game(layouts: Sequence[Sequence[str]], model: Any, args: Args, **kwargs: Any):
    """``TextCatGrid-v0``'s words and reading on a deck of layouts."""
    deck = gym.wrappers.TimeLimit(CatGridDeck(layouts), max_episode_steps=args.max_moves)
    return TextGameEnv(deck, describe_catgrid, CATGRID_ACTIONS, system=catgrid_rules,
                       model=model, max_new_tokens=2, recent_turns=args.recent_turns,
                       **kwargs)  # fmt: skip


# ---- the LM: a small GPT-2 that knows the game's words (and nothing else) -----------------------


def game_lm(args: Args) -> tuple[PreTrainedTokenizerFast, GPT2LMHeadModel]:
    """A word-level tokenizer over the game's words and an untrained GPT-2 of 0.16M weights.

    The embedded default model knows review words, not "up" or "3"; a game's own vocabulary
    keeps the model tiny and makes every turn a few dozen tokens.
    """
    words = [catgrid_rules(CatGridEnv(layout=["CBMT"])), describe_catgrid(CatGridEnv(), 0, {}),
             'I did not understand "none". up down left right wall broom bathtub meat here',
             " ".join(str(i) for i in range(args.size))]  # fmt: skip
    tokenizer = word_tokenizer(words, model_max_length=args.positions)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.positions, n_embd=64,
                        n_layer=3, n_head=4, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return tokenizer, GPT2LMHeadModel(config)


# ---- stage 1: SFT on an imperfect demonstrator's moves -----------------------------------------


def demonstrations(
    env: TextGameEnv, n_layouts: int, noise: float = 0.0, seed: int = 0
) -> list[tuple[str, str]]:
    """(what the LM reads, move) pairs, from playing the optimum in the text game.

    With ``noise`` > 0, that share of the moves is drawn at random (seeded by ``seed``) instead,
    and the game goes on from where the random move led.
    """
    tok, eos = env.models.tokenizer, env.models.eos_token_id
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(n_layouts):
        obs, _ = env.reset(options={"layout": index})
        plan = value_iteration(env.game.unwrapped.current, gamma=0.99)  # type: ignore[attr-defined]
        done, cell = False, env.game.unwrapped.current.state  # type: ignore[attr-defined]
        while not done:
            slip = rng.random() < noise
            move = ACTION_NAMES[int(rng.integers(4) if slip else plan.policy[cell])]
            # The prompt as text, without the BOS that SFT's encoding adds back; the word-level
            # tokenizer gives back the very ids the LM will see in the game.
            ids = obs[obs != env.models.pad_token_id]
            prompt = tok.decode(ids[1:])
            assert tok(prompt)["input_ids"] == ids.tolist(), prompt
            pairs.append((prompt, move))
            reply = np.array(tok(move, add_special_tokens=False)["input_ids"] + [eos])
            obs, _, terminated, truncated, info = env.step(reply)
            cell, done = info["game_observation"], terminated or truncated
    return pairs


def train_sft(layouts: list[tuple[str, ...]], args: Args, out_dir: Path) -> tuple[StageResult, int]:
    """Stage 1: the optimum's moves (``demo_noise`` of them random) on ``layouts``; SFT.

    The SFT model is saved to ``out_dir``.

    Returns the SFT result (its ``path`` loads with ``lmgym.load_model``) and the number of
    demonstrations (one per move played).
    """
    tokenizer, base = game_lm(args)
    game = text_game(layouts, base, args, tokenizer=tokenizer)
    demos = demonstrations(game, len(layouts), args.demo_noise, args.seed)
    config = SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=32, progress=False,
                       seed=args.seed)  # fmt: skip
    return run_sft(config, demos, out_dir, model=base, tokenizer=tokenizer), len(demos)


# ---- stage 2: PPO in the text game, KL to the SFT model ----------------------------------------


def make_ppo(sft_dir: Path, layouts: list[tuple[str, ...]], args: Args) -> PPO:
    """PPO with the LM policy (started from the SFT model) on ``n_envs`` text games.

    Each game's KL penalty is to its own frozen copy of the SFT model.
    """
    envs = [lambda: text_game(layouts, sft_dir, args, kl_coef=args.kl_coef)] * args.n_envs
    venv = DummyVecEnv(envs)
    venv.seed(args.seed)
    # The game pays up to 100 per episode: returns are scaled for the value head (VecNormalize
    # divides rewards by a running std of returns; the env's rewards themselves are unchanged).
    scaled = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=args.gamma)
    n_steps = min(32, args.ppo_timesteps // args.n_envs)
    model = PPO(LMActorCriticPolicy, scaled, n_steps=n_steps,
                batch_size=min(64, n_steps * args.n_envs), n_epochs=4,
                learning_rate=args.ppo_lr, gamma=args.gamma, gae_lambda=0.95, seed=args.seed,
                verbose=0,
                policy_kwargs=lm_policy_kwargs(venv, value_trunk=args.value_trunk))  # fmt: skip
    model.policy.attach_to(scaled)
    return model


# ---- evaluation on held-out layouts ------------------------------------------------------------


def play_lm(model: PPO, layouts: list[tuple[str, ...]], args: Args) -> dict[str, float]:
    """Sampled episodes of an LM policy on each layout: return, meat reached, unread replies."""
    returns, reached, unread, turns = [], [], 0, 0
    for index, layout in enumerate(layouts):
        env = gym.make("TextCatGrid-v0", layout=layout, max_episode_steps=args.max_moves,
                       model=model.policy.lm, tokenizer=model.policy.tokenizer,
                       max_new_tokens=2, recent_turns=args.recent_turns)  # fmt: skip
        for episode in range(args.eval_episodes):
            obs, _ = env.reset(seed=args.seed + 1000 * index + episode)
            total, done, meat = 0.0, False, False
            while not done:
                action, _ = model.predict(obs, deterministic=False)
                obs, _, terminated, truncated, info = env.step(action)
                total += info["game_reward"]
                meat |= info["game_reward"] == 100.0
                unread += not info["parsed"]
                turns += 1
                done = terminated or truncated
            returns.append(total)
            reached.append(meat)
    return {"return": float(np.mean(returns)), "meat_rate": float(np.mean(reached)),
            "unread_replies": unread / max(turns, 1)}  # fmt: skip


def play_tabular(layouts: list[tuple[str, ...]], args: Args) -> dict[str, float]:
    """Tabular PPO (``MlpPolicy`` on the cell) trained on each layout, then sampled episodes."""
    returns, reached = [], []
    for index, layout in enumerate(layouts):
        kwargs = {"layout": layout, "max_episode_steps": args.max_moves}
        venv = make_vec_env("CatGrid-v0", n_envs=4, seed=args.seed + index, env_kwargs=kwargs)
        agent = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, seed=args.seed, verbose=0)
        agent.learn(args.tabular_timesteps)
        env = gym.make("CatGrid-v0", **kwargs)
        for episode in range(args.eval_episodes):
            obs, _ = env.reset(seed=args.seed + 1000 * index + episode)
            total, done = 0.0, False
            while not done:
                action, _ = agent.predict(obs, deterministic=False)
                obs, reward, terminated, truncated, _ = env.step(int(action))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
            reached.append(total >= 90.0)  # the meat pays 100, brooms cost 1 each
    return {"return": float(np.mean(returns)), "meat_rate": float(np.mean(reached))}


def optimum(layouts: list[tuple[str, ...]], args: Args) -> dict[str, float]:
    """Value iteration's greedy policy on each layout (exact, deterministic)."""
    values = []
    for layout in layouts:
        env = CatGridEnv(layout=layout)
        plan = value_iteration(env, gamma=0.99)
        values.append(policy_return(env, plan.policy, env.start_state, args.max_moves))
    return {"return": float(np.mean(values)), "meat_rate": float(np.mean(np.array(values) > 0))}


def print_table(rows: dict[str, dict[str, float]], args: Args) -> None:
    """Print the table on held-out layouts.

    Columns: the mean return, the share of episodes that reach the meat, and the share of the
    LM's replies that name no move.
    """
    print(f"\n{args.test_layouts} held-out {args.size}x{args.size} layouts, {args.eval_episodes} "
          f"sampled episodes each, at most {args.max_moves} moves; seed={args.seed} "
          f"smoke={args.smoke}")  # fmt: skip
    print(f"{'agent':<38}{'return':>8}{'meat':>7}{'unread':>8}")
    for name, row in rows.items():
        unread = f"{row['unread_replies']:>8.2f}" if "unread_replies" in row else f"{'-':>8}"
        print(f"{name:<38}{row['return']:>8.2f}{row['meat_rate']:>7.2f}{unread}")


class Stopwatch:
    """Wall-clock seconds of each named part of the run (``results.json``'s ``seconds``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Any, *fn_args: Any) -> Any:
        """``fn(*fn_args)``, its seconds recorded under ``name``."""
        tic = time.perf_counter()
        result = fn(*fn_args)
        self.seconds[name] = time.perf_counter() - tic
        return result


@dataclass
class LMRun:
    """What the two stages give: the SFT result, its demonstrations, and the two LM rows."""

    sft: StageResult
    n_demonstrations: int
    sft_lm: dict[str, float]
    ppo_lm: dict[str, float]


def sft_then_ppo(train: list[tuple[str, ...]], test: list[tuple[str, ...]], args: Args,
                 out_dir: Path, timed: Stopwatch) -> LMRun:  # fmt: skip
    """Stage 1, the SFT LM measured on ``test``, stage 2, the SFT + PPO LM measured on ``test``."""
    sft, n_demos = timed("sft", train_sft, train, args, out_dir / "sft")
    model = make_ppo(sft.path, train, args)
    sft_lm = timed("eval_sft", play_lm, model, test, args)
    timed("ppo", model.learn, args.ppo_timesteps)
    ppo_lm = timed("eval_ppo", play_lm, model, test, args)
    return LMRun(sft, n_demos, sft_lm, ppo_lm)


def main(args: Args) -> dict[str, Any]:
    """Run the two stages, measure the four agents, print the table and write results.json."""
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lmgym.set_seed(args.seed)
    torch.set_num_threads(args.threads)
    train, test = split_layouts(args)
    timed = Stopwatch()
    run = sft_then_ppo(train, test, args, out_dir, timed)
    rows = {"optimum": optimum(test, args),
            "tabular PPO (trained on each layout)": timed("tabular", play_tabular, test, args),
            "SFT LM": run.sft_lm, "SFT + PPO LM": run.ppo_lm}  # fmt: skip

    print_table(rows, args)
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timed.seconds.items()))
    results = {"args": dataclasses.asdict(args), "results": rows, "seconds": timed.seconds,
               "n_demonstrations": run.n_demonstrations,
               "sft_final_loss": run.sft.metrics["final_epoch_loss"]}  # fmt: skip
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(parse_args())
