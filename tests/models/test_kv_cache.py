"""The one module of KV-cache calls: current transformers API, and the old keyword as a shim."""

from __future__ import annotations

import inspect
import warnings

import torch

from lmgym.models.kv_cache import (
    cache_argument,
    cache_from_layers,
    drop_leading_columns,
    forward_with_cache,
    kv_layers,
)
from lmgym.models.loading import load_default_model


class _OldStyleOutput(dict):
    """An output that carries its cache under ``past_key_values`` only."""

    @property
    def logits(self) -> torch.Tensor:
        return self["logits"]


class _OldStyleLM(torch.nn.Module):
    """A model whose forward still takes and returns ``past_key_values`` (older releases)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[str] = []

    def forward(
        self, input_ids, attention_mask, position_ids, past_key_values=None, use_cache=False
    ):  # noqa: ANN001
        self.calls.append("past_key_values")
        out = self.inner(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=use_cache, **{cache_argument(self.inner): past_key_values},
        )  # fmt: skip
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        return _OldStyleOutput(logits=out.logits, past_key_values=cache)


def _prompt():
    model, tok = load_default_model()
    ids = torch.tensor([tok.encode("the food was great and")])
    return model, ids, torch.ones_like(ids), torch.arange(ids.shape[1]).unsqueeze(0)


def test_installed_api_emits_no_deprecation_and_matches_full_forward() -> None:
    model, ids, mask, pos = _prompt()
    # transformers >= 5.24 takes `cache=`; the older supported releases only `past_key_values=`.
    has_new_name = "cache" in inspect.signature(type(model).forward).parameters
    assert cache_argument(model) == ("cache" if has_new_name else "past_key_values")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, cache = forward_with_cache(model, ids[:, :-1], mask[:, :-1], pos[:, :-1])
        step_logits, cache = forward_with_cache(model, ids[:, -1:], mask, pos[:, -1:], cache)
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    torch.testing.assert_close(step_logits[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)
    assert kv_layers(cache)[0][0].shape[2] == ids.shape[1]


def test_old_keyword_shim_gives_the_same_logits() -> None:
    model, ids, mask, pos = _prompt()
    old = _OldStyleLM(model)
    assert cache_argument(old) == "past_key_values"
    _, cache = forward_with_cache(old, ids[:, :-1], mask[:, :-1], pos[:, :-1])
    logits, _ = forward_with_cache(old, ids[:, -1:], mask, pos[:, -1:], cache)
    new_logits, _ = forward_with_cache(model, ids, mask, pos)
    torch.testing.assert_close(logits[:, -1], new_logits[:, -1], atol=1e-5, rtol=1e-5)
    assert old.calls == ["past_key_values", "past_key_values"]


def test_cache_round_trip_and_trim() -> None:
    model, ids, mask, pos = _prompt()
    _, cache = forward_with_cache(model, ids, mask, pos)
    layers = kv_layers(cache)
    rebuilt = cache_from_layers([(k.clone(), v.clone()) for k, v in layers])
    for (k1, v1), (k2, v2) in zip(kv_layers(rebuilt), layers, strict=True):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    drop_leading_columns(rebuilt, 2)
    assert kv_layers(rebuilt)[0][0].shape[2] == ids.shape[1] - 2
    torch.testing.assert_close(kv_layers(rebuilt)[0][0], layers[0][0][:, :, 2:])
