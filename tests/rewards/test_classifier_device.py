"""``SequenceClassifierReward(device=..., dtype=...)``: where the classifier runs, checked first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from lmgym.rewards import SequenceClassifierReward
from tests.rewards.test_builtin import COMPLETIONS, PROMPTS, make_tokenizer, tiny_bert


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("bert-cls-device")
    tiny_bert().save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def test_device_and_dtype_place_the_model_and_scores_stay_float(bert_dir) -> None:
    float32 = SequenceClassifierReward(bert_dir, label="POSITIVE", device="cpu", dtype="float32")
    bf16 = SequenceClassifierReward(bert_dir, label="POSITIVE", device="cpu", dtype="bfloat16")
    assert next(float32.model.parameters()).dtype == torch.float32
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert float32.model.device == torch.device("cpu")
    expected, got = float32(PROMPTS, COMPLETIONS), bf16(PROMPTS, COMPLETIONS)
    assert got.dtype == expected.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_allclose(got, expected, atol=0.05)  # bf16 weights, float32 scores
    assert np.ptp(expected) > 0


def test_a_model_object_is_cast_and_inputs_follow_it(bert_dir) -> None:
    reward = SequenceClassifierReward(tiny_bert(), make_tokenizer(), label=1, output="prob",
                                      device="auto", dtype="auto")  # fmt: skip
    seen = []
    reward.model.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["input_ids"].device),
        with_kwargs=True,
    )
    scores = reward(PROMPTS, COMPLETIONS)
    assert seen and all(device == reward.model.device for device in seen)
    assert ((0 < scores) & (scores < 1)).all()


def test_cuda_with_no_gpu_and_float16_on_cpu_fail_before_loading(
    bert_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loads: list[object] = []
    monkeypatch.setattr(
        transformers.AutoModelForSequenceClassification,
        "from_pretrained",
        lambda *a, **k: loads.append(a),
    )
    with pytest.raises(ValueError, match=r"^device='cuda' but this machine has no CUDA GPU"):
        SequenceClassifierReward(bert_dir, label=1, device="cuda")
    with pytest.raises(ValueError, match=r"^dtype='float16' cannot run on device 'cpu'"):
        SequenceClassifierReward(bert_dir, label=1, dtype="float16")
    with pytest.raises(ValueError, match=r"^dtype='int8' is not a dtype lmgym runs models in"):
        SequenceClassifierReward(bert_dir, label=1, dtype="int8")
    assert loads == []
