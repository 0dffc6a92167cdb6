"""SFT: demonstrations, the response-only loss, training and its reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmgym.models.generation import DecodingConfig
from lmgym.models.loading import load_model
from lmgym.rlhf.dpo import sequence_logprobs
from lmgym.rlhf.labelers import BradleyTerryLabeler
from lmgym.rlhf.rankings import sample_completions
from lmgym.rlhf.sft import (
    IGNORE_INDEX,
    SFTConfig,
    encode_demonstrations,
    make_demonstrations,
    run_sft,
    sft_loss,
)
from lmgym.seeding import set_seed

DEMOS = [
    ("the food was", "great ."),
    ("the staff were", "friendly ."),
    ("the soup was", "great and good ."),
    ("i thought the service", "was great ."),
]


def config(**kwargs) -> SFTConfig:
    kwargs.setdefault("progress", False)
    return SFTConfig(**kwargs)


def test_encode_demonstrations_masks_the_prompt(tiny_lm_dir: Path) -> None:
    _, tok = load_model(tiny_lm_dir)
    ((ids, labels),) = encode_demonstrations(tok, [("the food was", "great .")])
    assert ids == [*tok("the food was great .")["input_ids"], tok.eos_token_id]
    assert labels == [IGNORE_INDEX] * 4 + ids[4:]  # <bos> the food was | great . <eos>
    ((ids, labels),) = encode_demonstrations(tok, [("the food was", "great .")], append_eos=False)
    assert ids[-1] != tok.eos_token_id and len(labels) == len(ids) == 6


def test_sft_loss_is_on_response_tokens_only(tiny_lm_dir: Path) -> None:
    model, tok = load_model(tiny_lm_dir)
    rows = encode_demonstrations(tok, DEMOS[:2])
    loss = sft_loss(model, rows, tok.pad_token_id)
    # By hand: mean over the response tokens (and EOS) of -log p(token | prefix).
    nll = []
    for ids, labels in rows:
        ids_t = torch.tensor([ids])
        logp = torch.log_softmax(model(ids_t, attention_mask=torch.ones_like(ids_t)).logits[0], -1)
        nll += [-logp[t - 1, ids[t]] for t in range(1, len(ids)) if labels[t] != IGNORE_INDEX]
    assert loss.item() == pytest.approx(torch.stack(nll).mean().item(), abs=1e-5)
    # Changing a prompt token changes the context but not which tokens are counted.
    assert len(nll) == 3 + 3


def test_run_sft_raises_the_demonstrations_likelihood(tiny_lm_dir: Path, tmp_path: Path) -> None:
    result = run_sft(config(epochs=5, lr=3e-3, batch_size=2), DEMOS, tmp_path, model=tiny_lm_dir)
    out = result.path
    before, tok = load_model(tiny_lm_dir)
    after, _ = load_model(out)
    prompts, responses = [p for p, _ in DEMOS], [r for _, r in DEMOS]
    with torch.inference_mode():
        gain = sequence_logprobs(after, tok, prompts, responses) - sequence_logprobs(
            before, tok, prompts, responses
        )
    assert (gain > 1.0).all()
    summary = (out / "training_summary.json").read_text()
    assert '"n_demonstrations": 4' in summary
    assert after.training is False


def test_same_seed_same_sft_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        sft = config(epochs=2, batch_size=2, seed=seed)
        out = run_sft(sft, DEMOS, tmp_path / name, model=tiny_lm_dir).path
        return load_file(out / "model.safetensors")

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)  # another batch order


def test_run_sft_bad_input(tiny_lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="demonstrations is empty"):
        run_sft(config(), [], tmp_path, model=tiny_lm_dir)
    with pytest.raises(TypeError, match=r"demonstrations\[1\]"):
        run_sft(config(), [DEMOS[0], ("only a prompt",)], tmp_path, model=tiny_lm_dir)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty response"):
        run_sft(config(append_eos=False), [("the food was", " ")], tmp_path, model=tiny_lm_dir)


def test_make_demonstrations_picks_the_best_finished_candidate(tiny_lm_dir: Path) -> None:
    prompts = ["the food was", "the staff were", "the soup was"]

    def n_words(ps, cs) -> np.ndarray:
        return np.array([len(c.split()) for c in cs], dtype=float)

    demos = make_demonstrations(tiny_lm_dir, prompts, n_words, n_candidates=6, seed=0)
    assert demos == make_demonstrations(tiny_lm_dir, prompts, n_words, n_candidates=6, seed=0)
    assert [p for p, _ in demos] == prompts

    # The same candidates, drawn by hand: the longest of those that ended with EOS wins.
    model, tok = load_model(tiny_lm_dir)
    set_seed(0)
    texts, finished = sample_completions(
        model, tok, [p for p in prompts for _ in range(6)], DecodingConfig()
    )
    for i, (_, response) in enumerate(demos):
        candidates = list(
            zip(texts[i * 6 : i * 6 + 6], finished[i * 6 : i * 6 + 6].tolist(), strict=True)
        )
        pool = [t for t, done in candidates if done] or [t for t, _ in candidates]
        assert response == max(pool, key=lambda t: len(t.split()))
    assert finished.any() and not finished.all()  # both branches of the rule are exercised

    labeled = make_demonstrations(tiny_lm_dir, prompts, BradleyTerryLabeler(), n_candidates=2)
    assert len(labeled) == 3


def test_make_demonstrations_bad_input(tiny_lm_dir: Path) -> None:
    with pytest.raises(ValueError, match="n_candidates=0"):
        make_demonstrations(tiny_lm_dir, ["the food was"], BradleyTerryLabeler(), n_candidates=0)
    with pytest.raises(ValueError, match="prompts is empty"):
        make_demonstrations(tiny_lm_dir, [], BradleyTerryLabeler())
    with pytest.raises(TypeError, match="neither a BradleyTerryLabeler"):
        make_demonstrations(tiny_lm_dir, ["the food was"], "labeler")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"lr": -1.0}, "lr=-1.0"),
        ({"warmup_fraction": 1.5}, "warmup_fraction=1.5"),
        ({"seed": -2}, "seed=-2"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm=inf"),
        ({"weight_decay": float("nan")}, "weight_decay=nan"),
    ],
    ids=lambda v: str(v),
)
def test_sft_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SFTConfig(**kwargs)
