"""The algorithm table: what fits which env and policy, and the errors that list the choices."""

from __future__ import annotations

import inspect

import pytest

from lmgym.envs.bandit import LMBanditEnv
from lmgym.envs.token import LMTokenEnv
from lmgym.training.algorithms import (
    ALGO_NAMES,
    ENV_IDS,
    check_choice,
    env_spec,
    fits,
    hyperparameters,
    valid_algos,
)


def test_every_env_has_algorithms_for_mlp() -> None:
    for env in ENV_IDS:
        assert {"ppo", "a2c"} <= set(valid_algos(env, "mlp"))


def test_completion_steps_match_the_envs_length_limits() -> None:
    # The adaptive β's default horizon counts completions from steps with these.
    limit = inspect.signature(LMTokenEnv.__init__).parameters["max_new_tokens"].default
    assert env_spec("LMToken-v0").completion_steps == limit
    assert "max_new_tokens" in inspect.signature(LMBanditEnv.__init__).parameters
    assert env_spec("LMBandit-v0").completion_steps == 1  # one step writes a whole completion


def test_fit_rules() -> None:
    assert valid_algos("LMBandit-v0", "lm") == ["ppo", "ppo-token", "a2c", "trpo", "grpo", "rloo"]
    assert valid_algos("LMBandit-v0", "mlp") == ["ppo", "a2c", "trpo", "recurrent_ppo"]
    # Everything but the group-baseline algorithms and per-token PPO, which need whole
    # completions and the LM.
    lm_bandit_only = ("ppo-token", "grpo", "rloo")
    assert valid_algos("LMToken-v0", "mlp") == [a for a in ALGO_NAMES if a not in lm_bandit_only]
    assert "maskable_ppo" not in valid_algos("CatGrid-v0", "mlp")
    assert fits("LMToken-v0", "dqn", "lm") is not None


@pytest.mark.parametrize(
    ("env", "algo", "policy", "fragments"),
    [
        ("Pong-v5", "ppo", "mlp", ["env='Pong-v5' is unknown", "LMBandit-v0", "CatGrid-v0"]),
        ("CatGrid-v0", "sac", "mlp", ["algo='sac' is unknown", "'dqn'"]),
        ("LMBandit-v0", "dqn", "mlp", ["Discrete", "['ppo', 'a2c', 'trpo', 'recurrent_ppo']"]),
        ("LMBandit-v0", "maskable_ppo", "lm",
         ["action_masks()", "['ppo', 'ppo-token', 'a2c', 'trpo', 'grpo', 'rloo']"]),
        ("CatGrid-v0", "ppo", "lm", ["policy='lm' does not fit", "policy='mlp'"]),
        ("LMToken-v0", "recurrent_ppo", "lm", ["MlpLstmPolicy", "maskable_ppo"]),
        ("LMToken-v0", "ppo", "cnn", ["policy='cnn' is unknown", "'lm', 'mlp'"]),
    ],
    ids=["unknown_env", "unknown_algo", "dqn_bandit", "maskable_bandit", "lm_catgrid",
         "recurrent_lm", "unknown_policy"],
)  # fmt: skip
def test_bad_choices_list_the_valid_ones(env, algo, policy, fragments) -> None:
    with pytest.raises(ValueError) as info:
        check_choice(env, algo, policy)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_hyperparameters_defaults_and_override() -> None:
    ppo = hyperparameters("LMBandit-v0", "ppo", "lm")
    assert ppo == dict(gamma=1.0, n_steps=16, batch_size=64, n_epochs=2, learning_rate=1e-4)
    trpo = hyperparameters("LMToken-v0", "trpo", "lm", learning_rate=3e-4)
    assert trpo["policy_kwargs"]["attn_implementation"] == "eager"
    assert trpo["learning_rate"] == 3e-4
    trpo["policy_kwargs"]["extra"] = 1  # a copy: the table itself is untouched
    assert "extra" not in hyperparameters("LMToken-v0", "trpo", "lm")["policy_kwargs"]
    assert hyperparameters("CatGrid-v0", "a2c", "mlp")["gamma"] == 0.99
