"""Sampling completions from a causal LM: the one generation utility everything shares.

It wraps Hugging Face ``generate`` (which keeps a KV cache; a hand-written cached loop was
measured no faster) and returns what RL needs besides the tokens: the per-token
log-probs, a mask of the tokens that count and, when asked, the last hidden state at the last
prompt token (an actor-critic's value feature, so the critic needs no forward of its own).

The prompt batch is trimmed to its longest real prompt before the prefill (see
:func:`lmgym.models.scoring.trimmed_left_padding`): on the default task that prefill runs over
4–9 columns instead of the 16 of the observation space.

A whole rollout is sampled in as few ``generate`` calls as memory allows: one call samples 256
completions of the embedded model (16 new tokens, 1 thread) for 0.54 CPU-s, against 0.69 for 4
calls of 64 and 1.36 for 16 calls of 16, because each decoding step's fixed cost is paid once
for the batch. What bounds a call is the logits it keeps
(raw and processed, ``B × max_new_tokens × V`` floats each), so a batch whose logits would pass
:data:`GENERATE_LOGITS_BUDGET` is sampled in chunks of rows (with a 50k vocabulary and 16 new
tokens, about 40 rows a call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel

from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import trimmed_left_padding

__all__ = ["GENERATE_LOGITS_BUDGET", "DecodingConfig", "Generation", "generate"]

GENERATE_LOGITS_BUDGET = 256 * 2**20
"""Bytes of kept logits (raw and processed, float32) one ``generate`` call may hold; a larger
batch is sampled in chunks of rows."""


@dataclass(frozen=True)
class DecodingConfig:
    """How completions are sampled (temperature, top-k, top-p).

    Attributes:
        max_new_tokens: Length limit of a completion, in tokens (> 0).
        do_sample: Sample (True) or decode greedily (False).
        temperature: Softmax temperature (> 0); 1.0 samples from the model as it is.
        top_k: Keep only the k most likely tokens; 0 turns the filter off.
        top_p: Nucleus sampling: keep the smallest set with probability mass >= top_p, in (0, 1].
    """

    max_new_tokens: int = 16
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise TypeError(f"max_new_tokens={self.max_new_tokens!r} is not an int.")
        if self.max_new_tokens <= 0:
            raise ValueError(
                f"max_new_tokens={self.max_new_tokens} must be > 0: it is the completion's "
                "length limit in tokens, e.g. max_new_tokens=16."
            )
        if not self.temperature > 0:
            raise ValueError(
                f"temperature={self.temperature} must be > 0; use do_sample=False for greedy "
                "decoding instead of temperature 0."
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(
                f"top_p={self.top_p} must lie in (0, 1]; 1.0 turns nucleus sampling off."
            )
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} must be an int >= 0; 0 turns it off.")

    def to_generation_config(
        self, *, eos_token_id: int, pad_token_id: int, output_hidden_states: bool = False
    ) -> GenerationConfig:
        """The HF ``GenerationConfig`` that samples the same way and keeps the scores."""
        sampling = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            output_hidden_states=output_hidden_states,
            **(sampling if self.do_sample else {}),
        )


@dataclass
class Generation:
    """Sampled completions, right-padded to ``max_new_tokens``; every tensor is (B, T).

    Attributes:
        completion_ids: Token ids; ``pad_token_id`` after the first EOS.
        mask: 1 for tokens up to and including the first EOS.
        logprobs: log π(y_t | x, y_<t) under the model itself (temperature 1, no filtering):
            the π_θ of the KL penalty and of the PPO ratio. 0 where ``mask`` is 0.
        sampling_logprobs: log-probs under the distribution actually sampled from (after
            temperature / top-k / top-p); 0 where ``mask`` is 0.
        prompt_hidden: (B, H) the model's last hidden state at each row's last prompt token,
            from the prefill that sampling ran anyway; only with ``keep_prompt_hidden=True``.
    """

    completion_ids: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    sampling_logprobs: torch.Tensor
    prompt_hidden: torch.Tensor | None = None


def generate(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    config: DecodingConfig,
    *,
    eos_token_id: int,
    pad_token_id: int,
    vocab_size: int | None = None,
    keep_prompt_hidden: bool = False,
) -> Generation:
    """Sample one completion per prompt with a KV cache.

    Randomness comes from torch's global generator (as in ``generate`` itself); seed it with
    :func:`lmgym.seeding.set_seed` for reproducible samples.

    Args:
        model: A causal LM (put it in eval mode; see :func:`lmgym.models.loading.load_model`).
        prompt_ids: (B, P) prompt token ids, padded on either side.
        prompt_mask: (B, P) 1 for real prompt tokens.
        config: Decoding settings.
        eos_token_id: Ends a completion.
        pad_token_id: Fills prompt padding and the positions after EOS.
        vocab_size: The tokenizer's number of tokens, where the model's embedding is padded past
            it (checkpoints round it up to a multiple of 64 or 128): sampling stays on real
            tokens and the log-probs are normalised over them, as the envs' are. ``None``: all
            of the model's logits.
        keep_prompt_hidden: Also return ``prompt_hidden``, the last hidden state at the last
            prompt token (what the LM policy's value head reads), from the prefill.

    Returns:
        A :class:`Generation` with tensors of shape (B, ``config.max_new_tokens``).

    Example:
        >>> from lmgym.models.loading import load_default_model
        >>> model, tok = load_default_model()
        >>> ids = torch.tensor([tok.encode("the food was")])
        >>> out = generate(model, ids, torch.ones_like(ids), DecodingConfig(max_new_tokens=8),
        ...                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        >>> out.completion_ids.shape
        torch.Size([1, 8])
    """
    batch = prompt_ids.shape[0]
    vocab = int(vocab_size if vocab_size is not None else model.config.vocab_size)
    rows = max(1, GENERATE_LOGITS_BUDGET // (2 * 4 * config.max_new_tokens * max(vocab, 1)))
    if batch <= rows:
        return _generate_rows(
            model, prompt_ids, prompt_mask, config, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id, vocab_size=vocab_size,
            keep_prompt_hidden=keep_prompt_hidden,
        )  # fmt: skip
    parts = [
        _generate_rows(
            model,
            prompt_ids[i : i + rows],
            prompt_mask[i : i + rows],
            config,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            vocab_size=vocab_size,
            keep_prompt_hidden=keep_prompt_hidden,
        )
        for i in range(0, batch, rows)
    ]
    hidden = [part.prompt_hidden for part in parts]
    return Generation(
        completion_ids=torch.cat([part.completion_ids for part in parts]),
        mask=torch.cat([part.mask for part in parts]),
        logprobs=torch.cat([part.logprobs for part in parts]),
        sampling_logprobs=torch.cat([part.sampling_logprobs for part in parts]),
        prompt_hidden=None if hidden[0] is None else torch.cat(hidden),  # type: ignore[arg-type]
    )


def _generate_rows(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    config: DecodingConfig,
    *,
    eos_token_id: int,
    pad_token_id: int,
    vocab_size: int | None,
    keep_prompt_hidden: bool,
) -> Generation:
    """One ``generate`` call over all of ``prompt_ids``' rows (see :func:`generate`)."""
    left_ids, left_mask = trimmed_left_padding(prompt_ids, prompt_mask, pad_token_id)  # (B, P')
    n_prompt = left_ids.shape[1]
    with torch.inference_mode():
        out = model.generate(  # type: ignore[operator]
            input_ids=left_ids,
            attention_mask=left_mask,
            generation_config=config.to_generation_config(
                eos_token_id=eos_token_id,
                pad_token_id=pad_token_id,
                output_hidden_states=keep_prompt_hidden,
            ),
            logits_processor=LogitsProcessorList(
                [] if vocab_size is None else [_TokensOnly(vocab_size)]
            ),
        )
    new_ids = out.sequences[:, n_prompt:]  # (B, T') with T' <= max_new_tokens
    columns = slice(None) if vocab_size is None else slice(0, vocab_size)
    raw_logits = torch.stack(out.logits, dim=1)[..., columns].float()  # (B, T', V)
    processed = torch.stack(out.scores, dim=1)[..., columns].float()  # after temperature etc.
    logprobs = _gather_logprobs(raw_logits, new_ids)
    sampling_logprobs = _gather_logprobs(processed, new_ids)

    batch, produced = new_ids.shape
    missing = config.max_new_tokens - produced
    if missing > 0:  # every row hit EOS early: pad to the fixed length the spaces expect
        new_ids = torch.cat([new_ids, new_ids.new_full((batch, missing), pad_token_id)], dim=1)
        zeros = logprobs.new_zeros((batch, missing))
        logprobs = torch.cat([logprobs, zeros], dim=1)
        sampling_logprobs = torch.cat([sampling_logprobs, zeros], dim=1)
    mask = completion_mask_from_ids(new_ids, eos_token_id)
    # generate writes pad after EOS, but pad may equal EOS (GPT-2 style): the mask decides.
    new_ids = new_ids.masked_fill(mask == 0, pad_token_id)
    prompt_hidden = None
    if keep_prompt_hidden:
        # Step 0 is the prefill over the left-padded prompts: its last column is every row's
        # last real prompt token; [-1] is the last layer's output (after the final norm).
        prompt_hidden = out.hidden_states[0][-1][:, -1].clone()  # (B, H)
    return Generation(
        completion_ids=new_ids.clone(),
        mask=mask,
        logprobs=logprobs * mask,
        sampling_logprobs=sampling_logprobs * mask,
        prompt_hidden=prompt_hidden,
    )


class _TokensOnly(LogitsProcessor):
    """Never sample an embedding row past the tokenizer's last token (it is no token)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] <= self.vocab_size:
            return scores
        padded = scores.clone()
        padded[:, self.vocab_size :] = -float("inf")
        return padded  # type: ignore[return-value]


def _gather_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    picked = torch.gather(logp, 2, ids.unsqueeze(-1)).squeeze(-1)
    # Filtered-out tokens give -inf under the processed distribution; they are never sampled,
    # but padding positions may pick them. Zeroing happens with the mask; avoid -inf * 0 = nan.
    return torch.nan_to_num(picked, neginf=-1e9)
