"""The run store: a crash-safe, live-readable HDF5 run format (docs/file-format.md).

No torch anywhere in the store: dashboards and analysis read runs on machines without it.

One module per concern (docs/architecture.md): `format` (the vocabulary, errors, `Column`,
`Table`), `probe_schema` (the probe's tables and the column names readers pick), `hdf5` (how
a segment sits in HDF5), `liveness` (whether a segment's writer still runs), `reader`,
`writer`, `sink` (a writer behind a thread, for the probe) and `repair`.

Writing (one process writes a run folder; each process start adds a segment file):

    RunWriter(run_dir, *, tables: Mapping[str, Mapping[str, Column]], meta=None,
              mode: "new" | "resume" | "overwrite" = "new", start_step: int,
              fsync_every_s: float | None = 60.0)
        .append(table: str, step: int, **values)   buffer one row (values copied)
        .commit()                                   write all buffered rows, flush, counters, flush
        .close()                                    commit, status closed, rewrite compressed
        .tables                                     table -> {column: Column}, as stored now
        .path, .run_dir, .run_id                    also a context manager

    Column(name, shape=(), dims=(), dtype="f4" | "f8" | "i4" | "i8", doc="")
        One statistic: `shape` per row, its axes named `dims` (HDF5 dimension scales;
        xarray.open_dataset(segment, engine="h5netcdf", group="attn") gets them).

Tables: "attn" keeps its step index at the root (/step, /committed) and its columns in
/attn; any other table T keeps all of it in /T. "scalars" always exists and takes new
names at any time (float64 each). Steps increase strictly per table.

    RunSink(run_dir, *, mode="new", start_step=0, fsync_every_s=60.0)
        .open(tables, meta, on_row=None)            create the RunWriter, start its thread
        .put(table, step, row)                      queue a row (a dict, or a callable returning one)
        .flush(), .close(), .error                  committed / closed; the writer thread's failure

Reading (never holds a file open between calls):

    open_run(path, *, byte_budget=4 GiB) -> Run     a run folder or one segment file
        run[name] -> np.ndarray         "step", "attn/cor_mean", "wr/step", "scalars/loss", ...
        run.read(*names) -> dict        several names from one snapshot of each file
        run.read(*names, select=(i,))   part of each row: layer i of (L, H) columns -> (N, H)
        run.names(), name in run        what exists
        run.meta, run.config            last segment's root attributes (JSON ones parsed)
        run.status                      "live" | "closed" | "crashed" (the last segment's)
        run.segments, run.tables, run.dims, run.layers, run.heads, run.steps_logged, run.last_step
    live_writer_of(run_dir) -> Segment | None       a segment of the folder whose writer still runs

Repair (a segment whose writer died opens for reading as it is; repair makes a clean copy):

    repair_segment(path) -> Path | None     backup of the original bytes, None if clean
    repair_run(path) -> list[str]           every dead segment of a folder, one line each

Errors: RunFileError(ValueError) for any file that is not a readable run (message: file,
problem, fix); RunExistsError(FileExistsError) for mode="new" on an existing run;
RunInUseError(RuntimeError) when a live writer holds the run.
"""

from __future__ import annotations

from .format import (
    FORMAT,
    FORMAT_VERSION,
    PROVENANCE_DEFAULTS,
    ROOT_TABLE,
    SCALARS_TABLE,
    SEGMENT_RE,
    STORE_ATTRS,
    STORE_FILE_RE,
    Column,
    RunExistsError,
    RunFileError,
    RunInUseError,
    Table,
    segment_name,
)
from .hdf5 import DEFAULT_BYTE_BUDGET
from .liveness import LIVE_HEARTBEAT_S
from .probe_schema import (
    ATTN_STAT_NAMES,
    COR_MEAN,
    COR_P50,
    COR_P90,
    HEAD_MEAN_PREFIX,
    HEAD_MEAN_STATS,
    INTEGER_STATS,
    LAYER_COR_MEAN,
    LAYER_COR_P90,
    LAYER_PROBE_NORM_MEAN,
    PROBE_GAIN_NORM,
    PROBE_META_KEYS,
    SCALARS_STEP,
    WR_EFFECTIVE_RANK,
    WR_HEAD_EFFECTIVE_RANK,
    WR_HEAD_SINGULAR_VALUES,
    WR_HEAD_STABLE_RANK,
    WR_STABLE_RANK,
    WR_STEP,
    WRK_STABLE_RANK,
    head_means,
    nan_mean,
    probe_tables,
)
from .reader import Run, Segment, live_writer_of, open_run
from .repair import repair_run, repair_segment
from .sink import RunSink
from .writer import RunWriter

__all__ = [
    "ATTN_STAT_NAMES",
    "COR_MEAN",
    "COR_P50",
    "COR_P90",
    "DEFAULT_BYTE_BUDGET",
    "FORMAT",
    "FORMAT_VERSION",
    "HEAD_MEAN_PREFIX",
    "HEAD_MEAN_STATS",
    "INTEGER_STATS",
    "LAYER_COR_MEAN",
    "LAYER_COR_P90",
    "LAYER_PROBE_NORM_MEAN",
    "LIVE_HEARTBEAT_S",
    "PROBE_GAIN_NORM",
    "PROBE_META_KEYS",
    "PROVENANCE_DEFAULTS",
    "ROOT_TABLE",
    "SCALARS_STEP",
    "SCALARS_TABLE",
    "SEGMENT_RE",
    "STORE_ATTRS",
    "STORE_FILE_RE",
    "WRK_STABLE_RANK",
    "WR_EFFECTIVE_RANK",
    "WR_HEAD_EFFECTIVE_RANK",
    "WR_HEAD_SINGULAR_VALUES",
    "WR_HEAD_STABLE_RANK",
    "WR_STABLE_RANK",
    "WR_STEP",
    "Column",
    "Run",
    "RunExistsError",
    "RunFileError",
    "RunInUseError",
    "RunSink",
    "RunWriter",
    "Segment",
    "Table",
    "head_means",
    "live_writer_of",
    "nan_mean",
    "open_run",
    "probe_tables",
    "repair_run",
    "repair_segment",
    "segment_name",
]
