"""The reference model's incremental state for a batch of token-by-token episodes.

``LMToken-v0`` needs log π_ref(y_t | x, y_<t) after every token. Re-encoding the whole prefix at
every step costs O(t) per step (O(T²) per episode); keeping the reference model's KV cache makes
each step one forward over one new token per row (DESIGN section 3).

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
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from lmgym.models.padding import position_ids_from_mask, right_to_left_padding


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

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> model, tok = load_default_model()
        >>> state = ReferenceState(model, 1, 8, 4, pad_token_id=tok.pad_token_id)
        >>> prompt = torch.tensor([tok.encode("the food was") + [tok.pad_token_id] * 5])
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
    ) -> None:
        self.model = model
        self.num_rows = num_rows
        self.max_prompt_tokens = max_prompt_tokens
        self.max_columns = max_prompt_tokens + max_new_tokens - 1
        self.pad_token_id = pad_token_id
        self.use_cache = use_cache
        self.ids = torch.full((num_rows, max_prompt_tokens), pad_token_id, dtype=torch.long)
        self.mask = torch.zeros((num_rows, max_prompt_tokens), dtype=torch.long)  # (B, C)
        self.cache: DynamicCache | None = None
        self.next_logits: torch.Tensor | None = None  # (B, V): predicts each row's next token

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
        if len(rows) == self.num_rows:  # every row restarts: a fresh cache of C = P columns
            assert torch.equal(rows, torch.arange(self.num_rows)), rows
            self.ids, self.mask = left_ids, left_mask
            if self.use_cache:
                self.next_logits, self.cache = self._encode(left_ids, left_mask)
            else:
                self.next_logits = self._forward_full()
            return
        if self.next_logits is None:
            raise RuntimeError("the first prefill must start every row")
        n_prompt, n_cols = self.max_prompt_tokens, self.num_columns
        self.ids[rows] = self.pad_token_id
        self.mask[rows] = 0
        self.ids[rows, n_cols - n_prompt :] = left_ids
        self.mask[rows, n_cols - n_prompt :] = left_mask
        if not self.use_cache:
            self.next_logits[rows] = self._forward_full(rows)
            return
        logits, prompt_cache = self._encode(left_ids, left_mask)
        assert self.cache is not None
        for layer, new in zip(self.cache.layers, prompt_cache.layers, strict=True):
            assert layer.keys is not None and layer.values is not None
            assert new.keys is not None and new.values is not None
            for old_t, new_t in ((layer.keys, new.keys), (layer.values, new.values)):
                old_t[rows, :, : n_cols - n_prompt] = 0.0
                old_t[rows, :, n_cols - n_prompt :] = new_t
        self.next_logits[rows] = logits

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> None:
        """Append one token to every row (B,) and update ``next_logits``: one batched forward."""
        assert self.next_logits is not None, "prefill() before advance()"
        positions = self.mask.sum(1, keepdim=True)  # (B, 1): real tokens so far
        self.ids = torch.cat([self.ids, tokens.view(-1, 1)], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(positions)], dim=1)
        if self.use_cache:
            outputs = self.model(
                input_ids=tokens.view(-1, 1),
                attention_mask=self.mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
            )
            self.next_logits = outputs.logits[:, -1, :].float()
        else:
            self.next_logits = self._forward_full()
        self._trim()

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        outputs = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=True,
        )
        cache = outputs.past_key_values
        if not isinstance(cache, DynamicCache) or any(
            type(layer) is not DynamicLayer for layer in cache.layers
        ):
            raise NotImplementedError(
                f"{type(self.model).__name__} returned a {type(cache).__name__} cache with "
                "layers other than full-attention DynamicLayer; the incremental reference cache "
                "supports only those. Pass reference_cache=False to re-encode each step."
            )
        return outputs.logits[:, -1, :].float(), cache

    def _forward_full(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        ids, mask = (self.ids, self.mask) if rows is None else (self.ids[rows], self.mask[rows])
        outputs = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,
        )
        return outputs.logits[:, -1, :].float()

    def _trim(self) -> None:
        """Drop leading columns no row uses any more, so C <= max_prompt_tokens + T - 1."""
        extra = self.num_columns - self.max_columns
        if extra <= 0:
            return
        self.ids = self.ids[:, extra:]
        self.mask = self.mask[:, extra:]
        if self.cache is not None:
            for layer in self.cache.layers:
                assert layer.keys is not None and layer.values is not None
                layer.keys = layer.keys[:, :, extra:]
                layer.values = layer.values[:, :, extra:]

    def cache_numel(self) -> int:
        """Elements held in the KV cache (0 without one): bounded for a run of any length."""
        if self.cache is None:
            return 0
        return sum(
            layer.keys.numel() + layer.values.numel()
            for layer in self.cache.layers
            if layer.keys is not None and layer.values is not None
        )
