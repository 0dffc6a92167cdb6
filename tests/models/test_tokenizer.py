"""The embedded tokenizer's decoding: exact round trips, and what a generation pipeline shows."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, pipeline

from lmgym.models.loading import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)


def test_a_text_round_trips_and_a_completion_decodes_to_its_words(tokenizer) -> None:
    ids = tokenizer("the pizza was lovely .")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the pizza was lovely ."
    # The completion alone, as the envs decode info["completion"]: its words, no leading space.
    # transformers forces <bos> special, so it is dropped before the decoder sees the ids: a
    # whole text and a completion on its own look the same to the decoder, and a leading space
    # for one would be a leading space for the other.
    assert tokenizer.decode(ids[4:] + [tokenizer.eos_token_id], skip_special_tokens=True) == (
        "lovely ."
    )


@pytest.mark.xfail(
    strict=True,
    reason="transformers 5's text-generation pipeline appends decode(new ids) to the prompt "
    "text; a word-level token carries no leading space (a GPT-2 BPE token does), and no decoder "
    "can add one without also adding it to the decoded whole text (see the test above)",
)
def test_pipeline_puts_a_space_between_prompt_and_completion() -> None:
    generator = pipeline("text-generation", model=str(DEFAULT_MODEL_DIR))
    text = generator("the pizza was", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("the pizza was "), text
