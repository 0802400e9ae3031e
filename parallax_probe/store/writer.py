"""`RunWriter`: appends rows to a run folder, one new segment file per process start.

    tables = {"attn": {"cor_mean": Column("cor_mean", (L, H), ("layer", "head"))}, ...}
    with RunWriter("runs/muon", tables=tables, meta={"optimizer": "muon", "config": cfg},
                   mode="new", start_step=0) as writer:
        writer.append("attn", step, cor_mean=cor_LH)      # buffered in memory
        writer.append("scalars", step, loss=2.31)        # "scalars" always exists
        writer.commit()                                   # rows, flush, counters, flush

Lifecycle of a segment: created whole as `segment-NNNNN.h5.tmp` (every dataset,
attribute and dimension scale), switched to SWMR, published under its final name (a hard
link, which fails if the name exists: two writers started on one folder cannot both
publish segment N). A resumed writer publishes its segment only at its first commit that
holds a row: until then the segment would hide the earlier segments' rows at or after its
start_step without replacing any of them, so a resume that fails before logging anything
leaves the run as it was (the next resume deletes the unpublished file). From then on
only raw data changes: `commit` resizes and writes the buffered rows of every table,
flushes, then writes each table's `committed` counter and the heartbeat and flushes again,
so a reader that slices to `committed` never sees a half-written row. `close` commits,
sets /status to closed, closes the file and rewrites it compressed.

A row that brings a scalar name the segment lacks ends the segment (status "continued")
and starts the next one at that step with the grown schema: SWMR cannot add datasets.
Rows of the old segment at that step or later are copied into the new one before it is
published, so the reader's rule "a later segment wins from its start_step on" loses
nothing. When every row of the old segment moves (scalars first logged at the first
logging step), the new segment replaces it under the same name instead.

Single-threaded: call it from one thread (the probe's writer thread).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from .format import (
    FORMAT,
    FORMAT_VERSION,
    SEGMENT_RE,
    STATUS_CLOSED,
    STATUS_CONTINUED,
    STATUS_RUNNING,
    STORE_FILE_RE,
    Column,
    RunExistsError,
    RunFileError,
    RunInUseError,
    Table,
    build_tables,
    encode_meta,
    resumed_tables,
    segment_name,
    tables_to_json,
    union_tables,
)
from .hdf5 import (
    DEFAULT_BYTE_BUDGET,
    LIBVER,
    SegmentHandles,
    create_layout,
    fsync_path,
    open_for_read,
    read_committed,
    reading,
)
from .liveness import writer_identity
from .reader import load_segment, segment_paths
from .repair import repair_segment, rewrite_segment

Mode = Literal["new", "resume", "overwrite"]
_Row = tuple[int, dict[str, Any]]  # (step, column name -> value)


class RunWriter:
    """Writes one run folder. See the module docstring for the format of a commit.

    run_dir: the run folder (created if missing; checkpoints and other files may live in it).
    tables: table name -> {column name: Column}. "attn" keeps its step index at the root
        (/step, /committed); "scalars" is added if absent and grows new float64 columns.
    meta: provenance stored as root attributes: optimizer, config (dict), code_version,
        package_versions (dict), device, world_size, and any other str/int/float/bool/
        list/dict values. Missing provenance keys are stored as "unknown" (or {} / 1).
    mode: "new" refuses a folder that holds segments (RunExistsError); "resume" repairs
        segments whose writer died and starts the next segment; "overwrite" removes the
        folder's segment files (only those) first. Both refuse a folder with a live writer.
    start_step: the first step this process will log. On resume the reader drops rows
        of earlier segments at this step or later (the training restarted from there).
    fsync_every_s: os.fsync the segment at most this often (at commits) and at close;
        None: never. A flush survives the death of the process, an fsync that of the machine.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tables: Mapping[str, Mapping[str, Column]],
        meta: Mapping[str, Any] | None = None,
        mode: Mode = "new",
        start_step: int,
        fsync_every_s: float | None = 60.0,
    ) -> None:
        if mode not in ("new", "resume", "overwrite"):
            raise ValueError(f"mode must be 'new', 'resume' or 'overwrite', got {mode!r}")
        self._start_step = _as_step(start_step, "start_step")
        if fsync_every_s is not None and not (isinstance(fsync_every_s, (int, float)) and fsync_every_s >= 0):
            raise ValueError(f"fsync_every_s must be a number >= 0 or None, got {fsync_every_s!r}")
        self.run_dir = Path(run_dir)
        self._tables: dict[str, Table] = build_tables(tables)
        self._meta, self._json_names = encode_meta(meta)
        self._fsync_every_s = fsync_every_s
        self._last_fsync = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        index, self.run_id, resumed = self._prepare_folder(mode)
        # the first segment of a resume waits for its first row before it is published
        self._publish_at_first_row = resumed
        self._buffer: dict[str, list[_Row]] = {name: [] for name in self._tables}
        self._last_step: dict[str, int | None] = {name: None for name in self._tables}
        self._last_row: dict[str, dict[str, Any] | None] = {name: None for name in self._tables}
        self._patches: list[tuple[str, int, dict[str, float]]] = []
        self._segment: SegmentHandles | None = None
        self._closed = False
        self._published = False
        self._open_segment(index)

    # ---- public ---------------------------------------------------------------------------

    @property
    def tables(self) -> dict[str, dict[str, Column]]:
        """The current schema: table name -> {column name: Column}, in declaration order."""
        return {name: {c.name: c for c in t.columns} for name, t in self._tables.items()}

    @property
    def path(self) -> Path:
        """The segment file this writer appends to now (its `.tmp` name until published)."""
        return self._path if self._published else _tmp_name(self._path)

    def append(self, table: str, step: int, **values: Any) -> None:
        """Buffer one row of `table` at `step` (copied now; written by the next commit).

        A fixed table needs every column, with the declared shape. "scalars" takes any
        subset of names: missing ones are NaN, a new name grows the schema (a new
        segment), and a second call at the same step fills that step's row (a name that
        already holds a finite value there is an error). Steps increase strictly per table.
        """
        if self._closed:
            raise ValueError(f"RunWriter({self.run_dir}): append after close (or after a failed segment switch)")
        spec = self._tables.get(table)
        if spec is None:
            raise ValueError(f"unknown table {table!r}; this run has {sorted(self._tables)}")
        step = _as_step(step, "step")
        if step < self._start_step:
            raise ValueError(
                f"{table}: step {step} is before this segment's start_step {self._start_step}; "
                "a resumed writer must be given the step it restarts from"
            )
        last = self._last_step[table]
        if spec.extensible:
            row = {name: _as_scalar(table, name, value) for name, value in values.items()}
            if last is not None and step < last:
                raise ValueError(f"{table}: step {step} after step {last}; steps must not decrease")
            if step == last:
                _check_unset(table, step, row, self._last_row[table])
            new = [name for name in row if spec.column(name) is None]
            if new:
                self._grow(table, step, row, new)
            elif step == last:
                self._merge(table, step, row)
            else:
                self._buffer[table].append((step, row))
                self._last_row[table], self._last_step[table] = row, step
            return
        if last is not None and step <= last:
            raise ValueError(f"{table}: step {step} after step {last}; steps must increase strictly")
        names = {c.name for c in spec.columns}
        if set(values) != names:
            missing, unknown = sorted(names - set(values)), sorted(set(values) - names)
            raise ValueError(f"{table} at step {step}: missing columns {missing}, unknown columns {unknown}")
        row = {c.name: _as_column_value(table, c, values[c.name]) for c in spec.columns}
        self._buffer[table].append((step, row))
        self._last_step[table] = step

    def commit(self) -> None:
        """Write every buffered row of every table; readers see them after this returns."""
        if self._closed:
            raise ValueError(f"RunWriter({self.run_dir}): commit after close (or after a failed segment switch)")
        self._commit()

    def close(self) -> None:
        """Commit, mark the segment closed, close it, rewrite it compressed. Idempotent.

        If the last commit fails the file is closed with /status still "running", so
        readers see a crashed segment rather than a closed one missing rows.
        """
        if self._closed:
            return
        self._closed = True
        path = self._path
        try:
            self._commit()
        except BaseException:
            with contextlib.suppress(Exception):  # raises again on a full disk: the first error tells
                self._segment.file.close()
            if not self._published:  # a segment no reader has seen: nothing in it to keep
                _tmp_name(path).unlink(missing_ok=True)
            raise
        self._close_segment(STATUS_CLOSED)
        if not self._published:  # a resumed segment that never got a row: it would only hide rows
            _tmp_name(path).unlink()
            return
        self._compact(path)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- folder and segments ----------------------------------------------------------------

    def _commit(self) -> None:
        self._write_buffered()
        segment = self._segment
        segment.file.flush()  # rows reach the file before the counters that announce them
        segment.write_counters(time.time())
        segment.file.flush()
        if not self._published and any(segment.rows.values()):
            self._publish()
        if self._fsync_every_s is not None and time.monotonic() - self._last_fsync >= self._fsync_every_s:
            self._fsync()

    def _prepare_folder(self, mode: Mode) -> tuple[int, str, bool]:
        """Apply `mode` to the folder; return (index of the new segment, run_id, whether it continues earlier segments)."""
        store_files = sorted(
            p.name for p in self.run_dir.iterdir() if SEGMENT_RE.match(p.name) or STORE_FILE_RE.match(p.name)
        )
        if mode == "new":
            if store_files:
                raise RunExistsError(
                    f"{self.run_dir} already holds a run ({', '.join(store_files[:4])}{', ...' if len(store_files) > 4 else ''}). "
                    "Pass mode='resume' to continue it in a new segment, or mode='overwrite' to replace its segment "
                    "files (other files in the folder are kept)."
                )
            return 0, uuid.uuid4().hex, False
        segments = []
        for index, path in segment_paths(self.run_dir):
            try:
                segment = load_segment(path, DEFAULT_BYTE_BUDGET, index)
            except RunFileError:
                if mode == "overwrite":
                    continue  # about to be removed; a damaged segment has no live writer to protect
                raise
            if segment.writer_live:
                raise RunInUseError(
                    f"{path}: a live writer (pid {segment.attrs.get('writer_pid')} on {segment.attrs.get('writer_host')}) "
                    "still writes this run; stop it before resuming or overwriting the run."
                )
            segments.append(segment)
        if mode == "overwrite":
            for name in store_files:
                (self.run_dir / name).unlink()
            return 0, uuid.uuid4().hex, False
        for name in store_files:
            if name.endswith(".tmp"):
                # unpublished: a segment being created or rewritten when its writer died;
                # its rows are all still in a published segment
                (self.run_dir / name).unlink()
        for segment in segments:
            if segment.open_for_write:
                repair_segment(segment.path)
        if not segments:
            return 0, uuid.uuid4().hex, False
        run_ids = sorted({s.attrs["run_id"] for s in segments})
        if len(run_ids) > 1:
            raise RunFileError(f"{self.run_dir}: its segments come from different runs ({run_ids}); move the foreign ones out.")
        stored = union_tables(((s.path.name, s.tables) for s in segments), str(self.run_dir))
        self._tables = resumed_tables(stored, self._tables, str(self.run_dir))
        indices = [int(STORE_FILE_RE.match(n).group(1)) for n in store_files if STORE_FILE_RE.match(n)]
        indices += [s.index for s in segments]
        return max(indices) + 1, segments[0].attrs["run_id"], True

    def _open_segment(self, index: int, *, replace: bool = False) -> None:
        """Create segment `index` (start_step = self._start_step) with the buffered rows in it, publish it
        (a resumed writer's first segment: once it holds a row, see the module docstring).

        replace: the closed segment of that name holds only rows carried into this one;
        the rename replaces it atomically (a reader sees the old file or the new one).
        """
        path = self.run_dir / segment_name(index)
        if path.exists() and not replace:
            raise RunExistsError(f"{path} appeared while this writer was starting; is another writer using {self.run_dir}?")
        tmp = _tmp_name(path)
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "segment": index,
            "start_step": self._start_step,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **self._meta,
            **writer_identity(),
            "json_attributes": json.dumps(self._json_names),
            "schema": tables_to_json(self._tables),
        }
        # locking=False: a reader in this same process (HDF5 shares one open file per
        # process) must open it with the same locking flag, and readers never lock.
        try:
            # "w-": create, fail if the name exists; of two writers starting on one folder, one gets it
            f = h5py.File(tmp, "w-", libver=LIBVER, locking=False)
        except FileExistsError as error:
            raise RunExistsError(f"{tmp} exists: another writer is starting in {self.run_dir}; one writer per run folder") from error
        try:
            create_layout(f, self._tables, attrs)
            f["status"][0] = STATUS_RUNNING
            self._segment = SegmentHandles.of(f, self._tables)
            self._write_buffered()  # rows carried over from the previous segment
            self._segment.write_counters(time.time())
            f.flush()
            f.swmr_mode = True
            self._path, self._index = path, index
            if replace:
                os.replace(tmp, path)
                self._published = True
            elif not self._publish_at_first_row or any(self._segment.rows.values()):
                self._publish()
        except BaseException:
            with contextlib.suppress(Exception):  # a full disk fails the close too; the tmp goes either way
                f.close()
            tmp.unlink(missing_ok=True)
            raise
        if self._fsync_every_s is not None:
            self._fsync()
            fsync_path(self.run_dir)

    def _publish(self) -> None:
        """Give the open segment its final name; RunExistsError if another writer took it."""
        path = self._path
        tmp = _tmp_name(path)
        try:
            os.link(tmp, path)  # unlike a rename, fails if the name exists
        except FileExistsError as error:
            raise RunExistsError(f"{path} appeared while this writer was starting; is another writer using {self.run_dir}?") from error
        except OSError:  # a file system without hard links
            if path.exists():
                raise RunExistsError(f"{path} appeared while this writer was starting; is another writer using {self.run_dir}?") from None
            os.replace(tmp, path)
        else:
            tmp.unlink()
        self._published, self._publish_at_first_row = True, False
        if self._fsync_every_s is not None:
            fsync_path(self.run_dir)

    def _close_segment(self, status: int) -> None:
        segment = self._segment
        try:
            segment.file["status"][0] = status
            segment.file.flush()
            if self._fsync_every_s is not None:
                self._fsync()
        finally:
            segment.file.close()

    def _compact(self, path: Path) -> None:
        """Rewrite a closed segment compressed; on failure keep it as written (it is complete)."""
        tmp = path.with_name(path.name + ".compact.tmp")
        durable = self._fsync_every_s is not None
        try:
            rewrite_segment(path, tmp, durable=durable)
            os.replace(tmp, path)
            if durable:
                fsync_path(self.run_dir)
        except (OSError, RunFileError) as error:
            tmp.unlink(missing_ok=True)
            warnings.warn(f"{path}: not rewritten compressed ({error}); it stays complete but uncompressed.", RuntimeWarning, stacklevel=2)

    def _fsync(self) -> None:
        os.fsync(self._segment.file.id.get_vfd_handle())
        self._last_fsync = time.monotonic()

    # ---- rows ------------------------------------------------------------------------------

    def _write_buffered(self) -> None:
        segment = self._segment
        for name, rows in self._buffer.items():
            if not rows:
                continue
            table = self._tables[name]
            steps = np.fromiter((step for step, _ in rows), dtype=np.int64, count=len(rows))
            if table.extensible:  # a name missing from a row is NaN there
                blocks = {c.name: np.array([row.get(c.name, np.nan) for _, row in rows]) for c in table.columns}
            else:
                blocks = {c.name: np.stack([row[c.name] for _, row in rows]) for c in table.columns}
            segment.write_rows(name, steps, blocks)
            rows.clear()
        for name, index, values in self._patches:
            for column, value in values.items():
                segment.columns[name][column][index] = value
        self._patches.clear()

    def _merge(self, table: str, step: int, row: dict[str, float]) -> None:
        """A second scalars call at the last step: fill that row (buffered, or patched in place)."""
        last_row = self._last_row[table]
        buffer = self._buffer[table]
        if not (buffer and buffer[-1][0] == step):
            # Committed already: overwrite its NaN cells. Each cell is one aligned 8-byte
            # value, so a reader sees it either NaN or final, never torn.
            self._patches.append((table, self._segment.rows[table] - 1, dict(row)))
        last_row.update(row)

    def _grow(self, table: str, step: int, row: dict[str, float], new: list[str]) -> None:
        """Move to a segment whose `table` has the `new` scalar columns, holding every row >= `step`.

        If the current segment holds rows before `step` it stays as it is (status
        "continued") and the next segment starts at `step`. If all its rows are carried
        over (the usual case: scalars first logged at the first logging step), the new
        file replaces it under the same name and start_step, so a run does not begin
        with a segment that holds nothing of its own.
        """
        self._commit()
        old = self.path
        self._close_segment(STATUS_CONTINUED)
        try:
            self._continue_from(old, table, step, row, new)
        except BaseException:
            self._closed = True  # the old segment is closed and no new one is open
            raise

    def _continue_from(self, old: Path, table: str, step: int, row: dict[str, float], new: list[str]) -> None:
        carried, kept = _rows_from(old, self._tables, step)
        self._tables = {**self._tables, table: self._tables[table].with_columns(new)}
        self._buffer = {name: carried.get(name, []) for name in self._tables}
        buffer = self._buffer[table]
        if buffer and buffer[-1][0] == step:
            buffer[-1][1].update(row)  # append checked that these names are unset there
        else:
            buffer.append((step, row))
        for name, rows in self._buffer.items():
            if self._tables[name].extensible:
                self._last_row[name] = rows[-1][1] if rows else None
        self._last_step[table] = step
        if kept:
            self._compact(old)
            self._start_step = step
            self._open_segment(self._index + 1)
        elif not self._published:  # an unpublished segment without rows: start it again
            old.unlink()
            self._open_segment(self._index)
        else:
            self._open_segment(self._index, replace=True)


def _tmp_name(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _check_unset(table: str, step: int, row: Mapping[str, float], existing: Mapping[str, float]) -> None:
    taken = sorted(name for name in row if math.isfinite(existing.get(name, math.nan)))
    if taken:
        raise ValueError(f"{table}: {taken} already logged at step {step}; log each name once per step")


def _rows_from(path: Path, tables: Mapping[str, Table], first_step: int) -> tuple[dict[str, list[_Row]], bool]:
    """The committed rows of a closed segment at `first_step` or later, per table, and
    whether any committed row lies before `first_step`."""
    f, _ = open_for_read(path)
    out: dict[str, list[_Row]] = {}
    kept = False
    with f, reading(path):
        for name, table in tables.items():
            n = read_committed(f, table, path)
            steps = f[table.step_path][:n]
            start = int(np.searchsorted(steps, first_step, side="left"))
            kept = kept or start > 0
            if start == n:
                continue
            columns = {c.name: f[table.column_path(c.name)][start:n] for c in table.columns}
            rows = []
            for i, step in enumerate(steps[start:]):
                if table.extensible:
                    rows.append((int(step), {k: float(v[i]) for k, v in columns.items() if not math.isnan(v[i])}))
                else:
                    rows.append((int(step), {k: v[i] for k, v in columns.items()}))
            out[name] = rows
    return out, kept


def _as_step(step: Any, what: str) -> int:
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise ValueError(f"{what} must be an int, got {step!r} ({type(step).__name__})")
    return int(step)


def _as_scalar(table: str, name: str, value: Any) -> float:
    Column(name)  # validates the name
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in "biuf":
        raise ValueError(f"{table}/{name}: expected one number, got {type(value).__name__} of shape {array.shape}")
    return float(array)


def _as_column_value(table: str, column: Column, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != column.shape:
        raise ValueError(f"{table}/{column.name}: expected shape {column.shape}, got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{table}/{column.name}: expected numbers, got dtype {array.dtype}")
    out = np.array(array, dtype=column.dtype)  # a copy: the caller may reuse its buffer
    if not column.is_float and array.dtype.kind == "f" and not np.array_equal(out, array):
        raise ValueError(f"{table}/{column.name}: integer column given non-integer values")
    return out
