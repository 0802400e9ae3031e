"""Summary statistics of one logged series over training (a W_R rank, a COR) and its collapse onset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

__all__ = ["Trend", "TrajectoryStats", "trajectory_stats"]

# Theil-Sen on two points is one slope with no spread; three is the least that gives an interval.
MIN_POINTS_FOR_TREND = 3
MAX_POINTS_FOR_TREND = 2000
"""Theil-Sen runs on at most this many evenly spaced points (it builds all n(n-1)/2 pair slopes)."""
# A collapse needs a value before it and one below the threshold.
MIN_POINTS_FOR_ONSET = 2
# The default persistence, as a fraction of the logged step span (first to last finite point).
DEFAULT_PERSISTENCE_FRACTION = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class Trend:
    """Theil-Sen slope (value per step) with its confidence interval (Sen 1968).

    The interval assumes independent residuals around a straight line. Training curves are
    autocorrelated, so it is narrower than an honest one: read it as the spread of the
    pairwise slopes, not as a test of "is there a trend".
    """

    slope: float
    slope_low: float
    slope_high: float
    confidence: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TrajectoryStats:
    """One series over training. A field is None where the data cannot give it; `reason` says why.

    collapse_onset: the first logged step from which every later finite value is below
    `collapse_threshold`, provided that trailing stretch spans at least `persistence` steps;
    None when the series ends above the threshold or the stretch is shorter.
    `collapse_evaluated` is False when there were too few points to look for one.
    """

    n_points: int
    n_ignored_nonfinite: int
    initial: float | None
    initial_step: int | float | None
    peak: float | None
    peak_step: int | float | None
    final: float | None
    final_step: int | float | None
    final_over_peak: float | None
    auc: float | None
    trend: Trend | None
    collapse_threshold: float | None
    persistence: float | None
    collapse_evaluated: bool
    collapse_onset: int | float | None
    reason: str | None


def _collapse_onset(steps: np.ndarray, values: np.ndarray, threshold: float, persistence: float) -> int | None:
    """Index of the first point of the trailing run of values below threshold, or None."""
    above_or_at = np.flatnonzero(values >= threshold)
    start = 0 if above_or_at.size == 0 else above_or_at[-1] + 1
    if start == len(values):
        return None
    if steps[-1] - steps[start] < persistence:
        return None
    return int(start)


def trajectory_stats(
    steps,
    values,
    *,
    threshold: float = 0.5,
    relative_to: Literal["peak", "initial"] | None = "peak",
    persistence: float | None = None,
    confidence: float = 0.95,
) -> TrajectoryStats:
    """Initial, peak, final, final/peak, area under the curve, Theil-Sen trend and collapse onset.

    steps:  (N,) strictly increasing logged steps.
    values: (N,) the series; NaN and inf are dropped and counted in `n_ignored_nonfinite`.
    threshold, relative_to: the collapse threshold is `threshold * peak` (relative_to="peak",
        the default: below half the peak), `threshold * initial` (relative_to="initial"), or
        `threshold` itself (relative_to=None).
    persistence: how many steps the series must stay below the threshold, counted from the
        first point of the final below-threshold stretch to the last logged point. Default:
        a tenth of the logged span, so a dip in the last few logs is not called a collapse.

    collapse_onset is the first logged step s_k with v_j < threshold for every finite
    point j >= k, provided s_last - s_k >= persistence. A dip that recovers is not a
    collapse: the onset is the start of the stretch that lasts to the end. The true
    crossing lies between s_(k-1) and s_k, so the onset's resolution is the log interval.

    auc is the trapezoid rule over the finite points (gaps bridged linearly).
    Fewer than 3 finite points: no trend; fewer than 2: no auc and no onset; none: only
    the counts. `reason` then says what is missing, so a report can keep printing.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    if steps.ndim != 1 or values.ndim != 1 or steps.shape != values.shape:
        raise ValueError(
            f"steps and values must be 1-D of one length, got shapes {steps.shape} and {values.shape}"
        )
    if relative_to not in ("peak", "initial", None):
        raise ValueError(f"relative_to must be 'peak', 'initial' or None, got {relative_to!r}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if persistence is not None and not persistence >= 0:
        raise ValueError(f"persistence must be >= 0 steps or None, got {persistence}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if steps.size and not np.all(np.diff(steps.astype(np.float64)) > 0):
        raise ValueError("steps must be strictly increasing; sort the series or drop repeated steps")

    finite = np.isfinite(values)
    n_ignored = int(np.count_nonzero(~finite))
    kept_steps, kept_values = steps[finite], values[finite]
    n_points = len(kept_values)
    reasons = []
    if n_ignored:
        reasons.append(f"{n_ignored} non-finite value(s) ignored")

    if n_points == 0:
        reasons.append("no finite values")
        return TrajectoryStats(
            n_points=0,
            n_ignored_nonfinite=n_ignored,
            initial=None,
            initial_step=None,
            peak=None,
            peak_step=None,
            final=None,
            final_step=None,
            final_over_peak=None,
            auc=None,
            trend=None,
            collapse_threshold=None,
            persistence=None,
            collapse_evaluated=False,
            collapse_onset=None,
            reason="; ".join(reasons),
        )

    step_axis = kept_steps.astype(np.float64)
    peak_index = int(np.argmax(kept_values))
    initial, peak, final = (float(kept_values[i]) for i in (0, peak_index, -1))
    final_over_peak = final / peak if peak != 0 else None
    if peak == 0:
        reasons.append("peak is 0, so final/peak is undefined")

    auc = float(np.trapezoid(kept_values, step_axis)) if n_points >= 2 else None
    trend = None
    if n_points >= MIN_POINTS_FOR_TREND:
        # Theil-Sen takes every pair of points: O(n^2) memory (80 GB at 100,000 steps). Above
        # MAX_POINTS_FOR_TREND it runs on evenly spaced points, first and last included.
        pick = np.unique(np.linspace(0, n_points - 1, min(n_points, MAX_POINTS_FOR_TREND)).round().astype(int))
        fit = stats.theilslopes(kept_values[pick], step_axis[pick], alpha=confidence)
        trend = Trend(
            slope=float(fit.slope),
            slope_low=float(fit.low_slope),
            slope_high=float(fit.high_slope),
            confidence=confidence,
        )
    else:
        reasons.append(f"{n_points} finite point(s); a trend needs at least {MIN_POINTS_FOR_TREND}")

    reference = {"peak": peak, "initial": initial, None: 1.0}[relative_to]
    collapse_threshold = threshold * reference
    if persistence is None:
        persistence = DEFAULT_PERSISTENCE_FRACTION * float(step_axis[-1] - step_axis[0])
    onset_index = None
    collapse_evaluated = n_points >= MIN_POINTS_FOR_ONSET
    if collapse_evaluated:
        onset_index = _collapse_onset(step_axis, kept_values, collapse_threshold, persistence)
        if onset_index == 0:
            reasons.append("below the collapse threshold from the first finite point")
    else:
        reasons.append(f"{n_points} finite point(s); a collapse onset needs at least {MIN_POINTS_FOR_ONSET}")

    return TrajectoryStats(
        n_points=n_points,
        n_ignored_nonfinite=n_ignored,
        initial=initial,
        initial_step=kept_steps[0].item(),
        peak=peak,
        peak_step=kept_steps[peak_index].item(),
        final=final,
        final_step=kept_steps[-1].item(),
        final_over_peak=final_over_peak,
        auc=auc,
        trend=trend,
        collapse_threshold=float(collapse_threshold),
        persistence=float(persistence),
        collapse_evaluated=collapse_evaluated,
        collapse_onset=None if onset_index is None else kept_steps[onset_index].item(),
        reason="; ".join(reasons) or None,
    )
