"""Clean copies of segments: compaction at close, repair of a segment whose writer died.

Both write a fresh file holding exactly the committed rows (compressed, not SWMR-flagged),
read it back and compare it with the source, and only then rename it over the source.
Repair keeps the original bytes as `segment-NNNNN.h5.crashed` (a hard link made before the
rename, so the segment name never points at nothing). Never `h5clear -s` then write: HDF5
truncates the file to the stale end-of-allocation its superblock holds and rows are lost.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .format import RunFileError, RunInUseError, Table, tables_from_json
from .hdf5 import (
    DEFAULT_BYTE_BUDGET,
    LIBVER,
    check_chunks_in_file,
    check_contents,
    check_root,
    check_tables,
    create_layout,
    fsync_path,
    open_for_read,
    read_committed,
    read_status,
    reading,
)
from .reader import is_run_folder, load_segment, segment_paths

_COPY_BLOCK_BYTES = 64 * 1024**2  # rows are copied in blocks of at most this many bytes


def _row_blocks(ds: h5py.Dataset, n: int):
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, _COPY_BLOCK_BYTES // row_bytes)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def rewrite_segment(src: Path, dst: Path, *, extra_attrs: dict | None = None, durable: bool = True) -> None:
    """Write `dst`: `src`'s attributes and committed rows, compact layout; verify; leave `src` alone."""
    f, _ = open_for_read(src)
    with f, reading(src):
        raw = check_root(f, src)
        check_contents(f, src, DEFAULT_BYTE_BUDGET)
        tables = tables_from_json(raw["schema"], str(src))
        check_tables(f, src, tables)
        counts = {name: read_committed(f, table, src) for name, table in tables.items()}
        status, heartbeat = read_status(f)
        attrs = {key: f.attrs[key] for key in f.attrs}
        attrs.update(extra_attrs or {})
        paths = _row_paths(tables)
        with h5py.File(dst, "w", libver=LIBVER, locking=False) as g:
            create_layout(g, tables, attrs, rows=counts)
            for path, table in paths:
                n = counts[table]
                source, target = f[path], g[path]
                check_chunks_in_file(source, n, src)
                target.resize(n, axis=0)
                for start, stop in _row_blocks(source, n):
                    target[start:stop] = source[start:stop]
            for name, table in tables.items():
                g[table.committed_path][0] = counts[name]
            g["status"][0] = status
            g["heartbeat"][0] = heartbeat
        if durable:
            fsync_path(dst)
        _verify(f, dst, paths, counts, attrs, (status, heartbeat))


def _row_paths(tables: dict[str, Table]) -> list[tuple[str, str]]:
    """(dataset path, table name) of every row dataset: steps and columns."""
    out = []
    for name, table in tables.items():
        out.append((table.step_path, name))
        out.extend((table.column_path(c.name), name) for c in table.columns)
    return out


def _verify(f: h5py.File, dst: Path, paths, counts, attrs, status) -> None:
    def fail(what: str) -> RunFileError:
        return RunFileError(f"{dst}: the rewritten copy differs from {f.filename} in {what}; the original is kept unchanged.")

    with h5py.File(dst, "r", locking=False) as g:
        if set(g.attrs) != set(attrs) or any(not _same(np.asarray(g.attrs[k]), np.asarray(attrs[k])) for k in attrs):
            raise fail("its root attributes")
        if (int(g["status"][0]), float(g["heartbeat"][0])) != status:
            raise fail("/status or /heartbeat")
        for path, table in paths:
            n = counts[table]
            source, target = f[path], g[path]
            if target.shape[0] != n:
                raise fail(f"the length of {path}")
            for start, stop in _row_blocks(source, n):
                if not _same(source[start:stop], target[start:stop]):
                    raise fail(f"rows {start}:{stop} of {path}")


def _backup_name(path: Path) -> Path:
    candidate = path.with_name(path.name + ".crashed")
    k = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.crashed.{k}")
        k += 1
    return candidate


def repair_segment(path: str | Path) -> Path | None:
    """Replace a segment whose writer died by a clean, closed-file copy of its committed rows.

    Returns the backup of the original bytes (`<name>.crashed`), or None when the segment
    was closed by its writer and needs nothing. The copy keeps /status as it was (a
    repaired segment still reads as "crashed": its writer did not finish) and gains the
    root attribute `repaired` (ISO time). Raises RunInUseError for a live segment.
    """
    path = Path(path)
    segment = load_segment(path, DEFAULT_BYTE_BUDGET)
    if not segment.open_for_write:
        return None
    if segment.writer_live:
        a = segment.attrs
        raise RunInUseError(
            f"{path}: its writer (pid {a.get('writer_pid')} on {a.get('writer_host')}) is still running; "
            "repair only segments whose writer has stopped."
        )
    tmp = path.with_name(path.name + ".repair.tmp")
    try:
        rewrite_segment(path, tmp, extra_attrs={"repaired": datetime.now(UTC).isoformat(timespec="seconds")})
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    backup = _backup_name(path)
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)  # a file system without hard links
    os.replace(tmp, path)
    fsync_path(path.parent)
    return backup


def repair_run(path: str | Path) -> list[str]:
    """Repair every segment of a run folder (or one segment file) whose writer died.

    Returns one line per segment saying what was done; `parallax-probe repair` prints them.
    """
    path = Path(path)
    found = [p for _, p in segment_paths(path)] if is_run_folder(path) else [path]
    if not found:
        raise RunFileError(f"{path}: no segment-NNNNN.h5 files in this folder; not a parallax-probe run.")
    lines = []
    for segment_path in found:
        segment = load_segment(segment_path, DEFAULT_BYTE_BUDGET)
        if not segment.open_for_write:
            state = "repaired earlier" if "repaired" in segment.attrs else "closed by its writer"
            lines.append(f"{segment_path.name}: {state}, nothing to do")
        elif segment.writer_live:
            lines.append(f"{segment_path.name}: live (pid {segment.attrs.get('writer_pid')}), left alone")
        else:
            backup = repair_segment(segment_path)
            with reading(segment_path):
                f, _ = open_for_read(segment_path)
                with f:
                    rows = {name: read_committed(f, t, segment_path) for name, t in segment.tables.items()}
            kept = ", ".join(f"{name} {n}" for name, n in rows.items())
            lines.append(f"{segment_path.name}: repaired (committed rows kept: {kept}); original bytes in {backup.name}")
    return lines


