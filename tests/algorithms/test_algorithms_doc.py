"""The code in docs/algorithms.md runs as written."""

from __future__ import annotations

from tests.helpers import exec_doc_blocks


def test_algorithms_doc_code_runs(capsys) -> None:
    assert exec_doc_blocks("docs/algorithms.md") == 2
    out = capsys.readouterr().out
    assert "GRPO updates: 4" in out
    assert "per-token clip fraction:" in out
