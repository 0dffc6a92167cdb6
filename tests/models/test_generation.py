from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.loading import load_model
from lmgym.models.padding import completion_mask_from_ids, right_to_left_padding
from lmgym.models.scoring import score_completions


@pytest.fixture(scope="module")
def lm(tiny_lm_dir: Path):
    return load_model(tiny_lm_dir)


def _prompts(tokenizer, texts: list[str], width: int = 8):
    rows = [tokenizer(t)["input_ids"] for t in texts]
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def test_right_to_left_padding_keeps_order() -> None:
    ids = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0]])
    mask = (ids != 0).long()
    left, left_mask = right_to_left_padding(ids, mask, pad_token_id=0)
    assert left.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert left_mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]


def test_completion_mask_counts_first_eos_only() -> None:
    ids = torch.tensor([[4, 2, 2, 5], [4, 5, 6, 7], [2, 4, 4, 4]])
    assert completion_mask_from_ids(ids, 2).tolist() == [
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 0, 0, 0],
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 1.0},
        {"temperature": 0.7, "top_k": 5},
        {"top_p": 0.9},
        {"do_sample": False},
    ],
    ids=["t1", "t07_topk5", "topp09", "greedy"],
)
def test_generate_logprobs_match_teacher_forcing(lm, kwargs) -> None:
    model, tokenizer = lm
    torch.manual_seed(0)
    ids, mask = _prompts(tokenizer, ["the food was", "i thought the staff were very"])
    config = DecodingConfig(max_new_tokens=6, **kwargs)
    out = generate(
        model,
        ids,
        mask,
        config,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert out.completion_ids.shape == (2, 6)
    assert out.mask.shape == (2, 6)
    with torch.inference_mode():
        scored = score_completions(
            model,
            ids,
            mask,
            out.completion_ids,
            out.mask,
            pad_token_id=tokenizer.pad_token_id,
        )
    torch.testing.assert_close(scored.logprobs, out.logprobs, atol=1e-4, rtol=1e-4)
    # Sampling log-probs are never below the model's when mass is only removed (top-k/top-p).
    if "temperature" not in kwargs or kwargs.get("temperature") == 1.0:
        assert torch.all(out.sampling_logprobs >= out.logprobs - 1e-5)


def test_generate_is_seeded(lm) -> None:
    model, tokenizer = lm
    ids, mask = _prompts(tokenizer, ["the food was"] * 4)
    config = DecodingConfig(max_new_tokens=8)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(
            generate(model, ids, mask, config, eos_token_id=2, pad_token_id=0).completion_ids
        )
    assert torch.equal(runs[0], runs[1])


def test_greedy_is_argmax(lm) -> None:
    model, tokenizer = lm
    ids, mask = _prompts(tokenizer, ["the soup is"])
    out = generate(
        model, ids, mask, DecodingConfig(max_new_tokens=1, do_sample=False),
        eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    with torch.inference_mode():
        real = ids[:, : int(mask.sum())]
        expected = model(real).logits[0, -1].argmax()
    assert out.completion_ids[0, 0] == expected


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"top_k": -1}, "top_k=-1"),
        ({"max_new_tokens": 0}, "max_new_tokens=0"),
        ({"max_new_tokens": -3}, "max_new_tokens=-3"),
    ],
    ids=["temp0", "temp_neg", "top_p0", "top_p_big", "top_k_neg", "max_new0", "max_new_neg"],
)
def test_decoding_config_rejects_bad_values(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        DecodingConfig(**kwargs)


def _full_width_logprobs(model, ids, mask, completion_ids, completion_mask):
    """Teacher-forced log-probs over the whole padded width: what scoring did before trimming."""
    left, left_mask = right_to_left_padding(ids, mask, 0)
    inputs = torch.cat([left, completion_ids], dim=1)
    attention = torch.cat([left_mask, torch.ones_like(completion_ids)], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits = model(input_ids=inputs, attention_mask=attention, position_ids=positions).logits
    n = left.shape[1]
    logp = torch.log_softmax(logits[:, n - 1 : -1].float(), -1)
    return logp.gather(2, completion_ids[..., None])[..., 0] * completion_mask


def test_scoring_runs_on_the_longest_real_sequence_and_keeps_shapes(lm) -> None:
    """Trimming all-padding prompt columns and uncounted completion columns changes nothing."""
    model, tokenizer = lm
    # 12 prompt columns for prompts of at most 7 tokens; completions counted up to column 3 of 8.
    ids, mask = _prompts(tokenizer, ["the food was", "i thought the staff were very"], width=12)
    completion_ids = torch.tensor([[5, 6, 2, 0, 0, 0, 0, 0], [7, 8, 9, 2, 0, 0, 0, 0]])
    completion_mask = completion_mask_from_ids(completion_ids, 2)
    calls = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        with torch.inference_mode():
            scored = score_completions(
                model, ids, mask, completion_ids, completion_mask, pad_token_id=0,
                keep_logits=True, keep_hidden=True,
            )  # fmt: skip
    finally:
        hook.remove()
    longest_prompt = int(mask.sum(1).max())
    assert calls == [torch.Size([2, longest_prompt + 4])]
    assert scored.logprobs.shape == (2, 8) and scored.mask.shape == (2, 8)
    assert scored.logits is not None and scored.logits.shape[:2] == (2, 8)
    assert scored.hidden is not None and scored.hidden.shape[:2] == (2, 8)
    assert not scored.logprobs[:, 4:].any() and not scored.logits[:, 4:].any()
    expected = _full_width_logprobs(model, ids, mask, completion_ids, completion_mask)
    torch.testing.assert_close(scored.logprobs, expected, atol=1e-5, rtol=0)


def test_generate_trims_prompt_padding_and_keeps_the_prompt_hidden_state(lm) -> None:
    model, tokenizer = lm
    ids, mask = _prompts(tokenizer, ["the food was", "i thought the staff were very"], width=12)
    calls = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        out = generate(
            model, ids, mask, DecodingConfig(max_new_tokens=4),
            eos_token_id=2, pad_token_id=0, keep_prompt_hidden=True,
        )  # fmt: skip
    finally:
        hook.remove()
    assert calls[0] == (2, int(mask.sum(1).max()))  # the prefill: the longest prompt only
    assert out.completion_ids.shape == (2, 4)
    assert out.prompt_hidden is not None
    for row in range(2):
        real = ids[row : row + 1, : int(mask[row].sum())]
        with torch.inference_mode():
            hidden = model.base_model(input_ids=real).last_hidden_state[0, -1]
        torch.testing.assert_close(out.prompt_hidden[row], hidden, atol=1e-5, rtol=0)
    plain = generate(
        model, ids, mask, DecodingConfig(max_new_tokens=4), eos_token_id=2, pad_token_id=0
    )
    assert plain.prompt_hidden is None


def test_generate_splits_a_batch_whose_logits_pass_the_budget(lm, monkeypatch) -> None:
    """Chunks of rows give the same kind of result: fixed shapes, log-probs of the samples."""
    import lmgym.models.generation as generation

    model, tokenizer = lm
    ids, mask = _prompts(tokenizer, ["the food was", "i thought the staff were very", "a"] * 2)
    vocab = int(model.config.vocab_size)
    monkeypatch.setattr(generation, "GENERATE_LOGITS_BUDGET", 2 * 4 * 4 * vocab * 4)  # 4 rows
    calls = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        out = generate(
            model, ids, mask, DecodingConfig(max_new_tokens=4),
            eos_token_id=2, pad_token_id=0, keep_prompt_hidden=True,
        )  # fmt: skip
    finally:
        hook.remove()
    assert set(calls) == {4, 2}  # two generate calls: rows 0-3, then rows 4-5
    assert out.completion_ids.shape == out.mask.shape == out.logprobs.shape == (6, 4)
    assert out.prompt_hidden is not None and out.prompt_hidden.shape[0] == 6
    with torch.inference_mode():
        scored = score_completions(model, ids, mask, out.completion_ids, out.mask, pad_token_id=0)
    torch.testing.assert_close(scored.logprobs, out.logprobs, atol=1e-4, rtol=1e-4)


def test_scoring_sorts_a_mixed_batch_into_length_buckets(lm) -> None:
    """Short and long rows run in separate forwards; results come back in the caller's order."""
    model, tokenizer = lm
    texts = ["the food was", "i thought the staff were very"] * 16  # 32 rows
    ids, mask = _prompts(tokenizer, texts, width=10)
    torch.manual_seed(0)
    completion_ids = torch.randint(3, len(tokenizer), (32, 8))
    completion_ids[::2, 1] = 2  # every other row ends after 2 tokens; the rest run to 8
    completion_mask = completion_mask_from_ids(completion_ids, 2)
    calls = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        with torch.inference_mode():
            scored = score_completions(
                model, ids, mask, completion_ids, completion_mask, pad_token_id=0,
                keep_logits=True, keep_hidden=True,
            )  # fmt: skip
    finally:
        hook.remove()
    short, long = int(mask[0].sum()) + 2, int(mask[1].sum()) + 8
    assert sorted(calls) == [(16, short), (16, long)]
    assert scored.logprobs.shape == (32, 8) and scored.logits.shape[:2] == (32, 8)
    assert torch.equal(scored.mask, completion_mask)
    expected = _full_width_logprobs(model, ids, mask, completion_ids, completion_mask)
    torch.testing.assert_close(scored.logprobs, expected, atol=1e-5, rtol=0)
    with torch.inference_mode():
        one_row = score_completions(
            model, ids[:1], mask[:1], completion_ids[:1], completion_mask[:1], pad_token_id=0,
            keep_logits=True, keep_hidden=True,
        )  # fmt: skip
    torch.testing.assert_close(scored.logits[:1], one_row.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(scored.hidden[:1], one_row.hidden, atol=1e-5, rtol=0)
