from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_reward.py"


def test_custom_reward_example_runs_in_smoke_mode() -> None:
    env = {**os.environ, "LMGYM_SMOKE": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reward" in result.stdout and "->" in result.stdout


def test_custom_reward_example_is_short() -> None:
    code = [
        line
        for line in EXAMPLE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    body_start = next(i for i, line in enumerate(code) if line.startswith("import"))
    assert len(code[body_start:]) < 30  # the plug-in itself is under 20 lines
