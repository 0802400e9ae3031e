"""COR: the correction-to-output ratio ||c|| / ||o_sm|| per layer over training, group against group.

Four views: layer x step heatmaps of mean COR (groups side by side on one colour scale,
and their difference); per-layer curves with EMA smoothing and a band; a head x step
heatmap of one layer; and COR against depth at one step.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from parallax_probe.analysis.groups import DIFFERENCE_RULE, difference_name
from parallax_probe.store import COR_MEAN, COR_P50, COR_P90

from . import cache, reduce
from .data import LayerSeries, RunSummary
from .figures import HeatPanel, Line, heatmaps_figure, heatmaps_table, lines_figure, lines_table, panels_figure
from .reduce import HEATMAP_BUCKETS, Aggregate
from .text import md
from .ui import Context, DepthAxis, depth_axis, load_per_group, no_groups_message, open_view, show_figure, show_table

HEATMAPS, CURVES, HEADS, DEPTH = "Layer x step", "Per layer", "Per head", "Against depth"
VIEWS = (HEATMAPS, CURVES, HEADS, DEPTH)
BAND_TOKENS = "p50-p90 over tokens"
BAND_SEEDS = "min-max over seeds"
BAND_NONE = "none"
# The unsmoothed line behind a smoothed one: visible, but clearly not the line to read.
RAW_OPACITY = 0.3


def group_aggregates(series: dict[str, list[tuple[RunSummary, LayerSeries]]], name: str) -> dict[str, Aggregate]:
    """Per group: the seeds' (N, L) series of `name` as mean and min/max over runs."""
    return {
        group: reduce.aggregate([s.step for _, s in pairs], [s.values[name] for _, s in pairs])
        for group, pairs in series.items()
    }


def heatmaps_section(ctx: Context, means: dict[str, Aggregate], axis: DepthAxis) -> None:
    panels, difference = heatmap_panels(ctx, means, axis)
    fig = heatmaps_figure(
        panels, title="mean COR, layer x step (mean over heads and seeds; one colour scale)", value_title="COR",
        x_title="step", y_title=axis.title, difference=difference,
    )
    if difference is not None:
        st.caption(f"Sign: {DIFFERENCE_RULE}, as in `parallax-probe analyze`.")
    show_figure(ctx, fig, "cor-heatmaps", partial(heatmaps_table, [*panels, *([difference] if difference else [])]), log_y=False)


def heatmap_panels(ctx: Context, aggregates: dict[str, Aggregate], axis: DepthAxis) -> tuple[list[HeatPanel], HeatPanel | None]:
    """One (L, B) panel per group, and the first group minus the second on their common steps."""
    panels = []
    for group, agg in aggregates.items():
        x, z = reduce.bucket_mean(agg.step, agg.mean, HEATMAP_BUCKETS)
        panels.append(HeatPanel(ctx.group_name(group), x, axis.positions(group), z.T))
    difference = None
    if len(aggregates) >= 2:
        (a, agg_a), (b, agg_b) = list(aggregates.items())[:2]
        common, ia, ib = np.intersect1d(agg_a.step, agg_b.step, assume_unique=True, return_indices=True)
        if len(common):
            values_a, values_b = agg_a.mean[ia], agg_b.mean[ib]
            deeper = a if axis.depths[a] >= axis.depths[b] else b
            if axis.relative:
                # Pair every layer of the deeper model with the nearest relative depth of the other.
                values_a = reduce.resample_layers(values_a, axis.depths[deeper])
                values_b = reduce.resample_layers(values_b, axis.depths[deeper])
            x, z = reduce.bucket_mean(common, values_a - values_b, HEATMAP_BUCKETS)
            difference = HeatPanel(difference_name(a, b), x, axis.positions(deeper), z.T)
        else:
            st.info(f"{md(a)} and {md(b)} share no logged step, so there is no difference map.")
    return panels, difference


def token_quantiles(ctx: Context) -> dict[str, dict[str, Aggregate]]:
    """p50 and p90 of COR per group: {COR_P50: {group: Aggregate}, COR_P90: {...}}."""
    loaded = load_per_group(ctx, lambda r: (cache.layer_series(r, COR_P50), cache.layer_series(r, COR_P90)) if COR_P50 in r.names else None,
                            "COR quantiles")
    return {
        name: {
            group: reduce.aggregate([p[index].step for _, p in pairs], [p[index].values[name] for _, p in pairs])
            for group, pairs in loaded.items()
        }
        for name, index in ((COR_P50, 0), (COR_P90, 1))
    }


def curves_panels(ctx: Context, means: dict[str, Aggregate], axis: DepthAxis, layers: list[int], smoothing: float, band: str,
                  quantiles: dict[str, dict[str, Aggregate]]) -> list[tuple[str, list[Line]]]:
    """Per layer, per group: the (smoothed) mean with its band; with smoothing, the raw mean faintly behind it."""
    panels = []
    for layer in layers:
        lines = []
        for group, agg in means.items():
            layer_g = axis.layer_of(group, layer)
            low = high = None
            if band == BAND_TOKENS and group in quantiles.get(COR_P50, {}):
                low = reduce.ema(reduce.on_steps(quantiles[COR_P50][group], agg.step, layer_g), smoothing)
                high = reduce.ema(reduce.on_steps(quantiles[COR_P90][group], agg.step, layer_g), smoothing)
            elif band == BAND_SEEDS:
                low = reduce.ema(agg.low[:, layer_g], smoothing)
                high = reduce.ema(agg.high[:, layer_g], smoothing)
            if smoothing > 0:
                lines.append(Line(f"{ctx.group_name(group)}, not smoothed", agg.step, agg.mean[:, layer_g], ctx.color(group),
                                  showlegend=False, legendgroup=group, width=1, opacity=RAW_OPACITY))
            lines.append(
                Line(ctx.group_name(group), agg.step, reduce.ema(agg.mean[:, layer_g], smoothing), ctx.color(group),
                     low=low, high=high, band_color=ctx.band_color(group), showlegend=not panels, legendgroup=group)
            )
        title = f"layer {layer}" + (f" (relative depth {reduce.relative_depth(axis.reference)[layer]:.2f})" if axis.relative else "")
        panels.append((title, lines))
    return panels


def curves_figure(panels: list[tuple[str, list[Line]]], smoothing: float, band: str):
    note = {BAND_TOKENS: "; band: p50-p90 of the tokens",
            BAND_SEEDS: "; band: min to max over the group's runs", BAND_NONE: ""}[band]
    smoothed = f"; EMA {smoothing:g} (faint: raw)" if smoothing > 0 else ""
    return panels_figure(panels, title=f"mean COR per layer (mean over heads and seeds){note}{smoothed}", x_title="step", y_title="COR")


def curves_section(ctx: Context, means: dict[str, Aggregate], axis: DepthAxis) -> None:
    left, middle, right = st.columns([2, 1, 1])
    layers = left.multiselect("Layers", list(range(axis.reference)), default=reduce.default_layers(axis.reference), key="cor-layers",
                              bind="query-params")
    smoothing = middle.slider("EMA smoothing", 0.0, 0.99, 0.6, 0.01, key="cor-ema", bind="query-params",
                              help="TensorBoard-style: 0 is off. The raw line stays faintly behind the smoothed one.")
    band = right.radio("Band", [BAND_TOKENS, BAND_SEEDS, BAND_NONE], key="cor-band", bind="query-params")
    if not layers:
        return
    quantiles = token_quantiles(ctx) if band == BAND_TOKENS else {}
    panels = curves_panels(ctx, means, axis, sorted(layers), smoothing, band, quantiles)
    show_figure(ctx, curves_figure(panels, smoothing, band), "cor-per-layer", partial(lines_table, panels))


def heads_section(ctx: Context, series: dict, axis: DepthAxis) -> None:
    layer = st.selectbox("Layer", list(range(axis.reference)), index=axis.reference - 1, key="cor-head-layer", bind="query-params")
    buckets = load_per_group(ctx, lambda r: cache.head_buckets(r, COR_MEAN, axis.layer_of(ctx.group_of(r), layer)), "per-head COR",
                             among=series)
    panels = []
    for group, pairs in buckets.items():
        layer_g = axis.layer_of(group, layer)
        agg = reduce.aggregate([b.step for _, b in pairs], [b.values for _, b in pairs])
        panels.append(HeatPanel(f"{ctx.group_name(group)}, layer {layer_g}", agg.step, np.arange(agg.mean.shape[1]), agg.mean.T))
    fig = heatmaps_figure(panels, title="mean COR per head (mean over seeds)", value_title="COR", x_title="step", y_title="head")
    show_figure(ctx, fig, "cor-per-head", partial(heatmaps_table, panels), log_y=False)


def depth_section(ctx: Context, means: dict[str, Aggregate], axis: DepthAxis) -> None:
    steps = np.unique(np.concatenate([agg.step for agg in means.values()]))
    left, right = st.columns([3, 1])
    latest = right.checkbox("Last logged step", value=True, key="cor-depth-latest", bind="query-params", help="Follows a live run.")
    step = int(steps[-1])
    if not latest and len(steps) > 1:
        step = left.slider("Step", int(steps[0]), int(steps[-1]), int(steps[-1]), key="cor-depth-step", bind="query-params")
    lines, rows = [], []
    for group, agg in means.items():
        i = reduce.nearest_at_or_before(agg.step, step)
        x = axis.positions(group)
        lines.append(
            Line(f"{ctx.group_name(group)} at step {agg.step[i]}", x, agg.mean[i], ctx.color(group),
                 low=agg.low[i], high=agg.high[i], band_color=ctx.band_color(group))
        )
        for layer in range(len(x)):
            rows.append({"group": group, "layer": layer, "relative depth": float(reduce.relative_depth(len(x))[layer]),
                         "step": int(agg.step[i]), "mean COR": float(agg.mean[i, layer]),
                         "min over runs": float(agg.low[i, layer]), "max over runs": float(agg.high[i, layer]), "runs": agg.n_runs})
    fig = lines_figure(lines, title=f"mean COR against depth at step {step} (band: min-max over seeds)", x_title=axis.title, y_title="COR")
    show_figure(ctx, fig, "cor-vs-depth", partial(lines_table, [("", lines)]))
    show_table(pd.DataFrame(rows), "COR vs depth")


def render(ctx: Context) -> None:
    st.header("COR: correction-to-output ratio")
    st.caption(
        "Per token ||c|| / ||o_sm||: the correction branch against the softmax output "
        "(docs/definitions.md section 2). "
        f"Each layer's value is the mean over its heads of the per-head token mean (`{COR_MEAN}`; section 3)."
    )
    if no_groups_message(ctx):
        return
    # A softmax baseline has no COR: it is named in a note, and drawn on the Training page.
    series = load_per_group(ctx, lambda r: cache.layer_series(r, COR_MEAN) if COR_MEAN in r.names else None, "COR statistics")
    if not series:
        return
    axis = depth_axis(ctx, list(series))
    means = group_aggregates(series, COR_MEAN)
    view = open_view(VIEWS, "cor-view")
    if view == HEATMAPS:
        heatmaps_section(ctx, means, axis)
    elif view == CURVES:
        curves_section(ctx, means, axis)
    elif view == HEADS:
        heads_section(ctx, series, axis)
    else:
        depth_section(ctx, means, axis)
