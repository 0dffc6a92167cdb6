"""The code in docs/ runs as written, and the examples that have no test of their own run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rl_to_lm_doc_code_runs(capsys) -> None:
    doc = (ROOT / "docs" / "rl-to-lm.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 4
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/rl-to-lm.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "cat state:" in out and "LM action:" in out
    assert "return +99.00" in out  # the optimal cat crosses one broom and eats
    assert out.count(" -> ") >= 5


def test_rl_to_lm_example_prints_both_trajectories() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rl_to_lm.py"), "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "CatGrid-v0" in lines[0] and "LMToken-v0" in lines[0]
    assert lines[1].count("->") == 4  # one cat step and one LM step on the same line
    assert "return: +99.00" in lines[-1]


def test_lm_policy_doc_code_runs(capsys) -> None:
    doc = (ROOT / "docs" / "lm-policy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 4
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/lm-policy.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "trainable" in out and "GPT2LMHeadModel reloaded from lm" in out
