"""The probe's tables in the run store: one definition for the probe and for anything that
writes probe-shaped runs without torch (synthetic benchmark runs). See docs/file-format.md."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from .format import Column

ATTN_STAT_NAMES = (
    "cor_mean", "cor_p50", "cor_p90", "cor_max",
    "sum_osm_sq", "sum_c_sq", "sum_osm_c", "tokens",
    "probe_norm_mean", "probe_norm_p50", "probe_norm_p90", "probe_norm_max",
    "nonfinite",
)
INTEGER_STATS = frozenset({"tokens", "nonfinite"})
# Per-layer companions of these per-head columns: "layer_<name>", the mean over the layer's
# heads. Readers that want one number per layer (the dashboard's overviews, the analysis)
# read L values per step instead of L x H; the per-head columns stay the record.
HEAD_MEAN_STATS = (
    "cor_mean", "cor_p50", "cor_p90", "cor_max",
    "probe_norm_mean", "probe_norm_p50", "probe_norm_p90", "probe_norm_max",
)
HEAD_MEAN_PREFIX = "layer_"
# Metadata the probe records about its own setup (hooks/probe.py `Probe._meta`), beside the
# user's: readers that group runs by the user's metadata leave these out.
PROBE_META_KEYS = (
    "layers", "heads", "head_dim", "layer_modules", "native_statistics", "probe_every", "spectra_every",
)
# Full names ("table/column") of the columns that readers pick by name: the dashboard, the
# analysis, the run summary and the demo import these instead of spelling the strings.
COR_MEAN = "attn/cor_mean"
COR_P50 = "attn/cor_p50"
COR_P90 = "attn/cor_p90"
LAYER_COR_MEAN = "attn/" + HEAD_MEAN_PREFIX + "cor_mean"
LAYER_COR_P90 = "attn/" + HEAD_MEAN_PREFIX + "cor_p90"
LAYER_PROBE_NORM_MEAN = "attn/" + HEAD_MEAN_PREFIX + "probe_norm_mean"
WR_STEP = "wr/step"
WR_STABLE_RANK = "wr/stable_rank"
WR_EFFECTIVE_RANK = "wr/effective_rank"
WR_HEAD_STABLE_RANK = "wr/head_stable_rank"
WR_HEAD_EFFECTIVE_RANK = "wr/head_effective_rank"
WR_HEAD_SINGULAR_VALUES = "wr/head_singular_values"
WRK_STABLE_RANK = "wrk/stable_rank"
PROBE_GAIN_NORM = "attn/probe_gain_norm"
SCALARS_STEP = "scalars/step"
# The exact aggregates stay float64 end to end, so ratios derived from them are not re-estimated.
FLOAT64_STATS = frozenset({"sum_osm_sq", "sum_c_sq", "sum_osm_c"})


def probe_tables(layers: int, heads: int, head_dim: int, d_model: int) -> dict[str, dict[str, Column]]:
    """Tables attn (per logging step), wr and wrk (per spectra step) for a model of this shape."""
    L, H, D, C = layers, heads, head_dim, d_model
    k = min(H * D, C)
    dtype = {**{n: "i8" for n in INTEGER_STATS}, **{n: "f8" for n in FLOAT64_STATS}}
    attn = {name: Column(name, (L, H), ("layer", "head"), dtype.get(name, "f4")) for name in ATTN_STAT_NAMES}
    for name in HEAD_MEAN_STATS:
        attn[HEAD_MEAN_PREFIX + name] = Column(
            HEAD_MEAN_PREFIX + name, (L,), ("layer",), "f4",
            doc=f"mean over the layer's heads of {name} (NaN heads left out; NaN if all are)",
        )
    attn["probe_gain_norm"] = Column("probe_gain_norm", (L,), ("layer",), "f4", doc="||r_norm.weight|| (NaN without an r-norm)")
    wr = {
        "singular_values": Column("singular_values", (L, k), ("layer", "sv"), "f4"),
        "stable_rank": Column("stable_rank", (L,), ("layer",), "f4"),
        "effective_rank": Column("effective_rank", (L,), ("layer",), "f4"),
        "head_singular_values": Column("head_singular_values", (L, H, min(D, C)), ("layer", "head", "head_sv"), "f4"),
        "head_stable_rank": Column("head_stable_rank", (L, H), ("layer", "head"), "f4"),
        "head_effective_rank": Column("head_effective_rank", (L, H), ("layer", "head"), "f4"),
    }
    wrk = {
        "singular_values": Column("singular_values", (L, H, min(D, C)), ("layer", "head", "circuit_sv"), "f4"),
        "stable_rank": Column("stable_rank", (L, H), ("layer", "head"), "f4"),
        "effective_rank": Column("effective_rank", (L, H), ("layer", "head"), "f4"),
    }
    return {"attn": attn, "wr": wr, "wrk": wrk}


def nan_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """Float64 mean over `axis` that leaves NaN entries out (a head with no tokens, or with a
    non-finite token); a slice of NaN only stays NaN. The one such mean of the probe's layer
    columns and of every reader that reduces heads (or steps) itself."""
    values = np.asarray(values)
    if not np.isnan(values).any():
        return values.mean(axis=axis, dtype=np.float64)  # the common case, several times faster
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice stays NaN on purpose
        return np.nanmean(values, axis=axis, dtype=np.float64)


def head_means(row: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The "layer_<name>" columns of one attn row from its (L, H) per-head columns: `nan_mean`
    over the heads, as the dashboard and the analysis reduce a run without these columns."""
    return {HEAD_MEAN_PREFIX + name: nan_mean(row[name], axis=-1).astype(np.float32) for name in HEAD_MEAN_STATS}
