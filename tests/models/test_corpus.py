from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmgym.models.corpus import fluency, generate_corpus, parses, prompts, vocabulary
from lmgym.models.lexicon import NEGATIVE_WORDS, POSITIVE_WORDS, sentiment
from lmgym.models.tokenizer import SPECIAL_TOKENS, build_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return generate_corpus(1500, seed=0)


def test_same_seed_same_corpus() -> None:
    assert generate_corpus(50, seed=3) == generate_corpus(50, seed=3)
    assert generate_corpus(50, seed=3) != generate_corpus(50, seed=4)


def test_every_generated_review_parses(corpus: list[str]) -> None:
    failures = [doc for doc in corpus if not parses(doc)]
    assert not failures, failures[:5]


def test_reviews_have_one_to_three_sentences_and_known_words(corpus: list[str]) -> None:
    words = set(vocabulary())
    for doc in corpus:
        assert 1 <= doc.split().count(".") <= 3, doc
        assert doc == doc.lower() and doc.endswith(" .")
        assert set(doc.split()) <= words, doc
        assert len(doc.split()) <= 40


def test_corpus_sentiment_is_balanced(corpus: list[str]) -> None:
    scores = [sentiment(doc) for doc in corpus]
    assert abs(statistics.fmean(scores)) < 0.02
    assert sum(s > 0 for s in scores) > 0.3 * len(scores)
    assert sum(s < 0 for s in scores) > 0.3 * len(scores)


def test_vocabulary_covers_the_lexicon() -> None:
    assert POSITIVE_WORDS | NEGATIVE_WORDS <= set(vocabulary())


@pytest.mark.parametrize(
    "text",
    [
        "the pizza was great .",
        "the fries were soggy and cold . we will never return .",
        "i thought the service was really slow but the soup was delicious .",
        "honestly , it was an awful evening .",
        "this is the best pizza . i would highly recommend this place .",
        "we came here for dinner . the staff were not very friendly .",
        "i found the waiter rude .",
        "we ordered the tacos and they were fresh .",
    ],
)
def test_hand_written_reviews_parse(text: str) -> None:
    assert parses(text)


@pytest.mark.parametrize(
    "text",
    [
        "great great great",
        "great great great .",
        "the the pizza .",
        "the pizza was great",  # no full stop: only a prefix
        "the pizza were great .",  # agreement
        "the fries was great .",  # agreement
        "it was a awful meal .",  # a / an
        "it was an great meal .",
        "the soup was rude .",  # food is not rude
        "the pizza was great . great .",
        "pizza the was great .",
        "the pizza was great , .",
        ".",
        "",
    ],
)
def test_ungrammatical_texts_are_rejected(text: str) -> None:
    assert not parses(text)


def test_allow_incomplete_accepts_prefixes_only() -> None:
    assert parses("the pizza was really", allow_incomplete=True)
    assert not parses("the pizza was really")
    assert parses("the pizza was great . the staff", allow_incomplete=True)
    assert parses("the pizza was great .", allow_incomplete=True)
    assert not parses("the the pizza", allow_incomplete=True)
    assert not parses("great great great", allow_incomplete=True)
    assert not parses("", allow_incomplete=True)


def test_parses_lowercases() -> None:
    assert parses("The Pizza was GREAT .")


def test_fluency() -> None:
    assert fluency(["the soup was cold .", "soup soup ."]) == 0.5
    assert fluency(["the soup was"], allow_incomplete=True) == 1.0
    with pytest.raises(ValueError, match="texts is empty"):
        fluency([])


@pytest.mark.parametrize("split", ["train", "test"])
def test_prompts_are_grammatical_openings(split: str) -> None:
    texts = prompts(split)  # type: ignore[arg-type]
    assert 20 <= len(texts) <= 60
    assert len(set(texts)) == len(texts)
    for text in texts:
        assert parses(text, allow_incomplete=True), text
        assert not parses(text), text


def test_prompt_splits_are_disjoint() -> None:
    train, test = prompts("train"), prompts("test")
    assert set(train).isdisjoint(test)
    content = set(vocabulary()) - {"the", "was", "were", "i", "thought", "we", "ordered"}
    content -= {"and", "it", "they", "overall", ","}
    train_nouns = {w for p in train for w in p.split()} & content
    test_nouns = {w for p in test for w in p.split()} & content
    assert train_nouns.isdisjoint(test_nouns)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="split='dev'"):
        prompts("dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n=-1"):
        generate_corpus(-1)
    with pytest.raises(ValueError, match="seed='0'"):
        generate_corpus(3, seed="0")  # type: ignore[arg-type]


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_special_tokens() -> None:
    tokenizer = build_tokenizer()
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_token, tokenizer.bos_token) == ("<pad>", "<bos>")
    assert (tokenizer.eos_token, tokenizer.unk_token) == ("<eos>", "<unk>")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert len(tokenizer) == len(vocabulary()) + len(SPECIAL_TOKENS)


def test_tokenizer_prepends_bos_only() -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer("the pizza was")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 4
    assert tokenizer.eos_token_id not in ids
    assert tokenizer("the pizza was", add_special_tokens=False)["input_ids"] == ids[1:]


def test_tokenizer_round_trips_the_corpus(corpus: list[str]) -> None:
    tokenizer = build_tokenizer()
    for doc in corpus[:300]:
        ids = tokenizer(doc)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert len(ids) == len(doc.split()) + 1
        assert tokenizer.decode(ids, skip_special_tokens=True) == doc


def test_tokenizer_normalizes_and_maps_unknown_words() -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer("The pizza was great. Zebra", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["the", "pizza", "was", "great", ".", "<unk>"]


def test_tokenizer_saves_and_reloads(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    save_tokenizer(tokenizer, tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "we ordered the soup and it was cold ."
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.pad_token_id == tokenizer.pad_token_id
    assert reloaded.eos_token_id == tokenizer.eos_token_id
    assert reloaded.decode(reloaded(text)["input_ids"], skip_special_tokens=True) == text
