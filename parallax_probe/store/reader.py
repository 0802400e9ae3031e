"""Reading runs: `open_run(path) -> Run`, segments joined, every array cut to committed rows.

    run = open_run("runs/muon")              # a run folder, or one segment file
    run["attn/cor_mean"]                     # (N, layers, heads) over all segments
    run["step"], run["wr/stable_rank"], run["scalars/loss"], run["scalars/step"]
    run.read("step", "attn/cor_mean")        # several names from one snapshot of each file
    run.meta, run.config, run.status         # last segment's attributes; "live", "closed", "crashed"

Joining: segments in index order; a row of segment k is dropped when its step is >= the
start_step of any later segment (the later segment re-logged those steps). A column that
a segment lacks (a scalar first logged later) reads as NaN for that segment's rows;
an integer column that needs such filling comes back as float64.

The Run holds the folder's structure as of `open_run` (segment list, schemas, attributes,
status). Every data read opens the files again, reads each table's `committed` counter
first and slices to it, and closes them: a live run grows between reads. Open the run
again to see segments that appeared later.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .format import (
    ROOT_TABLE,
    SEGMENT_RE,
    STATUS_CLOSED,
    RunFileError,
    Table,
    tables_from_json,
    union_tables,
)
from .hdf5 import (
    DEFAULT_BYTE_BUDGET,
    check_chunks_in_file,
    check_contents,
    check_root,
    check_tables,
    chunk_bytes,
    open_for_read,
    read_committed,
    read_status,
    reading,
)
from .liveness import segment_status, writer_status

_REQUIRED_ATTRS = {"run_id": str, "segment": int, "start_step": int, "schema": str}


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment file as found by `open_run` (its data is read on demand)."""

    path: Path
    index: int
    start_step: int
    tables: dict[str, Table]
    attrs: dict[str, Any]  # root attributes, JSON ones parsed
    status: str  # "closed", "continued" (closed; its writer went on in the next segment), "live", "crashed"
    writer_live: bool  # its writer runs and has not closed it (a "continued" one: creating the next)
    open_for_write: bool  # the file is not closed (live, or its writer died): SWMR rules apply


def is_run_folder(path: Path) -> bool:
    """True for a folder, False for a regular file; refuses anything else and a missing path.

    A FIFO would block the first read until something writes to it, a device might never
    end: only folders and regular files are opened.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such run folder or segment file") from None
    if stat.S_ISDIR(mode):
        return True
    if not stat.S_ISREG(mode):
        raise RunFileError(f"{path}: not a folder or a regular file (a pipe, socket or device); "
                           "point at a run folder or one of its segment-NNNNN.h5 files")
    return False


def segment_paths(run_dir: Path) -> list[tuple[int, Path]]:
    """(index, path) of the folder's published segments, in index order."""
    found = []
    for entry in run_dir.iterdir():
        match = SEGMENT_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def decode_root(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Root attributes with the JSON-encoded ones (listed in `json_attributes`) parsed."""
    for name, kind in _REQUIRED_ATTRS.items():
        if not isinstance(raw.get(name), kind) or isinstance(raw.get(name), bool):
            raise RunFileError(f"{path}: root attribute {name!r} is {raw.get(name)!r}, expected {kind.__name__}; the file is damaged.")
    attrs = {k: v for k, v in raw.items() if k not in ("schema", "json_attributes")}
    try:
        json_names = json.loads(raw.get("json_attributes", "[]"))
        for name in json_names:
            if name in attrs:
                attrs[name] = json.loads(attrs[name])
    except (TypeError, ValueError) as error:
        raise RunFileError(f"{path}: a JSON root attribute does not parse ({error}); the file is damaged.") from error
    return attrs


def load_segment(path: Path, byte_budget: int, index: int | None = None) -> Segment:
    f, superblock = open_for_read(path)
    with f, reading(path):
        raw = check_root(f, path)
        check_contents(f, path, byte_budget)
        attrs = decode_root(raw, path)
        tables = tables_from_json(raw["schema"], str(path))
        check_tables(f, path, tables)
        code, heartbeat = read_status(f)
    return Segment(
        path=path,
        index=attrs["segment"] if index is None else index,
        start_step=attrs["start_step"],
        tables=tables,
        attrs=attrs,
        status=segment_status(code, heartbeat, raw),
        writer_live=code != STATUS_CLOSED and writer_status(heartbeat, raw) == "live",
        open_for_write=superblock.open_for_write,
    )


def live_writer_of(run_dir: Path) -> Segment | None:
    """A segment of the folder `run_dir` whose writer is still running, or None.

    Segments that do not load are skipped: a damaged file has no live writer behind it.
    """
    for index, path in segment_paths(run_dir):
        try:
            segment = load_segment(path, DEFAULT_BYTE_BUDGET, index)
        except RunFileError:
            continue
        if segment.writer_live:
            return segment
    return None


class Run:
    """A run folder (or one segment file) opened for reading. See the module docstring."""

    def __init__(self, path: Path, segments: list[Segment], byte_budget: int) -> None:
        self.path = path
        self.segments: tuple[Segment, ...] = tuple(segments)
        self.byte_budget = byte_budget
        self.tables: dict[str, Table] = union_tables(((s.path.name, s.tables) for s in segments), str(path))
        last = segments[-1]
        self.meta: dict[str, Any] = dict(last.attrs)
        # A last segment that says "continued" lost its successor: the writer died between
        # two segments, or is creating the next one right now.
        self.status: str = last.status if last.status != "continued" else ("live" if last.writer_live else "crashed")
        # Rows of segment k count only below the smallest start_step of the segments after it.
        cutoffs, later = [], None
        for segment in reversed(segments):
            cutoffs.append(later)
            later = segment.start_step if later is None else min(later, segment.start_step)
        self._cutoffs: tuple[int | None, ...] = tuple(reversed(cutoffs))

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, segments={len(self.segments)}, status={self.status!r})"

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    @property
    def config(self) -> dict[str, Any]:
        config = self.meta.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def dims(self) -> dict[str, int]:
        """Dimension name -> size over all tables ("layer", "head", ...)."""
        out: dict[str, int] = {}
        for table in self.tables.values():
            out.update(table.dims)
        return out

    @property
    def layers(self) -> int | None:
        return self.dims.get("layer")

    @property
    def heads(self) -> int | None:
        return self.dims.get("head")

    @property
    def steps_logged(self) -> int:
        """Rows of the attention table (the root `step`)."""
        return len(self["step"]) if ROOT_TABLE in self.tables else 0

    @property
    def last_step(self) -> int | None:
        if ROOT_TABLE not in self.tables:
            return None
        steps = self["step"]
        return int(steps[-1]) if len(steps) else None

    def names(self) -> list[str]:
        """Every name `run[...]` accepts: each table's step and its columns."""
        out = []
        for table in self.tables.values():
            out.append(table.step_name)
            out.extend(table.column_name(c.name) for c in table.columns)
        return out

    def __contains__(self, name: object) -> bool:
        try:
            self._resolve(name)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read(name)[name]

    def _resolve(self, name: str) -> tuple[Table, str | None]:
        """name -> (table, column or None for the step index)."""
        if not isinstance(name, str):
            raise KeyError(name)
        if name == "step" and ROOT_TABLE in self.tables:
            return self.tables[ROOT_TABLE], None
        table_name, _, column = name.partition("/")
        table = self.tables.get(table_name)
        if table is not None:
            if column == "step":
                return table, None
            if table.column(column) is not None:
                return table, column
        raise KeyError(f"{name!r} is not in run {self.path}; it has: {', '.join(self.names())}")

    def read(self, *names: str, select: tuple[int | slice, ...] = ()) -> dict[str, np.ndarray]:
        """name -> array joined over segments; each file is read once, from one committed count.

        select: an index into each row of the columns (not the step indexes), applied as the
        file is read: select=(3,) of (L, H) columns gives (N, H), layer 3. Closed segments
        chunk such columns per layer, so this decompresses only that layer's chunks.
        """
        names = tuple(dict.fromkeys(names))
        select = _check_select(select)
        wanted: dict[str, list[tuple[str, str | None]]] = {}
        for name in names:
            table, column = self._resolve(name)
            wanted.setdefault(table.name, []).append((name, column))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        budget = self.byte_budget
        for segment, cutoff in zip(self.segments, self._cutoffs):
            requests = {t: cols for t, cols in wanted.items() if t in segment.tables}
            if not requests:
                continue
            budget = self._read_segment(segment, cutoff, requests, parts, budget, select)
        out = {}
        for name in names:
            table, column = self._resolve(name)
            if column is None:
                empty = np.zeros((0,), dtype=np.int64)
            else:
                spec = table.column(column)
                empty = np.zeros((0,) + _row_index(spec.shape, select, name)[1], dtype=spec.dtype)
            out[name] = np.concatenate(parts[name]) if parts[name] else empty
        return out

    def _read_segment(
        self,
        segment: Segment,
        cutoff: int | None,
        requests: Mapping[str, list[tuple[str, str | None]]],
        parts: dict[str, list[np.ndarray]],
        budget: int,
        select: tuple[int | slice, ...] = (),
    ) -> int:
        f, _ = open_for_read(segment.path)
        with f, reading(segment.path):
            for table_name, columns in requests.items():
                table = segment.tables[table_name]
                n = read_committed(f, table, segment.path)  # checks that n rows are stored
                step_ds = f[table.step_path]
                # the steps (8 bytes a row), the order check's booleans (1), one chunk being decompressed
                budget = _spend(budget, n * 9 + chunk_bytes(step_ds), segment.path, table.step_path, self.byte_budget)
                steps = step_ds[:n]
                if n > 1 and not np.all(steps[1:] > steps[:-1]):
                    raise RunFileError(
                        f"{segment.path}: {table.step_path} is not strictly increasing; the file is damaged."
                    )
                m = n if cutoff is None else int(np.searchsorted(steps, cutoff, side="left"))
                full = self.tables[table_name]
                for name, column in columns:
                    if column is None:
                        parts[name].append(steps[:m])
                        continue
                    spec = full.column(column)
                    index, row_shape = _row_index(spec.shape, select, name)
                    row_bytes = math.prod(row_shape) * np.dtype(spec.dtype).itemsize
                    if table.column(column) is None:
                        budget = _spend(budget, m * row_bytes, segment.path, name, self.byte_budget)
                        if m:  # an empty fill would still turn an integer column into float64
                            fill_dtype = spec.dtype if spec.is_float else np.float64
                            parts[name].append(np.full((m,) + row_shape, np.nan, dtype=fill_dtype))
                        continue
                    ds = f[table.column_path(column)]
                    # the rows read, and the one chunk HDF5 decompresses at a time to read them
                    budget = _spend(budget, m * row_bytes + chunk_bytes(ds), segment.path, name, self.byte_budget)
                    if ds.shape[0] < n:
                        raise RunFileError(f"{segment.path}: {ds.name} holds {ds.shape[0]} rows but {table.committed_path} "
                                           f"says {n}; the file is damaged.")
                    check_chunks_in_file(ds, m, segment.path)
                    parts[name].append(ds[(slice(0, m), *index)] if m else np.zeros((0,) + row_shape, ds.dtype))
        return budget


def _check_select(select: tuple[int | slice, ...]) -> tuple[int | slice, ...]:
    if not isinstance(select, tuple) or not all(
        isinstance(i, slice) or (isinstance(i, (int, np.integer)) and not isinstance(i, bool)) for i in select
    ):
        raise TypeError(f"select must be a tuple of ints and slices (an index into each row), got {select!r}")
    return tuple(int(i) if not isinstance(i, slice) else i for i in select)


def _row_index(row_shape: tuple[int, ...], select: tuple[int | slice, ...], name: str) -> tuple[tuple, tuple[int, ...]]:
    """(select with negative indices resolved, the shape of row[select]) for rows of row_shape.

    IndexError naming the column when an index is out of range; h5py takes no negative steps.
    """
    if len(select) > len(row_shape):
        raise IndexError(f"select {select!r} has {len(select)} indices but rows of {name!r} have shape {row_shape}")
    index: list[int | slice] = []
    shape: list[int] = []
    for axis, (i, n) in enumerate(zip(select, row_shape), start=1):
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step < 1:
                raise IndexError(f"select {select!r}: slices of stored rows need a positive step")
            index.append(slice(start, max(start, stop), step))
            shape.append(len(range(start, stop, step)))
        elif -n <= i < n:
            index.append(i % n)
        else:
            raise IndexError(f"select index {i} is out of range for axis {axis} of {name!r} (size {n})")
    return tuple(index), (*shape, *row_shape[len(select):])


def _spend(budget: int, nbytes: int, path: Path, name: str, total: int) -> int:
    if nbytes > budget:
        raise RunFileError(
            f"{path}: reading {name} would take {nbytes} more bytes, over the byte budget of {total} bytes for one read. "
            "If the run really is that large, pass a larger budget: open_run(path, byte_budget=...)."
        )
    return budget - nbytes


def open_run(path: str | Path, *, byte_budget: int = DEFAULT_BYTE_BUDGET) -> Run:
    """Open a run folder (or a single segment file) for reading.

    byte_budget bounds the bytes one `run[...]`/`run.read(...)` call may read, and any
    chunk a file declares: a few-KB file can declare terabytes.
    Raises RunFileError for anything that is not a readable run, FileNotFoundError if
    `path` does not exist.
    """
    path = Path(path)
    if is_run_folder(path):
        found = segment_paths(path)
        if not found:
            raise RunFileError(
                f"{path}: no segment-NNNNN.h5 files in this folder, so it is not a parallax-probe run "
                "(or its writer has not published its first segment yet)."
            )
        segments = [load_segment(p, byte_budget, index) for index, p in found]
    else:
        segments = [load_segment(path, byte_budget)]
    run_ids = {s.attrs["run_id"] for s in segments}
    if len(run_ids) > 1:
        raise RunFileError(
            f"{path}: its segments come from different runs (run_id {sorted(run_ids)}). "
            "Keep one run per folder; move the foreign segment files out."
        )
    return Run(path, segments, byte_budget)
