"""depth_trend: Spearman against layer index, exact p-values, withheld p-values, thresholds."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from parallax_probe.analysis import depth_trend, depth_trend_at_step


def test_monotone_profile_has_rho_one_and_the_exact_smallest_p():
    trend = depth_trend(np.linspace(0.5, 9.0, 8), threshold=4.0)
    assert trend.spearman_rho == pytest.approx(1.0)
    assert trend.p_value == pytest.approx(2 / math.factorial(8))
    assert trend.p_value_method.startswith("exact permutation")
    assert trend.first_layer_above == 3  # values 0.5, 1.71, 2.93, 4.14, ...


def test_first_layer_above_is_the_first_strictly_greater_value():
    trend = depth_trend([0.5, 2.0, 1.0, 3.0, 3.0], threshold=2.0)
    assert trend.first_layer_above == 3
    assert depth_trend([0.5, 2.0], threshold=5.0).first_layer_above is None
    assert depth_trend([0.5, 2.0]).first_layer_above is None


def test_exact_p_value_agrees_with_a_direct_enumeration():
    values = np.random.default_rng(0).normal(size=6)
    trend = depth_trend(values)
    rho_observed = stats.spearmanr(np.arange(6), values).statistic
    rhos = [stats.spearmanr(np.arange(6), values[list(order)]).statistic for order in itertools.permutations(range(6))]
    expected = np.mean(np.abs(rhos) >= abs(rho_observed) - 1e-12)
    assert trend.spearman_rho == pytest.approx(rho_observed)
    assert trend.p_value == pytest.approx(expected)


def test_too_few_layers_for_significance_give_no_p_value():
    trend = depth_trend([1.0, 2.0, 3.0, 4.0])
    assert trend.spearman_rho == pytest.approx(1.0)
    assert trend.p_value is None
    assert trend.smallest_achievable_p == pytest.approx(2 / 24)
    assert "no p-value" in trend.reason


def test_many_layers_use_the_t_approximation():
    values = np.arange(12) + np.random.default_rng(1).normal(0, 0.5, 12)
    trend = depth_trend(values)
    assert trend.p_value_method.startswith("t approximation")
    assert trend.p_value == pytest.approx(stats.spearmanr(np.arange(12), values).pvalue)


def test_constant_profile_and_too_few_finite_layers_give_reasons():
    assert depth_trend([2.0] * 6).spearman_rho is None
    assert "same in every layer" in depth_trend([2.0] * 6).reason
    sparse = depth_trend([1.0, np.nan, np.nan, 2.0])
    assert sparse.spearman_rho is None
    assert "2 layer(s) with a non-finite value left out" in sparse.reason


def test_non_finite_layers_keep_their_layer_index():
    trend = depth_trend([np.nan, 5.0, 1.0, 7.0], threshold=4.0)
    assert trend.first_layer_above == 1


def test_null_profiles_reject_at_most_at_alpha():
    # 300 profiles of 6 independent layers: the exact test's rejection rate is <= alpha;
    # 0.05 + 0.04 allows three binomial SDs.
    rng = np.random.default_rng(2)
    p_values = [depth_trend(rng.normal(size=6)).p_value for _ in range(300)]
    assert np.mean(np.array(p_values) < 0.05) <= 0.09


def test_at_step_picks_the_nearest_logged_step_and_defaults_to_the_last():
    steps = np.array([0, 100, 200])
    values = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]])
    assert depth_trend_at_step(steps, values, threshold=1.5).step == 100  # last row has no finite value
    assert depth_trend_at_step(steps, values, step=30).step == 0
    assert depth_trend_at_step(steps, values, step=140, threshold=1.5).first_layer_above == 1
