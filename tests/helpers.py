"""Helpers shared by the tests: run the ``lmgym`` command or an example, run a doc page's code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lmgym.cli ARGS`` in a subprocess; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "lmgym.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_example(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/SCRIPT ARGS`` from the repository root, as a user starts it.

    ``env`` adds to (or overrides) this process's environment, e.g. ``{"LMGYM_SMOKE": "1"}``.
    """
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def python_blocks(path: Path) -> list[str]:
    """The fenced ```python blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def exec_doc_blocks(relative: str) -> int:
    """Execute the python blocks of ``ROOT / relative`` in one namespace; return their count."""
    blocks = python_blocks(ROOT / relative)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, relative, "exec"), namespace)
    return len(blocks)
