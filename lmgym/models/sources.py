"""Where a model comes from: a hub id or a local directory, decided without loading anything.

These checks import neither torch nor transformers, so a command's options can be validated
(``lmgym train --model ...``) before the seconds those imports take, and before any work.
:mod:`lmgym.models.loading` re-exports them and does the loading.
"""

from __future__ import annotations

import re
from pathlib import Path

from lmgym.error import ModelLoadError

__all__ = ["check_model_source", "is_hub_id", "require_model_dir"]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(source: str | Path) -> bool:
    """Whether ``source`` is read as a hub id (``"org/name"`` or ``"name"``), not a local path.

    A ``Path`` object, or a string naming something that exists on disk, is always local.

    Example:
        >>> is_hub_id("Qwen/Qwen2.5-0.5B-Instruct"), is_hub_id("./my-model"), is_hub_id("a/b/c")
        (True, False, False)
    """
    if isinstance(source, Path) or Path(source).expanduser().exists():
        return False
    return bool(_HUB_ID.fullmatch(source)) and ".." not in source


def require_model_dir(path: Path, argument: str) -> None:
    """Raise a :class:`ModelLoadError` naming ``argument`` unless ``path`` is a saved model.

    Example:
        >>> require_model_dir(Path("no/such/model"), "model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.error.ModelLoadError: model='no/such/model' does not exist; expected a local ...
    """
    if not path.exists():
        raise ModelLoadError(
            f"{argument}={str(path)!r} does not exist; expected a local directory saved with "
            "save_pretrained (config.json + weights) or a hub id such as 'org/name'. Check the "
            "path, or omit the argument to use the embedded default model."
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{argument}={str(path)!r} holds no config.json; expected a directory written by "
            "`model.save_pretrained(path)`."
        )


def check_model_source(source: str | Path, argument: str) -> str:
    """``source`` as a string if it is a hub id or a saved model directory, else the error.

    A hub id is only checked for its form here: whether it is cached or reachable is known when
    it loads (through transformers' cache).

    Example:
        >>> check_model_source("openai-community/gpt2", "model")
        'openai-community/gpt2'
    """
    text = str(source)
    if not is_hub_id(text):
        require_model_dir(Path(text).expanduser(), argument)
    return text
