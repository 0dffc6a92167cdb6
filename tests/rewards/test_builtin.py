"""Built-in rewards: lexicon, rules, a Hugging Face classifier, weighted sums; and doctests."""

from __future__ import annotations

import doctest
import importlib
import pickle

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

from lmgym.error import ModelLoadError, RewardFunctionError
from lmgym.models.lexicon import sentiment
from lmgym.rewards import (
    LengthReward,
    LexiconSentimentReward,
    SequenceClassifierReward,
    WeightedSum,
    as_reward_fn,
    call_reward_fn,
    ends_sentence,
)

WORDS = ["[PAD]", "[UNK]", "[EOS]", "the", "food", "was", "great", "awful", "staff", "rude", "."]


def make_tokenizer(pad: bool = True) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"pad_token": "[PAD]"} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]", **special
    )


def tiny_bert(num_labels: int = 2, **config) -> BertForSequenceClassification:
    torch.manual_seed(0)
    if num_labels == 2:
        config.setdefault("id2label", {0: "NEGATIVE", 1: "POSITIVE"})
    else:
        config.setdefault("num_labels", num_labels)
    cfg = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        **config,
    )
    return BertForSequenceClassification(cfg)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert-cls")
    tiny_bert().save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


PROMPTS = ["the food was", "the staff was", "the food was"]
COMPLETIONS = [" great .", " rude", " awful"]
CONCATENATED = [p + c for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]


# --- lexicon ---------------------------------------------------------------------------------


def test_lexicon_scores_the_completion_only():
    reward = LexiconSentimentReward()
    scores = reward(["great great great"] * 3, COMPLETIONS)
    assert scores == [sentiment(c) for c in COMPLETIONS] == [0.5, -1.0, -1.0]


def test_lexicon_through_the_protocol():
    scores = call_reward_fn(as_reward_fn(LexiconSentimentReward()), PROMPTS, COMPLETIONS)
    np.testing.assert_array_equal(scores, [0.5, -1.0, -1.0])
    assert as_reward_fn(LexiconSentimentReward()).name == "LexiconSentimentReward"


# --- rules -----------------------------------------------------------------------------------


def test_ends_sentence_is_single_text():
    assert as_reward_fn(ends_sentence).single_text
    scores = call_reward_fn(ends_sentence, ["p"] * 4, ["good .", "good", "why ?  ", ""])
    np.testing.assert_array_equal(scores, [1.0, 0.0, 1.0, 0.0])


def test_length_reward_words_and_tolerance():
    reward = LengthReward(target=4, tolerance=1)
    completions = ["a b c d", "a b c", "a b", "a b c d e f g h", ""]
    np.testing.assert_allclose(reward(["p"] * 5, completions), [0.0, 0.0, -0.25, -0.75, -0.75])


def test_length_reward_tokens_uses_completion_ids():
    reward = LengthReward(target=3, unit="tokens")
    scores = call_reward_fn(
        reward, ["p", "p"], ["text is ignored", "x"], completion_ids=[[1, 2, 3], [1]]
    )
    np.testing.assert_allclose(scores, [0.0, -2 / 3])


def test_length_reward_tokens_without_ids_is_an_error():
    with pytest.raises(RewardFunctionError, match="needs completion_ids"):
        call_reward_fn(LengthReward(target=3, unit="tokens"), ["p"], ["x"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": 0}, "target=0"),
        ({"target": 3, "tolerance": -1}, "tolerance=-1"),
        ({"target": 3, "unit": "chars"}, "unit='chars'"),
    ],
    ids=["target", "tolerance", "unit"],
)
def test_length_reward_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LengthReward(**kwargs)


# --- classifier ------------------------------------------------------------------------------


def manual_logits(model, tokenizer, texts):
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**enc).logits


def test_classifier_from_directory_label_by_name_and_index(bert_dir):
    by_name = SequenceClassifierReward(bert_dir, label="POSITIVE")
    by_index = SequenceClassifierReward(bert_dir, label=1)
    scores = call_reward_fn(by_name, PROMPTS, COMPLETIONS)
    assert scores.shape == (3,) and scores.dtype == np.float64
    np.testing.assert_array_equal(scores, call_reward_fn(by_index, PROMPTS, COMPLETIONS))
    expected = manual_logits(by_name.model, by_name.tokenizer, CONCATENATED)[:, 1]
    np.testing.assert_allclose(scores, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    assert not by_name.model.training


def test_classifier_output_kinds(bert_dir):
    logits = SequenceClassifierReward(bert_dir, label=0)(PROMPTS, COMPLETIONS)
    other = SequenceClassifierReward(bert_dir, label=1)(PROMPTS, COMPLETIONS)
    prob = SequenceClassifierReward(bert_dir, label=0, output="prob")(PROMPTS, COMPLETIONS)
    logprob = SequenceClassifierReward(bert_dir, label=0, output="logprob")(PROMPTS, COMPLETIONS)
    expected = torch.softmax(torch.tensor(np.stack([logits, other], 1)), dim=1)[:, 0].numpy()
    np.testing.assert_allclose(prob, expected, rtol=1e-5)
    np.testing.assert_allclose(np.exp(logprob), prob, rtol=1e-5)


def test_classifier_batching_does_not_change_scores(bert_dir):
    prompts, completions = PROMPTS * 3, COMPLETIONS * 3
    one_batch = SequenceClassifierReward(bert_dir, label=1, batch_size=64)(prompts, completions)
    small = SequenceClassifierReward(bert_dir, label=1, batch_size=2)(prompts, completions)
    np.testing.assert_allclose(one_batch, small, rtol=1e-5, atol=1e-6)


def test_classifier_text_modes(bert_dir):
    model, tokenizer = tiny_bert(), make_tokenizer()
    completion_only = SequenceClassifierReward(model, tokenizer, label=1, text="completion")
    expected = manual_logits(model, tokenizer, COMPLETIONS)[:, 1]
    np.testing.assert_allclose(completion_only(PROMPTS, COMPLETIONS), expected, rtol=1e-5)

    pair = SequenceClassifierReward(model, tokenizer, label=1, text="pair")
    with torch.no_grad():
        enc = tokenizer(PROMPTS, COMPLETIONS, padding=True, return_tensors="pt")
        expected_pair = model(**enc).logits[:, 1]
    np.testing.assert_allclose(pair(PROMPTS, COMPLETIONS), expected_pair, rtol=1e-5)


def test_single_logit_model_returns_the_logit():
    model, tokenizer = tiny_bert(num_labels=1), make_tokenizer()
    reward = SequenceClassifierReward(model, tokenizer)
    expected = manual_logits(model, tokenizer, CONCATENATED)
    np.testing.assert_allclose(reward(PROMPTS, COMPLETIONS), expected[:, 0], rtol=1e-5)
    with pytest.raises(ValueError, match="single-logit model.*output='logit'"):
        SequenceClassifierReward(model, tokenizer, output="prob")


def test_gpt2_classifier_without_pad_token_batches(tmp_path):
    """A GPT-2 style classifier needs a pad token to find each row's last token."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(WORDS), n_positions=32, n_embd=16, n_layer=1, n_head=2, num_labels=1
    )
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    make_tokenizer(pad=False).save_pretrained(tmp_path)
    reward = SequenceClassifierReward(tmp_path, max_length=32)
    assert reward.tokenizer.pad_token == "[EOS]"
    assert reward.model.config.pad_token_id == reward.tokenizer.eos_token_id
    batched = reward(PROMPTS, COMPLETIONS)
    one_by_one = [reward([p], [c])[0] for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6)


def test_multi_label_problem_uses_sigmoid():
    model = tiny_bert(problem_type="multi_label_classification")
    tokenizer = make_tokenizer()
    logits = SequenceClassifierReward(model, tokenizer, label=1)(PROMPTS, COMPLETIONS)
    prob = SequenceClassifierReward(model, tokenizer, label=1, output="prob")(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits)), rtol=1e-5)


@pytest.mark.parametrize(
    "label, match",
    [
        ("HAPPY", r"label='HAPPY' is not a label.*\{0: 'NEGATIVE', 1: 'POSITIVE'\}"),
        (2, r"label=2 is out of range for a model with 2 label\(s\).*NEGATIVE"),
        (-1, "label=-1 is out of range"),
        (None, r"label=None but the model has 2 labels.*POSITIVE"),
    ],
    ids=["unknown-name", "index-too-big", "negative", "none"],
)
def test_classifier_bad_label(bert_dir, label, match):
    with pytest.raises(ValueError, match=match):
        SequenceClassifierReward(bert_dir, label=label)


def test_classifier_label_name_from_label2id():
    model = tiny_bert(label2id={"bad": 0, "good": 1}, id2label={0: "bad", 1: "good"})
    reward = SequenceClassifierReward(model, make_tokenizer(), label="good")
    assert reward.label_index == 1


def test_classifier_bad_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist.*save_pretrained"):
        SequenceClassifierReward(tmp_path / "nope", label=0)
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        SequenceClassifierReward(tmp_path, label=0)


def test_classifier_argument_validation(bert_dir):
    model = tiny_bert()
    with pytest.raises(ValueError, match="tokenizer=None with a model object"):
        SequenceClassifierReward(model, label=1)
    with pytest.raises(TypeError, match="model=42"):
        SequenceClassifierReward(42, make_tokenizer(), label=1)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="tokenizer=.*is not a directory"):
        SequenceClassifierReward(model, bert_dir / "missing", label=1)
    with pytest.raises(ValueError, match="output='score'"):
        SequenceClassifierReward(bert_dir, label=1, output="score")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text='both'"):
        SequenceClassifierReward(bert_dir, label=1, text="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size=0"):
        SequenceClassifierReward(bert_dir, label=1, batch_size=0)


def test_classifier_pickles(bert_dir):
    reward = SequenceClassifierReward(bert_dir, label="POSITIVE")
    restored = pickle.loads(pickle.dumps(reward))
    np.testing.assert_allclose(restored(PROMPTS, COMPLETIONS), reward(PROMPTS, COMPLETIONS))


# --- weighted sum ----------------------------------------------------------------------------


def test_weighted_sum_of_mixed_forms_and_parts():
    reward = WeightedSum(
        {LexiconSentimentReward(): 1.0, ends_sentence: 0.5, LengthReward(target=2): -2.0}
    )
    total = call_reward_fn(reward, PROMPTS, COMPLETIONS)
    lexicon = np.array([0.5, -1.0, -1.0])
    ends = np.array([1.0, 0.0, 0.0])
    length = np.array([0.0, -0.5, -0.5])
    np.testing.assert_allclose(total, lexicon + 0.5 * ends - 2.0 * length)
    assert list(reward.last_parts) == reward.names
    assert reward.names == ["LexiconSentimentReward", "ends_sentence", "LengthReward"]
    np.testing.assert_array_equal(reward.last_parts["ends_sentence"], ends)
    np.testing.assert_array_equal(reward.last_parts["LengthReward"], length)


def test_weighted_sum_list_form_duplicate_names_and_renaming():
    reward = WeightedSum(
        [
            (LengthReward(target=1), 1.0),
            (LengthReward(target=2), 1.0),
            (as_reward_fn(ends_sentence, name="period"), 1.0),
        ]
    )
    assert reward.names == ["LengthReward", "LengthReward_2", "period"]


def test_weighted_sum_forwards_token_ids():
    reward = WeightedSum([(LengthReward(target=2, unit="tokens"), 1.0), (ends_sentence, 1.0)])
    scores = call_reward_fn(reward, ["p"], ["x ."], completion_ids=[[1, 2]])
    np.testing.assert_allclose(scores, [1.0])


def test_weighted_sum_names_the_bad_part():
    def broken(prompts, completions):
        return [float("nan")] * len(prompts)

    reward = WeightedSum([(LexiconSentimentReward(), 1.0), (broken, 1.0)])
    with pytest.raises(RewardFunctionError, match="'broken' returned a non-finite value"):
        call_reward_fn(reward, PROMPTS, COMPLETIONS)


@pytest.mark.parametrize(
    "rewards, error, match",
    [
        ([], ValueError, "rewards is empty"),
        ([(ends_sentence, float("nan"))], ValueError, "weight=nan for reward 'ends_sentence'"),
        ([(ends_sentence, "1")], ValueError, "weight='1'"),
        ([(42, 1.0)], TypeError, "not callable"),
    ],
    ids=["empty", "nan-weight", "str-weight", "not-callable"],
)
def test_weighted_sum_validation(rewards, error, match):
    with pytest.raises(error, match=match):
        WeightedSum(rewards)


# --- doctests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    ["base", "classifier", "combine", "kl", "lexicon", "rules", "__init__"],
)
def test_doctests(module):
    name = "lmgym.rewards" if module == "__init__" else f"lmgym.rewards.{module}"
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS, raise_on_error=False
    )
    assert result.attempted > 0 and result.failed == 0


def test_classifier_concat_puts_a_space_between_prompt_and_completion():
    model, tokenizer = tiny_bert(), make_tokenizer()
    concat = SequenceClassifierReward(model, tokenizer, label=1, text="concat")
    # The envs decode completions without a leading space: "was" + "great" must stay two words.
    expected = manual_logits(model, tokenizer, ["the food was great", "the food was great"])[:, 1]
    scores = concat(["the food was", "the food was "], ["great", "great"])
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
