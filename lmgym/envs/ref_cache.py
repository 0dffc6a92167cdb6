"""The reference model's incremental state for a batch of token-by-token episodes.

``LMToken-v0`` needs log π_ref(y_t | x, y_<t) after every token. Re-encoding the whole prefix at
every step costs O(t) per step (O(T²) per episode); keeping the reference model's KV cache makes
each step one forward over one new token per row.

Layout: one row per env, one shared cache length C for the whole batch (a batched forward needs
it). Each row is right-aligned: its last token sits in the last column, and the columns before its
own tokens are masked out. A prompt is left-padded to ``max_prompt_tokens`` (exactly as
:func:`lmgym.models.scoring.score_completions` lays it out), tokens are appended on the right, and
positions are counted over real tokens only (:func:`position_ids_from_mask`), so cached log-probs
equal teacher-forced ones. When row i starts a new episode, only the new prompts are encoded (one
batched forward over the resetting rows) and their keys/values are written into the last
``max_prompt_tokens`` columns of those rows, the columns before them zeroed and masked. No row
ever needs more than ``max_prompt_tokens + max_new_tokens - 1`` columns (the last token of an
episode is never fed), so older columns are dropped and memory stays bounded however long the
env runs.

Prompts repeat (RL draws them from a finite set), so the encoded state of each prompt (its
keys/values and next-token logits) is kept in a bounded LRU table: a reset to a known prompt
copies rows instead of running the model. Measured with the default model at 64 envs, staggered
resets otherwise cost one extra forward each (about as much as a whole step).

With ``minibatch_size`` the forwards over many rows (encoding prompts, and every step when
``use_cache=False``) run in micro-batches of at most that many rows, each cut to the columns its
own rows use, so their activations and (b, P, V) logits scale with ``minibatch_size``, not with
the number of envs. A micro-batch's prompt keys and values are padded back on the left with
masked zero columns to the block's width. The cached one-token step is not split: it runs one
position per row, and the KV cache it reads is the env's state, not a temporary.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from lmgym.models.device import model_device
from lmgym.models.kv_cache import (
    cache_from_layers,
    drop_leading_columns,
    forward_with_cache,
    kv_layers,
)
from lmgym.models.padding import position_ids_from_mask, right_to_left_padding
from lmgym.models.scoring import counted_columns

__all__ = ["PROMPT_CACHE_BYTES", "PromptState", "ReferenceState"]

PROMPT_CACHE_BYTES = 64 * 2**20
"""Memory budget of the table of encoded prompts (per :class:`ReferenceState`)."""


@dataclass
class PromptState:
    """The reference model's state after one left-padded prompt.

    Attributes:
        logits: (V,) next-token logits after the prompt.
        keys: Per layer, (heads, max_prompt_tokens, head_dim).
        values: Per layer, like ``keys``.
    """

    logits: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        tensors = [self.logits, *self.keys, *self.values]
        return sum(t.numel() * t.element_size() for t in tensors)


class ReferenceState:
    """Next-token logits of the reference model for ``num_rows`` growing sequences.

    Args:
        model: The frozen reference LM.
        num_rows: Batch size (number of envs).
        max_prompt_tokens: Width of the (left-padded) prompt block.
        max_new_tokens: Episode length limit; bounds the columns any row needs.
        pad_token_id: Id written into padding columns.
        use_cache: Keep the KV cache (default). ``False`` re-encodes every row's whole prefix at
            each step: the same results, quadratic cost; it exists to measure what the cache buys.
        prompt_cache_bytes: Memory budget of the LRU table of encoded prompts (at least one
            prompt is always kept).
        minibatch_size: Rows per forward over many rows (``None``: all at once); see the
            module. The results equal one forward's up to float rounding.

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> model, tok = load_default_model()
        >>> state = ReferenceState(model, 1, 8, 4, pad_token_id=tok.pad_token_id)
        >>> prompt = torch.tensor([tok.encode("the food was") + [tok.pad_token_id] * 4])
        >>> state.prefill(torch.tensor([0]), prompt, (prompt != tok.pad_token_id).long())
        >>> state.advance(torch.tensor([tok.convert_tokens_to_ids("great")]))
        >>> state.next_logits.shape[0]
        1
    """

    def __init__(
        self,
        model: PreTrainedModel,
        num_rows: int,
        max_prompt_tokens: int,
        max_new_tokens: int,
        *,
        pad_token_id: int,
        use_cache: bool = True,
        prompt_cache_bytes: int = PROMPT_CACHE_BYTES,
        minibatch_size: int | None = None,
    ) -> None:
        self.model = model
        self.minibatch_size = minibatch_size
        # Row bookkeeping (ids, mask) stays on the CPU; the model's inputs move to its device
        # at each forward, and the KV cache and logits stay there.
        self.device = model_device(model)
        self.num_rows = num_rows
        self.max_prompt_tokens = max_prompt_tokens
        self.max_columns = max_prompt_tokens + max_new_tokens - 1
        self.pad_token_id = pad_token_id
        self.use_cache = use_cache
        self.ids = torch.full((num_rows, max_prompt_tokens), pad_token_id, dtype=torch.long)
        self.mask = torch.zeros((num_rows, max_prompt_tokens), dtype=torch.long)  # (B, C)
        self.cache: DynamicCache | None = None
        self.next_logits: torch.Tensor | None = None  # (B, V): predicts each row's next token
        self.prompt_states: OrderedDict[tuple[int, ...], PromptState] = OrderedDict()
        self.prompt_cache_bytes = prompt_cache_bytes
        self._prompt_nbytes = 0  # size of one encoded prompt, known after the first

    def use_model(self, model: nn.Module) -> None:
        """Run ``model`` from now on (the same function as the old one, e.g. on other weights).

        The rows' KV cache and next-token logits move to its device; the table of encoded
        prompts is emptied, so every prompt is encoded by ``model`` from here.
        """
        device = model_device(model)
        if self.cache is not None:
            self.cache = cache_from_layers(
                [(k.to(device), v.to(device)) for k, v in kv_layers(self.cache)]
            )
        if self.next_logits is not None:
            self.next_logits = self.next_logits.to(device)
        self.prompt_states.clear()
        self.model, self.device = cast(PreTrainedModel, model), device

    @property
    def num_columns(self) -> int:
        """Columns currently held per row (the shared cache length C)."""
        return int(self.mask.shape[1])

    @torch.inference_mode()
    def prefill(
        self, rows: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
    ) -> None:
        """Start new sequences in ``rows`` from their prompts, in one forward over those rows.

        Args:
            rows: Row indices (R,), distinct.
            prompt_ids: (R, max_prompt_tokens) prompt ids, padded on either side.
            prompt_mask: (R, max_prompt_tokens) 1 for real prompt tokens.
        """
        assert prompt_ids.shape == (len(rows), self.max_prompt_tokens), prompt_ids.shape
        left_ids, left_mask = right_to_left_padding(prompt_ids, prompt_mask, self.pad_token_id)
        # Each branch runs the model first and changes the state only after it returned.
        if len(rows) == self.num_rows:  # every row restarts: a fresh cache of C = P columns
            assert torch.equal(rows, torch.arange(self.num_rows)), rows
            if not self.use_cache:
                self.next_logits = self._forward_full(left_ids, left_mask)
                self.ids, self.mask = left_ids, left_mask
                return
            logits, keys, values = self._prompt_batch(left_ids, left_mask)
            self.cache = cache_from_layers(list(zip(keys, values, strict=True)))
            self.ids, self.mask, self.next_logits = left_ids, left_mask, logits
            return
        if self.next_logits is None:
            raise RuntimeError("the first prefill must start every row")
        n_prompt, n_cols = self.max_prompt_tokens, self.num_columns
        row_ids = torch.full((len(rows), n_cols), self.pad_token_id, dtype=self.ids.dtype)
        row_mask = torch.zeros((len(rows), n_cols), dtype=self.mask.dtype)
        row_ids[:, n_cols - n_prompt :] = left_ids
        row_mask[:, n_cols - n_prompt :] = left_mask
        if not self.use_cache:
            self.next_logits[rows] = self._forward_full(row_ids, row_mask)
        else:
            logits, keys, values = self._prompt_batch(left_ids, left_mask)
            assert self.cache is not None
            layers = zip(kv_layers(self.cache), keys, values, strict=True)
            for (old_k, old_v), new_k, new_v in layers:
                for old_t, new_t in ((old_k, new_k), (old_v, new_v)):
                    old_t[rows, :, : n_cols - n_prompt] = 0.0
                    old_t[rows, :, n_cols - n_prompt :] = new_t
            self.next_logits[rows] = logits
        self.ids[rows] = row_ids
        self.mask[rows] = row_mask

    def _prompt_batch(
        self, left_ids: torch.Tensor, left_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """States of left-padded prompts (R, P): from the table, else one forward for the rest.

        Returns (R, V) logits and, per layer, (R, heads, P, head_dim) keys and values.
        """
        names = [tuple(row) for row in left_ids.tolist()]
        states = [self.prompt_states.get(name) for name in names]
        missing = [i for i, state in enumerate(states) if state is None]
        if missing:
            logits, layers = self._encode(left_ids[missing], left_mask[missing])
            for j, i in enumerate(missing):
                # Clones: a view would keep the whole batch's tensors alive in the table.
                state = PromptState(
                    logits[j].clone(), [k[j].clone() for k, _ in layers],
                    [v[j].clone() for _, v in layers],
                )  # fmt: skip
                states[i] = self.prompt_states[names[i]] = state
            self._prompt_nbytes = state.nbytes()
        for name in names:
            self.prompt_states.move_to_end(name)
        capacity = max(1, self.prompt_cache_bytes // max(1, self._prompt_nbytes))
        while len(self.prompt_states) > capacity:
            self.prompt_states.popitem(last=False)  # least recently used
        found = [state for state in states if state is not None]
        assert len(found) == len(states)
        n_layers = len(found[0].keys)
        return (
            torch.stack([s.logits for s in found]),
            [torch.stack([s.keys[layer] for s in found]) for layer in range(n_layers)],
            [torch.stack([s.values[layer] for s in found]) for layer in range(n_layers)],
        )

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> None:
        """Append one token to every row (B,) and update ``next_logits``: one batched forward."""
        assert self.next_logits is not None, "prefill() before advance()"
        positions = self.mask.sum(1, keepdim=True)  # (B, 1): real tokens so far
        ids = torch.cat([self.ids, tokens.view(-1, 1)], dim=1)
        mask = torch.cat([self.mask, torch.ones_like(positions)], dim=1)
        # The forward runs before ids/mask change: one that raises leaves them as they were.
        if self.use_cache:
            logits, self.cache = forward_with_cache(
                self.model,
                tokens.view(-1, 1).to(self.device),
                mask.to(self.device),
                positions.to(self.device),
                self.cache,
            )
            self.next_logits = logits[:, -1, :].float()
        else:
            self.next_logits = self._forward_full(ids, mask)
        self.ids, self.mask = ids, mask
        self._trim()

    def _micro_batches(self, rows: int) -> list[slice]:
        """Row slices of the forwards over ``rows`` rows: one, or ``minibatch_size`` each."""
        size = rows if self.minibatch_size is None else self.minibatch_size
        return [slice(start, start + size) for start in range(0, rows, size)]

    def _used_columns(self, mask: torch.Tensor) -> int:
        """Trailing columns a micro-batch's forward keeps (all of them without minibatch_size).

        Rows are right-aligned, so the leading columns masked in every row can be dropped
        without changing any real position's output.
        """
        if self.minibatch_size is None:  # one forward as before, bit for bit
            return mask.shape[1]
        return counted_columns(mask.flip(1))

    def _encode(
        self, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """(R, V) next-token logits and per-layer (R, heads, P, head_dim) keys and values."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        width = ids.shape[1]
        logits_parts, layer_parts = [], []
        for rows in self._micro_batches(ids.shape[0]):
            used = self._used_columns(mask[rows])
            chunk_ids, chunk_mask = ids[rows, width - used :], mask[rows, width - used :]
            logits, cache = forward_with_cache(
                self.model, chunk_ids, chunk_mask, position_ids_from_mask(chunk_mask)
            )
            logits_parts.append(logits[:, -1, :].float())
            # Masked zero columns restore the block's width (a cut micro-batch has fewer).
            layer_parts.append(
                [(_left_pad(k, width), _left_pad(v, width)) for k, v in kv_layers(cache)]
            )
        if len(layer_parts) == 1:
            return logits_parts[0], layer_parts[0]
        layers = [
            (torch.cat([p[i][0] for p in layer_parts]), torch.cat([p[i][1] for p in layer_parts]))
            for i in range(len(layer_parts[0]))
        ]
        return torch.cat(logits_parts), layers

    def _forward_full(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, mask = ids.to(self.device), mask.to(self.device)
        width = ids.shape[1]
        parts = []
        for rows in self._micro_batches(ids.shape[0]):
            used = self._used_columns(mask[rows])
            chunk_mask = mask[rows, width - used :]
            outputs = self.model(
                input_ids=ids[rows, width - used :],
                attention_mask=chunk_mask,
                position_ids=position_ids_from_mask(chunk_mask),
                use_cache=False,
            )
            parts.append(outputs.logits[:, -1, :].float())
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _trim(self) -> None:
        """Drop leading columns no row uses any more, so C <= max_prompt_tokens + T - 1."""
        extra = self.num_columns - self.max_columns
        if extra <= 0:
            return
        self.ids = self.ids[:, extra:]
        self.mask = self.mask[:, extra:]
        if self.cache is not None:
            drop_leading_columns(self.cache, extra)

    def cache_numel(self) -> int:
        """Elements held in the KV cache (0 without one): bounded for a run of any length."""
        if self.cache is None:
            return 0
        return sum(keys.numel() + values.numel() for keys, values in kv_layers(self.cache))


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` (R, heads, C, head_dim) with zero columns prepended up to ``width``."""
    missing = width - tensor.shape[2]
    if missing == 0:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0))
