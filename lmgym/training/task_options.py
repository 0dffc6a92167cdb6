"""Your own task from the command line: ``--model``, ``--reward``, ``--prompts``, ``--device``.

``lmgym train``, ``lmgym bench`` and ``lmgym demo`` share these options through
:class:`TaskOptions`, the base of their configs; the defaults are the embedded task (the
embedded model, the lexicon sentiment reward, the corpus's prompts, the CPU).

- ``--model``: a local directory saved with ``save_pretrained``, or a hub id such as
  ``openai-community/gpt2`` (through transformers' cache).
- ``--reward``: ``MODULE:FUNC`` (an importable module: installed, or on ``PYTHONPATH``),
  ``path/to/file.py:FUNC``, or the directory of a sequence-classification model saved with
  ``save_pretrained`` (``DIR:LABEL`` picks the label whose score is the reward when it has
  several). A function takes ``(prompts, completions)`` and returns one float per completion.
- ``--prompts``: a text file (one prompt per line, blank lines skipped) or a ``.jsonl`` file
  (each line a JSON string, or an object whose ``"prompt"`` is text or a chat
  ``[{"role": ..., "content": ...}]``). ``--eval-prompts`` holds the evaluation's prompts;
  without it a fixed 20% (at least 1) of the distinct prompts, chosen by a hash of their text,
  is held out for the before/after evaluation and never trained on.
- ``--device`` and ``--dtype``: where the env's models (the reference, a classifier reward)
  and the agent run, and the precision of the env's models. The trained LM policy stays in
  float32 (its optimizer's updates would be lost in half precision).

Everything is checked when the config is built, before any work: a reward module is imported
then (and again by each run that uses it, resumed runs included: the module is named by the
string given, never loaded from a run directory), a prompts file is read, and a device other
than the CPU is looked up (which imports torch; the defaults import nothing heavy).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import sys
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

from lmgym.error import ModelLoadError
from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.models.sources import check_model_source, require_model_dir
from lmgym.training.algorithms import EVAL_PROMPTS, TRAIN_PROMPTS

__all__ = [
    "HELD_OUT_FRACTION",
    "DtypeName",
    "PromptSplit",
    "TaskOptions",
    "load_reward",
    "parse_reward",
    "read_prompts",
    "split_prompts",
]

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

HELD_OUT_FRACTION = 0.2
"""Share of a ``--prompts`` file's distinct prompts held out for evaluation (at least one)."""

Prompt = str | list[dict[str, str]]
"""A prompt as read from a file: text, or a chat (as the envs take them; their own alias,
``lmgym.envs.prompts.Prompt``, lives in a module that imports transformers)."""


# --------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptSplit:
    """The prompts a run trains on and those it is evaluated on, never the same ones.

    Attributes:
        train: The training prompts.
        eval: The held-out evaluation prompts.
        train_text: Where the training prompts come from, in words (with the files' digests);
            ``"train"`` for the corpus's training prompts.
        eval_text: The same for the evaluation prompts; ``"test"`` for the corpus's held-out
            test prompts.
    """

    train: list[Prompt]
    eval: list[Prompt]
    train_text: str = "train"
    eval_text: str = "test"


def _key(prompt: Prompt) -> str:
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def _digest(prompts: list[Prompt]) -> str:
    return hashlib.sha256("\n".join(map(_key, prompts)).encode()).hexdigest()[:12]


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _chat(value: list[Any], where: str) -> list[dict[str, str]]:
    """A chat from a JSON list, or a ValueError naming ``where`` (the line and field)."""
    if not value:
        raise ValueError(f"{where} is an empty chat; expected at least one user message.")
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(
                f"{where}[{index}] is {_json_type(message)}; expected a message "
                '{"role": "user", "content": "..."}.'
            )
        for name in ("role", "content"):
            if not isinstance(message.get(name), str):
                raise ValueError(
                    f'{where}[{index}] has no text "{name}"; expected a message '
                    '{"role": "user", "content": "..."}.'
                )
    if not any(message["role"] == "user" for message in value):
        raise ValueError(f'{where} has no message with "role": "user"; expected one.')
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _jsonl_prompt(line: str, where: str) -> Prompt:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{where} is not JSON ({err.msg}, column {err.colno}); expected a JSON string or an "
            'object such as {"prompt": "..."}.'
        ) from None
    field = where
    if isinstance(value, dict):
        if "prompt" not in value:
            have = ", ".join(map(repr, value)) or "none"
            raise ValueError(
                f'{where} has no "prompt" field (its fields: {have}); expected an object such '
                'as {"prompt": "..."}.'
            )
        value, field = value["prompt"], f'{where}, field "prompt"'
    elif not isinstance(value, str):
        raise ValueError(
            f'{where} is {_json_type(value)}; expected a JSON string or an object with a "prompt" '
            "field."
        )
    if isinstance(value, list) and field != where:
        return _chat(value, field)
    if not isinstance(value, str):
        raise ValueError(
            f"{field} is {_json_type(value)}; expected text or a chat "
            '[{"role": "user", "content": "..."}].'
        )
    if not value.strip():
        raise ValueError(f"{field} is empty; expected the prompt's text.")
    return value


def read_prompts(path: Path, argument: str = "prompts") -> list[Prompt]:
    r"""The prompts of a text file (one per line) or a ``.jsonl`` file, blank lines skipped.

    Raises:
        ValueError: The file does not exist, cannot be read as UTF-8, holds no prompt, or a
            ``.jsonl`` line is not a prompt (the message names the line and the field).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "p.jsonl"
        >>> _ = path.write_text('"the soup was"\n\n{"prompt": [{"role": "user", "content": "hi"}]}')
        >>> read_prompts(path)
        ['the soup was', [{'role': 'user', 'content': 'hi'}]]
    """  # noqa: E501
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(
            f"{argument}={str(path)!r} {what}; expected a text file (one prompt per line) or a "
            ".jsonl file (one JSON prompt per line)."
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{argument}={str(path)!r} is not UTF-8 text (byte {err.start}); expected a text "
            "or .jsonl file saved as UTF-8."
        ) from None
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{argument}={str(path)!r} line {number}"
        prompts.append(_jsonl_prompt(line, where) if jsonl else line.strip())
    if not prompts:
        raise ValueError(
            f"{argument}={str(path)!r} holds no prompt (it is empty or blank); expected one "
            "prompt per line."
        )
    return prompts


def split_prompts(prompts: Path | None, eval_prompts: Path | None) -> PromptSplit:
    """The training and evaluation prompts of ``--prompts`` and ``--eval-prompts``.

    With no files, the corpus's ``train`` and held-out ``test`` prompts. With ``prompts`` alone,
    20% of its distinct prompts (at least 1), those whose text hashes lowest, are held out: the
    split does not depend on the seed or on the order of the lines, so every run of a benchmark
    is evaluated on the same prompts. With ``eval_prompts``, those are evaluated on, and any of
    them also in the training prompts is dropped from training (with a warning).

    Raises:
        ValueError: A file is not a prompt file (:func:`read_prompts`), or no training prompt
            is left.

    Example:
        >>> split_prompts(None, None).eval_text
        'test'
    """
    train: list[Prompt] = list(corpus_prompts(TRAIN_PROMPTS))
    train_text: str = TRAIN_PROMPTS
    if prompts is not None:
        train = read_prompts(prompts, "prompts")
        train_text = f"the prompts of {prompts} (sha256 {_digest(train)})"
    if eval_prompts is not None:
        evaluation = read_prompts(eval_prompts, "eval_prompts")
        digest = _digest(evaluation)
        eval_text = f"the {len(evaluation)} prompts of {eval_prompts} (sha256 {digest})"
        held = {_key(p) for p in evaluation}
        kept = [p for p in train if _key(p) not in held]
        if len(kept) < len(train):
            warnings.warn(
                f"{len(train) - len(kept)} of the {len(train)} training prompts are also in "
                f"eval_prompts={str(eval_prompts)!r}: they are not trained on, so the "
                "evaluation stays held out.",
                UserWarning,
                stacklevel=2,
            )
        train = kept
    elif prompts is not None:
        distinct = list(dict.fromkeys(map(_key, train)))
        n_held = max(1, round(len(distinct) * HELD_OUT_FRACTION))
        held = set(sorted(distinct, key=lambda k: hashlib.sha256(k.encode()).digest())[:n_held])
        evaluation = [json.loads(k) for k in distinct if k in held]
        train = [p for p in train if _key(p) not in held]
        eval_text = (
            f"{n_held} prompts held out of {prompts} ({HELD_OUT_FRACTION:.0%} of its "
            f"{len(distinct)} distinct prompts, chosen by a hash of their text; never trained "
            f"on; sha256 {_digest(evaluation)})"
        )
        train_text = f"the other {len(train)} prompts of {prompts} (sha256 {_digest(train)})"
    else:
        return PromptSplit(train, list(corpus_prompts(EVAL_PROMPTS)))
    if not train:
        raise ValueError(
            f"prompts={str(prompts)!r} leaves no prompt to train on once the evaluation's are "
            "held out; expected more distinct prompts (at least 2), or --eval-prompts FILE "
            "with other prompts."
        )
    return PromptSplit(train, evaluation, train_text, eval_text)


# ---------------------------------------------------------------------------------- rewards


RewardKind = Literal["module", "file", "classifier"]


def parse_reward(spec: str) -> tuple[RewardKind, str, str | None]:
    """``(kind, where, name)`` of a ``--reward``: what it names and the attribute or label.

    A module or a file and the function's name in it, or a classifier directory and its label
    (None: its only logit).

    Example:
        >>> parse_reward("my_rewards:score"), parse_reward("rewards/r.py:score")
        (('module', 'my_rewards', 'score'), ('file', 'rewards/r.py', 'score'))
    """
    if Path(spec).expanduser().is_dir():
        return "classifier", spec, None
    target, colon, name = spec.rpartition(":")
    if colon and target and Path(target).expanduser().is_dir():
        return "classifier", target, name
    if not colon or not target or not name:
        raise ValueError(
            f"reward={spec!r} is not a reward; expected MODULE:FUNC (e.g. 'my_rewards:score'), "
            "path/to/file.py:FUNC, or the directory of a sequence-classification model saved "
            "with save_pretrained."
        )
    return ("file" if target.endswith(".py") else "module"), target, name


def _import_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise ValueError(
            f"reward={spec!r}: the file {str(path)!r} does not exist; expected a Python file "
            "that defines the reward function."
        )
    name = "lmgym_reward_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:  # each file runs once per process
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before running it: dataclasses in it look themselves up
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ValueError(
            f"reward={spec!r}: running {str(path)!r} raised {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}; fix the file."
        ) from None
    return module


def _import_module(module: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        missing = isinstance(err, ModuleNotFoundError) and err.name == module.split(".")[0]
        fix = (
            f"expected an importable module (installed, or on PYTHONPATH), or a file: "
            f"path/to/{module.split('.')[-1]}.py:{spec.rpartition(':')[2]}."
            if missing
            else "fix the module."
        )
        raise ValueError(
            f"reward={spec!r}: cannot import module {module!r} ({type(err).__name__}: {first}); "
            + fix
        ) from None


def _reward_function(spec: str, out: Path | None = None) -> Any:
    """The callable that ``spec`` (a module or file reward) names; checks it is callable."""
    kind, where, name = parse_reward(spec)
    assert kind != "classifier" and name is not None
    if kind == "file":
        path = Path(where).expanduser().resolve()
        if out is not None and path.is_relative_to(Path(out).resolve()):
            raise ValueError(
                f"reward={spec!r} is inside out={str(out)!r}; expected a file outside the run "
                "directory (lmgym never runs code that a run directory holds)."
            )
        module, module_name = _import_file(path, spec), str(path)
    else:
        module, module_name = _import_module(where, spec), where
    if not hasattr(module, name):
        public = sorted(n for n in vars(module) if callable(vars(module)[n]) and n[0] != "_")
        raise ValueError(
            f"reward={spec!r}: module {module_name!r} has no attribute {name!r}; expected a "
            f"function defined in it (its callables: {', '.join(public[:8]) or 'none'})."
        )
    function = getattr(module, name)
    if not callable(function):
        raise ValueError(
            f"reward={spec!r}: {module_name}.{name} is a {type(function).__name__}, which is "
            "not callable; expected a function (prompts, completions) -> one float each."
        )
    return function


def load_reward(spec: str | None, device: str = "cpu") -> Any:
    """The reward function of ``--reward`` (None: the env's built-in reward).

    A classifier directory becomes a
    :class:`~lmgym.rewards.classifier.SequenceClassifierReward` on ``device`` (loading it
    imports torch and transformers).

    Example:
        >>> load_reward("lmgym.rewards.rules:ends_sentence").__name__
        'ends_sentence'
    """
    if spec is None:
        return None
    kind, where, name = parse_reward(spec)
    if kind != "classifier":
        return _reward_function(spec)
    from lmgym.models.device import resolve_device
    from lmgym.rewards.classifier import SequenceClassifierReward

    label: int | str | None = int(name) if name is not None and name.isdigit() else name
    try:
        return SequenceClassifierReward(
            Path(where).expanduser(), label=label, device=resolve_device(device)
        )
    except (ValueError, TypeError) as err:  # e.g. a label it does not have, or none given
        if isinstance(err, ModelLoadError):
            raise
        raise ModelLoadError(f"reward={spec!r}: {err}") from None


# ---------------------------------------------------------------------------------- options


@dataclass
class TaskOptions:
    """The task's options, shared by ``lmgym train``, ``lmgym bench`` and ``lmgym demo``.

    Attributes:
        model: The LM: a local directory saved with save_pretrained, or a hub id such as
            openai-community/gpt2 (through transformers' cache); None: the embedded default.
        reward: The reward: MODULE:FUNC (an importable module), path/to/file.py:FUNC, or a
            sequence-classification model's directory (DIR:LABEL to pick its label); the
            function takes (prompts, completions) and returns one float each. A resumed run
            imports it again by this name. None: the lexicon sentiment reward.
        prompts: Training prompts: a text file (one per line) or .jsonl (a JSON string, or
            {"prompt": text or chat} per line); 20% of them (at least 1) are held out for
            evaluation unless --eval-prompts is given. None: the corpus's prompts.
        eval_prompts: Held-out evaluation prompts (same formats); never trained on. None: the
            share held out of --prompts (or the corpus's test prompts).
        device: Where the models run: auto, cpu, cuda, cuda:N or mps.
        dtype: Precision of the env's models (reference, classifier reward); the trained LM
            policy stays float32. auto: bfloat16 on a GPU that has it, else float32.
    """

    model: str | None = None
    reward: str | None = None
    prompts: Path | None = None
    eval_prompts: Path | None = None
    device: str = "cpu"
    dtype: DtypeName = "auto"

    def check_task_options(self, env: str, lm: bool, out: Path | None) -> None:
        """Validate the task options (see the module docstring); paths become absolute.

        ``lm`` says whether the env has a language model (the options other than ``device``
        need one); ``out`` is the run directory, which may not hold the reward's code.
        """
        if not lm:
            given = [
                f"{name}={getattr(self, name)!r}"
                for name in ("model", "reward", "prompts", "eval_prompts")
                if getattr(self, name) is not None
            ] + ([f"dtype={self.dtype!r}"] if self.dtype != "auto" else [])
            if given:
                raise ValueError(
                    f"{', '.join(given)} with env={env!r}, which has no language model; "
                    "expected them left out."
                )
        if self.model is not None:
            self.model = check_model_source(self.model, "model")
        if self.reward is not None:
            self.reward = str(self.reward)
            kind, where, name = parse_reward(self.reward)
            if kind == "classifier":
                require_model_dir(Path(where).expanduser(), "reward")
            else:
                if kind == "file":  # absolute: a resumed run finds it from any directory
                    self.reward = f"{Path(where).expanduser().resolve()}:{name}"
                _reward_function(self.reward, out)
        for name in ("prompts", "eval_prompts"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).expanduser().resolve())
        self.prompt_split()  # reads and checks the files
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"device={self.device!r} is not a device; expected 'auto', 'cpu', 'cuda', "
                "'cuda:N' or 'mps'."
            )
        if self.dtype not in get_args(DtypeName):
            raise ValueError(
                f"dtype={self.dtype!r} is unknown; expected one of {list(get_args(DtypeName))}."
            )
        if (self.device, self.dtype) != ("cpu", "auto"):
            # torch is imported only off the defaults; a missing GPU fails here, before work.
            from lmgym.models.device import resolve_device, resolve_dtype

            resolve_dtype(self.dtype, resolve_device(self.device))

    def prompt_split(self) -> PromptSplit:
        """The training and held-out evaluation prompts (:func:`split_prompts`)."""
        return split_prompts(self.prompts, self.eval_prompts)

    def task_options(self) -> dict[str, Any]:
        """The task options as keyword arguments of another config (bench -> train)."""
        return {f.name: getattr(self, f.name) for f in fields(TaskOptions)}

    def task_identity(self) -> dict[str, Any]:
        """The task options a resumed run must share, JSON-ready.

        Those not at their default, and the prompts' descriptions with their digests (a changed
        file is another task).

        Options at their default are left out, so a run begun before they existed resumes.
        The file of ``--eval-prompts`` is ``eval_prompts_file`` (``eval_prompts`` names the
        evaluation's prompts, as it always has).
        """
        identity: dict[str, Any] = {}
        for f in fields(TaskOptions):
            value = getattr(self, f.name)
            if f.name != "model" and value != f.default:
                key = "eval_prompts_file" if f.name == "eval_prompts" else f.name
                identity[key] = str(value) if isinstance(value, Path) else value
        split = self.prompt_split()
        identity["eval_prompts"] = split.eval_text
        if split.train_text != TRAIN_PROMPTS:
            identity["train_prompts"] = split.train_text
        return identity
