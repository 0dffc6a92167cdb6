"""Build argparse options from a config dataclass, so no option is described twice.

Each field becomes ``--field-name``; its help text is the field's ``Attributes:`` entry in the
dataclass docstring, and its type and default come from the field itself. A field declared with
``field(metadata={"positional": True})`` becomes a positional argument instead (``lmgym export
RUN_DIR``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["add_dataclass_arguments", "dataclass_from_args"]

T = TypeVar("T")


def _field_docs(cls: type) -> dict[str, str]:
    """The ``name: text`` entries of the ``Attributes:`` sections of ``cls`` and its bases.

    A sub-class that adds fields to a stage's config documents only its new fields; those it
    inherits keep their base class's text (the nearest class in the MRO wins).

    Example:
        >>> @dataclasses.dataclass
        ... class Base:
        ...     '''Attributes:
        ...         lr: Learning rate.
        ...     '''
        ...     lr: float = 1e-3
        >>> @dataclasses.dataclass
        ... class Command(Base):
        ...     '''Attributes:
        ...         out: Where to write.
        ...     '''
        ...     out: str = "runs"
        >>> _field_docs(Command)
        {'lr': 'Learning rate.', 'out': 'Where to write.'}
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs.update(_attributes_section(klass.__doc__ or ""))
    return docs


def _attributes_section(doc: str) -> dict[str, str]:
    """Parse ``name: text`` entries of the ``Attributes:`` section of one Google docstring."""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    docs: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^\s{4,8}(\w+):\s*(.*)$", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
        elif current and not line.strip() and docs.get(current):
            current = None
    return docs


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--option`` per field of dataclass ``cls``.

    Example:
        >>> @dataclasses.dataclass
        ... class C:
        ...     '''Attributes:
        ...         steps: How many steps.
        ...     '''
        ...     steps: int = 3
        >>> p = argparse.ArgumentParser(); add_dataclass_arguments(p, C)
        >>> p.parse_args(["--steps", "5"]).steps
        5
    """
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        hint = hints[field.name]
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        option = "--" + field.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": field.name}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        help_text = docs.get(field.name, "")
        origin = typing.get_origin(hint)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(hint))
        elif origin in (list, tuple):
            kwargs["nargs"] = "+"
            kwargs["type"] = args[0] if args else str
        else:
            base = args[0] if args else hint
            if typing.get_origin(base) is typing.Literal:
                kwargs["choices"] = list(typing.get_args(base))
            elif base in (int, float, str, Path):
                kwargs["type"] = base
            else:
                raise TypeError(
                    f"{cls.__name__}.{field.name} has type {hint!r}, which the CLI cannot parse; "
                    "use int, float, str, Path, bool, a Literal or a list of those."
                )
        if field.metadata.get("positional"):
            # A positional argument is named by its dest, and required unless it has a default.
            kwargs = {k: v for k, v in kwargs.items() if k not in ("dest", "required")}
            if default is not dataclasses.MISSING:
                kwargs["nargs"] = "?"
            parser.add_argument(
                field.name, metavar=field.name.upper(), help=help_text.replace("%", "%%"), **kwargs
            )
            continue
        suffix = " (required)" if default is dataclasses.MISSING else f" (default: {default})"
        # argparse %-formats help texts: a literal % ("95% CI") must be doubled.
        parser.add_argument(option, help=(help_text + suffix).replace("%", "%%"), **kwargs)


def dataclass_from_args(cls: type[T], namespace: argparse.Namespace) -> T:
    """Build ``cls`` from parsed arguments (its ``__post_init__`` validates them)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})
