"""Gymnasium's ``human`` render mode for lmgym's text envs, in one place.

A text env has no window: in ``render_mode="human"`` it shows each step's text on standard
output, as Gymnasium's own text envs do. This is the one place where an env writes to stdout.
"""

from __future__ import annotations

__all__ = ["show_human"]


def show_human(text: str) -> None:
    """Show ``text`` to the person watching a ``render_mode="human"`` env (standard output)."""
    print(text, flush=True)
