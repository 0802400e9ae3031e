"""trajectory_stats: hand-computed cases, planted collapses, stable series, too little data."""

import numpy as np
import pytest

from parallax_probe.analysis import trajectory_stats

LOG_INTERVAL = 20
STEPS = np.arange(0, 2001, LOG_INTERVAL)


def test_hand_computed_series():
    stats = trajectory_stats([0, 10, 20, 30], [1.0, 3.0, 2.0, 0.5])
    assert (stats.initial, stats.peak, stats.peak_step, stats.final, stats.final_step) == (1.0, 3.0, 10, 0.5, 30)
    assert stats.final_over_peak == pytest.approx(0.5 / 3)
    assert stats.auc == pytest.approx(10 * (1 + 3) / 2 + 10 * (3 + 2) / 2 + 10 * (2 + 0.5) / 2)
    assert stats.collapse_threshold == pytest.approx(1.5)
    # Below 1.5 only at the last point: shorter than the default persistence (a tenth of 30 steps).
    assert stats.collapse_evaluated and stats.collapse_onset is None
    assert trajectory_stats([0, 10, 20, 30], [1.0, 3.0, 2.0, 0.5], persistence=0).collapse_onset == 30


def test_straight_line_has_its_slope():
    stats = trajectory_stats(STEPS, 2.0 * STEPS + 1.0)
    assert stats.trend.slope == pytest.approx(2.0)
    assert stats.trend.slope_low == pytest.approx(2.0) and stats.trend.slope_high == pytest.approx(2.0)


def test_thresholds_relative_to_initial_and_absolute():
    values = np.concatenate([np.full(50, 10.0), np.full(51, 4.0)])
    values[0] = 8.0
    assert trajectory_stats(STEPS, values, threshold=0.6, relative_to="initial").collapse_threshold == pytest.approx(4.8)
    assert trajectory_stats(STEPS, values, threshold=0.6, relative_to="initial").collapse_onset == STEPS[50]
    assert trajectory_stats(STEPS, values, threshold=3.0, relative_to=None).collapse_onset is None


@pytest.mark.parametrize("seed", range(20))
def test_planted_step_collapse_is_found_within_one_log_interval(seed):
    rng = np.random.default_rng(seed)
    planted_step = 1230  # between two logs: the first log at or after it is 1240
    values = np.where(STEPS < planted_step, 50 + rng.normal(0, 2, STEPS.size), 5 + rng.normal(0, 0.5, STEPS.size))
    stats = trajectory_stats(STEPS, values)
    assert planted_step <= stats.collapse_onset < planted_step + LOG_INTERVAL


@pytest.mark.parametrize("seed", range(20))
def test_planted_smooth_collapse_is_found_near_its_midpoint(seed):
    # A logistic fall from 52 to 2 centred at 900, width 50 steps; half the peak is crossed
    # within a few steps of 900, and noise (sd 1.5) moves the first log below it by at most
    # about three log intervals.
    rng = np.random.default_rng(seed)
    midpoint, width = 900, 50.0
    values = 50 / (1 + np.exp((STEPS - midpoint) / width)) + 2 + rng.normal(0, 1.5, STEPS.size)
    stats = trajectory_stats(STEPS, values)
    assert abs(stats.collapse_onset - midpoint) <= 3 * LOG_INTERVAL


def test_flat_series_has_no_onset_and_zero_slope():
    stats = trajectory_stats(STEPS, np.full(STEPS.size, 7.0))
    assert stats.collapse_evaluated and stats.collapse_onset is None
    assert stats.trend.slope == 0.0
    assert stats.final_over_peak == 1.0


def test_noisy_but_stable_series_never_collapse():
    onsets = [
        trajectory_stats(STEPS, 10 + np.random.default_rng(seed).normal(0, 1, STEPS.size)).collapse_onset
        for seed in range(100)
    ]
    assert onsets == [None] * 100


def test_a_dip_that_recovers_is_not_a_collapse_but_a_final_fall_is():
    values = np.full(STEPS.size, 10.0)
    values[20:30] = 1.0  # dip, then recovery
    assert trajectory_stats(STEPS, values).collapse_onset is None
    values[70:] = 1.0  # falls for good at STEPS[70]
    assert trajectory_stats(STEPS, values).collapse_onset == STEPS[70]


def test_a_fall_shorter_than_the_persistence_is_not_a_collapse():
    values = np.full(STEPS.size, 10.0)
    values[-5:] = 1.0  # the last 80 steps
    assert trajectory_stats(STEPS, values, persistence=100).collapse_onset is None
    assert trajectory_stats(STEPS, values, persistence=80).collapse_onset == STEPS[-5]


def test_nan_values_are_ignored_and_counted():
    values = 2.0 * STEPS + 1.0
    with_gaps = values.copy()
    with_gaps[[3, 40, 41]] = np.nan
    stats = trajectory_stats(STEPS, with_gaps)
    assert stats.n_ignored_nonfinite == 3 and stats.n_points == STEPS.size - 3
    assert "3 non-finite" in stats.reason
    assert stats.trend.slope == pytest.approx(2.0)
    assert stats.auc == pytest.approx(np.trapezoid(values, STEPS))  # a line: bridging gaps is exact


def test_too_few_points_give_reasons_not_exceptions():
    one = trajectory_stats([100], [3.0])
    assert (one.initial, one.final, one.peak_step) == (3.0, 3.0, 100)
    assert one.trend is None and one.auc is None and not one.collapse_evaluated
    assert "trend needs at least 3" in one.reason and "onset needs at least 2" in one.reason

    two = trajectory_stats([0, 10], [3.0, 1.0])
    assert two.trend is None and two.auc == pytest.approx(20.0)

    none = trajectory_stats([0, 10], [np.nan, np.nan])
    assert none.n_points == 0 and none.final is None and none.reason == "2 non-finite value(s) ignored; no finite values"

    empty = trajectory_stats([], [])
    assert empty.n_points == 0 and empty.reason == "no finite values"


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="strictly increasing"):
        trajectory_stats([0, 10, 10], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D of one length"):
        trajectory_stats([0, 10], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="relative_to"):
        trajectory_stats([0, 10], [1.0, 2.0], relative_to="final")
