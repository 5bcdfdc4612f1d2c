"""sweeps.long_run_prediction on hand-made rung values: the law recovered, and the doubts said."""

from __future__ import annotations

import numpy as np
import pytest

from sweeps.long_run_prediction import power_law, predict_long_run

TOKENS = [1e5, 3e5, 9e5, 2.7e6]


def law(tokens, E=3.0, A=50.0, alpha=0.3):
    return [power_law(t, E, A, alpha) for t in tokens]


def test_a_power_law_measured_with_noise_is_recovered_and_its_long_run_inside_the_interval():
    rng = np.random.default_rng(0)
    noisy = [v + rng.normal(0, 0.005) for v in law(TOKENS)]
    p = predict_long_run(TOKENS, noisy, [0.005] * 4, 2.7e7)
    truth = law([2.7e7])[0]
    assert p.trusted and p.n_points == 4
    assert p.low <= truth <= p.high and abs(p.loss - truth) < 0.02
    assert p.E == pytest.approx(3.0, abs=0.3) and p.alpha == pytest.approx(0.3, abs=0.1)


def test_three_rungs_fit_exactly_and_are_not_trusted():
    p = predict_long_run(TOKENS[1:], law(TOKENS[1:]), [0.005] * 3, 1e7)
    assert p.loss == pytest.approx(law([1e7])[0], abs=1e-3)
    assert not p.trusted and "3 rungs fit the law's 3 parameters exactly" in p.doubts[0]


def test_a_curve_with_no_floor_yet_and_a_far_extrapolation_are_doubted():
    exponential = [2.0 + 10 * np.exp(-t / 1e6) for t in TOKENS]
    p = predict_long_run(TOKENS, exponential, [0.005] * 4, 1e7)
    assert not p.trusted and any("no floor" in d or "faster than any power law" in d for d in p.doubts)
    far = predict_long_run(TOKENS, law(TOKENS), [0.005] * 4, 2.7e8)
    assert any("extrapolates 100x past the last rung" in d for d in far.doubts)


def test_too_few_finite_points_give_no_prediction():
    assert predict_long_run(TOKENS[:2], law(TOKENS[:2]), None, 1e7) is None
    assert predict_long_run(TOKENS, [5.0, float("nan"), 4.0, float("inf")], None, 1e7) is None


def test_rungs_the_law_cannot_carry_from_one_to_the_next_are_doubted():
    # a plateau, then a sharp fall: the first three rungs say nothing of the fourth
    p = predict_long_run(TOKENS, [10.8, 10.7, 10.2, 7.0], [0.005] * 4, 1e7)
    assert not p.trusted and any("fit without its last rung, the law misses that rung" in d for d in p.doubts)


def test_a_fall_that_steepens_from_rung_to_rung_is_doubted_and_a_saturating_one_is_not():
    # the byte-level nano's rungs at 222, 667 and 2000 iterations: a small fall, then a big one
    p = predict_long_run(TOKENS[:3], [2.553, 2.398, 1.907], [0.01] * 3, 1e7)
    assert any("the fall steepens from rung to rung (log-log slope -0.057, then -0.209)" in d for d in p.doubts)
    # the same steeper slope is evidence at a small eval noise, and none at a large one
    steeper = [2.553, 2.398, 2.15]
    assert any("steepens" in d for d in predict_long_run(TOKENS[:3], steeper, [0.01] * 3, 1e7).doubts)
    assert not any("steepens" in d for d in predict_long_run(TOKENS[:3], steeper, [0.05] * 3, 1e7).doubts)
    assert not any("steepens" in d for d in predict_long_run(TOKENS, law(TOKENS), [0.005] * 4, 1e7).doubts)


def test_without_standard_errors_a_steeper_slope_is_not_taken_for_a_steepening_fall():
    # a best run's rungs come without their errors: the floor would count 0.001 as the eval noise
    p = predict_long_run(TOKENS[:3], [2.553, 2.398, 2.15], None, 1e7)
    assert not any("steepens" in d for d in p.doubts)
