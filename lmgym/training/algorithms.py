"""Which SB3 / sb3-contrib algorithm fits which env and policy, and its default hyper-parameters.

``lmgym train`` and ``lmgym bench`` name algorithms and policies by short CLI names. This module
maps them to classes, says which combinations fit (so a wrong one fails before anything is
built, with the valid choices listed), and holds the default hyper-parameters of each
(env, algo, policy) triple, so a plain ``lmgym train --env ID --algo NAME`` trains sensibly.
It also fixes the prompt splits an LM run trains and is evaluated on, and the adaptive β's
default horizon.

Fit rules, from the spaces and what each algorithm needs:

- ``LMBandit-v0`` has a ``MultiDiscrete`` action (a whole completion), ``LMToken-v0`` and
  ``CatGrid-v0`` a ``Discrete`` one; DQN needs ``Discrete``.
- MaskablePPO needs ``action_masks()``, which only ``LMToken-v0`` has.
- The LM policy (``LMActorCriticPolicy``) needs an LM env; RecurrentPPO and DQN have their own
  policies (``MlpLstmPolicy``, a Q-network), so they take ``--policy mlp`` only.
- RecurrentPPO's and DQN's policies cannot serve log π_θ(a | s) for the KL penalty (RecurrentPPO
  needs its LSTM state, DQN has no stochastic policy), so on LM envs they train with the env's
  cross-entropy form of the penalty, −log π_ref(y) (``info["kl_form"] == "cross_entropy"``),
  which is no KL and takes no adaptive β.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

# Nothing here imports torch or SB3 at module level: the configs of ``lmgym train`` and
# ``lmgym bench`` validate against this table while the CLI parses options, and ``--help`` must
# not wait seconds for torch. The classes load in :func:`algorithm_class`, when a run is built.

__all__ = [
    "ALGORITHMS",
    "ALGO_NAMES",
    "ENVS",
    "ENV_IDS",
    "EVAL_PROMPTS",
    "KL_HORIZON_FRACTION",
    "POLICY_NAMES",
    "TRAIN_PROMPTS",
    "AlgoName",
    "AlgoSpec",
    "EnvId",
    "EnvSpec",
    "PolicyName",
    "algorithm_class",
    "check_choice",
    "check_kl_horizon",
    "default_kl_horizon",
    "default_policy",
    "env_spec",
    "eval_prompt_split",
    "fits",
    "hyperparameters",
    "valid_algos",
]

EnvId = Literal["LMBandit-v0", "LMToken-v0", "CatGrid-v0"]
AlgoName = Literal[
    "ppo", "ppo-token", "a2c", "trpo", "maskable_ppo", "recurrent_ppo", "dqn", "grpo", "rloo"
]
PolicyName = Literal["lm", "mlp"]

ENV_IDS: tuple[str, ...] = get_args(EnvId)
ALGO_NAMES: tuple[str, ...] = get_args(AlgoName)
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)


@dataclass(frozen=True)
class EnvSpec:
    """What the algorithm table needs to know about one registered env.

    Attributes:
        action: The action space's type: ``Discrete`` or ``MultiDiscrete``.
        lm: Whether it is an LM env (KL penalty, LM policy possible).
        action_masks: Whether it has ``action_masks()`` (MaskablePPO).
        default_steps: Env steps of a plain ``lmgym train`` / ``lmgym bench``.
        quick_steps: Env steps of ``lmgym bench --quick``.
        default_n_envs: Envs stepped side by side.
        threshold: Default training reward that counts as "solved" in ``lmgym bench``.
        completion_steps: The most env steps one completion takes: 1 on the bandit (a whole
            completion per step), the env's default ``max_new_tokens`` on the token env (one
            token per step); 1 where there are no completions. A run of S steps has at least
            S / completion_steps completions (the adaptive β's default horizon counts them).
    """

    action: Literal["Discrete", "MultiDiscrete"]
    lm: bool
    action_masks: bool
    default_steps: int
    quick_steps: int
    default_n_envs: int
    threshold: float
    completion_steps: int = 1


ENVS: dict[str, EnvSpec] = {
    # 4096 completions: ~75 s of LM-policy PPO on one core (measured), so a plain 5-seed bench
    # of ppo and a2c fits in 15 minutes on 2 cores. Its training reward went 0.01 -> 0.30 (seed
    # 0; fluent text tops out near 0.5, docs/lm-policy.md): 0.2 is most of the way there.
    "LMBandit-v0": EnvSpec("MultiDiscrete", True, False, 4096, 256, 16, 0.2),
    # Same reward scale as the bandit; its budget and threshold are not calibrated yet.
    "LMToken-v0": EnvSpec("Discrete", True, True, 8192, 512, 16, 0.2, completion_steps=16),
    # The optimum returns 99 (one broom, then the meat); a random walk about 13 (catgrid.py).
    "CatGrid-v0": EnvSpec("Discrete", False, False, 30_000, 2048, 4, 90.0),
}


@dataclass(frozen=True)
class AlgoSpec:
    """One algorithm: what it needs (its class: :func:`algorithm_class`).

    Attributes:
        actions: Action space types it trains on.
        lm_policy: It takes the LM policy (``--policy lm``).
        needs_action_masks: It needs ``action_masks()`` on the env (MaskablePPO).
        serves_logprobs: Its policy can be attached as π_θ of the KL penalty.
        mlp_policy: The SB3 policy name of ``--policy mlp``; None: the LM policy only.
        group_size: Completions per prompt it needs from the vector env (``group_size`` of
            ``LMBandit-v0``'s vector env); 1: no groups.
    """

    actions: frozenset[str]
    lm_policy: bool
    needs_action_masks: bool
    serves_logprobs: bool
    mlp_policy: str | None = "MlpPolicy"
    group_size: int = 1


_BOTH = frozenset({"Discrete", "MultiDiscrete"})
ALGORITHMS: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec(_BOTH, True, False, True),
    # lmgym.algorithms.LMPPO with ratio="token": PPO clipped per completion token, on whole
    # completions with the LM policy (on LMToken-v0 an action is one token: that is "ppo").
    "ppo-token": AlgoSpec(frozenset({"MultiDiscrete"}), True, False, True, None),
    "a2c": AlgoSpec(_BOTH, True, False, True),
    "trpo": AlgoSpec(_BOTH, True, False, True),
    "maskable_ppo": AlgoSpec(_BOTH, True, True, True),
    "recurrent_ppo": AlgoSpec(_BOTH, False, False, False, "MlpLstmPolicy"),
    "dqn": AlgoSpec(frozenset({"Discrete"}), False, False, False),
    # Group baselines (lmgym.algorithms): G completions of each prompt, no value head.
    "grpo": AlgoSpec(frozenset({"MultiDiscrete"}), True, False, True, None, group_size=4),
    "rloo": AlgoSpec(frozenset({"MultiDiscrete"}), True, False, True, None, group_size=4),
}


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 / sb3-contrib class of ``algo`` (torch and SB3 are imported here, on first use).

    Example:
        >>> algorithm_class("trpo").__name__
        'BatchedTRPO'
    """
    from sb3_contrib import MaskablePPO, RecurrentPPO
    from stable_baselines3 import A2C, DQN, PPO

    from lmgym.algorithms import GRPO, LMPPO, RLOO
    from lmgym.training.trpo import BatchedTRPO

    classes: dict[str, type[BaseAlgorithm]] = {
        "ppo": PPO,
        "ppo-token": LMPPO,
        "a2c": A2C,
        "trpo": BatchedTRPO,
        "maskable_ppo": MaskablePPO,
        "recurrent_ppo": RecurrentPPO,
        "dqn": DQN,
        "grpo": GRPO,
        "rloo": RLOO,
    }
    return classes[algo]


def default_policy(env_id: str) -> str:
    """``lm`` on LM envs, ``mlp`` elsewhere.

    Example:
        >>> default_policy("LMBandit-v0"), default_policy("CatGrid-v0")
        ('lm', 'mlp')
    """
    return "lm" if env_spec(env_id).lm else "mlp"


def env_spec(env_id: str) -> EnvSpec:
    """The :class:`EnvSpec` of ``env_id``; a ValueError lists the valid ids.

    Example:
        >>> env_spec("CatGrid-v0").action
        'Discrete'
    """
    if env_id not in ENVS:
        raise ValueError(
            f"env={env_id!r} is unknown; expected one of {list(ENV_IDS)} (lmgym's registered "
            "envs; import lmgym registers them)."
        )
    return ENVS[env_id]


def fits(env_id: str, algo: str, policy: str) -> str | None:
    """Why ``algo`` with ``policy`` does not fit ``env_id``, or None when it does.

    Example:
        >>> fits("LMBandit-v0", "dqn", "mlp")
        'dqn needs a Discrete action space and LMBandit-v0 has a MultiDiscrete one'
        >>> fits("CatGrid-v0", "ppo", "mlp") is None
        True
    """
    env, spec = env_spec(env_id), ALGORITHMS[algo]
    if env.action not in spec.actions:
        expected = " or ".join(sorted(spec.actions))
        return f"{algo} needs a {expected} action space and {env_id} has a {env.action} one"
    if spec.needs_action_masks and not env.action_masks:
        return f"{algo} needs action_masks(), which {env_id} does not have"
    if policy == "lm" and not env.lm:
        return f"the LM policy needs an LM env and {env_id} is not one"
    if policy == "lm" and not spec.lm_policy:
        return f"{algo} has its own policy ({spec.mlp_policy}) and takes --policy mlp only"
    if policy == "mlp" and spec.mlp_policy is None:
        return f"{algo} trains the LM policy only (--policy lm)"
    return None


def valid_algos(env_id: str, policy: str) -> list[str]:
    """The algorithms that fit ``env_id`` with ``policy``.

    Example:
        >>> valid_algos("LMToken-v0", "lm")
        ['ppo', 'a2c', 'trpo', 'maskable_ppo']
        >>> valid_algos("CatGrid-v0", "mlp")
        ['ppo', 'a2c', 'trpo', 'recurrent_ppo', 'dqn']
    """
    return [a for a in ALGO_NAMES if fits(env_id, a, policy) is None]


def check_choice(env_id: str, algo: str, policy: str) -> None:
    """Raise a ValueError listing the valid choices unless ``(env_id, algo, policy)`` fits.

    Example:
        >>> check_choice("LMBandit-v0", "dqn", "mlp")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: algo='dqn' does not fit env='LMBandit-v0' with policy='mlp': ...
    """
    env = env_spec(env_id)
    if policy not in POLICY_NAMES:
        raise ValueError(f"policy={policy!r} is unknown; expected one of {list(POLICY_NAMES)}.")
    if policy == "lm" and not env.lm:
        raise ValueError(
            f"policy='lm' does not fit env={env_id!r}: the LM policy needs an LM env; "
            f"expected policy='mlp' (valid algos for it: {valid_algos(env_id, 'mlp')})."
        )
    if algo not in ALGORITHMS:
        raise ValueError(
            f"algo={algo!r} is unknown; expected one of {list(ALGO_NAMES)} (on {env_id} with "
            f"policy={policy!r}: {valid_algos(env_id, policy)})."
        )
    reason = fits(env_id, algo, policy)
    if reason is not None:
        raise ValueError(
            f"algo={algo!r} does not fit env={env_id!r} with policy={policy!r}: {reason}. "
            f"Valid algos for {env_id} with policy={policy!r}: {valid_algos(env_id, policy)}."
        )


# ------------------------------------------------------------------- prompts and the KL horizon

TRAIN_PROMPTS: Literal["train"] = "train"
"""The corpus prompt split an LM run trains on."""
EVAL_PROMPTS: Literal["test"] = "test"
"""The corpus prompt split an LM run is evaluated on: held out, disjoint from the training one."""


def eval_prompt_split(env_id: str) -> str | None:
    """The prompt split ``env_id``'s runs are evaluated on (None: the env has no prompts).

    Example:
        >>> eval_prompt_split("LMBandit-v0"), eval_prompt_split("CatGrid-v0")
        ('test', None)
    """
    return EVAL_PROMPTS if env_spec(env_id).lm else None


KL_HORIZON_FRACTION = 16
"""The adaptive β's default horizon is the run's completions divided by this."""


def default_kl_horizon(env_id: str, steps: int) -> int:
    """Horizon H (in completions) of the adaptive β for a run of ``steps`` env steps.

    Ziegler et al.'s controller (:class:`~lmgym.rewards.kl.AdaptiveKLController`) moves β by at
    most 20 % per H completions, e^(0.2·N/H) over N. A horizon as long as the run (N/H = 1)
    lets β move ×0.82 to ×1.22 at most: it cannot adapt. The default is 1/16 of the run's
    completions, so β can move up to e^3.2 ≈ ×24 either way: from 5× off it can reach the
    value that holds the KL at its target in about half the run and settle there
    (tests/training/test_build.py simulates it; in that simulation 1/8 left too little of the
    run to get there, and 1/32 overshot when the policy's KL lagged by a quarter of the run).
    On ``LMToken-v0`` a completion takes up to ``max_new_tokens`` steps; the rule counts the
    fewest completions the run can have, so β can move at least that far.

    Example:
        >>> default_kl_horizon("LMBandit-v0", 4096), default_kl_horizon("LMToken-v0", 8192)
        (256, 32)
    """
    completions = steps // env_spec(env_id).completion_steps
    return max(1, completions // KL_HORIZON_FRACTION)


def check_kl_horizon(
    kl_horizon: int | None, kl_target: float | None, env: str, steps: int
) -> int | None:
    """``kl_horizon`` if valid, its default for the run when None and kl_target is set.

    A horizon of at least the run's completions is legal but leaves β almost fixed (it moves
    ×0.82 to ×1.22 at most): that warns, naming the default.

    Raises:
        ValueError: ``kl_horizon`` is not an int >= 1, or is given without ``kl_target``.

    Example:
        >>> check_kl_horizon(None, 6.0, "LMBandit-v0", 4096)
        256
        >>> check_kl_horizon(None, None, "LMBandit-v0", 4096) is None  # a fixed β: no horizon
        True
    """
    default = default_kl_horizon(env, steps)
    if kl_horizon is None:
        return None if kl_target is None else default
    if isinstance(kl_horizon, bool) or not isinstance(kl_horizon, int) or kl_horizon < 1:
        raise ValueError(
            f"kl_horizon={kl_horizon!r} must be an int >= 1: the completions over which the "
            f"adaptive β may change by up to 20%, e.g. {default} (1/16 of this run's "
            "completions), or None for that default."
        )
    if kl_target is None:
        raise ValueError(
            f"kl_horizon={kl_horizon} without kl_target: the horizon belongs to the adaptive β, "
            "and β is fixed; expected kl_target set (e.g. 6.0) or kl_horizon=None."
        )
    completions = steps // env_spec(env).completion_steps
    if kl_horizon >= completions:
        warnings.warn(
            f"kl_horizon={kl_horizon} is not below this run's {completions} completions: the "
            f"adaptive β can move by at most e^(±0.2·{completions}/{kl_horizon}), so it stays "
            f"near its start. A horizon of {default} (1/16 of the run) lets it adapt.",
            UserWarning,
            stacklevel=2,
        )
    return kl_horizon


# ---------------------------------------------------------------------------- hyper-parameters

# A2C's own optimizer is RMSprop; the LM policy fine-tunes with Adam. Named, not imported:
# hyperparameters() puts torch's class in.
_ADAM = {"optimizer_class": "Adam"}
# TRPO differentiates twice: eager attention (SDPA has no double backward on CPU) and a value
# head on a detached trunk, so TRPO's separate value step leaves the actor alone.
_LM_TRPO = {"attn_implementation": "eager", "value_trunk": "detached"}

# Keyed by (env kind, algo, policy). On LM envs gamma is 1: a completion is one episode and its
# reward is not discounted. "policy_kwargs" here are merged into the built policy's kwargs.
_HYPER: dict[tuple[str, str, str], dict[str, Any]] = {
    # The demo's PPO (lmgym/demo.py) and the A2C of benchmarks/lm_policy_learning.py.
    ("bandit", "ppo", "lm"): dict(n_steps=16, batch_size=64, n_epochs=2, learning_rate=1e-4),
    # The same run as "ppo" above, the ratio clipped per token instead of per completion.
    ("bandit", "ppo-token", "lm"): dict(
        n_steps=16, batch_size=64, n_epochs=2, learning_rate=1e-4, ratio="token"
    ),
    ("bandit", "a2c", "lm"): dict(n_steps=4, learning_rate=1e-4, policy_kwargs=_ADAM),
    # TRPO's policy step (10 conjugate-gradient steps, each a double backward) takes ~9 s on
    # 64 completions on this CPU: it uses a quarter of each 256-completion rollout (the value
    # step uses all). Its KL sums over a completion's tokens, and PPO above moves the policy by
    # approx_kl ~0.02 per update (measured), so the trust region is 0.03, not SB3's 0.01.
    ("bandit", "trpo", "lm"): dict(
        n_steps=16,
        batch_size=64,
        sub_sampling_factor=4,
        cg_max_steps=10,
        target_kl=0.03,
        policy_kwargs=_LM_TRPO,
    ),
    # lmgym.algorithms' learning checks (tests/algorithms/test_group_learning.py): 16 envs in
    # groups of 4, lr 3e-4 (at 1e-4 GRPO gained 0.04 in 2,048 completions).
    ("bandit", "grpo", "lm"): dict(n_steps=4, batch_size=64, learning_rate=3e-4),
    ("bandit", "rloo", "lm"): dict(n_steps=4, batch_size=64, learning_rate=3e-4),
    ("bandit", "ppo", "mlp"): dict(n_steps=32, batch_size=128, n_epochs=4, learning_rate=1e-3),
    ("bandit", "a2c", "mlp"): dict(n_steps=4, learning_rate=1e-3),
    ("bandit", "trpo", "mlp"): dict(n_steps=16, batch_size=128),
    ("bandit", "recurrent_ppo", "mlp"): dict(n_steps=16, batch_size=64, n_epochs=4),
    ("token", "ppo", "lm"): dict(n_steps=32, batch_size=128, n_epochs=2, learning_rate=1e-4),
    ("token", "maskable_ppo", "lm"): dict(
        n_steps=32, batch_size=128, n_epochs=2, learning_rate=1e-4
    ),
    ("token", "a2c", "lm"): dict(n_steps=8, learning_rate=1e-4, policy_kwargs=_ADAM),
    ("token", "trpo", "lm"): dict(
        n_steps=32, batch_size=128, sub_sampling_factor=4, cg_max_steps=10, policy_kwargs=_LM_TRPO
    ),
    ("token", "ppo", "mlp"): dict(n_steps=32, batch_size=128, n_epochs=4, learning_rate=1e-3),
    ("token", "maskable_ppo", "mlp"): dict(
        n_steps=32, batch_size=128, n_epochs=4, learning_rate=1e-3
    ),
    ("token", "a2c", "mlp"): dict(n_steps=8, learning_rate=1e-3),
    ("token", "trpo", "mlp"): dict(n_steps=32, batch_size=128),
    ("token", "recurrent_ppo", "mlp"): dict(n_steps=32, batch_size=128, n_epochs=4),
    ("token", "dqn", "mlp"): dict(
        learning_starts=1000,
        buffer_size=50_000,
        target_update_interval=1000,
        exploration_fraction=0.5,
    ),
    # examples/cat_gridworld.py: small rollouts, many updates; A2C needs an entropy bonus or a
    # few early bathtubs teach it to pace safely forever.
    ("catgrid", "ppo", "mlp"): dict(n_steps=128, batch_size=64, gamma=0.99),
    ("catgrid", "a2c", "mlp"): dict(n_steps=32, ent_coef=0.01, gamma=0.99),
    ("catgrid", "trpo", "mlp"): dict(n_steps=128, batch_size=64, gamma=0.99),
    ("catgrid", "recurrent_ppo", "mlp"): dict(n_steps=128, batch_size=64, gamma=0.99),
    ("catgrid", "dqn", "mlp"): dict(
        learning_starts=1000,
        buffer_size=10_000,
        target_update_interval=500,
        exploration_fraction=0.3,
        gamma=0.99,
    ),
}


def _kind(env_id: str) -> str:
    return {"LMBandit-v0": "bandit", "LMToken-v0": "token", "CatGrid-v0": "catgrid"}[env_id]


def hyperparameters(
    env_id: str, algo: str, policy: str, *, learning_rate: float | None = None
) -> dict[str, Any]:
    """Default keyword arguments of the algorithm class for ``(env_id, algo, policy)``.

    ``learning_rate`` replaces the default one. ``policy_kwargs`` in the result are extra
    policy arguments (the LM policy's model is added by :mod:`lmgym.training.build`).

    Example:
        >>> hyperparameters("LMBandit-v0", "ppo", "lm")["n_steps"]
        16
        >>> hyperparameters("CatGrid-v0", "a2c", "mlp", learning_rate=1e-3)["learning_rate"]
        0.001
    """
    check_choice(env_id, algo, policy)
    # One-step bandit episodes: nothing to discount (GRPO/RLOO fix gamma themselves).
    undiscounted = {} if ALGORITHMS[algo].group_size > 1 else {"gamma": 1.0}
    kwargs: dict[str, Any] = {**undiscounted, **_HYPER[(_kind(env_id), algo, policy)]}
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = dict(kwargs["policy_kwargs"])
        if kwargs["policy_kwargs"].get("optimizer_class") == "Adam":
            import torch

            kwargs["policy_kwargs"]["optimizer_class"] = torch.optim.Adam
    if learning_rate is not None:
        kwargs["learning_rate"] = learning_rate
    return kwargs
