"""Tokens: one prompt's trace (`parallax-probe trace`), token by token.

The prompt's tokens coloured by COR (one layer and head, or the mean); the softmax weights p
beside the effective weights w = p (1 + tbar - s2) for one stored (layer, head) map, w on a
diverging scale centred on 0 (its negative weights are blue); and per layer and head the
negative and sink mass. Token strings come from the file: they are shown as plain text
(`text.plot` escapes them for Plotly; tables need no escaping).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from . import traces
from .figures import DIVERGING, SEQUENTIAL, _finish, integer_ticks
from .text import md
from .text import plot as escape
from .ui import Context, show_figure

TOKENS_PER_ROW = 24
MAP_SIZE = 400  # a drawn map has at most this many rows and columns (block means beyond)
MEAN = "mean"
DISPLAY = {"bytes": "characters (byte-level model)", "tokenizer.json": "tokens of the model's tokenizer.json", "ids": "token ids"}
SUMMARIES = (
    ("negative_fraction", "share of w_ij < 0"),
    ("negative_mass_mean", "negative mass of w"),
    ("sink_p_mean", "sink mass under p"),
    ("sink_w_mean", "sink mass under w"),
)


@st.cache_resource(max_entries=16, show_spinner=False)
def _trace(path, name: str, signature: tuple) -> traces.TraceView:
    return traces.load_trace(traces.TraceFile(name, path, signature))


@st.cache_resource(max_entries=16, show_spinner=False)
def _map(path, name: str, signature: tuple, index: int) -> tuple[np.ndarray, np.ndarray]:
    return traces.load_map(traces.TraceFile(name, path, signature), index)


TOKEN_CHARS = 8  # a cell shows this many characters of a token; the hover label and the table show all


def _shown(text: str, limit: int | None = TOKEN_CHARS) -> str:
    """A token's text as drawn: escaped, visible when it is only white space, cut to `limit` characters."""
    text = text if text.strip() else repr(text)[1:-1] or "\u2423"
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return escape(text).replace(" ", "\u00a0")


def token_figure(view: traces.TraceView, values: np.ndarray, what: str) -> go.Figure:
    """The prompt as a grid of tokens, TOKENS_PER_ROW to a row, each coloured by its value."""
    z = traces.token_grid(values, TOKENS_PER_ROW)
    texts = traces.token_grid(np.arange(len(values), dtype=float), TOKENS_PER_ROW)
    labels = [[_shown(view.token_text[int(i)]) if np.isfinite(i) else "" for i in row] for row in texts]
    hover = [[f"token {int(i)}: {_shown(view.token_text[int(i)], None)} (id {int(view.token_ids[int(i)])})" if np.isfinite(i) else ""
              for i in row] for row in texts]
    fig = go.Figure(go.Heatmap(
        z=z, text=labels, texttemplate="%{text}", hovertext=hover, colorscale=SEQUENTIAL, xgap=2, ygap=2,
        hovertemplate="%{hovertext}<br>" + escape(what) + " %{z:.4g}<extra></extra>", colorbar=dict(title=dict(text="COR")),
        textfont=dict(size=13),
    ))
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return _finish(fig, title=f"tokens coloured by {what}", height=max(260, 140 + 36 * z.shape[0]))


def maps_figure(p: np.ndarray, w: np.ndarray, label: str) -> go.Figure:
    future = np.triu(np.ones(p.shape, dtype=bool), k=1)  # keys after the query: left blank, not drawn as weight 0
    drawn_p, k = traces.block_mean(np.where(future, np.nan, p), MAP_SIZE)
    drawn_w, _ = traces.block_mean(np.where(future, np.nan, w), MAP_SIZE)
    positions = np.arange(drawn_p.shape[0]) * k
    limit = float(np.nanmax(np.abs(drawn_w))) if np.isfinite(drawn_w).any() else 1.0
    averaged = f" (means over {k} x {k} blocks)" if k > 1 else ""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["softmax weights p", "effective weights w = p (1 + tbar - s2)"],
                        horizontal_spacing=0.16)
    fig.add_trace(go.Heatmap(x=positions, y=positions, z=drawn_p, colorscale=SEQUENTIAL, name="p",
                             colorbar=dict(title=dict(text="p"), x=0.43, len=0.9),
                             hovertemplate="query %{y}<br>key %{x}<br>p %{z:.4g}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(x=positions, y=positions, z=drawn_w, colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit, name="w",
                             colorbar=dict(title=dict(text="w"), x=1.0, len=0.9),
                             hovertemplate="query %{y}<br>key %{x}<br>w %{z:.4g}<extra></extra>"), row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(title_text="key j", row=1, col=col)
        fig.update_yaxes(title_text="query i", autorange="reversed", row=1, col=col)
    return _finish(fig, title=f"p and w of {escape(label)}{averaged}", height=560)


def summary_figure(view: traces.TraceView) -> go.Figure:
    L, H = view.heads["negative_fraction"].shape
    fig = make_subplots(rows=1, cols=len(SUMMARIES), subplot_titles=[title for _, title in SUMMARIES], horizontal_spacing=0.07)
    for index, (name, title) in enumerate(SUMMARIES):
        fig.add_trace(
            go.Heatmap(
                x=np.arange(H),
                y=np.arange(L),
                z=view.heads[name],
                showscale=False,
                **(dict(colorscale=DIVERGING, zmid=0) if name == "sink_w_mean" else dict(colorscale=SEQUENTIAL)),
                name=title,
                hovertemplate=f"layer %{{y}}<br>head %{{x}}<br>{title} %{{z:.4g}}<extra></extra>",
                texttemplate="%{z:.2f}" if L * H <= 256 else None,
            ),
            row=1,
            col=index + 1,
        )
        fig.update_xaxes(title_text="head", row=1, col=index + 1, **integer_ticks(np.arange(H)))
        fig.update_yaxes(row=1, col=index + 1, **integer_ticks(np.arange(L)))
    fig.update_yaxes(title_text="layer", col=1)
    return _finish(fig, title="negative and sink mass per layer and head (means over queries 1..T-1)", height=360)


def summary_table(view: traces.TraceView) -> pd.DataFrame:
    L, H = view.heads["negative_fraction"].shape
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    return pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), **{n: view.heads[n].ravel() for n in traces.HEAD_SUMMARY}})


def render(ctx: Context) -> None:
    st.header("Tokens")
    found = traces.discover_traces(ctx.root)
    if not found:
        st.info(f"No token trace under {md(ctx.root)}. Write one into this folder with `parallax-probe trace MODEL --prompt "
                f"TEXT --out {md(ctx.root)}/trace.h5`.")
        return
    by_name = {t.name: t for t in found}
    name = st.selectbox("Trace", list(by_name), key="tokens-trace", bind="query-params")
    entry = by_name[name]
    view = _trace(entry.path, entry.name, entry.signature)
    if view.error:
        st.error(md(view.error))
        return
    T, L, H = view.shape
    st.caption(md(f"{T} tokens through {view.model or 'a model'}, {L} layers x {H} heads; shown as "
                  f"{DISPLAY.get(view.token_display, view.token_display)}."))
    left, right = st.columns(2)
    layer = left.selectbox("Layer", [MEAN, *map(str, range(L))], key="tokens-layer", bind="query-params",
                           help="COR of this layer, or the mean over layers")
    head = right.selectbox("Head", [MEAN, *map(str, range(H))], key="tokens-head", bind="query-params",
                           help="COR of this head, or the mean over heads")
    chosen_layer = None if layer == MEAN else int(layer)
    chosen_head = None if head == MEAN else int(head)
    cor = traces.pick(view.per_token["cor"], chosen_layer, chosen_head)
    what = f"COR, {'mean over layers' if chosen_layer is None else f'layer {chosen_layer}'}, " \
           f"{'mean over heads' if chosen_head is None else f'head {chosen_head}'}"
    table = pd.DataFrame({"position": np.arange(T), "token": list(view.token_text), "id": view.token_ids, "cor": cor})
    show_figure(ctx, token_figure(view, cor, what), "tokens-cor", table, log_y=False)

    st.subheader("p and w")
    if not view.maps:
        st.info("This trace stores no p and w maps; trace again with `--maps LAYER:HEAD,...` to store some.")
    else:
        labels = [f"layer {layer_}, head {head_}" for layer_, head_ in view.maps]
        label = st.selectbox("Map", labels, key="tokens-map", bind="query-params", help="the (layer, head) pairs the trace stored")
        p, w = _map(entry.path, entry.name, entry.signature, labels.index(label))
        i, j = np.tril_indices(T)
        cells = pd.DataFrame({"query": i, "key": j, "p": p[i, j], "w": w[i, j]})
        show_figure(ctx, maps_figure(p, w, label), "tokens-p-w", cells, log_y=False)

    st.subheader("Negative and sink mass")
    show_figure(ctx, summary_figure(view), "tokens-mass", summary_table(view), log_y=False)
