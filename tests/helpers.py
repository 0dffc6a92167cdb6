"""Helpers shared by the tests: run the ``lmgym`` command, run the code blocks of a doc page."""

from __future__ import annotations

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
