"""``score_completions(minibatch_size=...)``: micro-batched forwards give one forward's results."""

from __future__ import annotations

import pytest
import torch

from lmgym.models.scoring import minibatch_rows, score_completions
from tests.conftest import build_tiny_model


def _batch(rows: int, seed: int) -> dict[str, torch.Tensor]:
    """Right-padded prompts and completions of many lengths (some completions stop at EOS=2)."""
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(3, 27, (rows, 6), generator=gen)
    prompt_mask = (torch.arange(6) < torch.randint(1, 7, (rows, 1), generator=gen)).long()
    completion_ids = torch.randint(3, 27, (rows, 8), generator=gen)
    completion_mask = (torch.arange(8) < torch.randint(0, 9, (rows, 1), generator=gen)).long()
    return {
        "prompt_ids": prompt_ids * prompt_mask,  # pad id 0
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }


@pytest.mark.parametrize("minibatch_size", [1, 3, 16])
def test_micro_batches_equal_one_forward(minibatch_size: int) -> None:
    torch.manual_seed(0)
    model = build_tiny_model(27).eval()
    batch = _batch(10, seed=1)
    kwargs = dict(pad_token_id=0, keep_logits=True, keep_hidden=True)
    with torch.inference_mode():
        whole = score_completions(model, **batch, **kwargs)
        split = score_completions(model, **batch, **kwargs, minibatch_size=minibatch_size)
    counted = whole.mask.bool()  # positions past a row's last counted token are no result
    for name in ("logprobs", "logits", "hidden"):
        got, expected = getattr(split, name), getattr(whole, name)
        assert got.shape == expected.shape
        torch.testing.assert_close(got[counted], expected[counted], rtol=1e-5, atol=1e-5)
    assert torch.equal(split.mask, whole.mask)
    assert whole.logprobs.abs().sum() > 0


def test_micro_batches_hold_rows_of_like_length_and_every_row_once() -> None:
    batch = _batch(10, seed=2)
    chunks = minibatch_rows(batch["prompt_mask"], batch["completion_mask"], 4)
    assert [len(rows) for rows in chunks] == [4, 4, 2]
    assert sorted(torch.cat(chunks).tolist()) == list(range(10))
    lengths = batch["prompt_mask"].sum(1) + batch["completion_mask"].sum(1)
    assert lengths[chunks[0]].max() <= lengths[chunks[-1]].min()


@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_a_bad_minibatch_size_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"^minibatch_size=.* must be an int >= 1"):
        score_completions(build_tiny_model(27), **_batch(2, seed=0), pad_token_id=0,
                          minibatch_size=value)  # type: ignore[arg-type]  # fmt: skip
