"""The bar of the learning checks on the default task, shared by every algorithm's check.

The PPO check's bar (tests/agents/test_lm_policy_learning.py): r_φ on the held-out prompts up
by at least 0.25, the KL under twice its target, fluency at least 0.8.
"""

from __future__ import annotations

from typing import Any

from lmgym.evaluation import evaluate_actions_on_prompts

KL_TARGET = 4.0
"""The adaptive β's target, in nats (as ``lmgym demo``)."""


def assert_raises_sentiment(model: Any, vec: Any, eval_prompts: list[str], steps: int) -> None:
    """Score ``model`` on ``eval_prompts``, train it for ``steps``, score it again: the bar."""

    def act(obs):
        return model.predict(obs, deterministic=False)[0]

    before = evaluate_actions_on_prompts(vec.venv, eval_prompts, act, samples_per_prompt=2)
    model.learn(steps)
    after = evaluate_actions_on_prompts(vec.venv, eval_prompts, act, samples_per_prompt=2)
    summary = (
        f"r_φ {before.reward_model:.3f} -> {after.reward_model:.3f}, KL {after.kl:.2f}, "
        f"fluency {after.fluency:.2f}"
    )
    assert after.reward_model - before.reward_model >= 0.25, summary
    assert after.kl < 2 * KL_TARGET, summary
    assert after.fluency >= 0.8, summary
