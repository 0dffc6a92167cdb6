"""KL estimators against torch's exact categorical KL, the sequence sum, and the β controllers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Categorical, kl_divergence

from lmgym.rewards.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_per_token,
    reference_only_kl,
    sequence_kl,
    vocab_log_softmax,
)

N_SAMPLES = 200_000
N_STANDARD_ERRORS = 5.0  # a 5-sigma miss has probability ~6e-7 under the CLT (and seeds are fixed)


def random_pair(seed: int, vocab: int = 12, scale: float = 1.0) -> tuple[Categorical, Categorical]:
    g = torch.Generator().manual_seed(seed)
    policy = Categorical(logits=scale * torch.randn(vocab, generator=g, dtype=torch.float64))
    reference = Categorical(logits=scale * torch.randn(vocab, generator=g, dtype=torch.float64))
    return policy, reference


def sampled_log_probs(policy, reference, seed):
    """log π_θ and log π_ref of N tokens drawn from π_θ, shaped (B, T) as the env has them."""
    torch.manual_seed(seed)
    tokens = policy.sample((N_SAMPLES,))
    logp = policy.log_prob(tokens).reshape(1000, -1)  # (B, T)
    ref_logp = reference.log_prob(tokens).reshape(1000, -1)
    return logp, ref_logp


# --- Monte-Carlo unbiasedness ------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("seed, scale", [(0, 0.3), (1, 1.0), (2, 2.0)], ids=["near", "mid", "far"])
def test_unbiased_estimators_converge_to_true_kl(estimator, seed, scale):
    """k1 and k3 are unbiased for KL(π_θ‖π_ref) when tokens are drawn from π_θ (Schulman 2020).

    The tolerance is N_STANDARD_ERRORS standard errors of the sample mean, std / sqrt(N),
    estimated from the same samples, so it adapts to each estimator's variance.
    """
    policy, reference = random_pair(seed, scale=scale)
    true_kl = kl_divergence(policy, reference).item()
    k = kl_per_token(estimator, *sampled_log_probs(policy, reference, seed + 100))
    standard_error = k.std().item() / math.sqrt(k.numel())
    assert abs(k.mean().item() - true_kl) < N_STANDARD_ERRORS * standard_error
    assert standard_error < 0.05 * true_kl  # the check has power: the error bar is narrow


def test_k3_has_lower_variance_than_k1_for_close_distributions():
    policy, reference = random_pair(3, scale=0.3)
    logp, ref_logp = sampled_log_probs(policy, reference, 4)
    assert kl_per_token("k3", logp, ref_logp).var() < kl_per_token("k1", logp, ref_logp).var()


def test_reference_only_form_is_cross_entropy():
    """E_π[−log π_ref] = KL(π‖π_ref) + H(π): the entropy half is left to the agent's bonus."""
    policy, reference = random_pair(5)
    _, ref_logp = sampled_log_probs(policy, reference, 6)
    k = reference_only_kl(ref_logp)
    expected = (kl_divergence(policy, reference) + policy.entropy()).item()
    standard_error = k.std().item() / math.sqrt(k.numel())
    assert abs(k.mean().item() - expected) < N_STANDARD_ERRORS * standard_error
    torch.testing.assert_close(k, -ref_logp)


# --- exact and structural properties -----------------------------------------------------------


def test_full_equals_torch_kl_divergence_per_position():
    g = torch.Generator().manual_seed(7)
    logits = 3 * torch.randn(4, 6, 50, generator=g, dtype=torch.float64)  # (B, T, V)
    ref_logits = 3 * torch.randn(4, 6, 50, generator=g, dtype=torch.float64)
    expected = kl_divergence(Categorical(logits=logits), Categorical(logits=ref_logits))  # (B, T)
    got = kl_per_token("full", logits=logits, ref_logits=ref_logits)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_full_float32_and_log_prob_inputs():
    g = torch.Generator().manual_seed(8)
    logits, ref_logits = torch.randn(2, 3, 20, generator=g), torch.randn(2, 3, 20, generator=g)
    expected = kl_divergence(Categorical(logits=logits), Categorical(logits=ref_logits))
    torch.testing.assert_close(kl_per_token("full", logits=logits, ref_logits=ref_logits), expected)
    # log-probs are logits too (log_softmax is idempotent), which is what a policy returns
    log_probs = torch.log_softmax(logits, -1)
    torch.testing.assert_close(
        kl_per_token("full", logits=log_probs, ref_logits=ref_logits), expected
    )


def test_full_with_masked_vocabulary_is_finite_and_exact():
    logits = torch.tensor([[[0.0, 1.0, -math.inf, -math.inf]]])  # policy never emits tokens 2, 3
    ref_logits = torch.tensor([[[0.5, 0.0, 2.0, -1.0]]])
    got = kl_per_token("full", logits=logits, ref_logits=ref_logits)
    assert torch.isfinite(got).all()
    expected = kl_divergence(Categorical(logits=logits), Categorical(logits=ref_logits))
    torch.testing.assert_close(got, expected)
    # the reverse direction puts mass where the other has none: infinite, as it should be
    assert torch.isinf(kl_per_token("full", logits=ref_logits, ref_logits=logits)).all()


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "full"])
def test_zero_when_policy_equals_reference(estimator):
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(3, 5, 16, generator=g)
    logp = torch.log_softmax(logits, -1)[..., 0]  # (B, T)
    # a per-position shift of the logits is the same distribution
    got = kl_per_token(
        estimator, logp, logp.clone(), logits=logits, ref_logits=logits + torch.randn(3, 5, 1)
    )
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, torch.zeros(3, 5), atol=1e-6, rtol=0)


log_probs = st.floats(min_value=-80.0, max_value=0.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(st.tuples(log_probs, log_probs), min_size=1, max_size=64),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_k3_and_k2_are_never_negative(pairs, dtype):
    logp = torch.tensor([[a for a, _ in pairs]], dtype=dtype)
    ref_logp = torch.tensor([[b for _, b in pairs]], dtype=dtype)
    assert (kl_per_token("k3", logp, ref_logp) >= 0).all()
    assert (kl_per_token("k2", logp, ref_logp) >= 0).all()


@settings(max_examples=200, deadline=None)
@given(ell=st.floats(min_value=-30.0, max_value=30.0, allow_nan=False))
def test_estimators_match_their_formulas(ell):
    logp = torch.tensor([[ell]], dtype=torch.float64)
    ref_logp = torch.zeros(1, 1, dtype=torch.float64)
    r = math.exp(-ell)
    assert kl_per_token("k1", logp, ref_logp).item() == pytest.approx(ell)
    assert kl_per_token("k2", logp, ref_logp).item() == pytest.approx(ell**2 / 2)
    assert kl_per_token("k3", logp, ref_logp).item() == pytest.approx((r - 1) - math.log(r))


def test_estimators_keep_gradients():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    kl_per_token("k3", logp, torch.tensor([[-1.5, -1.0]])).sum().backward()
    assert logp.grad is not None and torch.isfinite(logp.grad).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "k4"}, r"estimator='k4' is unknown; expected one of \['k1', 'k2', 'k3', "),
        ({"estimator": "k1"}, "needs logp and ref_logp"),
        ({"estimator": "full", "logp": torch.zeros(1, 2)}, "needs logits= and ref_logits="),
        (
            {"estimator": "k2", "logp": torch.zeros(1, 2), "ref_logp": torch.zeros(1, 3)},
            r"logp has shape \(1, 2\) but ref_logp has \(1, 3\)",
        ),
        (
            {
                "estimator": "full",
                "logits": torch.zeros(1, 2, 5),
                "ref_logits": torch.zeros(1, 2, 6),
            },
            r"expected both \(B, T, V\) over the same vocabulary.*vocab_size=len\(tokenizer\)",
        ),
        (
            {
                "estimator": "full",
                "logits": torch.zeros(1, 2, 5),
                "ref_logits": torch.zeros(1, 2, 6),
                "vocab_size": 7,
            },
            r"vocab_size=7 .*logits has 5 columns",
        ),
    ],
    ids=["unknown", "missing-logp", "missing-logits", "shape", "vocab", "vocab_size_too_big"],
)
def test_kl_per_token_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kl_per_token(**kwargs)


# --- padded vocabularies: one support for both distributions ----------------------------------


def test_vocab_log_softmax_renormalises_over_the_first_ids():
    logits = torch.tensor([[0.0, 1.0, 2.0, 5.0, 5.0]])  # the last two: embedding padding rows
    logp = vocab_log_softmax(logits, 3)
    assert logp.shape == (1, 3)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(1))
    torch.testing.assert_close(logp, torch.log_softmax(logits[:, :3], -1))


def test_full_kl_over_the_tokenizers_tokens_when_one_model_is_padded():
    g = torch.Generator().manual_seed(0)
    policy = torch.randn(2, 3, 5, generator=g)  # (B, T, V): the tokenizer's 5 tokens
    reference = torch.cat([policy, torch.randn(2, 3, 59, generator=g)], -1)  # 64 rows
    zero = kl_per_token("full", logits=policy, ref_logits=reference, vocab_size=5)
    torch.testing.assert_close(zero, torch.zeros(2, 3))
    # Normalising the reference over all 64 rows would report a KL that is not there.
    same = kl_per_token("full", logits=policy, ref_logits=reference[..., :5])
    torch.testing.assert_close(same, zero)
    over_all_rows = torch.log_softmax(reference, -1)[..., :5]
    biased = (policy.softmax(-1) * (policy.log_softmax(-1) - over_all_rows)).sum(-1)
    assert (biased > 0.1).all()


# --- sequence sum ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bool, torch.long, torch.float32], ids=str)
def test_sequence_kl_respects_the_mask(dtype):
    per_token = torch.tensor([[0.1, 0.2, 0.3, math.nan], [1.0, math.inf, 2.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).to(dtype)
    torch.testing.assert_close(sequence_kl(per_token, mask), torch.tensor([0.6, 1.0]))


def test_sequence_kl_of_all_masked_row_is_zero_and_shape_checked():
    assert sequence_kl(torch.ones(2, 3), torch.zeros(2, 3)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"per_token has shape \(2, 3\) but mask has \(2, 4\)"):
        sequence_kl(torch.ones(2, 3), torch.ones(2, 4))


# --- controllers -------------------------------------------------------------------------------


def test_fixed_controller_never_moves():
    controller = FixedKLController(0.2)
    for kl in (0.0, 6.0, 1e6):
        controller.update(kl, 64)
    assert controller.value == 0.2


@pytest.mark.parametrize(
    "kl, expected_error",
    [(6.0, 0.0), (6.6, 0.1), (3.0, -0.2), (7.2, 0.2), (60.0, 0.2), (0.0, -0.2)],
    ids=["on-target", "above", "below-clipped", "at-clip", "far-above-clipped", "zero-clipped"],
)
def test_adaptive_controller_follows_ziegler(kl, expected_error):
    controller = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    controller.update(kl, n_steps=100)
    assert controller.value == pytest.approx(0.1 * (1 + expected_error * 100 / 1000))


def test_adaptive_controller_moves_toward_target():
    high = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    low = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    steady = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    for _ in range(10):
        before = (high.value, low.value)
        high.update(9.0, 64)  # drifting too far: penalise more
        low.update(2.0, 64)  # too close: penalise less
        steady.update(6.0, 64)
        assert high.value > before[0] and low.value < before[1]
    assert steady.value == 0.1
    # the clip bounds the step: at most 20 % per horizon however large the KL
    capped = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    capped.update(1e9, 1000)
    assert capped.value == pytest.approx(0.12)


def settled_mean_kl(batch: int, episodes: int = 60_000) -> float:
    """Mean KL over the second half of a run of a toy policy whose KL follows β.

    An episode's summed KL is (0.6 / β) · X with X ~ Exponential(1): skewed, and β = 0.1 holds
    its mean at the target 6. The controller is updated once per ``batch`` episodes.
    """
    x = np.random.default_rng(0).exponential(1.0, episodes)
    controller = AdaptiveKLController(0.05, target=6.0, horizon=500)
    means = []
    for start in range(0, episodes, batch):
        kls = 0.6 / controller.value * x[start : start + batch]
        controller.update(float(kls.mean()), batch)
        if start >= episodes // 2:
            means.append(kls.mean())
    return float(np.mean(means))


def test_one_update_per_batch_holds_skewed_kls_at_the_target():
    # One update per episode averages clipped errors: with skewed KLs the many small ones
    # (clipped at -0.2) outweigh the few large ones, and the mean KL settles far above target.
    assert settled_mean_kl(batch=1) > 8.0  # measured: 8.68
    assert settled_mean_kl(batch=64) == pytest.approx(6.0, rel=0.03)  # measured: 6.02


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: FixedKLController(-0.1), "kl_coef=-0.1"),
        (lambda: FixedKLController(math.nan), "kl_coef=nan"),
        (lambda: AdaptiveKLController(-0.1, 6.0, 1000), "init_kl_coef=-0.1"),
        (lambda: AdaptiveKLController(0.1, 0.0, 1000), "target=0.0"),
        (lambda: AdaptiveKLController(0.1, -1.0, 1000), "target=-1.0"),
        (lambda: AdaptiveKLController(0.1, 6.0, 0), "horizon=0"),
        (lambda: AdaptiveKLController(0.1, 6.0, -5), "horizon=-5"),
    ],
    ids=["fixed-neg", "fixed-nan", "init-neg", "target-zero", "target-neg", "horizon-zero",
         "horizon-neg"],
)  # fmt: skip
def test_controller_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_adaptive_update_validation():
    controller = AdaptiveKLController(0.1, 6.0, horizon=100)
    with pytest.raises(ValueError, match="current_kl=nan"):
        controller.update(math.nan, 10)
    with pytest.raises(ValueError, match="n_steps=-1"):
        controller.update(6.0, -1)
    with pytest.raises(ValueError, match=r"n_steps=500 reaches 5 × horizon=100"):
        controller.update(0.0, 500)  # 1 + (-0.2) * 5 = 0 would zero β for good
    assert controller.value == 0.1
