"""Plotly figure builders: reduced arrays in, `go.Figure` out. No Streamlit, no file access.

Traces are SVG (`go.Scatter`), not WebGL: every series arrives downsampled (`reduce.minmax_indices`)
to a few thousand points, which SVG draws quickly, exports as vectors, and renders the
same in a headless browser without a GPU.

Names and titles may hold text from run files (group labels, run names): every one is
escaped here (`text.plot`), so callers pass them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .reduce import LINE_POINTS, minmax_indices
from .text import plot as escape

# One colour per group (colour-blind-safe Okabe-Ito order). Okabe-Ito's yellow (#F0E442) is
# left out: on a white plot it is barely visible; Tol's wine takes its place.
GROUP_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#000000")
SEQUENTIAL = "Viridis"
# Lines coloured by depth use viridis up to here: its last fifth runs into a light yellow
# (#fde725 at 1.0) that hardly shows on white.
DEPTH_SCALE_END = 0.8
DIVERGING = "RdBu_r"
# Points a line figure may hold over all its traces; each trace gets its share (at most
# LINE_POINTS, at least MIN_TRACE_POINTS), so a figure with many layers stays quick to draw.
FIGURE_POINTS = 20_000
MIN_TRACE_POINTS = 200
# Lines this short get markers, so single logged points stay visible.
MARKERS_UP_TO = 40


def group_color(index: int) -> str:
    return GROUP_COLORS[index % len(GROUP_COLORS)]


def assign_colors(assigned: MutableMapping[str, int], labels: Iterable[str]) -> dict[str, int]:
    """Palette indices for `labels`; a label seen before keeps its index, a new one takes the
    lowest free one. `assigned` is the session's memory (st.session_state), so removing or
    adding a group never recolours the others, on any page."""
    out = {}
    for label in labels:
        if label not in assigned:
            used = set(assigned.values())
            assigned[label] = next(i for i in range(len(used) + 1) if i not in used)
        out[label] = assigned[label]
    return out


def band_color(index: int, alpha: float = 0.18) -> str:
    hex_color = group_color(index).lstrip("#")
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


@cache  # plotly validates the colour scale on every call: 2 ms each, 0.1 s for a page of 28-layer panels
def layer_color(layer: int, layers: int) -> str:
    """A colour along viridis for a layer, so depth reads as a gradient across many lines."""
    import plotly.colors

    position = 0.0 if layers <= 1 else DEPTH_SCALE_END * layer / (layers - 1)
    return plotly.colors.sample_colorscale(SEQUENTIAL, [position])[0]


# Up to this many legend entries sit in one row under the plot; more go in a column on the right.
LEGEND_ROW_ENTRIES = 6
# Integer axes (layers, heads) with at most this many positions get a tick at every one;
# Plotly would otherwise put ticks at halves (0, 0.5, 1) on short ranges.
TICK_EVERY_UP_TO = 24


def _finish(fig: go.Figure, *, title: str, height: int = 420) -> go.Figure:
    entries = sum(1 for trace in fig.data if trace.type == "scatter" and trace.showlegend is not False and trace.name)
    if entries <= LEGEND_ROW_ENTRIES:
        # In container coordinates, below the x-axis titles: clear of subplot titles and colour bars.
        legend = dict(orientation="h", x=0, xanchor="left", y=0, yanchor="bottom", yref="container")
        bottom = 90
    else:
        legend = dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top")
        bottom = 50
    fig.update_layout(
        title=dict(text=escape(title), x=0, xanchor="left"),
        height=height + (bottom - 50),
        margin=dict(l=60, r=20, t=70, b=bottom),
        legend=legend,
        hovermode="closest",
    )
    return fig


def integer_ticks(positions: np.ndarray) -> dict:
    """Axis settings that tick every position of a short integer axis (layers, heads); {} otherwise."""
    positions = np.asarray(positions)
    if positions.dtype.kind in "iu" and 0 < len(np.unique(positions)) <= TICK_EVERY_UP_TO:
        return dict(tickmode="array", tickvals=np.unique(positions).tolist())
    return {}


def _log_axis() -> dict:
    # One tick per decade: the default 2-and-5 minor labels read as noise on a spectrum.
    return dict(type="log", dtick=1, exponentformat="power")


@dataclass(frozen=True, slots=True)
class Line:
    """One trace to draw: y over x, optionally with a band [low, high] (each (n,))."""

    name: str
    x: np.ndarray
    y: np.ndarray
    color: str
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    band_color: str | None = None
    dash: str | None = None
    legendgroup: str | None = None
    showlegend: bool = True
    width: float = 2.0
    opacity: float = 1.0


def _points_per_trace(n_lines: int) -> int:
    return min(LINE_POINTS, max(MIN_TRACE_POINTS, FIGURE_POINTS // max(1, n_lines)))


def add_line(fig: go.Figure, line: Line, *, points: int, row: int | None = None, col: int | None = None) -> None:
    """Add a line (and its band) downsampled to about `points` points, extremes kept."""
    # A band of one run (low == high == the line) would only add invisible traces.
    banded = line.low is not None and not (
        np.array_equal(line.low, line.y, equal_nan=True) and np.array_equal(line.high, line.y, equal_nan=True)
    )
    series = [line.y] + ([line.low, line.high] if banded else [])
    keep = minmax_indices(*series, points=points)
    x = np.asarray(line.x)[keep]
    where = dict(row=row, col=col) if row is not None else {}
    group = line.legendgroup or line.name
    if banded:
        fig.add_trace(
            go.Scatter(x=x, y=line.high[keep], mode="lines", line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=group),
            **where,
        )
        fig.add_trace(
            go.Scatter(
                x=x, y=line.low[keep], mode="lines", line=dict(width=0), fill="tonexty",
                fillcolor=line.band_color or "rgba(0,0,0,0.15)", hoverinfo="skip", showlegend=False, legendgroup=group,
            ),
            **where,
        )
    fig.add_trace(
        go.Scatter(
            x=x, y=line.y[keep], mode="lines+markers" if len(keep) <= MARKERS_UP_TO else "lines", name=escape(line.name),
            legendgroup=group, showlegend=line.showlegend, line=dict(color=line.color, width=line.width, dash=line.dash),
            marker=dict(size=5), opacity=line.opacity,
        ),
        **where,
    )


def lines_figure(
    lines: Sequence[Line], *, title: str, x_title: str, y_title: str, log_y: bool = False, height: int = 420
) -> go.Figure:
    fig = go.Figure()
    points = _points_per_trace(len(lines))
    for line in lines:
        add_line(fig, line, points=points)
    fig.update_xaxes(title_text=x_title, **integer_ticks(np.concatenate([np.asarray(line.x) for line in lines]) if lines else []))
    fig.update_yaxes(title_text=y_title, **(_log_axis() if log_y else {}))
    return _finish(fig, title=title, height=height)


def panels_figure(
    panels: Sequence[tuple[str, Sequence[Line]]],
    *,
    title: str,
    x_title: str,
    y_title: str,
    columns: int = 2,
    shared_y: bool = False,
    log_y: bool = False,
    panel_height: int = 260,
) -> go.Figure:
    """Small multiples: one subplot per (panel title, lines), `columns` per row."""
    rows = max(1, -(-len(panels) // columns))
    cols = min(columns, max(1, len(panels)))
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=[escape(name) for name, _ in panels], shared_yaxes=shared_y,
        vertical_spacing=min(0.12, 0.5 / rows), horizontal_spacing=0.08,
    )
    n_lines = sum(len(lines) for _, lines in panels)
    points = _points_per_trace(n_lines)
    for index, (_, lines) in enumerate(panels):
        for line in lines:
            add_line(fig, line, points=points, row=index // cols + 1, col=index % cols + 1)
    fig.update_xaxes(title_text=x_title, row=rows)
    fig.update_yaxes(title_text=y_title, col=1)
    if log_y:
        fig.update_yaxes(**_log_axis())
    return _finish(fig, title=title, height=max(320, 60 + panel_height * rows))


@dataclass(frozen=True, slots=True)
class HeatPanel:
    """One heatmap: z (rows, columns) over x (columns,) and y (rows,)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray


def _finite_range(arrays: Sequence[np.ndarray]) -> tuple[float, float] | None:
    values = [a[np.isfinite(a)] for a in arrays]
    values = [v for v in values if v.size]
    if not values:
        return None
    low, high = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def heatmaps_figure(
    panels: Sequence[HeatPanel],
    *,
    title: str,
    value_title: str,
    x_title: str,
    y_title: str,
    difference: HeatPanel | None = None,
    height: int = 420,
) -> go.Figure:
    """Heatmaps side by side on one shared colour scale, and optionally their difference.

    The group panels share `coloraxis` (one range over all of them, so equal colours mean
    equal values); the difference has its own diverging `coloraxis2`, centred on 0.
    """
    all_panels = list(panels) + ([difference] if difference is not None else [])
    # Room between panels for the shared colour bar when a difference panel follows.
    spacing = 0.12 if difference is not None else 0.06
    fig = make_subplots(rows=1, cols=len(all_panels), subplot_titles=[escape(p.name) for p in all_panels], horizontal_spacing=spacing)
    for index, panel in enumerate(panels):
        fig.add_trace(
            go.Heatmap(
                x=panel.x, y=panel.y, z=panel.z, coloraxis="coloraxis", name=escape(panel.name),
                hovertemplate=f"{x_title} %{{x}}<br>{y_title} %{{y}}<br>{value_title} %{{z:.4g}}<extra>{escape(panel.name)}</extra>",
            ),
            row=1, col=index + 1,
        )
    value_range = _finite_range([p.z for p in panels])
    # The shared colour bar sits just right of the last group panel, the difference's at the far right.
    last_group_axis = fig.layout[f"xaxis{len(panels) if len(panels) > 1 else ''}"]
    colorbar_x = last_group_axis.domain[1] + 0.005
    fig.update_layout(
        coloraxis=dict(
            colorscale=SEQUENTIAL, colorbar=dict(title=dict(text=value_title), x=colorbar_x, len=0.9),
            **({"cmin": value_range[0], "cmax": value_range[1]} if value_range else {}),
        )
    )
    if difference is not None:
        fig.add_trace(
            go.Heatmap(
                x=difference.x, y=difference.y, z=difference.z, coloraxis="coloraxis2", name=escape(difference.name),
                hovertemplate=f"{x_title} %{{x}}<br>{y_title} %{{y}}<br>difference %{{z:.4g}}<extra></extra>",
            ),
            row=1, col=len(all_panels),
        )
        spread = _finite_range([np.abs(difference.z)])
        limit = spread[1] if spread else 1.0
        fig.update_layout(
            coloraxis2=dict(colorscale=DIVERGING, cmin=-limit, cmax=limit, colorbar=dict(title=dict(text="difference"), x=1.005, len=0.9))
        )
    for index, panel in enumerate(all_panels):
        fig.update_xaxes(title_text=x_title, row=1, col=index + 1, **integer_ticks(panel.x))
        fig.update_yaxes(row=1, col=index + 1, **integer_ticks(panel.y))
    fig.update_yaxes(title_text=y_title, col=1)
    return _finish(fig, title=title, height=height)


def differences_figure(
    layers: np.ndarray, differences: np.ndarray, low: np.ndarray, high: np.ndarray, *, title: str, y_title: str
) -> go.Figure:
    """Per-layer difference of group means with its interval (NaN where there is none)."""
    has_interval = np.isfinite(low) & np.isfinite(high)
    error = dict(
        type="data", symmetric=False, array=np.where(has_interval, high - differences, 0),
        arrayminus=np.where(has_interval, differences - low, 0), visible=bool(has_interval.any()),
    )
    fig = go.Figure(
        go.Scatter(x=layers, y=differences, mode="markers+lines", error_y=error, name="difference", line=dict(color=group_color(0)))
    )
    fig.add_hline(y=0, line=dict(color="gray", dash="dot"))
    fig.update_xaxes(title_text="layer", **integer_ticks(layers))
    fig.update_yaxes(title_text=y_title)
    return _finish(fig, title=title, height=360)


def lines_table(panels: Sequence[tuple[str, Sequence[Line]]]) -> pd.DataFrame:
    """Every line of a figure at full resolution, before downsampling, one row per point:
    what the figure's "Download ... (CSV)" button saves."""
    frames = []
    for panel, lines in panels:
        for line in lines:
            frame = pd.DataFrame({"panel": panel, "line": line.name, "x": np.asarray(line.x), "y": np.asarray(line.y, dtype=np.float64)})
            if line.low is not None:
                frame["band low"] = np.asarray(line.low, dtype=np.float64)
                frame["band high"] = np.asarray(line.high, dtype=np.float64)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["panel", "line", "x", "y"])


def heatmaps_table(panels: Sequence[HeatPanel]) -> pd.DataFrame:
    """Every cell of the heatmaps as drawn (bucket means where steps were bucketed), one row per cell."""
    frames = []
    for panel in panels:
        x, y = np.meshgrid(np.asarray(panel.x), np.asarray(panel.y))
        frames.append(
            pd.DataFrame({"panel": panel.name, "x": x.ravel(), "y": y.ravel(), "value": np.asarray(panel.z, dtype=np.float64).ravel()})
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["panel", "x", "y", "value"])
