"""DPO: the loss against its formula, grouping of pairs, the reference, training, seeds."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmgym.models.loading import load_model
from lmgym.rlhf.dpo import DPOConfig, dpo_loss, run_dpo, sequence_logprobs
from lmgym.rlhf.rankings import Ranking, preference_pairs
from tests.conftest import build_tiny_model
from tests.rlhf.test_reward_model import permuted_tokenizer

PAIRS = [
    ("the food was", "great .", "awful ."),
    ("the staff were", "friendly .", "rude ."),
    ("the soup was", "good .", "bad ."),
    ("the service was", "great and friendly .", "bad and rude ."),
]


def config(**kwargs) -> DPOConfig:
    kwargs.setdefault("progress", False)
    return DPOConfig(**kwargs)


def test_dpo_loss_hand_computed() -> None:
    t = torch.tensor
    loss = dpo_loss(t([-1.0, -2.0]), t([-3.0, -1.0]), t([-2.0, -2.0]), t([-2.0, -2.0]), beta=0.5)
    # Row 1: β[(−1 − −2) − (−3 − −2)] = 0.5 · 2 = 1;   −log σ(1) = log(1 + e^−1)
    # Row 2: β[(−2 − −2) − (−1 − −2)] = 0.5 · −1 = −0.5; −log σ(−0.5) = log(1 + e^0.5)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.6436694, abs=1e-6)


def test_dpo_loss_gradient_raises_chosen_lowers_rejected() -> None:
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    dpo_loss(chosen, rejected, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1).backward()
    assert chosen.grad is not None and rejected.grad is not None
    # At a zero margin: dL/d logπ(y_w) = −β σ(0) = −0.05, dL/d logπ(y_l) = +0.05.
    assert chosen.grad.item() == pytest.approx(-0.05)
    assert rejected.grad.item() == pytest.approx(0.05)


def test_sequence_logprobs_sum_the_response_tokens(tiny_lm_dir: Path) -> None:
    model, tok = load_model(tiny_lm_dir)
    logps = sequence_logprobs(model, tok, ["the food was", "the staff were"], ["great .", ""])
    ids = tok("the food was great .")["input_ids"]
    ids_t = torch.tensor([ids])
    logp = torch.log_softmax(model(ids_t, attention_mask=torch.ones_like(ids_t)).logits[0], -1)
    by_hand = logp[3, ids[4]] + logp[4, ids[5]]  # <bos> the food was | great .
    assert logps[0].item() == pytest.approx(by_hand.item(), abs=1e-5)
    assert logps[1].item() == 0.0  # an empty response has no tokens to score


def test_dpo_moves_the_policy_towards_the_chosen(tiny_lm_dir: Path, tmp_path: Path) -> None:
    dpo = config(lr=3e-3, epochs=5, batch_size=4, beta=0.1)
    out = run_dpo(dpo, PAIRS, tmp_path, model=tiny_lm_dir).path
    before, tok = load_model(tiny_lm_dir)
    after, _ = load_model(out)
    prompts, chosen, rejected = (list(x) for x in zip(*PAIRS, strict=True))
    with torch.inference_mode():
        margin_before = sequence_logprobs(before, tok, prompts, chosen) - sequence_logprobs(
            before, tok, prompts, rejected
        )
        margin_after = sequence_logprobs(after, tok, prompts, chosen) - sequence_logprobs(
            after, tok, prompts, rejected
        )
    assert (margin_after - margin_before > 1.0).all()
    assert '"final_epoch_reward_accuracy": 1.0' in (out / "training_summary.json").read_text()


def test_same_seed_same_dpo_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        dpo = config(epochs=2, batch_size=2, seed=seed)
        out = run_dpo(dpo, PAIRS, tmp_path / name, model=tiny_lm_dir).path
        return load_file(out / "model.safetensors")

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)  # another batch order


def test_rankings_and_their_pairs_train_the_same(tiny_lm_dir: Path, tmp_path: Path) -> None:
    rankings = [
        Ranking("the food was", ["great .", "good .", "bad .", "awful ."], [0, 1, 2, 3]),
        Ranking("the staff were", ["rude .", "friendly .", "very friendly ."], [2, 1, 0]),
    ]
    by_rankings = run_dpo(config(batch_size=4), rankings, tmp_path / "r", model=tiny_lm_dir).path
    pairs = preference_pairs(rankings)
    by_pairs = run_dpo(config(batch_size=4), pairs, tmp_path / "p", model=tiny_lm_dir).path
    a, b = load_file(by_rankings / "model.safetensors"), load_file(by_pairs / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_ranking_takes_k_forward_rows(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, tok = load_model(tiny_lm_dir)
    reference, _ = load_model(tiny_lm_dir)
    rows: list[int] = []
    policy.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(int(kwargs["input_ids"].shape[0])),
        with_kwargs=True,
    )
    ranking = Ranking("the food was", ["great .", "good .", "bad .", "awful ."], [0, 1, 2, 3])
    pairs = preference_pairs([ranking])  # C(4,2) = 6 pairs, 12 texts if scored pair by pair
    dpo = config(batch_size=4, epochs=1)
    run_dpo(dpo, pairs, tmp_path, model=policy, reference=reference, tokenizer=tok)
    assert rows == [4]  # one training step, one row per distinct completion


def test_a_model_object_is_trained_in_place(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, tok = load_model(tiny_lm_dir)
    before = copy.deepcopy(policy.state_dict())
    run_dpo(config(lr=1e-2), PAIRS, tmp_path, model=policy, tokenizer=tok)  # reference: a copy
    assert not all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_reference_must_not_be_the_trained_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, tok = load_model(tiny_lm_dir)
    with pytest.raises(ValueError, match="reference is the model being trained"):
        run_dpo(config(), PAIRS, tmp_path, model=policy, reference=policy, tokenizer=tok)
    sharing = copy.copy(policy)  # a new object over the same parameters
    with pytest.raises(ValueError, match="shares its parameters"):
        run_dpo(config(), PAIRS, tmp_path, model=policy, reference=sharing, tokenizer=tok)


def test_reference_with_another_tokenizer(tiny_lm_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    tokenizer = permuted_tokenizer()
    build_tiny_model(len(tokenizer)).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(ValueError, match="different tokenizer than the policy"):
        run_dpo(config(), PAIRS, tmp_path / "out", model=tiny_lm_dir, reference=other)


def test_run_dpo_bad_pairs(tiny_lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pairs is empty"):
        run_dpo(config(), [], tmp_path, model=tiny_lm_dir)
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        run_dpo(config(), [PAIRS[0], ("p", "c")], tmp_path, model=tiny_lm_dir)  # type: ignore[list-item]
    same = Ranking("the food was", ["great .", "great ."], [1, 0])
    with pytest.raises(ValueError, match="holds no preference"):
        run_dpo(config(), [same], tmp_path, model=tiny_lm_dir)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 0.0}, "beta=0.0"),
        ({"beta": -0.1}, "beta=-0.1"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"epochs": 0}, "epochs=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"ref_batch_size": 0}, "ref_batch_size=0"),
        ({"seed": -1}, "seed=-1"),
        ({"warmup_fraction": 1.0}, "warmup_fraction=1.0"),
    ],
    ids=lambda v: str(v),
)
def test_dpo_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DPOConfig(**kwargs)
