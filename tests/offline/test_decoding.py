"""ILQL decoding through lmgym's one generate utility: β = 0 is the LM, β > 0 re-weights it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.loading import load_model
from lmgym.offline.config import ILQLConfig
from lmgym.offline.decoding import ilql_logprobs
from lmgym.offline.model import ILQLModel, load_ilql_model
from tests.conftest import PROMPTS


def prompt_batch(tokenizer, repeats: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = tokenizer(PROMPTS * repeats, padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def trained_heads_model(tiny_lm_dir, beta: float) -> tuple[ILQLModel, object]:
    lm, tokenizer = load_model(tiny_lm_dir)
    torch.manual_seed(1)
    model = ILQLModel(lm, beta=beta)
    with torch.no_grad():  # heads far from zero, so that β matters
        for parameter in model.heads.parameters():
            parameter.mul_(20)
    return model, tokenizer


def sample(model, ids, mask, seed: int = 0, **decoding):
    torch.manual_seed(seed)
    return generate(model, ids, mask, DecodingConfig(max_new_tokens=8, **decoding),
                    eos_token_id=2, pad_token_id=0)  # fmt: skip


@pytest.mark.parametrize("decoding", [{}, {"top_k": 5, "temperature": 0.7}], ids=["plain", "topk"])
def test_beta_zero_decodes_as_the_base_lm(tiny_lm_dir, decoding) -> None:
    model, tokenizer = trained_heads_model(tiny_lm_dir, beta=0.0)
    ids, mask = prompt_batch(tokenizer)
    ilql = sample(model, ids, mask, **decoding)
    base = sample(model.lm, ids, mask, **decoding)
    assert torch.equal(ilql.completion_ids, base.completion_ids)
    assert torch.equal(ilql.sampling_logprobs, base.sampling_logprobs)
    assert torch.equal(ilql.logprobs, base.logprobs)


def test_beta_reweights_sampling_by_the_advantage(tiny_lm_dir) -> None:
    model, tokenizer = trained_heads_model(tiny_lm_dir, beta=2.0)
    ids, mask = prompt_batch(tokenizer)
    ilql = sample(model, ids, mask)
    base = sample(model.lm, ids, mask)
    assert not torch.equal(ilql.completion_ids, base.completion_ids)
    # What was sampled is the LM's logits + β (Q − V), the same distribution the env's KL sees
    # by teacher forcing (so the hidden state each step handed over is the right one).
    setup = SimpleNamespace(pad_token_id=0, vocab_size=len(tokenizer))
    teacher = ilql_logprobs(model, setup)(ids.numpy(), ilql.completion_ids.numpy())  # type: ignore[arg-type]
    picked = teacher.gather(2, ilql.completion_ids.unsqueeze(-1))[..., 0] * ilql.mask
    torch.testing.assert_close(picked, ilql.sampling_logprobs, atol=1e-4, rtol=1e-4)
    # ... while the raw log-probs stay the LM's own (π_β), unperturbed
    with torch.no_grad():
        out = model.token_outputs(ids, mask, ilql.completion_ids, pad_token_id=0)
    lm_logprobs = torch.log_softmax(out.logits, -1).gather(2, ilql.completion_ids.unsqueeze(-1))
    torch.testing.assert_close(lm_logprobs[..., 0] * ilql.mask, ilql.logprobs, atol=1e-4,
                               rtol=1e-4)  # fmt: skip


def test_decoding_leaves_no_hook_behind(tiny_lm_dir) -> None:
    model, tokenizer = trained_heads_model(tiny_lm_dir, beta=2.0)
    ids, mask = prompt_batch(tokenizer, repeats=1)
    sample(model, ids, mask)
    head = model.lm.get_output_embeddings()
    assert head is not None and not head._forward_pre_hooks


def test_beta_and_config_validation() -> None:
    with pytest.raises(ValueError, match="beta=-1 must be a finite number >= 0"):
        ILQLConfig(beta=-1)
    with pytest.raises(ValueError, match="beta=nan"):
        ILQLConfig(beta=float("nan"))
    for tau in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"tau={tau} must lie in \\(0, 1\\)"):
            ILQLConfig(tau=tau)
    with pytest.raises(ValueError, match="gamma=1.5 must lie in \\[0, 1\\]"):
        ILQLConfig(gamma=1.5)
    with pytest.raises(ValueError, match="polyak_rate=0 must lie in \\(0, 1\\]"):
        ILQLConfig(polyak_rate=0)
    with pytest.raises(ValueError, match="cql_alpha=-0.1 must be a finite number >= 0"):
        ILQLConfig(cql_alpha=-0.1)
    with pytest.raises(ValueError, match="epochs=0 is not an int >= 1"):
        ILQLConfig(epochs=0)


def test_model_refuses_a_negative_beta(tiny_lm_dir) -> None:
    lm, _ = load_model(tiny_lm_dir)
    with pytest.raises(ValueError, match="beta=-0.5 must be a finite number >= 0"):
        ILQLModel(lm, beta=-0.5)


def test_save_and_load_keep_heads_and_beta(tiny_lm_dir, tmp_path) -> None:
    model, tokenizer = trained_heads_model(tiny_lm_dir, beta=3.0)
    path = model.save(tmp_path / "ilql", tokenizer, {"stage": "test"})
    loaded, _ = load_ilql_model(path)
    assert loaded.beta == 3.0
    for name, tensor in model.heads.state_dict().items():
        assert torch.equal(tensor, loaded.heads.state_dict()[name]), name
    assert load_ilql_model(path, beta=0.5)[0].beta == 0.5
    with pytest.raises(ValueError, match="holds no ilql.json"):
        load_ilql_model(tiny_lm_dir)
