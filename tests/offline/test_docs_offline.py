"""docs/offline-rl.md: its code runs as written."""

from __future__ import annotations

from tests.helpers import exec_doc_blocks


def test_offline_rl_page_runs() -> None:
    assert exec_doc_blocks("docs/offline-rl.md") == 1
