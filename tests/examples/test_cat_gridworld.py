from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from tests.helpers import run_example

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "cat_gridworld.py"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_example("cat_gridworld.py", *args, env=env, timeout=120)


def run_in_process(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """Run the script as ``__main__`` in this interpreter: no second start-up (the imports)."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    monkeypatch.delenv("LMGYM_SMOKE", raising=False)
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_smoke_run_writes_png_and_results(tmp_path: Path) -> None:
    # The one run in a fresh interpreter: the script as a user starts it.
    proc = run("--output-dir", str(tmp_path), env={"LMGYM_SMOKE": "1"})
    assert proc.returncode == 0, proc.stderr
    for name in ("PPO", "A2C", "optimum"):
        assert name in proc.stdout
    assert "smoke=True" in proc.stdout

    png = tmp_path / "cat_gridworld_paths.png"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["results"]) == {"PPO", "A2C", "optimum"}
    assert results["results"]["optimum"]["return_expected"] == 99.0
    assert results["args"]["smoke"] is True


def test_smoke_flag_and_slip(tmp_path: Path, monkeypatch, capsys) -> None:
    run_in_process(monkeypatch, "--smoke", "--slip", "0.1", "--output-dir", str(tmp_path))
    assert "slip=0.1" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["args"]["slip"] == 0.1
    assert 0 < results["results"]["optimum"]["return_expected"] < 99


def test_help_lists_field_docstrings(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(monkeypatch, "--help")
    assert exit_info.value.code == 0
    assert "drunk-cat probability" in capsys.readouterr().out
