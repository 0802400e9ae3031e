"""Rank-collapse statistics of parallax-probe runs: pure functions from arrays to small dataclasses.

Imports numpy, scipy and the run store (never torch), so runs can be analysed on any machine.

spectral:   rank measures of a matrix or its singular values (stable_rank, effective_rank, ...)
trajectory: one logged series over training: peak, final, trend, collapse onset
depth:      a per-layer statistic against layer index at one step
compare:    two groups of runs per layer: differences, bootstrap intervals, a Wilcoxon test
groups:     what a metadata key means, when runs were trained the same way, the order and sign of comparisons
runs:       the read model shared with the dashboards: grouping, the common shape, per-layer columns
report:     all of the above over runs, rendered as text, Markdown or JSON
"""

from .compare import AcrossLayerTest, GroupComparison, LayerDifference, compare_groups, smallest_wilcoxon_p
from .depth import DepthTrend, depth_trend, depth_trend_at_step
from .report import Problem, Report, RunLike, analyze_main, build_report, render_json, render_markdown, render_text
from .spectral import (
    condition_number,
    effective_rank,
    energy_rank,
    marchenko_pastur_noise_scale,
    marchenko_pastur_outliers,
    numerical_rank,
    participation_ratio,
    spectral_entropy,
    stable_rank,
)
from .trajectory import TrajectoryStats, Trend, trajectory_stats

__all__ = [
    "AcrossLayerTest",
    "DepthTrend",
    "GroupComparison",
    "LayerDifference",
    "Problem",
    "Report",
    "RunLike",
    "TrajectoryStats",
    "Trend",
    "analyze_main",
    "build_report",
    "compare_groups",
    "condition_number",
    "depth_trend",
    "depth_trend_at_step",
    "effective_rank",
    "energy_rank",
    "marchenko_pastur_noise_scale",
    "marchenko_pastur_outliers",
    "numerical_rank",
    "participation_ratio",
    "render_json",
    "render_markdown",
    "render_text",
    "smallest_wilcoxon_p",
    "spectral_entropy",
    "stable_rank",
    "trajectory_stats",
]
