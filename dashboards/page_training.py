"""Training: loss, held-out accuracy, learning rate (and gradient norm, throughput) per group.

These are the run-level scalars of the store's "scalars" table; evaluation columns are NaN
on rows without an evaluation, so each series is drawn over its own finite points.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st

from . import cache, reduce
from .data import RunSummary, Scalars
from .figures import Line, lines_table, panels_figure
from .ui import Context, load_per_group, no_groups_message, show_figure

# (panel title, [(scalar name, line label suffix, dash, smoothed?)]). Only dense training
# curves are smoothed; evaluation points (a few per run) never are: an EMA over four
# evaluations would show a value no evaluation gave.
PANELS = (
    ("loss (dotted: held-out)", [("loss", "", None, True), ("eval_loss", "held-out", "dot", False)]),
    ("held-out accuracy", [("eval_accuracy", "", None, False)]),
    ("learning rate (multiplier of the peak)", [("lr_multiplier", "", None, False), ("lr", "", None, False)]),
    ("gradient norm", [("grad_norm", "", None, True)]),
    ("tokens per second", [("tokens_per_second", "", None, True)]),
)
# The unsmoothed line behind a smoothed one: visible, but clearly not the line to read.
RAW_OPACITY = 0.3


def finite_series(pairs: list[tuple[RunSummary, Scalars]], name: str) -> reduce.Aggregate | None:
    """Mean and min/max over runs of one scalar, each run over the rows where it is finite."""
    steps, values = [], []
    for _, scalars in pairs:
        column = scalars.values.get(name)
        if column is None:
            continue
        finite = np.isfinite(column)
        if finite.any():
            steps.append(scalars.step[finite])
            values.append(column[finite])
    return reduce.aggregate(steps, values) if steps else None


def training_panels(ctx: Context, series: dict, smoothing: float) -> list[tuple[str, list[Line]]]:
    panels, shown = [], set()
    for title, columns in PANELS:
        lines = []
        for group, pairs in series.items():
            for name, suffix, dash, smooth in columns:
                agg = finite_series(pairs, name)
                if agg is None:
                    continue
                weight = smoothing if smooth else 0.0
                label = f"{ctx.group_name(group)}" + (f" {suffix}" if suffix else "")
                if weight > 0:
                    lines.append(Line(f"{label}, not smoothed", agg.step, agg.mean, ctx.color(group), dash=dash, legendgroup=label,
                                      showlegend=False, width=1, opacity=RAW_OPACITY))
                lines.append(Line(label, agg.step, reduce.ema(agg.mean, weight), ctx.color(group), low=reduce.ema(agg.low, weight),
                                  high=reduce.ema(agg.high, weight), band_color=ctx.band_color(group), dash=dash, legendgroup=label,
                                  showlegend=label not in shown))
                shown.add(label)
        if lines:
            panels.append((title, lines))
    return panels


def render(ctx: Context) -> None:
    st.header("Training")
    if no_groups_message(ctx):
        return
    series = load_per_group(ctx, cache.scalars, "training scalars")
    if not series:
        return
    smoothing = st.slider("EMA smoothing (training loss, gradient norm, throughput)", 0.0, 0.99, 0.6, 0.01, key="training-ema",
                          bind="query-params", help="Held-out evaluations and the learning rate are never smoothed; "
                          "the raw line stays faintly behind a smoothed one.")
    panels = training_panels(ctx, series, smoothing)
    if not panels:
        st.info("These runs logged no training scalars.")
        return
    smoothed = f"; training loss, gradient norm and throughput: EMA {smoothing:g}, faint: not smoothed" if smoothing > 0 else ""
    fig = panels_figure(panels, title=f"training (mean over seeds, band: min-max over seeds{smoothed})", x_title="step", y_title="",
                        panel_height=300)
    show_figure(ctx, fig, "training", partial(lines_table, panels))
