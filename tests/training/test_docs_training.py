"""The Python code in docs/training.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_training_doc_code_runs(capsys) -> None:
    doc = (ROOT / "docs" / "training.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 2
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/training.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "eval reward" in out and "'metrics.json'" in out and "'checkpoint.zip'" in out
    assert "3.000 ± 1.963" in out
