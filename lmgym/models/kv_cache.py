"""Every KV-cache call lmgym makes, in one module.

transformers renamed the cache argument of ``forward`` from ``past_key_values`` to ``cache``
(5.24 deprecates the old name, 5.40 removes it), and the model outputs carry the cache under the
new name too. The rest of lmgym never names either: it calls :func:`forward_with_cache`, builds
caches with :func:`cache_from_layers` and reads them with :func:`kv_layers`. Which name a model
takes is decided once per model class, from its ``forward`` signature, so the old form survives
only as a narrow shim for the supported releases that still need it.

``generate`` manages its own cache, so sampling (:mod:`lmgym.models.generation`) needs nothing
from here; the token env's reference state (:mod:`lmgym.envs.ref_cache`) is the one user.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

__all__ = ["cache_argument", "cache_from_layers", "forward_with_cache", "kv_layers"]


_CACHE_ARGUMENT: dict[type[torch.nn.Module], str] = {}  # decided once per model class


def cache_argument(model: PreTrainedModel) -> str:
    """The keyword ``model.forward`` takes its KV cache under: ``"cache"`` or the old name.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> cache_argument(load_default_model()[0]) in ("cache", "past_key_values")
        True
    """
    model_type = type(model)
    if model_type not in _CACHE_ARGUMENT:
        parameters = inspect.signature(model_type.forward).parameters
        _CACHE_ARGUMENT[model_type] = "cache" if "cache" in parameters else "past_key_values"
    return _CACHE_ARGUMENT[model_type]


def forward_with_cache(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: DynamicCache | None = None,
) -> tuple[torch.Tensor, DynamicCache]:
    """One forward that extends ``cache`` (or starts one) with ``input_ids``.

    Args:
        model: A causal LM.
        input_ids: (B, T) the tokens not yet in the cache.
        attention_mask: (B, C + T) over the cached columns and the new ones.
        position_ids: (B, T) positions of the new tokens.
        cache: The cache of the first C columns, or ``None`` to start one.

    Returns:
        The (B, T, V) logits and the cache, now C + T columns long. It must hold full-attention
        :class:`DynamicLayer` layers (``NotImplementedError`` otherwise), because callers edit
        their rows and columns in place.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> model, tok = load_default_model()
        >>> ids = torch.tensor([tok.encode("the food was")])
        >>> mask, pos = torch.ones_like(ids), torch.arange(ids.shape[1]).unsqueeze(0)
        >>> logits, cache = forward_with_cache(model, ids, mask, pos)
        >>> kv_layers(cache)[0][0].shape[2] == ids.shape[1]
        True
    """
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **{cache_argument(model): cache},
    )
    new_cache = outputs["cache"] if "cache" in outputs else outputs["past_key_values"]
    if not isinstance(new_cache, DynamicCache) or any(
        type(layer) is not DynamicLayer for layer in new_cache.layers
    ):
        raise NotImplementedError(
            f"{type(model).__name__} returned a {type(new_cache).__name__} cache with layers "
            "other than full-attention DynamicLayer; lmgym's incremental reference cache "
            "supports only those. Pass reference_cache=False to re-encode each step."
        )
    return outputs.logits, new_cache


def cache_from_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A cache holding the given per-layer ``(keys, values)``, each (B, heads, C, head_dim)."""
    return DynamicCache(ddp_cache_data=layers)


def kv_layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(keys, values)`` of every layer of ``cache``, each (B, heads, C, head_dim)."""
    out = []
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer), layer
        keys, values = layer.keys, layer.values
        assert keys is not None and values is not None, "an uninitialised cache layer"
        out.append((keys, values))
    return out


def drop_leading_columns(cache: DynamicCache, count: int) -> None:
    """Remove the first ``count`` columns of every layer of ``cache``, in place."""
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer), layer
        keys, values = layer.keys, layer.values
        assert keys is not None and values is not None
        layer.keys = keys[:, :, count:]  # a view: the next forward's concat copies it
        layer.values = values[:, :, count:]
