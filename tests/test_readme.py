"""The README's quick start runs as written (with a smaller training budget)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    code = blocks[0]
    assert "model.learn(1_024, progress_bar=True)" in code
    namespace: dict[str, object] = {}
    exec(
        compile(
            code.replace("model.learn(1_024, progress_bar=True)", "model.learn(64)"),
            "README",
            "exec",
        ),
        namespace,
    )
    assert namespace["model"].num_timesteps >= 64  # type: ignore[attr-defined]


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block
