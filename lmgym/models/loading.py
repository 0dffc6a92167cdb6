"""Load causal LMs and their tokenizers: from a local directory, a hub id, or an object.

A hub id such as ``"openai-community/gpt2"`` goes through transformers' own cache and download:
it works wherever the user is online, and offline (``HF_HUB_OFFLINE=1``) once it is cached.
lmgym's tests and demo use only local directories, so they never download. Weights load with
``trust_remote_code`` off unless a real ``True`` is passed.

Every model lmgym hands out is in eval mode with all dropout set to 0: SB3 switches the policy to
train mode for its updates, and GPT-2's default 0.1 dropout then shifts log-probs by 0.3-0.5 nats
between rollout and update, which breaks the PPO ratio (docs/design.md, section 6).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmgym.error import ModelLoadError
from lmgym.models.device import resolve_device, resolve_dtype
from lmgym.models.sources import is_hub_id, require_model_dir  # re-exported: light helpers
from lmgym.torch_threads import use_embedded_model_threads

__all__ = [
    "DEFAULT_MODEL_DIR",
    "check_vocab_fits",
    "disable_dropout",
    "is_hub_id",
    "load_default_model",
    "load_model",
    "load_tokenizer",
    "require_bool_trust_remote_code",
    "require_model_dir",
]

DEFAULT_MODEL_DIR = Path(str(resources.files("lmgym.models") / "default"))
"""Where the embedded default model (trained by :mod:`lmgym.models.pretrain`) ships."""

_DROPOUT_CONFIG_FIELDS = (
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "hidden_dropout",
    "dropout",
)


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout probability in ``model`` (modules and config) to 0, in place.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> m = disable_dropout(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2)))
        >>> m.config.resid_pdrop
        0.0
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for field in _DROPOUT_CONFIG_FIELDS:
        if config is not None and isinstance(getattr(config, field, None), float):
            setattr(config, field, 0.0)
    return model


def _hub_error(repo_id: str, argument: str, err: Exception) -> ModelLoadError:
    """One line naming the hub id that did not load, and how to fix it."""
    if hub_constants.HF_HUB_OFFLINE:
        why = (
            f"not in the Hugging Face cache ({hub_constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 "
            "forbids downloading it"
        )
    else:
        why = (
            f"could not be loaded ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        )
    return ModelLoadError(
        f"{argument}={repo_id!r} is not a local directory, and as a hub id it is {why}. Fix: "
        "set HF_HUB_OFFLINE=0 and be online to download it once into the cache, or pass a "
        "local directory saved with save_pretrained."
    )


def check_vocab_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise if the tokenizer can produce ids the model's embedding has no row for.

    A model may have more embedding rows than tokens (GPT-2 pads its table), never fewer.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> model, tokenizer = load_default_model()
        >>> check_vocab_fits(model, tokenizer)  # passes silently
    """
    embedding_rows = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
    if len(tokenizer) > embedding_rows:
        raise ModelLoadError(
            f"tokenizer has {len(tokenizer)} tokens but the model's embedding has only "
            f"{embedding_rows} rows (config.vocab_size={model.config.vocab_size}); expected a "
            "tokenizer saved with this model. Pass the matching tokenizer, or call "
            "model.resize_token_embeddings(len(tokenizer)) and fine-tune."
        )


def require_bool_trust_remote_code(trust_remote_code: object) -> bool:
    """Return ``trust_remote_code`` if it is a real ``bool``; raise ``TypeError`` otherwise.

    The flag decides whether Python code shipped inside a checkpoint runs, so it is never
    judged by truthiness: ``"no"``, ``"false"`` or ``1`` would all count as "yes".

    Example:
        >>> require_bool_trust_remote_code(False)
        False
        >>> require_bool_trust_remote_code("no")
        Traceback (most recent call last):
        ...
        TypeError: trust_remote_code='no' (type str) is not a bool; expected True or False. Turn it on (True) only for a checkpoint whose code you trust, else leave it False.
    """  # noqa: E501
    if not isinstance(trust_remote_code, bool):
        raise TypeError(
            f"trust_remote_code={trust_remote_code!r:.60} (type {type(trust_remote_code).__name__}"
            ") is not a bool; expected True or False. Turn it on (True) only for a checkpoint "
            "whose code you trust, else leave it False."
        )
    return trust_remote_code


def load_tokenizer(
    tokenizer: str | Path | PreTrainedTokenizerBase, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory or hub id (or take an object); give it a pad token.

    A tokenizer without a pad token gets its EOS token as pad, as is usual for GPT-2 and Llama.
    Where pad == EOS, lmgym still counts the EOS that ends a completion (its log-prob, KL and
    reward) and only the positions after it are padding.

    Example:
        >>> load_tokenizer(DEFAULT_MODEL_DIR).pad_token
        '<pad>'
    """
    require_bool_trust_remote_code(trust_remote_code)
    if isinstance(tokenizer, (str, Path)):
        if is_hub_id(tokenizer):
            repo_id = str(tokenizer)
            try:
                tokenizer = AutoTokenizer.from_pretrained(
                    repo_id, trust_remote_code=trust_remote_code
                )
            except OSError as err:
                raise _hub_error(repo_id, "tokenizer", err) from None
        else:
            tokenizer_dir = Path(tokenizer)
            if not tokenizer_dir.is_dir():
                raise ModelLoadError(
                    f"tokenizer={str(tokenizer_dir)!r} is not a directory; expected a local "
                    "directory written by tokenizer.save_pretrained(path), or a hub id."
                )
            tokenizer = AutoTokenizer.from_pretrained(
                tokenizer_dir, trust_remote_code=trust_remote_code, local_files_only=True
            )
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(
            f"tokenizer={tokenizer!r:.80} is not supported; expected a local directory, a hub "
            "id or a transformers tokenizer object."
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token; "
                "expected at least an EOS token (it ends a completion). Set "
                "tokenizer.eos_token (and model.config.eos_token_id) before passing it."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model: str | Path | PreTrainedModel,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    *,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    argument: str = "model",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a directory or hub id (or take given objects).

    The returned model is in eval mode with dropout disabled; the tokenizer always has a pad
    token (the EOS token when the checkpoint defines none, as is usual for GPT-2).

    Args:
        model: A local directory written by ``save_pretrained``, a hub id such as
            ``"openai-community/gpt2"`` (through transformers' cache; offline once cached), or a
            model object.
        tokenizer: A local directory, hub id or tokenizer object. ``None`` loads it from
            ``model``'s directory or id (required when ``model`` is an object).
        trust_remote_code: Run modelling code shipped inside the checkpoint. Off by default;
            turn it on only for checkpoints you trust.
        attn_implementation: Passed to ``from_pretrained``; ``"eager"`` is needed where a
            double backward runs (TRPO on CPU), since SDPA has none there.
        device: Where the model runs (:mod:`lmgym.models.device`); ``None`` leaves a model
            object where it is and loads one from disk onto the CPU.
        dtype: Precision of the weights (:mod:`lmgym.models.device`); ``None`` leaves a model
            object as it is and loads one from disk as ``"auto"`` would (float32 on a CPU).
        argument: How the caller's user names ``model`` (e.g. ``"ref_model"``): a directory
            or hub id that does not load is reported under this name.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelLoadError: The directory does not exist or holds no config, a hub id is neither
            cached nor reachable, or the tokenizer's vocabulary does not fit the model.
        ValueError: ``device`` does not exist here, or cannot run ``dtype``.

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> model, tokenizer = load_model(DEFAULT_MODEL_DIR)
        >>> model.training
        False
    """
    require_bool_trust_remote_code(trust_remote_code)
    # Device and dtype first: a GPU that is not there fails before seconds of loading.
    target = None if device is None else resolve_device(device)
    precision = None if dtype is None else resolve_dtype(dtype, target or torch.device("cpu"))
    if isinstance(model, (str, Path)):
        load_dtype = precision or resolve_dtype("auto", target or torch.device("cpu"))
        kwargs: dict[str, object] = {"trust_remote_code": trust_remote_code, "dtype": load_dtype}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        if is_hub_id(model):
            try:
                loaded: PreTrainedModel = AutoModelForCausalLM.from_pretrained(str(model), **kwargs)
            except OSError as err:
                raise _hub_error(str(model), argument, err) from None
        else:
            model_dir = Path(model)
            if model_dir.resolve() == Path(DEFAULT_MODEL_DIR).resolve():
                use_embedded_model_threads()
            require_model_dir(model_dir, argument)
            loaded = AutoModelForCausalLM.from_pretrained(
                model_dir, local_files_only=True, **kwargs
            )
        if tokenizer is None:
            tokenizer = model
    elif isinstance(model, PreTrainedModel):
        loaded = model
        if tokenizer is None:
            raise ValueError(
                "tokenizer=None with a model object: expected the model's tokenizer (an object, "
                "a local directory or a hub id). Pass tokenizer=..., or pass the model as a "
                "directory or hub id."
            )
    else:
        raise TypeError(
            f"model={model!r} (type {type(model).__name__}) is not supported; expected a local "
            "directory path, a hub id or a transformers PreTrainedModel."
        )

    tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    check_vocab_fits(loaded, tokenizer)

    disable_dropout(loaded)
    loaded.eval()
    if target is not None or precision is not None:
        loaded.to(device=target, dtype=precision)  # type: ignore[call-arg]
    return loaded, tokenizer


def load_default_model(
    *,
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the embedded default model and tokenizer that ship inside the package.

    It is a small GPT-2 trained by ``python -m lmgym.models.pretrain`` on a review corpus that
    lmgym generates itself (:mod:`lmgym.models.corpus`); nothing is downloaded. Loading it (here
    or through :func:`load_model`) applies lmgym's torch thread default for a model this small:
    one intra-op thread (:mod:`lmgym.torch_threads` gives the measurement and the override).

    Example:
        >>> model, tokenizer = load_default_model()
        >>> model.config.model_type
        'gpt2'
    """
    return load_model(
        DEFAULT_MODEL_DIR, attn_implementation=attn_implementation, device=device, dtype=dtype
    )
