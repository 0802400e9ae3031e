"""`RunSink`: a `RunWriter` behind a background thread, so a training loop never waits on HDF5.

    sink = RunSink("runs/muon", mode="new", start_step=0)
    sink.open(tables, meta)                     # the schema is known only once the model is
    sink.put("attn", step, row)                 # row: {column: value}, or a callable returning it
    sink.put("scalars", step, {"loss": 2.31})
    sink.flush()                                # wait until everything put so far is committed
    sink.close()                                # drain, commit, close the run folder

`Probe(model, RunSink(...))` writes through it; `Probe(model, "runs/muon", mode=...)` makes one.

The queue is bounded (QUEUE_DEPTH): when it is full, `put` waits; nothing is dropped. A row
given as a callable is called in the writer thread: the caller can hand over work that
waits (a device-to-host copy finishing) without waiting itself. The thread commits each
burst of rows, but at most once per COMMIT_INTERVAL_S while rows keep coming, so HDF5 calls,
which hold the GIL, do not compete with the training loop every step.

An error in the writer thread is kept in `error` and every later row is dropped; the owner
checks `error` and raises in its own thread (the probe does so at its next step).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .format import Column
from .writer import Mode, RunWriter

QUEUE_DEPTH = 64
MAX_ROWS_PER_COMMIT = 32
COMMIT_INTERVAL_S = 0.5  # rows reach readers within this long; a crash loses at most this much
_FLUSH = object()  # queue item: commit now
_CLOSE = object()  # queue item: stop the thread

Row = Mapping[str, Any]
RowListener = Callable[[str, int, Row], None]


class RunSink:
    """Rows into the run folder `run_dir`, written by a background thread (see the module docstring).

    mode, start_step, fsync_every_s: `RunWriter`'s. Nothing touches the folder before `open`.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        mode: Mode = "new",
        start_step: int = 0,
        fsync_every_s: float | None = 60.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.mode, self.start_step, self.fsync_every_s = mode, start_step, fsync_every_s
        self.error: BaseException | None = None
        self._writer: RunWriter | None = None
        self._listener: RowListener | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self._closed = False

    def open(
        self,
        tables: Mapping[str, Mapping[str, Column]],
        meta: Mapping[str, Any] | None = None,
        *,
        on_row: RowListener | None = None,
    ) -> None:
        """Create the run segment with these tables and metadata and start the writer thread.

        on_row(table, step, row) is called in the writer thread after each row is appended to
        the run folder (the probe sends its trackers' summaries there).
        """
        if self._writer is not None or self._closed:
            raise ValueError(f"RunSink({self.run_dir}): open() once, before close()")
        self._writer = RunWriter(
            self.run_dir, tables=tables, meta=meta, mode=self.mode, start_step=self.start_step,
            fsync_every_s=self.fsync_every_s,
        )
        self._listener = on_row
        self._thread = threading.Thread(target=self._write_loop, name="parallax-probe-writer", daemon=True)
        self._thread.start()

    @property
    def tables(self) -> dict[str, dict[str, Column]]:
        """The writer's schema as stored now (empty before `open`)."""
        return self._writer.tables if self._writer is not None else {}

    def put(self, table: str, step: int, row: Row | Callable[[], Row]) -> None:
        """Queue one row of `table` at `step`; waits while the queue is full."""
        if self._thread is None or self._closed:
            raise ValueError(f"RunSink({self.run_dir}): put() needs an open sink (open() first, not after close())")
        self._queue.put((table, step, row))

    def flush(self) -> None:
        """Wait until every row put so far is committed (or dropped after an error: check `error`)."""
        if self._thread is None or self._closed:
            return
        self._queue.put(_FLUSH)  # commits whatever is pending, whatever the interval
        self._queue.join()

    def close(self) -> None:
        """Drain the queue, stop the thread, close the run folder (status closed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_CLOSE)
            self._thread.join()
        if self._writer is not None:
            self._writer.close()

    def _write_loop(self) -> None:
        pending = 0
        last_commit = -math.inf
        while True:
            # With rows waiting, wake when the commit interval ends even if nothing else comes.
            wait = None if pending == 0 else max(0.0, last_commit + COMMIT_INTERVAL_S - time.monotonic())
            try:
                item, received = self._queue.get(timeout=wait), True
            except queue.Empty:
                item, received = _FLUSH, False
            try:
                if item is _CLOSE:
                    return  # close(): the writer's close() commits what is pending
                if self.error is not None:
                    continue  # drain without writing after a failure; the owner raises it
                if item is not _FLUSH:
                    self._append(*item)
                    pending += 1
                # One commit (resize, write, flush, counters, flush) per burst of rows, and while
                # rows keep coming, at most one per COMMIT_INTERVAL_S.
                due = time.monotonic() - last_commit >= COMMIT_INTERVAL_S and self._queue.empty()
                if pending and (item is _FLUSH or due or pending >= MAX_ROWS_PER_COMMIT):
                    self._writer.commit()
                    pending, last_commit = 0, time.monotonic()
            except BaseException as error:
                self.error = error
            finally:
                if received:
                    self._queue.task_done()

    def _append(self, table: str, step: int, row: Row | Callable[[], Row]) -> None:
        if callable(row):
            row = row()
        self._writer.append(table, step, **row)
        if self._listener is not None:
            self._listener(table, step, row)  # after the run folder has the row: it stays the full record
