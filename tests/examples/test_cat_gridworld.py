from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "cat_gridworld.py"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_smoke_run_writes_png_and_results(tmp_path: Path) -> None:
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


def test_smoke_flag_and_slip(tmp_path: Path) -> None:
    proc = run("--smoke", "--slip", "0.1", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["args"]["slip"] == 0.1
    assert 0 < results["results"]["optimum"]["return_expected"] < 99


def test_help_lists_field_docstrings() -> None:
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "drunk-cat probability" in proc.stdout
