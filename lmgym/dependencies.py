"""The supported versions of the libraries lmgym is built on, checked when lmgym is imported.

A transformers or Gymnasium release outside the tested range fails in ways that point nowhere
near the cause (a deprecation warning turned error inside a forward pass, a missing cache
attribute). So ``import lmgym`` compares the installed versions with the ranges lmgym declares in
its package metadata (``pyproject.toml``, the one place they are written) and stops with one line
that names the version, the range and the ``pip install`` that fixes it.

Reading package metadata costs milliseconds and imports none of the libraries themselves, so the
check keeps ``import lmgym`` quick.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from lmgym.error import Error

__all__ = ["CHECKED_DEPENDENCIES", "UnsupportedDependencyError", "check_dependency_versions"]

CHECKED_DEPENDENCIES = ("transformers", "gymnasium", "torch", "stable-baselines3")
"""The libraries whose API lmgym relies on closely enough that a release outside the range
breaks it."""


class UnsupportedDependencyError(Error, ImportError):
    """An installed library is outside the version range lmgym supports."""


def declared_ranges(package: str = "lmgym") -> dict[str, Requirement]:
    """The core (non-extra) requirements ``package`` declares, by normalised name.

    Returns an empty dict when ``package`` is not installed (e.g. run from a bare source tree),
    in which case there is nothing to check against.
    """
    try:
        lines = metadata.requires(package) or []
    except metadata.PackageNotFoundError:
        return {}
    requirements = [Requirement(line) for line in lines]
    return {
        req.name.lower(): req
        for req in requirements
        if req.marker is None or req.marker.evaluate({"extra": ""})
    }


def check_dependency_versions(
    ranges: dict[str, Requirement] | None = None,
    installed: dict[str, str] | None = None,
) -> None:
    """Raise :class:`UnsupportedDependencyError` if a checked library is outside its range.

    Args:
        ranges: Requirement per library name; default: lmgym's declared ones.
        installed: Installed version per library name; default: read from package metadata.

    Example:
        >>> from packaging.requirements import Requirement
        >>> check_dependency_versions({"gymnasium": Requirement("gymnasium>=1.0,<2")},
        ...                           {"gymnasium": "1.4.0"})
        >>> check_dependency_versions({"gymnasium": Requirement("gymnasium>=1.0,<2")},
        ...                           {"gymnasium": "0.29.1"})
        Traceback (most recent call last):
        ...
        lmgym.dependencies.UnsupportedDependencyError: lmgym supports gymnasium>=1.0,<2, but gymnasium 0.29.1 is installed; fix it with: pip install 'gymnasium>=1.0,<2'
    """  # noqa: E501
    ranges = declared_ranges() if ranges is None else ranges
    for name in CHECKED_DEPENDENCIES:
        requirement = ranges.get(name)
        if requirement is None:
            continue
        version = _installed_version(name) if installed is None else installed.get(name)
        if version is None:
            continue  # not installed at all: its own import error is clearer than ours
        if not _satisfies(requirement, version):
            spec = name + _readable(requirement)
            raise UnsupportedDependencyError(
                f"lmgym supports {spec}, but {name} {version} is installed; "
                f"fix it with: pip install '{spec}'"
            )


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _readable(requirement: Requirement) -> str:
    """The specifier with its floor first (``>=5.0,<6``), as people write ranges."""
    parts = sorted((str(spec) for spec in requirement.specifier), key=lambda s: s[0] != ">")
    return ",".join(parts)


def _satisfies(requirement: Requirement, version: str) -> bool:
    try:
        parsed = Version(version)
    except InvalidVersion:
        return True  # an unparsable local build: nothing reliable to compare
    # A local build such as 2.13.0+cpu satisfies ==2.13.0; pre-releases are judged like releases.
    return requirement.specifier.contains(parsed, prereleases=True)
