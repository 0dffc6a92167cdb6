"""Gao et al.'s over-optimisation forms: fits, peaks and best-of-n picks."""

import math

import numpy as np
import pytest

from lmgym.rlhf.scaling_laws import ScalingFit, best_of_n_picks, fit_scaling_law


def test_best_of_n_picks_average_the_proxy_argmax_over_every_n_subset():
    proxy = np.array([[0.0, 3.0, 1.0, 5.0], [2.0, 1.0, 0.0, 0.5]])
    gold = np.array([[1.0, 0.0, 2.0, -1.0], [4.0, 3.0, 2.0, 1.0]])
    picks = best_of_n_picks(proxy, gold, [1, 2, 4])
    # n = 1: every sample once.
    assert picks[0] == pytest.approx((1, (9 / 4 + 3.5 / 4) / 2, (2 / 4 + 10 / 4) / 2))
    # n = 2, prompt 0: the 6 pairs pick samples 1, 2, 3, 1, 3, 3 -> proxy 22/6, gold -1/6;
    # prompt 1: samples 0, 0, 0, 1, 1, 3 -> proxy 8.5/6, gold 19/6.
    assert picks[1] == pytest.approx((2, (22 / 6 + 8.5 / 6) / 2, (-1 / 6 + 19 / 6) / 2))
    # n = 4: the proxy's best of all, sample 3 (gold -1) and sample 0 (gold 4).
    assert picks[2] == pytest.approx((4, 3.5, 1.5))


def test_best_of_n_picks_break_proxy_ties_at_random():
    # Samples 1 and 2 tie on the proxy: a pick between them is a coin flip, gold 1 on average.
    picks = best_of_n_picks(np.array([[0.0, 1.0, 1.0]]), np.array([[5.0, 0.0, 2.0]]), [2, 3])
    assert picks == [(2, 1.0, 1.0), (3, 1.0, 1.0)]


def test_best_of_n_picks_refuse_bad_input():
    proxy, gold = np.zeros((2, 4)), np.zeros((2, 4))
    with pytest.raises(ValueError, match="n=5"):
        best_of_n_picks(proxy, gold, [5])
    with pytest.raises(ValueError, match="same shape"):
        best_of_n_picks(proxy, gold[:, :2], [1])
    with pytest.raises(ValueError, match="gold must hold finite"):
        best_of_n_picks(proxy, np.full((2, 4), np.nan), [1])


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_the_fit_recovers_the_coefficients_of_noise_free_points(form):
    d = np.linspace(0.2, 4.0, 12)
    shape = d if form == "bon" else np.log(d)
    fit = fit_scaling_law(d, d * (0.8 - 0.3 * shape), form)
    assert fit.alpha == pytest.approx(0.8)
    assert fit.beta == pytest.approx(0.3)
    assert fit.d_max == pytest.approx(4.0)
    assert fit(np.array([0.0]))[0] == 0.0


def test_the_peaks_are_where_the_derivative_vanishes():
    bon = ScalingFit("bon", alpha=0.8, beta=0.3, d_max=4.0)
    rl = ScalingFit("rl", alpha=0.8, beta=0.3, d_max=4.0)
    for fit in (bon, rl):
        peak = fit.peak_d
        assert peak is not None
        left, right = fit(np.array([peak * 0.99, peak * 1.01]))
        assert fit(np.array([peak]))[0] > max(left, right)
    assert bon.peak_d == pytest.approx(0.8 / 0.6)
    assert bon.peak_observed  # 1.33 <= 4
    assert rl.peak_d == pytest.approx(math.exp(0.8 / 0.3 - 1))  # 5.29 > 4: extrapolated
    assert not rl.peak_observed
    assert ScalingFit("rl", alpha=0.8, beta=-0.1, d_max=4.0).peak_d is None


def test_bad_fit_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="form="):
        fit_scaling_law([1.0, 2.0], [0.1, 0.2], "ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2"):
        fit_scaling_law([0.0, 1.0, 1.0], [0.0, 0.1, 0.2], "rl")
    with pytest.raises(ValueError, match="negative"):
        fit_scaling_law([-1.0, 1.0, 2.0], [0.0, 0.1, 0.2], "bon")
