"""Where a model runs and in which precision: the ``device`` and ``dtype`` every entry point takes.

Both are decided once, up front, when an env, policy or reward model is built, so that a device
that does not exist or a precision the device cannot run fails with a message naming the
parameter, not as a device error deep inside a forward pass.

``device``:
    ``"auto"`` (CUDA if present, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
    ``"mps"``, or a ``torch.device``. ``None`` means the CPU, as in SB3's own default policy.

``dtype``:
    ``"auto"`` (bfloat16 on a CUDA device that supports it, else float32), ``"float32"``,
    ``"bfloat16"``, ``"float16"``, or a ``torch.dtype``. Half precision is for the weights and
    activations only: log-prob sums and the KL are always computed in float32.
"""

from __future__ import annotations

import torch

__all__ = ["DTYPE_NAMES", "model_device", "resolve_device", "resolve_dtype"]

DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""The dtypes lmgym runs models in, by the names the CLI and configs use."""


def resolve_device(device: str | torch.device | None, parameter: str = "device") -> torch.device:
    """The ``torch.device`` that ``device`` names, checked to exist on this machine.

    Args:
        device: See the module docstring.
        parameter: The argument's name as the caller knows it, for the error message.

    Raises:
        ValueError: ``device`` is not a device name, or names one this machine does not have.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")
        Traceback (most recent call last):
        ...
        ValueError: device='tpu' is not a device; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(
            f"{parameter}={device!r} (type {type(device).__name__}) is not a device; expected a "
            "string such as 'auto', 'cpu' or 'cuda', or a torch.device."
        )
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"{parameter}={device!r} is not a device; expected 'auto', 'cpu', 'cuda', 'cuda:N' "
            "or 'mps'."
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"{parameter}={device!r} but this machine has no CUDA GPU (or torch was built "
                "without CUDA); expected a device that exists. Use device='cpu', or 'auto' to "
                "take a GPU only when there is one."
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"{parameter}={device!r} but this machine has {count} CUDA device(s), numbered "
                f"0 to {count - 1}; pick one of those, or 'cuda' for the current one."
            )
    elif resolved.type == "mps" and not _mps_available():
        raise ValueError(
            f"{parameter}={device!r} but Apple MPS is not available here; use device='cpu', or "
            "'auto' to pick the best device present."
        )
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"{parameter}={device!r} is not a device lmgym runs on; expected 'auto', 'cpu', "
            "'cuda', 'cuda:N' or 'mps'."
        )
    return resolved


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, parameter: str = "dtype"
) -> torch.dtype:
    """The ``torch.dtype`` that ``dtype`` names, checked to run on ``device``.

    ``None`` and ``"auto"`` give bfloat16 on a CUDA device that supports it and float32
    elsewhere. float16 on the CPU is refused: many CPU kernels lack it and the rest are slower
    than float32; bfloat16 is the half precision a CPU runs.

    Raises:
        ValueError: ``dtype`` is not one of :data:`DTYPE_NAMES`, or ``device`` cannot run it.

    Example:
        >>> resolve_dtype("auto", torch.device("cpu"))
        torch.float32
        >>> resolve_dtype("float16", torch.device("cpu"))
        Traceback (most recent call last):
        ...
        ValueError: dtype='float16' cannot run on device 'cpu': CPU kernels for float16 are missing or slow. Use dtype='bfloat16' or 'float32' on the CPU, or a CUDA device for float16.
    """  # noqa: E501
    if dtype is None or dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str) and dtype in DTYPE_NAMES:
        resolved = DTYPE_NAMES[dtype]
    else:
        raise ValueError(
            f"{parameter}={dtype!r} is not a dtype lmgym runs models in; expected 'auto' or one "
            f"of {sorted(DTYPE_NAMES)}."
        )
    if resolved not in DTYPE_NAMES.values():
        raise ValueError(
            f"{parameter}={dtype!r} is not a floating dtype lmgym runs models in; expected 'auto' "
            f"or one of {sorted(DTYPE_NAMES)}."
        )
    name = _dtype_name(resolved)
    if device.type == "cpu" and resolved == torch.float16:
        raise ValueError(
            f"{parameter}={name!r} cannot run on device 'cpu': CPU kernels for float16 are "
            "missing or slow. Use dtype='bfloat16' or 'float32' on the CPU, or a CUDA device "
            "for float16."
        )
    if device.type == "cuda" and resolved == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"{parameter}={name!r} but the GPU {device} does not support bfloat16 (it needs "
            "compute capability 8.0 or newer); use dtype='float16' or 'float32'."
        )
    return resolved


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a causal LM runs: the device of its input embedding.

    Asked of the embedding, not of ``parameters()``: a reference that shares the policy's
    weights (``lmgym.agents.lora.AdapterDisabledReference``) registers none of its own.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> model_device(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2)))
        device(type='cpu')
    """
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    return embedding.weight.device  # type: ignore[no-any-return]


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPE_NAMES.items() if value == dtype)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
