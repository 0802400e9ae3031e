"""Probe norms: how large ||r|| is, per layer over training, as the kernel sees r (after norm and RoPE).

A probe that shrinks to 0 turns the layer back into softmax attention; a large one lets
the correction dominate. The store keeps each head's token mean, p50, p90 and max.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st

from parallax_probe.store import PROBE_GAIN_NORM

from . import cache, reduce
from .figures import HeatPanel, Line, heatmaps_figure, heatmaps_table, layer_color, lines_table, panels_figure
from .reduce import HEATMAP_BUCKETS
from .ui import Context, depth_axis, load_per_group, no_groups_message, open_view, show_figure

STATS = ("mean", "p50", "p90", "max")
NAMES = {stat: f"attn/probe_norm_{stat}" for stat in STATS}
HEATMAP, DISTRIBUTION, GAINS = "Layer x step", "Distribution per layer", "r-norm gain"
VIEWS = (HEATMAP, DISTRIBUTION, GAINS)


def aggregates(ctx: Context, stats: tuple[str, ...]) -> dict[str, dict[str, reduce.Aggregate]]:
    """{group: {stat: Aggregate of its (N, L) series}} for the probe-norm statistics `stats`."""
    series = load_per_group(
        ctx, lambda run: {stat: cache.layer_series(run, NAMES[stat]) for stat in stats} if NAMES["mean"] in run.names else None,
        "probe norms",
    )
    return {
        group: {stat: reduce.aggregate([p[stat].step for _, p in pairs], [p[stat].values[NAMES[stat]] for _, p in pairs]) for stat in stats}
        for group, pairs in series.items()
    }


def distribution_panels(ctx: Context, stats: dict, axis, layers: list[int], smoothing: float) -> list[tuple[str, list[Line]]]:
    """Per layer: the mean line, the p50 to p90 band and the max (dotted), where those are loaded;
    with smoothing, the raw mean faintly behind."""
    plots = []
    for layer in layers:
        lines = []
        for group, by_stat in stats.items():
            layer_g = axis.layer_of(group, layer)
            steps = by_stat["mean"].step
            on = {stat: reduce.ema(reduce.on_steps(agg, steps, layer_g), smoothing) for stat, agg in by_stat.items()}
            name = ctx.group_name(group)
            if smoothing > 0:
                lines.append(Line(f"{name}: mean, not smoothed", steps, reduce.on_steps(by_stat["mean"], steps, layer_g), ctx.color(group),
                                  legendgroup=f"{group} mean", showlegend=False, width=1, opacity=0.3))
            lines.append(Line(f"{name}: mean", steps, on["mean"], ctx.color(group), low=on.get("p50"), high=on.get("p90"),
                              band_color=ctx.band_color(group), legendgroup=f"{group} mean", showlegend=not plots))
            if "max" in on:
                lines.append(Line(f"{name}: max", steps, on["max"], ctx.color(group), dash="dot", width=1,
                                  legendgroup=f"{group} max", showlegend=not plots))
        plots.append((f"layer {layer}", lines))
    return plots


def distribution_figure(plots: list[tuple[str, list[Line]]], smoothing: float):
    smoothed = f"; EMA {smoothing:g} (faint: raw)" if smoothing > 0 else ""
    return panels_figure(
        plots,
        title=f"probe norm ||r||: mean (line), p50 to p90 (band), max (dotted); mean over heads and seeds{smoothed}",
        x_title="step",
        y_title="||r||",
    )


def gain_section(ctx: Context) -> None:
    gains = load_per_group(ctx, lambda r: cache.layer_series(r, PROBE_GAIN_NORM) if PROBE_GAIN_NORM in r.names else None, "r-norm gains")
    gain_panels = []
    for group, pairs in gains.items():
        agg = reduce.aggregate([p.step for _, p in pairs], [p.values[PROBE_GAIN_NORM] for _, p in pairs])
        if not np.isfinite(agg.mean).any():
            continue  # no r-norm in this model: the store keeps NaN
        layers_g = agg.mean.shape[1]
        gain_panels.append((ctx.group_name(group), [
            Line(f"layer {layer}", agg.step, agg.mean[:, layer], layer_color(layer, layers_g), legendgroup=f"layer {layer}",
                 showlegend=not gain_panels and layers_g <= 32, width=1.5)
            for layer in range(layers_g)
        ]))
    if not gain_panels:
        st.info("No r-norm gain in these runs (the model has no r-norm).")
    else:
        fig = panels_figure(gain_panels, title="||r_norm.weight|| per layer (mean over seeds; colour: depth)", x_title="step",
                            y_title="gain norm", columns=len(gain_panels), shared_y=True, panel_height=340)
        show_figure(ctx, fig, "probe-gain-norm", partial(lines_table, gain_panels))


def render(ctx: Context) -> None:
    st.header("Probe norms")
    st.caption("||r|| per token; per layer the mean over heads of each head's token mean, p50, p90 and max.")
    if no_groups_message(ctx):
        return
    means = aggregates(ctx, ("mean",))
    if not means:
        return
    axis = depth_axis(ctx, list(means))
    view = open_view(VIEWS, "probe-view")
    if view == HEATMAP:
        heatmap_section(ctx, means, axis)
    elif view == DISTRIBUTION:
        distribution_section(ctx, axis)
    else:
        gain_section(ctx)


def heatmap_section(ctx: Context, means: dict, axis) -> None:
    panels = []
    for group, by_stat in means.items():
        x, z = reduce.bucket_mean(by_stat["mean"].step, by_stat["mean"].mean, HEATMAP_BUCKETS)
        panels.append(HeatPanel(ctx.group_name(group), x, axis.positions(group), z.T))
    fig = heatmaps_figure(panels, title="mean probe norm ||r||, layer x step (mean over heads and seeds; one colour scale)",
                          value_title="||r||", x_title="step", y_title=axis.title)
    show_figure(ctx, fig, "probe-norm-heatmaps", partial(heatmaps_table, panels), log_y=False)


def distribution_section(ctx: Context, axis) -> None:
    left, right = st.columns([3, 1])
    layers = sorted(left.multiselect("Layers", list(range(axis.reference)), default=reduce.default_layers(axis.reference),
                                     key="probe-layers", bind="query-params"))
    smoothing = right.slider("EMA smoothing", 0.0, 0.99, 0.0, 0.01, key="probe-ema", bind="query-params")
    if layers:
        plots = distribution_panels(ctx, aggregates(ctx, STATS), axis, layers, smoothing)
        show_figure(ctx, distribution_figure(plots, smoothing), "probe-norm-per-layer", partial(lines_table, plots))
