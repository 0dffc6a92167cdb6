"""The code in docs/ runs as written, and the examples that have no test of their own run."""

from __future__ import annotations

from tests.helpers import exec_doc_blocks, run_example


def test_rl_to_lm_doc_code_runs(capsys) -> None:
    assert exec_doc_blocks("docs/rl-to-lm.md") >= 4
    out = capsys.readouterr().out
    assert "cat state:" in out and "LM action:" in out
    assert "return +99.00" in out  # the optimal cat crosses one broom and eats
    assert out.count(" -> ") >= 5


def test_rl_to_lm_example_prints_both_trajectories() -> None:
    result = run_example("rl_to_lm.py", "--seed", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "CatGrid-v0" in lines[0] and "LMToken-v0" in lines[0]
    assert lines[1].count("->") == 4  # one cat step and one LM step on the same line
    assert "return: +99.00" in lines[-1]


def test_lm_policy_doc_code_runs(capsys) -> None:
    assert exec_doc_blocks("docs/lm-policy.md") == 4
    out = capsys.readouterr().out
    assert "trainable" in out and "GPT2LMHeadModel reloaded from lm" in out


def test_training_doc_code_runs(capsys) -> None:
    assert exec_doc_blocks("docs/training.md") == 2
    out = capsys.readouterr().out
    assert "eval reward" in out and "'metrics.json'" in out and "'checkpoint.zip'" in out
    assert "3.000 ± 1.963" in out
