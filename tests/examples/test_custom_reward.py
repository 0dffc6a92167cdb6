from __future__ import annotations

from pathlib import Path

from tests.helpers import run_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_reward.py"


def test_custom_reward_example_runs_in_smoke_mode() -> None:
    result = run_example("custom_reward.py", env={"LMGYM_SMOKE": "1"})
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
