"""W_R rank: does the probe's weight keep its rank? Ranks over training, spectra, heads, the W_RK circuit.

Stable rank sum s^2 / s_max^2 and effective rank exp(entropy of s / sum s) of W_R
(`r_proj.weight`, (H*D, d_model)), per layer and per head block; the W_RK circuit is
W_R,h^T W_K,h per head (docs/definitions.md section 2). Spectra are logged less often than COR.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from . import cache, reduce
from .data import RunSummary, Spectra
from .figures import HeatPanel, Line, heatmaps_figure, heatmaps_table, layer_color, lines_figure, lines_table, panels_figure
from .reduce import Aggregate
from .ui import Context, DepthAxis, depth_axis, load_per_group, no_groups_message, open_view, show_figure, show_table

STABLE, EFFECTIVE, EFFECTIVE_NORMALISED = "stable rank", "effective rank", "effective rank / min(m, n)"
RANKS, SPECTRUM, HEADS, CIRCUIT = "Rank over training", "Spectrum", "Per head", "W_RK circuit"
VIEWS = (RANKS, SPECTRUM, HEADS, CIRCUIT)


def rank_values(spectra: Spectra, measure: str) -> np.ndarray:
    """(M, L) of the chosen rank measure of the whole W_R."""
    if measure == STABLE:
        return spectra.stable_rank
    if measure == EFFECTIVE_NORMALISED:
        # min(m, n) of W_R is the number of singular values stored per row.
        return spectra.effective_rank / spectra.k
    return spectra.effective_rank


def aggregate_ranks(pairs: list[tuple[RunSummary, Spectra]], measure: str) -> Aggregate:
    return reduce.aggregate([s.step for _, s in pairs], [rank_values(s, measure) for _, s in pairs])


def head_rank_values(spectra: Spectra, measure: str) -> np.ndarray:
    """(M, L, H) of the chosen rank measure of each head's block of W_R."""
    if measure == STABLE:
        return spectra.head_stable_rank
    if measure == EFFECTIVE_NORMALISED:
        # A head's block is (D, d_model): min(m, n) is the number of singular values stored per head.
        return spectra.head_effective_rank / spectra.head_k
    return spectra.head_effective_rank


def aggregate_head_ranks(pairs: list[tuple[RunSummary, Spectra]], measure: str) -> Aggregate:
    return reduce.aggregate([s.step for _, s in pairs], [head_rank_values(s, measure) for _, s in pairs])


def ranks_over_training(ctx: Context, spectra: dict, measure: str, axis: DepthAxis) -> None:
    panels = []
    for group, pairs in spectra.items():
        agg = aggregate_ranks(pairs, measure)
        layers = agg.mean.shape[1]
        lines = [
            Line(f"layer {layer}", agg.step, agg.mean[:, layer], layer_color(layer, layers), legendgroup=f"layer {layer}",
                 showlegend=not panels and layers <= 32, width=1.5)
            for layer in range(layers)
        ]
        panels.append((ctx.group_name(group), lines))
    fig = panels_figure(
        panels, title=f"W_R {measure} per layer (mean over seeds; colour: depth, dark = first layer)", x_title="step",
        y_title=measure, columns=len(panels), shared_y=True, panel_height=380,
    )
    show_figure(ctx, fig, "wr-rank-per-layer", partial(lines_table, panels))

    layer = st.selectbox("Layer", list(range(axis.reference)), index=axis.reference - 1, key="wr-layer", bind="query-params")
    lines = []
    for group, pairs in spectra.items():
        layer_g = axis.layer_of(group, layer)
        for name, dash in ((STABLE, None), (EFFECTIVE, "dot")):
            agg = aggregate_ranks(pairs, name)
            lines.append(Line(f"{ctx.group_name(group)}: {name}", agg.step, agg.mean[:, layer_g], ctx.color(group),
                              low=agg.low[:, layer_g], high=agg.high[:, layer_g], band_color=ctx.band_color(group), dash=dash))
    fig = lines_figure(
        lines, title=f"W_R stable and effective rank, layer {layer} (band: min-max over seeds)", x_title="step", y_title="rank"
    )
    show_figure(ctx, fig, "wr-rank-one-layer", partial(lines_table, [("", lines)]))


def step_picker(where, spectra: dict, key: str) -> int:
    """A step of the spectra tables (default: the last); each run then shows its last row at or before it."""
    steps = np.unique(np.concatenate([s.step for pairs in spectra.values() for _, s in pairs]))
    if len(steps) == 1:
        return int(steps[0])
    if len(steps) <= 2000:
        return where.select_slider("Step", options=[int(s) for s in steps], value=int(steps[-1]), key=key, bind="query-params")
    # A select_slider sends every option to the browser; past a few thousand, a plain range slider.
    return where.slider("Step", int(steps[0]), int(steps[-1]), int(steps[-1]), key=key, bind="query-params")


def spectrum_section(ctx: Context, spectra: dict, axis: DepthAxis) -> None:
    left, middle, right = st.columns([1, 3, 1])
    layer = left.selectbox("Layer", list(range(axis.reference)), index=axis.reference - 1, key="wr-spectrum-layer", bind="query-params")
    step = step_picker(middle, spectra, "wr-spectrum-step")
    log_y = right.checkbox("Log scale", value=True, key="wr-spectrum-log", bind="query-params")
    layers = load_per_group(ctx, lambda r: cache.spectrum(r, "wr", axis.layer_of(ctx.group_of(r), layer)), "W_R spectra", among=spectra)
    lines = []
    for group, pairs in layers.items():
        rows = [reduce.nearest_at_or_before(s.step, step) for _, s in pairs]
        values = np.stack([s.values[row] for row, (_, s) in zip(rows, pairs)])  # (R, K)
        at = sorted({int(s.step[row]) for row, (_, s) in zip(rows, pairs)})
        lines.append(Line(f"{ctx.group_name(group)} at step {', '.join(map(str, at))}", np.arange(1, values.shape[1] + 1),
                          values.mean(0), ctx.color(group), low=values.min(0), high=values.max(0),
                          band_color=ctx.band_color(group)))
    fig = lines_figure(lines, title=f"W_R singular values, layer {layer} (band: min-max over seeds)", x_title="index k",
                       y_title="singular value", log_y=log_y)
    show_figure(ctx, fig, "wr-spectrum", partial(lines_table, [("", lines)]), log_y=False)


def heads_section(ctx: Context, spectra: dict, measure: str) -> None:
    with_heads = {g: pairs for g, pairs in spectra.items() if all(s.head_stable_rank is not None for _, s in pairs)}
    if not with_heads:
        st.info("These runs hold no per-head ranks.")
        return
    panels, rows = [], []
    for group, pairs in with_heads.items():
        agg = aggregate_head_ranks(pairs, measure)
        values = agg.mean[-1]  # (L, H) at the group's last spectra step
        panels.append(
            HeatPanel(f"{ctx.group_name(group)}, step {agg.step[-1]}", np.arange(values.shape[1]), np.arange(values.shape[0]), values)
        )
        rows += [{"group": group, "step": int(agg.step[-1]), "layer": layer, "head": head, measure: float(values[layer, head])}
                 for layer in range(values.shape[0]) for head in range(values.shape[1])]
    fig = heatmaps_figure(panels, title=f"W_R {measure} of each head block at the last spectra step (mean over seeds)",
                          value_title=measure, x_title="head", y_title="layer")
    show_figure(ctx, fig, "wr-per-head", partial(heatmaps_table, panels), log_y=False)
    show_table(pd.DataFrame(rows), "per-head ranks")


def circuit_section(ctx: Context, axis: DepthAxis) -> None:
    st.caption("Singular values of W_R,h^T W_K,h (d_model x d_model, rank <= head dim): the bilinear form behind the probe scores r.k.")
    circuits = load_per_group(ctx, lambda r: cache.spectra(r, "wrk"), "W_RK circuit spectra")
    if not circuits:
        return
    left, right = st.columns([1, 3])
    layer = left.selectbox("Layer", list(range(axis.reference)), index=axis.reference - 1, key="wrk-layer", bind="query-params")
    step = step_picker(right, circuits, "wrk-step")
    layers = load_per_group(ctx, lambda r: cache.spectrum(r, "wrk", axis.layer_of(ctx.group_of(r), layer)), "W_RK circuit spectra",
                            among=circuits)
    panels = []
    for group, pairs in layers.items():
        layer_g = axis.layer_of(group, layer)
        values = np.stack([s.values[reduce.nearest_at_or_before(s.step, step)] for _, s in pairs]).mean(0)  # (H, K)
        heads = values.shape[0]
        x = np.arange(1, values.shape[1] + 1)
        lines = [
            Line(
                f"head {h}", x, values[h], layer_color(h, heads), legendgroup=f"head {h}", showlegend=not panels and heads <= 32, width=1.2
            )
            for h in range(heads)
        ]
        panels.append((f"{ctx.group_name(group)}, layer {layer_g}", lines))
    fig = panels_figure(panels, title=f"W_RK singular values per head at step {step} (mean over seeds; colour: head)", x_title="index k",
                        y_title="singular value", columns=len(panels), shared_y=True, log_y=True, panel_height=380)
    show_figure(ctx, fig, "wrk-spectra", partial(lines_table, panels), log_y=False)


def render(ctx: Context) -> None:
    st.header("W_R rank")
    st.caption(
        "Rank collapse of W_R: its stable rank (sum s^2 / s_max^2) or effective rank falls and stays low. "
        "The paper reports W_R keeping its rank under Muon and losing it under AdamW."
    )
    if no_groups_message(ctx):
        return
    spectra = load_per_group(ctx, lambda r: cache.spectra(r, "wr"), "W_R spectra")
    if not spectra:
        return
    axis = depth_axis(ctx, list(spectra))
    view = open_view(VIEWS, "wr-view")
    if view in (RANKS, HEADS):
        measure = st.radio("Rank measure", [STABLE, EFFECTIVE, EFFECTIVE_NORMALISED], horizontal=True, key="wr-measure",
                           bind="query-params")
        if view == RANKS:
            ranks_over_training(ctx, spectra, measure, axis)
        else:
            heads_section(ctx, spectra, measure)
    elif view == SPECTRUM:
        spectrum_section(ctx, spectra, axis)
    else:
        circuit_section(ctx, axis)
