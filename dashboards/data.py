"""Finding, summarising, grouping and loading runs for the dashboard: plain functions over the run store.

No Streamlit here, so tests and benchmarks/dashboard_load.py call these directly;
`cache.py` wraps the loaders in Streamlit's cache keyed by each run's file signature.
How runs form groups and which column gives a layer's series are the read model's rules
(`parallax_probe.analysis.runs`), which `parallax-probe analyze` follows too.

Shapes: N logged steps, L layers, H heads, M spectra steps, K singular values, B buckets.

Reading follows the store's rule: open, read, close. A loader calls `open_run` and reads
what it needs in one `run.read(...)`; nothing here keeps a file or a `Run` between calls,
because a held handle can block a writer that resumes the run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from parallax_probe.analysis import runs as read_model
from parallax_probe.analysis.groups import config_of, lookup
from parallax_probe.analysis.report import Report, build_report
from parallax_probe.analysis.runs import RUN_GROUP_KEY
from parallax_probe.store import (
    COR_MEAN,
    LAYER_COR_MEAN,
    SCALARS_STEP,
    SEGMENT_RE,
    STORE_FILE_RE,
    WR_HEAD_EFFECTIVE_RANK,
    WR_HEAD_SINGULAR_VALUES,
    WR_HEAD_STABLE_RANK,
    WR_STABLE_RANK,
    WRK_STABLE_RANK,
    Run,
    RunFileError,
    open_run,
)

from .reduce import HEATMAP_BUCKETS, bucket_mean, finite_mean, peak_keeping_rows

# A runs folder is searched this deep for run folders (runs/demo/muon is depth 2).
MAX_DEPTH = 3
# Errors a damaged, foreign or vanished run raises while it is read; each becomes a message on
# that run's row, never a failure of the page.
READ_ERRORS = (RunFileError, OSError, KeyError, ValueError)
# The Rank collapse page's report fits Theil-Sen trends (scipy), which build all n^2 pairs of
# points: 100,000 logged steps would need about 80 GB. Longer tables are thinned for it to
# this many rows (`reduce.peak_keeping_rows`). Its cost grows with the square of the rows:
# 1000 rows took 3 s for two 28-layer runs, 400 take about 0.5 s; the trends of a few
# hundred evenly spaced points are what a page can show. `parallax-probe analyze` reads everything.
MAX_ANALYSIS_ROWS = 400
# The per-layer series of each table whose peaks the thinning keeps: for attn, the probe's
# stored head mean where the run has it (what the analysis reads too), else every head.
PEAK_COLUMNS = {"attn": (LAYER_COR_MEAN, COR_MEAN), "wr": (WR_STABLE_RANK,), "wrk": (WRK_STABLE_RANK,)}


@dataclass(frozen=True, slots=True)
class RunEntry:
    """A run folder found under the runs folder.

    signature: (file name, size, mtime in ns) of each published segment; it changes whenever
    the writer commits or starts a segment, so it keys every cache of the run's data.
    """

    name: str
    path: Path
    signature: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Discovery:
    root: Path
    runs: tuple[RunEntry, ...]
    skipped: tuple[Skipped, ...]
    error: str | None = None


class RunNameError(ValueError):
    """A run name (from the URL or a caller) that does not name a run inside the runs folder."""


def segment_signature(run_dir: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for entry in sorted(os.scandir(run_dir), key=lambda e: e.name):
        if SEGMENT_RE.match(entry.name) and entry.is_file():
            stat = entry.stat()
            out.append((entry.name, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def discover_runs(root: str | Path) -> Discovery:
    """Run folders under `root` (the folder itself if it is one), and what was skipped and why.

    A run folder holds segment-NNNNN.h5 files. Folders without any are searched further, up
    to MAX_DEPTH levels; files outside run folders and entries that resolve outside `root`
    (symlinks) are listed as skipped. Hidden entries (".name") are passed over silently.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return Discovery(root, (), (), error=f"{root} is not a folder; start the dashboard on a folder of run folders.")
    real_root = root.resolve()
    runs: list[RunEntry] = []
    skipped: list[Skipped] = []

    def visit(folder: Path, depth: int) -> bool:
        """Record the runs and skips under `folder`; False if there were none (an empty folder)."""
        signature = segment_signature(folder)
        if signature:
            name = folder.relative_to(root).as_posix() if folder != root else real_root.name
            escaping = [n for n, _, _ in signature if not _inside((folder / n).resolve(), real_root)]
            if escaping:
                skipped.append(Skipped(name, f"refused: segment {escaping[0]} points outside the runs folder"))
            else:
                runs.append(RunEntry(name, folder, signature))
            return True
        entries = [e for e in sorted(folder.iterdir(), key=lambda p: p.name) if not e.name.startswith(".")]
        if folder != root and any(STORE_FILE_RE.match(e.name) for e in entries):
            skipped.append(Skipped(folder.relative_to(root).as_posix(),
                                   "no published segment yet (only temporary or backup segment files): a writer may be starting"))
            return True
        recorded = False
        for entry in entries:
            rel = entry.relative_to(root).as_posix()
            try:
                real = entry.resolve()
            except OSError as error:
                skipped.append(Skipped(rel, f"cannot be resolved ({error})"))
            else:
                if not _inside(real, real_root):
                    skipped.append(Skipped(rel, f"refused: it points outside the runs folder (to {real})"))
                elif entry.is_dir():
                    if depth >= MAX_DEPTH:
                        skipped.append(Skipped(rel, f"not searched: deeper than {MAX_DEPTH} levels below the runs folder"))
                    elif not visit(entry, depth + 1):
                        skipped.append(Skipped(rel, "not a run folder: it holds no segment-NNNNN.h5 files"))
                elif folder == root or not _is_run_side_file(entry):
                    skipped.append(Skipped(rel, _file_reason(entry)))
                else:
                    continue
            recorded = True
        return recorded

    visit(root, 0)
    return Discovery(root, tuple(runs), tuple(skipped))


def _is_run_side_file(path: Path) -> bool:
    """Files that sit in folders beside runs (checkpoints, run.json, logs) need no mention."""
    return path.suffix in (".pt", ".json", ".log", ".txt", ".md")


def _file_reason(path: Path) -> str:
    if path.suffix in (".h5", ".hdf5", ".nc"):
        return "an HDF5 file outside a run folder: a run is a folder of segment-NNNNN.h5 files (a token trace shows on the Tokens page)"
    return "not a run: a run is a folder of segment-NNNNN.h5 files"


def resolve_run_name(discovery: Discovery, name: str) -> RunEntry:
    """The discovered run called `name`; RunNameError if it leaves the runs folder or names no run."""
    root = discovery.root.resolve()
    candidate = Path(name)
    if not name or candidate.is_absolute() or ".." in candidate.parts or not _inside((root / candidate).resolve(), root):
        raise RunNameError(f"run {name!r} refused: it points outside the runs folder {discovery.root}")
    for entry in discovery.runs:
        if entry.name == name:
            return entry
    raise RunNameError(f"run {name!r} not found in {discovery.root}")


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the Runs table shows of a run, and what grouping needs. `error` is set when it cannot be read."""

    name: str
    path: Path
    signature: tuple[tuple[str, int, int], ...]
    status: str  # "live" | "closed" | "crashed" | "error"
    meta: Mapping[str, Any] = field(default_factory=dict)
    layers: int | None = None
    heads: int | None = None
    steps_logged: int = 0
    last_step: int | None = None
    names: frozenset[str] = frozenset()
    error: str | None = None
    final_loss: float | None = None  # the last logged training loss
    eval_accuracy: float | None = None  # the last held-out accuracy
    duration_s: float | None = None  # from the first segment's creation to the last write of the newest one
    last_scalar_step: int | None = None  # a softmax baseline logs scalars only

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def last_logged_step(self) -> int | None:
        """The last step of any table."""
        steps = [s for s in (self.last_step, self.last_scalar_step) if s is not None]
        return max(steps) if steps else None

    def value(self, key: str) -> Any:
        """meta[key], else the config read at the dotted path `key` (as the analysis does)."""
        if key == RUN_GROUP_KEY:
            return self.name
        return lookup(self.meta, key)


def _last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def _duration(run: Run, entry: RunEntry) -> float | None:
    created = run.segments[0].attrs.get("created")
    if not isinstance(created, str) or not entry.signature:
        return None
    try:
        start = datetime.fromisoformat(created).timestamp()
    except ValueError:
        return None
    return max(0.0, entry.signature[-1][2] / 1e9 - start)


def load_summary(entry: RunEntry) -> RunSummary:
    """Open the run, read its step index and last scalars, close it. A read failure becomes `error`, not an exception."""
    try:
        run = open_run(entry.path)
        steps = run["step"] if "step" in run else np.zeros(0, dtype=np.int64)
        scalar_names = [n for n in (SCALARS_STEP, "scalars/loss", "scalars/eval_accuracy") if n in run]
        scalars = run.read(*scalar_names) if SCALARS_STEP in scalar_names else {}
        scalar_steps = scalars.get(SCALARS_STEP, ())
        return RunSummary(
            name=entry.name,
            path=entry.path,
            signature=entry.signature,
            status=run.status,
            meta=dict(run.meta),
            layers=run.layers,
            heads=run.heads,
            steps_logged=len(steps),
            last_step=int(steps[-1]) if len(steps) else None,
            names=frozenset(run.names()),
            final_loss=_last_finite(scalars["scalars/loss"]) if "scalars/loss" in scalars else None,
            eval_accuracy=_last_finite(scalars["scalars/eval_accuracy"]) if "scalars/eval_accuracy" in scalars else None,
            duration_s=_duration(run, entry),
            last_scalar_step=int(scalar_steps[-1]) if len(scalar_steps) else None,
        )
    except READ_ERRORS as error:
        return RunSummary(name=entry.name, path=entry.path, signature=entry.signature, status="error", error=str(error))


def _config_leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of a nested config as {dotted path: value}."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_config_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node} if isinstance(node, (str, int, float, bool)) else {}


def group_keys(summaries: Sequence[RunSummary]) -> list[str]:
    """Keys the group picker offers (`analysis.runs.group_keys`)."""
    return read_model.group_keys(summary.meta for summary in summaries)


@dataclass(frozen=True, slots=True)
class Grouping:
    """Readable runs split by a metadata key; `left_out` names runs not in any group, with why.

    notes: what the grouping did that a reader should know (a label split by configuration).
    """

    key: str
    groups: dict[str, tuple[RunSummary, ...]]
    left_out: tuple[Skipped, ...]
    notes: tuple[str, ...] = ()


def group_runs(summaries: Sequence[RunSummary], key: str, *, merge_configurations: bool = False) -> Grouping:
    """The readable runs in groups by the read model's rules (`analysis.runs.group_runs`, as
    `parallax-probe analyze` groups them); within a group, the runs of its most common shape.

    Seeds are averaged layer by layer, so they must agree on depth and head count; a run of
    another shape is left out with a note. Groups of different depths are compared by
    relative depth (`ui.depth_axis`).
    """
    by_name = {summary.name: summary for summary in summaries if summary.ok}
    shared = read_model.group_runs({name: s.meta for name, s in by_name.items()}, key, merge_configurations=merge_configurations)
    left_out = [Skipped(name, reason) for name, reason in shared.left_out]
    out: dict[str, tuple[RunSummary, ...]] = {}
    for label, names in shared.groups.items():
        members = [by_name[name] for name in names]
        common = read_model.most_common_shape((m.layers, m.heads) for m in members)
        for m in members:
            if (m.layers, m.heads) != common:
                left_out.append(
                    Skipped(
                        m.name,
                        f"has {m.layers} layers x {m.heads} heads where group {label!r} has {common[0]} x {common[1]}; "
                        "seeds are averaged layer by layer, so it is left out of the group",
                    )
                )
        out[label] = tuple(m for m in members if (m.layers, m.heads) == common)
    return Grouping(key, out, tuple(left_out), shared.notes)


# One term of the run filter: KEY OP VALUE, e.g. optimizer=muon, train_config.optimizer.muon_lr<0.01.
_FILTER_TERM = re.compile(r"^([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)\s*(.+)$")


class FilterError(ValueError):
    """A run filter that does not parse; the message says which term and how to write it."""


def _filter_value(summary: RunSummary, key: str) -> Any:
    """A key as `value` reads it, else the one config leaf of that name (`lr` for `...optimizer.lr`)."""
    value = summary.value(key)
    if value is not None:
        return value
    matches = [v for path, v in _config_leaves(config_of(summary.meta)).items() if path.rsplit(".", 1)[-1] == key]
    return matches[0] if len(set(map(repr, matches))) == 1 else None


def _compare(actual: Any, op: str, wanted: str) -> bool:
    if actual is None:
        return op == "!="
    try:
        a, b = float(actual), float(wanted)
    except (TypeError, ValueError):
        a, b = str(actual), wanted
    if isinstance(a, float) and math.isnan(a):
        return op == "!="
    return {"=": a == b, "==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def filter_runs(summaries: Sequence[RunSummary], expression: str) -> list[RunSummary]:
    """The runs matching every space-separated term KEY OP VALUE (OP: = != < <= > >=).

    KEY is a metadata key, a dotted config path or the last part of one (`lr`); numbers
    compare as numbers, anything else as text. FilterError names a term that does not parse.
    """
    terms = []
    for term in expression.split():
        match = _FILTER_TERM.match(term)
        if not match:
            raise FilterError(f"filter term {term!r} is not KEY=VALUE, KEY!=VALUE, KEY<VALUE, KEY<=VALUE, KEY>VALUE or KEY>=VALUE")
        terms.append(match.groups())
    return [s for s in summaries if all(_compare(_filter_value(s, key), op, value) for key, op, value in terms)]


def _frozen(*arrays: np.ndarray | None) -> None:
    """Cached arrays are shared by every session of the server: make accidental writes fail."""
    for array in arrays:
        if array is not None:
            array.flags.writeable = False


@dataclass(frozen=True, slots=True)
class LayerSeries:
    """Per-layer series of one run: `values[name]` is (N, L), the mean over heads of a per-head column."""

    step: np.ndarray
    values: dict[str, np.ndarray]


def load_layer_series(path: Path, names: Sequence[str]) -> LayerSeries:
    """Attn columns `names` ((N, L, H) each, or (N, L)) as (N, L) means over heads, in float32.

    The read model's rule (`analysis.runs.read_layer_means`, which the analysis follows too):
    the probe's stored head mean ("attn/layer_<stat>") where every row has it, L values per
    step instead of L x H; otherwise every head, reduced with the same NaN-skipping mean.
    """
    run = open_run(path)
    step, values = read_model.read_layer_means(run.read, frozenset(run.names()), names)
    values = {name: array.astype(np.float32, copy=False) for name, array in values.items()}
    _frozen(step, *values.values())
    return LayerSeries(step, values)


@dataclass(frozen=True, slots=True)
class HeadBuckets:
    """One layer's per-head values of a column, bucket means over steps: step (B,), values (B, H)."""

    step: np.ndarray
    values: np.ndarray


def load_head_buckets(path: Path, name: str, layer: int) -> HeadBuckets:
    """Layer `layer` of the (N, L, H) column `name`, reduced to HEATMAP_BUCKETS buckets of steps.

    Reads only that layer (closed segments chunk per layer): a per-head view never needs the
    whole (N, L, H) array.
    """
    raw = open_run(path).read("step", name, select=(layer,))
    step, values = bucket_mean(raw["step"], raw[name], HEATMAP_BUCKETS)
    _frozen(step, values)
    return HeadBuckets(step, values)


@dataclass(frozen=True, slots=True)
class Spectra:
    """W_R (table "wr") or W_RK circuit (table "wrk") ranks of one run, without the spectra themselves.

    step (M,); stable_rank / effective_rank (M, L) for "wr", (M, L, H) for "wrk";
    head_stable_rank / head_effective_rank (M, L, H) for "wr" only; k: singular values per
    spectrum (min(m, n) of the matrix), head_k: per head block (min(D, d_model)). The spectra
    are read per layer by `load_spectrum`.
    """

    table: str
    step: np.ndarray
    stable_rank: np.ndarray
    effective_rank: np.ndarray
    k: int
    head_stable_rank: np.ndarray | None = None
    head_effective_rank: np.ndarray | None = None
    head_k: int | None = None


def load_spectra(path: Path, table: str) -> Spectra | None:
    """The run's "wr" or "wrk" ranks; None when the run has none (a softmax model, or no spectra logged)."""
    run = open_run(path)
    names = [f"{table}/step", f"{table}/stable_rank", f"{table}/effective_rank"]
    if table == "wr":
        names += [WR_HEAD_STABLE_RANK, WR_HEAD_EFFECTIVE_RANK]
    present = [n for n in names if n in run]
    if f"{table}/stable_rank" not in present or f"{table}/singular_values" not in run:
        return None
    raw = run.read(*present)
    _frozen(*raw.values())
    return Spectra(
        table=table,
        step=raw[f"{table}/step"],
        stable_rank=raw[f"{table}/stable_rank"],
        effective_rank=raw.get(f"{table}/effective_rank"),
        k=run.tables[table].column("singular_values").shape[-1],
        head_stable_rank=raw.get(WR_HEAD_STABLE_RANK),
        head_effective_rank=raw.get(WR_HEAD_EFFECTIVE_RANK),
        head_k=run.tables[table].column("head_singular_values").shape[-1] if WR_HEAD_SINGULAR_VALUES in run and table == "wr" else None,
    )


@dataclass(frozen=True, slots=True)
class Spectrum:
    """One layer's singular values at every spectra step: step (M,), values (M, K) for "wr", (M, H, K) for "wrk"."""

    step: np.ndarray
    values: np.ndarray


def load_spectrum(path: Path, table: str, layer: int) -> Spectrum:
    raw = open_run(path).read(f"{table}/step", f"{table}/singular_values", select=(layer,))
    _frozen(*raw.values())
    return Spectrum(raw[f"{table}/step"], raw[f"{table}/singular_values"])


@dataclass(frozen=True, slots=True)
class Scalars:
    """Run-level scalars: step (N,), values name -> (N,) float64 (NaN where a row lacks it)."""

    step: np.ndarray
    values: dict[str, np.ndarray]


def load_scalars(path: Path) -> Scalars:
    run = open_run(path)
    names = [n for n in run.names() if n.startswith("scalars/") and n != SCALARS_STEP]
    raw = run.read(SCALARS_STEP, *names)
    _frozen(*raw.values())
    return Scalars(raw[SCALARS_STEP], {n.removeprefix("scalars/"): raw[n] for n in names})


class AnalysisRun:
    """A run as the analysis reads it (`analysis.report.RunLike`): the store's run under the
    dashboard's name (`name`, which the report labels it by), its group label under the grouping
    key, and tables longer than MAX_ANALYSIS_ROWS thinned by `reduce.peak_keeping_rows`.

    thinned: one line per thinned table, "attn (100,000 rows -> 428)".
    """

    def __init__(self, path: Path, name: str, key: str, label: str) -> None:
        self._run = open_run(path)
        self.path, self.name = path, name
        self.meta = {**self._run.meta, key: label}
        self.thinned: list[str] = []
        self._rows: dict[str, np.ndarray] = {}
        self._columns: dict[str, np.ndarray] = {}

    def names(self) -> list[str]:
        return self._run.names()

    def __getitem__(self, name: str) -> np.ndarray:
        array = self._read(name)
        table = "attn" if name == "step" else name.split("/")[0]
        if len(array) <= MAX_ANALYSIS_ROWS:
            return array
        if table not in self._rows:
            self._rows[table] = self._thin(table, len(array))
            self.thinned.append(f"{table} ({len(array):,} rows -> {len(self._rows[table]):,})")
        return array[self._rows[table]]

    def _read(self, name: str) -> np.ndarray:
        # The column that picks the peaks is read once, for the thinning and for the analysis.
        if name not in self._columns:
            self._columns = {name: self._run[name]}
        return self._columns[name]

    def _thin(self, table: str, n: int) -> np.ndarray:
        peaks_of = next((name for name in PEAK_COLUMNS.get(table, ()) if name in self._run), None)
        per_layer = None
        if peaks_of is not None:
            values = self._read(peaks_of)
            per_layer = finite_mean(values.reshape(n, values.shape[1], -1), axis=2)  # (N, L): NaN heads left out
        return peak_keeping_rows(n, MAX_ANALYSIS_ROWS, per_layer)


def collapse_report(members: Sequence[tuple[Path, str, str]], key: str) -> tuple[Report, tuple[str, ...]]:
    """(the analysis's Report, one line per run whose tables were thinned) for runs given as
    (path, name, group label): the dashboard's groups, as they are (no further splitting)."""
    runs = [AnalysisRun(path, name, key, label) for path, name, label in members]
    report = build_report(runs, group_by=key, merge_configurations=True)
    thinned = tuple(f"{run.name}: {', '.join(run.thinned)}" for run in runs if run.thinned)
    return report, thinned


def crop(value: Any, low: int, high: int) -> Any:
    """A loaded value (LayerSeries, HeadBuckets, Spectra, Spectrum, Scalars, or a tuple or dict of
    them) cut to the steps low..high; None if no row of it is left (the page says so)."""
    if isinstance(value, tuple):
        parts = tuple(crop(v, low, high) for v in value)
        return None if any(p is None for p in parts) else parts
    if isinstance(value, dict):
        parts = {k: crop(v, low, high) for k, v in value.items()}
        return None if any(p is None for p in parts.values()) else parts
    keep = (value.step >= low) & (value.step <= high)
    if not keep.any():
        return None
    n = len(value.step)
    changes = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if isinstance(item, np.ndarray) and item.ndim and len(item) == n:
            changes[f.name] = item[keep]
        elif isinstance(item, dict):
            changes[f.name] = {k: v[keep] for k, v in item.items()}
    return dataclasses.replace(value, **changes)
