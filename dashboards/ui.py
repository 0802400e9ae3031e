"""What every page shares: the context it renders from, figure and table export, per-run errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from .data import READ_ERRORS, Discovery, Grouping, RunSummary
from .reduce import relative_depth
from .figures import group_color

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Context:
    """One rendering of a page: the runs as found now, and the groups the user picked."""

    root: Path
    discovery: Discovery
    summaries: tuple[RunSummary, ...]  # every run found, readable or not
    grouping: Grouping  # the included, readable runs, grouped
    groups: tuple[str, ...]  # picked groups, in the order picked (colours follow it)
    image_format: str  # "png" | "svg": what the figures' camera button saves

    def members(self, group: str) -> tuple[RunSummary, ...]:
        return self.grouping.groups.get(group, ())

    def group_of(self, run: RunSummary) -> str:
        """The picked group `run` belongs to (a loader of `load_per_group` sees only the run)."""
        for group in self.groups:
            if run in self.members(group):
                return group
        raise KeyError(f"run {run.name} is in none of the picked groups")

    def color(self, group: str) -> str:
        return group_color(self.groups.index(group))

    def group_name(self, group: str) -> str:
        n = len(self.members(group))
        return f"{group} ({n} runs)" if n > 1 else group


def figure_config(image_format: str, filename: str) -> dict:
    """Plotly's modebar camera button saves the figure as PNG or SVG (drawn by the browser, no kaleido)."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": image_format, "filename": filename, "scale": 2 if image_format == "png" else 1},
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "figure"


def show_figure(ctx: Context, fig: go.Figure, name: str) -> None:
    """Draw `fig`; its camera button downloads it as parallax-probe-<name>.<png|svg>."""
    st.plotly_chart(fig, key=f"fig-{_slug(name)}", config=figure_config(ctx.image_format, f"parallax-probe-{_slug(name)}"))


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
        table.to_csv(index=not hide_index).encode("utf-8"),
        file_name=f"parallax-probe-{_slug(name)}.csv",
        mime="text/csv",
        key=f"csv-{_slug(name)}",
    )


def load_per_group(
    ctx: Context, loader: Callable[[RunSummary], T | None], what: str, *, among: Mapping[str, Sequence[tuple[RunSummary, Any]]] | None = None
) -> dict[str, list[tuple[RunSummary, T]]]:
    """loader(run) for every run of every picked group. A run that fails gets an error line and is
    left out; the others are still shown. A loader returning None means "the run has none of it".

    among: only the runs of an earlier load_per_group's result (a layer's spectra for the runs
    that have spectra), so runs already reported as lacking something are not reported again.
    """
    out: dict[str, list[tuple[RunSummary, T]]] = {}
    missing = []
    for group in ctx.groups:
        runs = ctx.members(group) if among is None else [run for run, _ in among.get(group, ())]
        for run in runs:
            try:
                # Shown only if the read takes over half a second: a large run not cached yet.
                with st.spinner(f"Reading {what} of {run.name}"):
                    value = loader(run)
            except READ_ERRORS as error:
                st.error(f"**{run.name}**: could not read {what}: {error}")
                continue
            if value is None:
                missing.append(run.name)
                continue
            out.setdefault(group, []).append((run, value))
    if missing:
        st.info(f"No {what} in: {', '.join(missing)} (a softmax model, or a run logged without it).")
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
        listed = ", ".join(f"{g}: {d}" for g, d in depths.items())
        st.info(
            f"The groups have different depths ({listed} layers): layers are compared by relative depth, "
            "layer / (L-1), so first and last layers line up; a difference pairs each layer with the nearest one."
        )
    return DepthAxis(relative, depths)


def no_groups_message(ctx: Context) -> bool:
    """Tell the user why there is nothing to draw; True if that is the case."""
    if not ctx.summaries:
        st.info(f"No runs found in {ctx.root}.")
        return True
    if not any(ctx.members(g) for g in ctx.groups):
        st.info("No group picked, or the picked groups hold no readable run: pick groups in the sidebar.")
        return True
    return False
