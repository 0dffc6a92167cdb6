"""Supported dependency ranges: declared once in the package metadata, checked at import."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from lmgym.dependencies import (
    CHECKED_DEPENDENCIES,
    UnsupportedDependencyError,
    check_dependency_versions,
    declared_ranges,
)


def test_every_checked_dependency_has_a_floor_and_a_major_cap() -> None:
    ranges = declared_ranges()
    for name in CHECKED_DEPENDENCIES:
        specs = {spec.operator for spec in ranges[name].specifier}
        assert specs == {">=", "<"}, (name, str(ranges[name].specifier))


def test_installed_versions_are_inside_the_declared_ranges() -> None:
    check_dependency_versions()  # the suite itself runs on a supported set


@pytest.mark.parametrize(
    ("version", "supported"),
    [("4.57.6", False), ("5.0.0", True), ("5.24.0", True), ("6.0.0", False), ("5.1.0rc1", True)],
)
def test_range_check(version: str, supported: bool) -> None:
    ranges = {"transformers": Requirement("transformers>=5.0,<6")}
    if supported:
        check_dependency_versions(ranges, {"transformers": version})
        return
    with pytest.raises(UnsupportedDependencyError) as caught:
        check_dependency_versions(ranges, {"transformers": version})
    message = str(caught.value)
    assert f"transformers {version} is installed" in message
    assert "transformers>=5.0,<6" in message
    assert "pip install 'transformers>=5.0,<6'" in message
    assert "\n" not in message


def test_local_build_label_counts_as_its_release() -> None:
    check_dependency_versions({"torch": Requirement("torch>=2.13,<3")}, {"torch": "2.13.0+cpu"})


def test_import_lmgym_with_an_unsupported_transformers_says_one_line(tmp_path: Path) -> None:
    # A distribution earlier on sys.path shadows the real one's metadata: the check reads it.
    dist_info = tmp_path / "transformers-4.30.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: transformers\nVersion: 4.30.0\n"
    )
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import lmgym
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("lmgym.dependencies.UnsupportedDependencyError: lmgym supports")
    assert "transformers 4.30.0 is installed" in last_line
    assert "pip install" in last_line
