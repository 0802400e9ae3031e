"""What every page shares: the context it renders from, figure and table export, per-run errors.

Text from run files (run names, group labels, errors) goes through `text.md` before any
Streamlit Markdown element; figures escape their own names and titles.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from .data import READ_ERRORS, Discovery, Grouping, RunSummary, crop
from .figures import band_color, group_color
from .reduce import relative_depth
from .text import md

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Context:
    """One rendering of a page: the runs as found now, and the groups the user picked."""

    root: Path
    discovery: Discovery
    summaries: tuple[RunSummary, ...]  # every run found, readable or not
    grouping: Grouping  # the included, readable runs, grouped
    groups: tuple[str, ...]  # picked groups, in analysis.groups.group_order (differences: first minus second)
    image_format: str  # "png" | "svg": what the figures' camera button saves
    color_index: Mapping[str, int]  # group label -> palette index, fixed for the session
    step_range: tuple[int, int] | None = None  # every chart of the page shows only these steps
    log_y: bool = False  # log y axes on line charts of positive values

    def members(self, group: str) -> tuple[RunSummary, ...]:
        return self.grouping.groups.get(group, ())

    def group_of(self, run: RunSummary) -> str:
        """The picked group `run` belongs to (a loader of `load_per_group` sees only the run)."""
        for group in self.groups:
            if run in self.members(group):
                return group
        raise KeyError(f"run {run.name} is in none of the picked groups")

    def color(self, group: str) -> str:
        return group_color(self.color_index[group])

    def band_color(self, group: str) -> str:
        return band_color(self.color_index[group])

    def group_name(self, group: str) -> str:
        """The group as legends and titles name it: how many runs its line averages, and which
        of them are still being written or crashed (their data may stop early)."""
        members = self.members(group)
        parts = [f"{len(members)} run" + ("s" if len(members) != 1 else "")]
        for status in ("live", "crashed"):
            count = sum(m.status == status for m in members)
            if count:
                parts.append(f"{count} {status}" if len(members) > 1 else status)
        return f"{group} ({', '.join(parts)})"


def figure_config(image_format: str, filename: str) -> dict:
    """Plotly's modebar camera button saves the figure as PNG or SVG (drawn by the browser, no kaleido)."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": image_format, "filename": filename, "scale": 2 if image_format == "png" else 1},
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "figure"


def _csv(table: pd.DataFrame | Callable[[], pd.DataFrame], index: bool = False) -> bytes:
    return (table() if callable(table) else table).to_csv(index=index).encode("utf-8")


def show_figure(
    ctx: Context, fig: go.Figure, name: str, table: pd.DataFrame | Callable[[], pd.DataFrame], *, log_y: bool = True
) -> None:
    """Draw `fig` and a button that downloads `table`, its data, as CSV; the camera button saves
    the figure as parallax-probe-<name>.<png|svg>.

    table: the data, or a function that builds it. The CSV is made only when the button is
        clicked (Streamlit calls the function then): a figure's full-resolution table of a
        100,000-step run takes 0.1-0.3 s to write, which every rerun of the page would pay.
    log_y: whether the sidebar's log axes apply (line charts of positive values: not
        heatmaps, not differences, which can be negative).
    """
    if ctx.log_y and log_y:
        fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    st.plotly_chart(fig, key=f"fig-{_slug(name)}", config=figure_config(ctx.image_format, f"parallax-probe-{_slug(name)}"))
    st.download_button(
        f"Download {name} (CSV)", partial(_csv, table), file_name=f"parallax-probe-{_slug(name)}.csv",
        mime="text/csv", key=f"figure-csv-{_slug(name)}", on_click="ignore",
    )


def open_view(views: Sequence[str], key: str) -> str:
    """The view of a page to draw, picked with a row of buttons; only that view is computed and
    sent, so a page draws one view's figures, not all of them (each Plotly chart costs the
    browser a few hundred ms). The view is in the URL (?KEY=label), so views can be linked."""
    return st.segmented_control(
        "View", list(views), default=views[0], required=True, key=key, bind="query-params", label_visibility="collapsed"
    )


def show_table(table: pd.DataFrame, name: str, *, hide_index: bool = True) -> None:
    """A table and a button that downloads it as CSV."""
    st.dataframe(table, hide_index=hide_index, width="stretch")
    st.download_button(
        f"Download {name} (CSV)",
        partial(_csv, table, not hide_index),
        file_name=f"parallax-probe-{_slug(name)}.csv",
        mime="text/csv",
        key=f"csv-{_slug(name)}",
        on_click="ignore",
    )


def load_per_group(
    ctx: Context,
    loader: Callable[[RunSummary], T | None],
    what: str,
    *,
    among: Mapping[str, Sequence[tuple[RunSummary, Any]]] | None = None,
) -> dict[str, list[tuple[RunSummary, T]]]:
    """loader(run) for every run of every picked group. A run that fails gets an error line and is
    left out; the others are still shown. A loader returning None means "the run has none of it".

    among: only the runs of an earlier load_per_group's result (a layer's spectra for the runs
    that have spectra), so runs already reported as lacking something are not reported again.
    """
    out: dict[str, list[tuple[RunSummary, T]]] = {}
    missing, outside = [], []
    for group in ctx.groups:
        runs = ctx.members(group) if among is None else [run for run, _ in among.get(group, ())]
        for run in runs:
            try:
                # Shown only if the read takes over half a second: a large run not cached yet.
                with st.spinner(f"Reading {md(what)} of {md(run.name)}"):
                    value = loader(run)
            except READ_ERRORS as error:
                st.error(f"**{md(run.name)}**: could not read {md(what)}: {md(error)}")
                continue
            if value is None:
                missing.append(run.name)
                continue
            if ctx.step_range is not None:
                value = crop(value, *ctx.step_range)
                if value is None:
                    outside.append(run.name)
                    continue
            out.setdefault(group, []).append((run, value))
    if missing:
        st.info(f"No {md(what)} in: {md(', '.join(missing))} (a softmax model, or a run logged without it).")
    if outside:
        low, high = ctx.step_range
        st.info(f"No {md(what)} between steps {low} and {high} in: {md(', '.join(outside))}.")
    return out


@dataclass(frozen=True, slots=True)
class DepthAxis:
    """How layers are placed on an axis when the groups may differ in depth.

    Same depth everywhere: layer index. Different depths: relative depth, layer / (L - 1),
    so the first and last layers of every model line up.
    """

    relative: bool
    depths: dict[str, int]

    @property
    def title(self) -> str:
        return "relative depth (layer / (L-1))" if self.relative else "layer"

    def positions(self, group: str) -> np.ndarray:
        layers = self.depths[group]
        return relative_depth(layers) if self.relative else np.arange(layers)

    @property
    def reference(self) -> int:
        return max(self.depths.values())

    def layer_of(self, group: str, reference_layer: int) -> int:
        """The group's layer nearest in relative depth to `reference_layer` of the deepest group."""
        if not self.relative:
            return reference_layer
        target = relative_depth(self.reference)[reference_layer]
        return int(np.abs(relative_depth(self.depths[group]) - target).argmin())


def depth_axis(ctx: Context, groups: list[str] | None = None) -> DepthAxis:
    groups = groups if groups is not None else [g for g in ctx.groups if ctx.members(g)]
    depths = {g: ctx.members(g)[0].layers or 0 for g in groups}
    relative = len(set(depths.values())) > 1
    if relative:
        listed = md(", ".join(f"{g}: {d}" for g, d in depths.items()))
        st.info(
            f"The groups have different depths ({listed} layers): layers are compared by relative depth, "
            "layer / (L-1), so first and last layers line up; a difference pairs each layer with the nearest one."
        )
    return DepthAxis(relative, depths)


def no_groups_message(ctx: Context) -> bool:
    """Tell the user why there is nothing to draw; True if that is the case."""
    if not ctx.summaries:
        st.info(f"No runs found in {md(ctx.root)}.")
        return True
    if not any(ctx.members(g) for g in ctx.groups):
        st.info("No group picked, or the picked groups hold no readable run: pick groups in the sidebar.")
        return True
    return False
