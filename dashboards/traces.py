"""Token traces (`parallax-probe trace`) for the Tokens page: finding and reading them. No Streamlit, no torch.

A trace is one run-store segment file (docs/file-format.md, "Token traces") anywhere under the
runs folder, outside run folders: `*.h5` whose root attribute `kind` is "token-trace". Shapes:
T tokens, L layers, H heads, M stored maps.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parallax_probe.store import open_run

from .data import MAX_DEPTH, READ_ERRORS

TRACE_KIND = "token-trace"
SEGMENT_PREFIX = "segment-"
PER_TOKEN = ("cor", "osm_norm", "c_norm", "r_norm", "tbar", "negative_mass", "sink_p", "sink_w")
HEAD_SUMMARY = ("negative_fraction", "cor_mean", "negative_mass_mean", "sink_p_mean", "sink_w_mean")


@dataclass(frozen=True, slots=True)
class TraceFile:
    name: str  # the path below the runs folder
    path: Path
    signature: tuple[int, int]  # size, mtime in ns: the cache key


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def discover_traces(root: str | Path) -> list[TraceFile]:
    """`*.h5` files under `root` (MAX_DEPTH deep) outside run folders, that do not leave `root`.
    Whether a file is a trace is known only once it is read (`load_trace`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    real_root = root.resolve()
    found: list[TraceFile] = []

    def visit(folder: Path, depth: int) -> None:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        if any(e.name.startswith(SEGMENT_PREFIX) and e.name.endswith(".h5") for e in entries):
            return  # a run folder: its segments are runs, not traces
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(".") or not _inside(path.resolve(), real_root):
                continue
            if entry.is_dir() and depth < MAX_DEPTH:
                visit(path, depth + 1)
            elif entry.is_file() and entry.name.endswith(".h5"):
                stat = entry.stat()
                found.append(TraceFile(path.relative_to(root).as_posix(), path, (stat.st_size, stat.st_mtime_ns)))

    visit(root, 0)
    return found


@dataclass(frozen=True, slots=True)
class TraceView:
    """What the page draws of a trace; `error` set when the file is not a readable trace."""

    name: str
    error: str | None = None
    model: str = ""
    token_display: str = "ids"
    token_text: tuple[str, ...] = ()
    token_ids: np.ndarray | None = None  # (T,)
    per_token: dict[str, np.ndarray] | None = None  # name -> (T, L, H)
    heads: dict[str, np.ndarray] | None = None  # name -> (L, H)
    maps: tuple[tuple[int, int], ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.per_token["cor"].shape  # (T, L, H)


def load_trace(trace: TraceFile) -> TraceView:
    try:
        run = open_run(trace.path)
        meta = run.meta
        if meta.get("kind") != TRACE_KIND:
            return TraceView(trace.name, error=f"{trace.name}: not a token trace (an HDF5 file of another kind)")
        names = [f"tokens/{n}" for n in PER_TOKEN] + [f"heads/{n}" for n in HEAD_SUMMARY] + ["tokens/token_id"]
        values = run.read(*names)
        ids = values["tokens/token_id"].astype(np.int64)
        text = meta.get("token_text")
        if not isinstance(text, list) or len(text) != len(ids):
            text = [str(i) for i in ids]  # the ids are what the file surely holds
        maps = tuple((int(layer), int(head)) for layer, head in meta.get("maps", []))
        return TraceView(
            trace.name, model=str(meta.get("model", "")), token_display=str(meta.get("token_display", "ids")),
            token_text=tuple(str(t) for t in text), token_ids=ids,
            per_token={n: values[f"tokens/{n}"] for n in PER_TOKEN}, heads={n: values[f"heads/{n}"][0] for n in HEAD_SUMMARY},
            maps=maps,
        )
    except READ_ERRORS as error:
        return TraceView(trace.name, error=f"{trace.name}: {error}")


def load_map(trace: TraceFile, index: int) -> tuple[np.ndarray, np.ndarray]:
    """p and w of stored map `index`, each (T, T): row i is query i."""
    values = open_run(trace.path).read("maps/p", "maps/w", select=(index,))
    return values["maps/p"], values["maps/w"]


def block_mean(matrix: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """`matrix` (T, T) averaged over k x k blocks so that it is at most `size` x `size` (k = 1 when it is)."""
    T = matrix.shape[0]
    k = max(1, math.ceil(T / size))
    if k == 1:
        return matrix, 1
    n = math.ceil(T / k)
    padded = np.full((n * k, n * k), np.nan)
    padded[:T, :T] = matrix
    with np.errstate(invalid="ignore"):
        blocks = padded.reshape(n, k, n, k)
        counts = np.isfinite(blocks).sum(axis=(1, 3))
        sums = np.nansum(blocks, axis=(1, 3))
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), k


def pick(values: np.ndarray, layer: int | None, head: int | None) -> np.ndarray:
    """(T, L, H) -> (T,): one layer and head, or the mean over layers and/or heads where None."""
    values = values if layer is None else values[:, layer : layer + 1]
    values = values if head is None else values[:, :, head : head + 1]
    return values.mean(axis=(1, 2))


def token_grid(values: np.ndarray, per_row: int) -> np.ndarray:
    """(T,) -> (rows, per_row), NaN after the last token."""
    rows = math.ceil(len(values) / per_row)
    grid = np.full(rows * per_row, np.nan)
    grid[: len(values)] = values
    return grid.reshape(rows, per_row)
