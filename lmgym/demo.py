"""``lmgym demo``: PPO on ``LMBandit-v0`` with the embedded default model, start to finish.

SB3's PPO fine-tunes the default LM itself (``LMActorCriticPolicy``) on the batched bandit env:
the agent writes whole completions, and the reward is the lexicon sentiment of the completion
("write a positive review") minus a KL penalty to the frozen initial LM. The demo prints the
task's reward, KL and grammar fluency on held-out prompts before and after training, and writes
a learning curve PNG and the figures as JSON.

``--policy mlp`` trains SB3's stock ``MlpPolicy`` from scratch instead; with ``--kl-coef 0`` it
shows reward hacking (a salad of positive words that fails the grammar check).

``--model``, ``--reward``, ``--prompts`` (``--eval-prompts``), ``--device`` and ``--dtype`` run
the same demo on your own task (:mod:`lmgym.training.task_options`): its before/after figures
are then on the prompts held out of ``--prompts``, which PPO never trains on. The fluency
column stays the embedded corpus's grammar check, which other text rarely passes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lmgym.training.algorithms import check_kl_horizon
from lmgym.training.rundir import check_out_location
from lmgym.training.task_options import TaskOptions
from lmgym.training.train import check_seed

if TYPE_CHECKING:
    from stable_baselines3 import PPO

__all__ = ["ENV_ID", "DemoConfig", "render_demo", "run_demo", "side_by_side"]

logger = logging.getLogger(__name__)

ENV_ID = "LMBandit-v0"


@dataclass
class DemoConfig(TaskOptions):
    """Settings of ``lmgym demo``.

    The task's options (``model``, ``reward``, ``prompts``, ``eval_prompts``, ``device``,
    ``dtype``) come from :class:`~lmgym.training.task_options.TaskOptions`.

    Attributes:
        policy: ``lm`` fine-tunes the default LM; ``mlp`` trains SB3's MlpPolicy from scratch.
        steps: Env steps (completions) PPO trains for.
        n_envs: Envs stepped as one batch by the vector env.
        kl_coef: β of the KL penalty (its initial value when kl_target is set).
        kl_target: Target of Ziegler's adaptive β, as KL summed over a completion; None: fixed β.
        kl_horizon: Horizon of the adaptive β in completions: β changes by at most 20% per this
            many; None: 1/16 of steps, filled in when kl_target is set.
        kl_estimator: KL estimator of the penalty.
        learning_rate: PPO's Adam learning rate; None: 1e-4 for ``lm``, 1e-3 for ``mlp``.
        seed: Seeds the env, the agent and torch.
        threads: torch intra-op threads (1 is fastest for tiny models on 2 cores).
        out: Directory for curve.png and results.json.
        progress: Show a progress bar while training.
        eval_samples: Completions sampled per held-out prompt for the before/after figures.
    """

    policy: Literal["lm", "mlp"] = "lm"
    steps: int = 4096
    n_envs: int = 16
    kl_coef: float = 0.02
    kl_target: float | None = None
    kl_horizon: int | None = None
    kl_estimator: Literal["k1", "k2", "k3", "full"] = "k1"
    learning_rate: float | None = None
    seed: int = 0
    threads: int = 1
    out: Path = Path("demo-output")
    progress: bool = True
    eval_samples: int = 4

    def __post_init__(self) -> None:
        for name in ("steps", "n_envs", "threads", "eval_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be an int > 0.")
        if self.policy not in ("lm", "mlp"):
            raise ValueError(f"policy={self.policy!r} is unknown; expected 'lm' or 'mlp'.")
        if self.kl_estimator not in ("k1", "k2", "k3", "full"):
            raise ValueError(
                f"kl_estimator={self.kl_estimator!r} is unknown; expected 'k1', 'k2', 'k3' or "
                "'full'."
            )
        if not _finite(self.kl_coef) or self.kl_coef < 0:
            raise ValueError(f"kl_coef={self.kl_coef!r} must be a finite float >= 0, e.g. 0.02.")
        if self.kl_target is not None and not (_finite(self.kl_target) and self.kl_target > 0):
            raise ValueError(
                f"kl_target={self.kl_target!r} must be a finite float > 0 (nats summed over a "
                "completion), e.g. 6.0, or None for a fixed β."
            )
        if self.learning_rate is not None and not (
            _finite(self.learning_rate) and self.learning_rate > 0
        ):
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0, e.g. 1e-3.")
        check_seed("seed", self.seed)
        self.kl_horizon = check_kl_horizon(self.kl_horizon, self.kl_target, ENV_ID, self.steps)
        self.out = check_out_location(self.out)
        self.check_task_options(ENV_ID, True, self.out)

    @property
    def default_task(self) -> bool:
        """Whether the demo runs the embedded task (model, reward and prompts)."""
        return self.model is None and self.reward is None and self.prompts is None


def _finite(value: object) -> bool:
    """Whether ``value`` is a real, finite number (not a bool, a string or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _policy_act(model: PPO):
    def act(observations: np.ndarray) -> np.ndarray:
        actions, _ = model.predict(observations, deterministic=False)
        return np.asarray(actions)

    return act


def _row(name: str, result: dict[str, Any]) -> str:
    return (
        f"| {name:<22} | {result['reward']:>8.3f} | {result['reward_model']:>10.3f} | "
        f"{result['kl']:>8.2f} | {result['fluency']:>7.0%} |"
    )


def side_by_side(
    before: list[tuple[str, str]], after: list[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    """``(prompt, completion before, completion after)`` for the prompts both evaluations show.

    Example:
        >>> side_by_side([("the soup was", "cold .")], [("the soup was", "superb .")])
        [('the soup was', 'cold .', 'superb .')]
    """
    after_by_prompt = dict(after)
    return [(p, c, after_by_prompt[p]) for p, c in before if p in after_by_prompt]


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Train, evaluate and plot; return the figures that are also written to ``results.json``.

    :func:`render_demo` turns them into the tables ``lmgym demo`` shows.
    """
    # torch, transformers and SB3 load here, when the demo starts: `lmgym demo --help` and the
    # option checks need none of them.
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO

    from lmgym.agents import (
        LMActorCriticPolicy,
        SB3VecEnv,
        attach_sb3,
        lm_logprobs,
        lm_policy_kwargs,
    )
    from lmgym.agents.callbacks import RewardPartsCallback
    from lmgym.envs.bandit_vector import LMBanditVectorEnv
    from lmgym.evaluation import evaluate_actions_on_prompts, lm_sampler
    from lmgym.models.device import resolve_device
    from lmgym.models.generation import DecodingConfig
    from lmgym.plots import plot_learning_curve
    from lmgym.seeding import set_seed
    from lmgym.torch_threads import set_torch_threads
    from lmgym.training.task_options import load_reward

    started = time.perf_counter()
    set_seed(config.seed)
    set_torch_threads(config.threads)
    device = str(resolve_device(config.device))  # the env's models and the agent: one device
    split = config.prompt_split()
    config.out.mkdir(parents=True, exist_ok=True)

    task: dict[str, Any] = {"prompts": split.train, "device": device, "dtype": config.dtype}
    if config.model is not None:
        task["model"] = config.model
    if config.reward is not None:
        task["reward_fn"] = load_reward(config.reward, device)
    if config.kl_target is not None:
        task["kl_horizon"] = config.kl_horizon
    vec_env = SB3VecEnv(
        gym.make_vec(
            ENV_ID,
            num_envs=config.n_envs,
            kl_coef=config.kl_coef,
            kl_estimator=config.kl_estimator,
            kl_target=config.kl_target,
            **task,
        )
    )
    env = vec_env.venv
    assert isinstance(env, LMBanditVectorEnv)
    vec_env.seed(config.seed)
    learning_rate = 1e-4 if config.policy == "lm" else 1e-3
    if config.learning_rate is not None:
        learning_rate = config.learning_rate
    # The policy loads its own float32 copy from the env's model directory or hub id, also
    # when the env's models run in half precision (--dtype): Adam's small updates vanish in
    # bfloat16.
    policy_kwargs = lm_policy_kwargs(vec_env)
    if config.policy == "lm":
        model = PPO(
            LMActorCriticPolicy,
            vec_env,
            n_steps=16,
            batch_size=64,
            n_epochs=2,
            learning_rate=learning_rate,
            gamma=1.0,  # one-step episodes: there is nothing to discount
            seed=config.seed,
            device=device,
            policy_kwargs=policy_kwargs,
        )
    else:
        model = PPO(
            "MlpPolicy",
            vec_env,
            n_steps=32,
            batch_size=128,
            n_epochs=4,
            learning_rate=learning_rate,
            gamma=1.0,
            seed=config.seed,
            device=device,
        )

    test_prompts = split.eval
    decoding = DecodingConfig(max_new_tokens=env.max_new_tokens)
    torch.manual_seed(config.seed)
    # The base LM row: it samples the completions and is π_θ of the KL (so KL = 0 exactly).
    env.attach_policy(lm_logprobs(env.models.model, env.models))
    base = evaluate_actions_on_prompts(
        env, test_prompts, lm_sampler(env, decoding), samples_per_prompt=config.eval_samples
    )
    # From here on π_θ of the KL term is the agent's own policy.
    if isinstance(model.policy, LMActorCriticPolicy):
        model.policy.attach_to(vec_env)  # serves the log-probs it sampled with: no 2nd forward
    else:
        attach_sb3(model)
    before = evaluate_actions_on_prompts(
        env, test_prompts, _policy_act(model), samples_per_prompt=config.eval_samples
    )

    callback = RewardPartsCallback()
    model.learn(config.steps, callback=callback, progress_bar=config.progress)
    after = evaluate_actions_on_prompts(
        env, test_prompts, _policy_act(model), samples_per_prompt=config.eval_samples
    )
    policy_name = "LMActorCriticPolicy" if config.policy == "lm" else "MlpPolicy"
    curve = plot_learning_curve(
        callback.history, config.out / "curve.png", title=f"PPO ({policy_name}) on LMBandit-v0"
    )

    wall = time.perf_counter() - started
    results: dict[str, Any] = {
        "config": {k: str(v) for k, v in asdict(config).items()},
        "train_prompts": split.train_text,
        "eval_prompts": split.eval_text,
        "base_lm": base.as_dict(),
        "before": before.as_dict(),
        "after": after.as_dict(),
        "wall_s": wall,
        "curve": str(curve),
    }
    (config.out / "results.json").write_text(json.dumps(results, indent=2))
    logger.info("wrote %s and %s in %.0f s", curve, config.out / "results.json", wall)
    return results


def render_demo(config: DemoConfig, results: dict[str, Any]) -> str:
    """The tables ``lmgym demo`` shows: the scores before and after, and what the agent writes.

    Example:
        >>> scores = {"reward": 0.1, "reward_model": 0.2, "kl": 1.5, "fluency": 0.75,
        ...           "examples": [("the soup was", "cold .")]}
        >>> results = {"base_lm": scores, "before": scores, "wall_s": 9.6, "curve": "c.png",
        ...            "after": {**scores, "examples": [("the soup was", "superb .")]}}
        >>> print(render_demo(DemoConfig(out=Path("demo")), results).splitlines()[4])
        | base LM (reference)    |    0.100 |      0.200 |     1.50 |     75% |
        >>> print(render_demo(DemoConfig(out=Path("demo")), results).splitlines()[-3])
        | the soup was | cold . | superb . |
    """
    before, after = results["before"], results["after"]
    task = "Default task 'write a positive review', held-out prompts:"
    if not config.default_task:
        model = config.model or "the embedded model"
        reward = config.reward or "the lexicon sentiment reward"
        task = f"Your task ({model}, reward {reward}), on {results['eval_prompts']}:"
    r_phi = "mean lexicon sentiment of the completion, in [−1, 1]"
    if config.reward is not None:
        r_phi = f"mean score of {config.reward}"
    lines = [
        "",
        task,
        "| policy                 |   reward | r_φ (sent.) |       KL | fluency |",
        "|------------------------|----------|------------|----------|---------|",
        _row("base LM (reference)", results["base_lm"]),
        _row("PPO agent, untrained", before),
        _row("PPO agent, trained", after),
        f"(reward = r_φ − β·KL; r_φ = {r_phi};",
        " fluency = share of prompt + completion that pass the corpus grammar check)",
        "",
        "What the agent writes on held-out prompts, before and after training:",
        "| prompt | untrained agent | trained agent |",
        "|---|---|---|",
        *(
            f"| {prompt} | {untrained} | {trained} |"
            for prompt, untrained, trained in side_by_side(before["examples"], after["examples"])
        ),
        "",
        f"wrote {results['curve']} and {config.out / 'results.json'} in {results['wall_s']:.0f} s",
    ]
    return "\n".join(lines)
