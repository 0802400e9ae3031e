"""Rank collapse: the analysis layer's statistics (`parallax_probe.analysis.build_report`) for the picked groups.

Per group and layer: final COR and W_R ranks, collapse onsets; between the first two groups:
per-layer differences with intervals and an across-layer test. The report reads the runs
itself, through the store (`data.collapse_report`, cached by `cache.collapse_report`); this page
only arranges its numbers into tables and a figure.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from parallax_probe.analysis import render_json, render_markdown
from parallax_probe.analysis.groups import DIFFERENCE_RULE, difference_name

from . import cache
from .data import MAX_ANALYSIS_ROWS
from .figures import differences_figure
from .text import md
from .ui import Context, no_groups_message, show_figure, show_table


def group_table(report) -> pd.DataFrame:
    rows = []
    for group in report.groups:
        for layer in group.layers:
            rows.append({
                "group": group.name, "layer": layer.layer, "runs": len(group.runs), "final COR": layer.final_cor,
                "final stable rank": layer.final_stable_rank, "final effective rank": layer.final_effective_rank,
                "stable rank collapse onsets": _onsets(layer.stable_rank_onsets),
                "effective rank collapse onsets": _onsets(layer.effective_rank_onsets),
            })
    return pd.DataFrame(rows)


def _onsets(onsets: tuple) -> str:
    if not onsets:
        return "not evaluated"
    return ", ".join("none" if onset is None else str(onset) for onset in onsets)


def comparison_table(comparison) -> pd.DataFrame:
    return pd.DataFrame([
        {"layer": d.layer, f"mean {comparison.group_a}": d.mean_a, f"mean {comparison.group_b}": d.mean_b,
         "difference": d.difference, "interval low": d.interval_low, "interval high": d.interval_high,
         "runs a": d.n_a, "runs b": d.n_b}
        for d in comparison.layers
    ])


def runs_table(report) -> pd.DataFrame:
    rows = []
    for run in report.runs:
        for layer in run.layers:
            for field in ("cor", "stable_rank", "effective_rank"):
                stats = getattr(layer, field)
                if stats is None:
                    continue
                rows.append({
                    "run": run.run, "group": run.group, "layer": layer.layer, "series": field, "peak": stats.peak,
                    "peak step": stats.peak_step, "final": stats.final, "final step": stats.final_step,
                    "final / peak": stats.final_over_peak, "collapse onset": stats.collapse_onset,
                    "trend per step": None if stats.trend is None else stats.trend.slope,
                })
    return pd.DataFrame(rows)


def render(ctx: Context) -> None:
    st.header("Rank collapse")
    if no_groups_message(ctx):
        return
    try:
        report, thinned = cache.collapse_report({group: ctx.members(group) for group in ctx.groups}, ctx.grouping.key)
    except (OSError, ValueError, KeyError) as error:
        st.error(f"The report could not be built: {md(error)}")
        return
    settings = report.settings
    st.caption(
        f"Collapse: the value stays below {settings.collapse_threshold:g} x its "
        f"{settings.collapse_relative_to or 'absolute threshold'} to the end, for at least "
        f"{'a tenth of the logged span' if settings.persistence is None else f'{settings.persistence:g} steps'}. "
        f"Groups by {md(ctx.grouping.key)}; {DIFFERENCE_RULE}, as on the other pages and in `parallax-probe analyze`. "
        "The report reads whole runs (the sidebar's step range does not apply)."
    )
    for problem in report.problems:
        st.warning(md(f"{problem.run}: {problem.message}" if problem.run else problem.message))
    if thinned:
        st.info(
            f"Long tables were thinned to about {MAX_ANALYSIS_ROWS:,} rows for the analysis (its Theil-Sen trend takes all pairs "
            "of points). The last row and every layer's peak of COR and of the stable rank are kept, so final values and those "
            "peaks are exact; trends and onsets are on the thinner grid: " + md("; ".join(thinned))
        )

    st.subheader("Per group and layer")
    show_table(group_table(report), "rank collapse per group")
    for comparison in report.comparisons:
        st.subheader(md(f"{difference_name(comparison.group_a, comparison.group_b)}: {comparison.statistic}"))
        table = comparison_table(comparison)
        if comparison.across_layers is not None:
            test = comparison.across_layers
            st.markdown(
                f"Across layers: {test.test}, {test.n_nonzero} non-zero of {test.n_layers} layers, "
                f"p = {test.p_value:.3g} ({test.p_value_method}), rank-biserial {test.rank_biserial:+.2f}."
            )
        for note in comparison.notes:
            st.caption(md(note))
        fig = differences_figure(
            table["layer"].to_numpy(),
            table["difference"].astype(float).to_numpy(),
            table["interval low"].astype(float).to_numpy(),
            table["interval high"].astype(float).to_numpy(),
            title=f"{difference_name(comparison.group_a, comparison.group_b)}, per layer"
            + (
                f" ({comparison.confidence:.0%} interval: {comparison.interval_method})"
                if comparison.interval_method
                else " (no interval: too few seeds)"
            ),
            y_title=comparison.statistic,
        )
        show_figure(ctx, fig, f"collapse-{comparison.statistic}", table, log_y=False)
        show_table(table, f"{comparison.statistic} differences")
    st.subheader("Per run")
    show_table(runs_table(report), "rank collapse per run")
    for note in report.notes:
        st.caption(md(note))
    left, right = st.columns(2)
    left.download_button(
        "Download the report (Markdown)", render_markdown(report).encode(), "parallax-probe-report.md", "text/markdown", key="report-md"
    )
    right.download_button(
        "Download the report (JSON)", render_json(report).encode(), "parallax-probe-report.json", "application/json", key="report-json"
    )
