"""The run format's vocabulary: constants, errors, and the table schema (`Column`, `Table`).

No HDF5 here: this module says what a run folder holds, `hdf5` says how it is laid out
in a file. The format itself is documented in docs/file-format.md.

A schema is a set of tables. A table is a step index plus columns; row i of every column
belongs to step i of the index. Where a table lives (format version 1):

    table "attn" (ROOT_TABLE)   /step (N,), /committed (1,), columns /attn/<name> (N, ...)
    any other table T           /T/step (N,), /T/committed (1,), columns /T/<name> (N, ...)

The table "scalars" (SCALARS_TABLE) is present in every run and is *extensible*: a row may
bring a column name the segment lacks (`log_scalars(step, val_loss=...)`); such a column is
a float64 scalar per row. Every other table has a fixed set of columns.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "parallax-probe-run"
FORMAT_VERSION = 1

SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".h5"
# Files of a run folder that belong to the store (and that "overwrite" removes): segments,
# their unpublished temporaries, and the backups that repair keeps.
SEGMENT_RE = re.compile(r"^segment-(\d{5,})\.h5$")
STORE_FILE_RE = re.compile(r"^segment-(\d{5,})\.h5(\.tmp|\.compact\.tmp|\.repair\.tmp|\.crashed(\.\d+)?)$")

ROOT_TABLE = "attn"
SCALARS_TABLE = "scalars"

# /status values. CONTINUED: the writer closed this segment to go on in the next one (a
# scalar name it lacked); if no next segment exists the writer died in between.
STATUS_RUNNING = 0
STATUS_CLOSED = 1
STATUS_CONTINUED = 2

COLUMN_DTYPES = ("f4", "f8", "i4", "i8")
# Dimension names the layout itself uses: every table's index is "step", counters use "one".
RESERVED_DIMS = ("step", "one")
RESERVED_NAMES = ("step", "committed", "status", "heartbeat", "one")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class RunFileError(ValueError):
    """A run file or folder that cannot be read as asked; the message names the file, the problem and the fix."""


class RunExistsError(FileExistsError):
    """mode="new" on a folder that already holds run segments."""


class RunInUseError(RuntimeError):
    """A live writer (another process) still writes the run."""


def segment_name(index: int) -> str:
    return f"{SEGMENT_PREFIX}{index:05d}{SEGMENT_SUFFIX}"


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{kind} name {name!r} is not valid: use letters, digits and '_' (at most 64, not starting with a digit)")


@dataclass(frozen=True, slots=True)
class Column:
    """One statistic: a value of `shape` (dimension names `dims`) per row, stored as `dtype`.

    The on-disk dataset is `(rows,) + shape`, its first dimension is the table's `step`.
    dtype is one of "f4", "f8", "i4", "i8"; `doc` says what the number is (stored as the
    dataset's "doc" attribute).
    """

    name: str
    shape: tuple[int, ...] = ()
    dims: tuple[str, ...] = ()
    dtype: str = "f4"
    doc: str = ""

    def __post_init__(self) -> None:
        _check_name("column", self.name)
        if self.name in RESERVED_NAMES:
            raise ValueError(f"column name {self.name!r} is reserved by the layout ({', '.join(RESERVED_NAMES)})")
        shape = tuple(int(n) for n in self.shape)
        dims = tuple(self.dims)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dims", dims)
        if len(shape) != len(dims):
            raise ValueError(f"column {self.name!r}: shape {shape} has {len(shape)} axes but dims {dims} names {len(dims)}")
        if any(n < 1 for n in shape):
            raise ValueError(f"column {self.name!r}: every axis of shape {shape} must be >= 1")
        for dim in dims:
            _check_name("dimension", dim)
            if dim in RESERVED_DIMS:
                raise ValueError(f"column {self.name!r}: dimension name {dim!r} is reserved ({', '.join(RESERVED_DIMS)})")
        if len(set(dims)) != len(dims):
            raise ValueError(f"column {self.name!r}: dims {dims} repeat a name")
        if self.dtype not in COLUMN_DTYPES:
            raise ValueError(f"column {self.name!r}: dtype {self.dtype!r} is not one of {COLUMN_DTYPES}")
        if not isinstance(self.doc, str):
            raise ValueError(f"column {self.name!r}: doc must be a str")

    @property
    def row_bytes(self) -> int:
        return np.dtype(self.dtype).itemsize * math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("f")


def scalar_column(name: str) -> Column:
    """A column a row brought into an extensible table: one float64 per row."""
    return Column(name, (), (), "f8", doc="run-level scalar logged by the training loop")


@dataclass(frozen=True, slots=True)
class Table:
    """A step index and its columns. Paths and public names follow from the table name."""

    name: str
    columns: tuple[Column, ...] = field(default=())
    extensible: bool = False

    def __post_init__(self) -> None:
        _check_name("table", self.name)
        if self.name in RESERVED_NAMES:
            raise ValueError(f"table name {self.name!r} is reserved by the layout ({', '.join(RESERVED_NAMES)})")
        columns = tuple(self.columns)
        object.__setattr__(self, "columns", columns)
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name!r}: column names repeat: {names}")
        sizes: dict[str, int] = {}
        for column in columns:
            for dim, size in zip(column.dims, column.shape):
                if sizes.setdefault(dim, size) != size:
                    raise ValueError(
                        f"table {self.name!r}: dimension {dim!r} has size {sizes[dim]} in one column and {size} in {column.name!r}"
                    )
        clash = set(sizes) & set(names)
        if clash:
            raise ValueError(f"table {self.name!r}: {sorted(clash)} is both a column and a dimension name")

    @property
    def index_at_root(self) -> bool:
        return self.name == ROOT_TABLE

    @property
    def group(self) -> str:
        return "/" + self.name

    @property
    def step_path(self) -> str:
        return "/step" if self.index_at_root else f"/{self.name}/step"

    @property
    def committed_path(self) -> str:
        return "/committed" if self.index_at_root else f"/{self.name}/committed"

    def column_path(self, column: str) -> str:
        return f"/{self.name}/{column}"

    @property
    def step_name(self) -> str:
        """Public name of the step index: "step" for the root table, "<table>/step" otherwise."""
        return "step" if self.index_at_root else f"{self.name}/step"

    def column_name(self, column: str) -> str:
        return f"{self.name}/{column}"

    @property
    def dims(self) -> dict[str, int]:
        """Dimension name -> size over the columns (not counting "step")."""
        out: dict[str, int] = {}
        for column in self.columns:
            out.update(zip(column.dims, column.shape))
        return out

    def column(self, name: str) -> Column | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    def with_columns(self, names: list[str]) -> Table:
        """This table grown by scalar float64 columns `names` (only for an extensible table)."""
        return Table(self.name, self.columns + tuple(scalar_column(n) for n in names), self.extensible)


def build_tables(tables: Mapping[str, Mapping[str, Column]]) -> dict[str, Table]:
    """The writer's `tables` argument -> Table objects; adds the extensible "scalars" table."""
    if not isinstance(tables, Mapping):
        raise ValueError(f"tables must map table name -> {{column name: Column}}, got {type(tables).__name__}")
    out: dict[str, Table] = {}
    for name, columns in tables.items():
        if not isinstance(columns, Mapping):
            raise ValueError(f"tables[{name!r}] must map column name -> Column, got {type(columns).__name__}")
        for key, column in columns.items():
            if not isinstance(column, Column):
                raise ValueError(f"tables[{name!r}][{key!r}] must be a Column, got {type(column).__name__}")
            if key != column.name:
                raise ValueError(f"tables[{name!r}]: key {key!r} names a Column called {column.name!r}; use the same name")
        extensible = name == SCALARS_TABLE
        if extensible and any(c.shape != () or c.dtype != "f8" for c in columns.values()):
            raise ValueError(f"table {SCALARS_TABLE!r} holds float64 scalars only (shape (), dtype 'f8')")
        out[name] = Table(name, tuple(columns.values()), extensible)
    out.setdefault(SCALARS_TABLE, Table(SCALARS_TABLE, (), True))
    return out


def tables_to_json(tables: Mapping[str, Table]) -> str:
    return json.dumps(
        {
            "tables": [
                {
                    "name": t.name,
                    "extensible": t.extensible,
                    "columns": [
                        {"name": c.name, "shape": list(c.shape), "dims": list(c.dims), "dtype": c.dtype, "doc": c.doc}
                        for c in t.columns
                    ],
                }
                for t in tables.values()
            ]
        }
    )


def tables_from_json(text: str, where: str) -> dict[str, Table]:
    """Parse the root attribute `schema`; any malformation is a RunFileError naming `where`."""
    try:
        doc = json.loads(text)
        out: dict[str, Table] = {}
        for t in doc["tables"]:
            columns = tuple(
                Column(str(c["name"]), tuple(c["shape"]), tuple(c["dims"]), str(c["dtype"]), str(c.get("doc", "")))
                for c in t["columns"]
            )
            table = Table(str(t["name"]), columns, bool(t["extensible"]))
            if table.name in out:
                raise ValueError(f"table {table.name!r} listed twice")
            out[table.name] = table
    except (ValueError, KeyError, TypeError) as error:
        raise RunFileError(
            f"{where}: the root attribute 'schema' is not a valid table list ({error}). "
            "The file is damaged or was not written by parallax-probe; restore it from a backup."
        ) from error
    return out


def union_tables(schemas: Iterable[tuple[str, Mapping[str, Table]]], where: str) -> dict[str, Table]:
    """Every table and column of any of the (source name, tables) `schemas`, in the order first seen.

    A column must have one shape, dims and dtype wherever it appears: a RunFileError names
    the source that disagrees (segments of one run come from one model).
    """
    out: dict[str, Table] = {}
    for source, tables in schemas:
        for name, table in tables.items():
            known = out.get(name)
            if known is None:
                out[name] = table
                continue
            extra = []
            for column in table.columns:
                prior = known.column(column.name)
                if prior is None:
                    extra.append(column)
                elif (prior.shape, prior.dims, prior.dtype) != (column.shape, column.dims, column.dtype):
                    raise RunFileError(
                        f"{where}: segments disagree on {table.column_name(column.name)}: {prior.dtype} {prior.shape} "
                        f"in an earlier segment, {column.dtype} {column.shape} in {source}. "
                        "Segments of one run must come from the same model; open them one by one."
                    )
            if extra:
                out[name] = Table(name, known.columns + tuple(extra), known.extensible or table.extensible)
    return out


def resumed_tables(stored: Mapping[str, Table], declared: Mapping[str, Table], where: str) -> dict[str, Table]:
    """The schema a resumed writer continues with: `declared`, each extensible table grown by
    the columns `stored` has and `declared` lacks (known scalar names start no new segment).

    ValueError if a declared column keeps a stored column's name but changes its shape, dims or dtype.
    """
    out = dict(declared)
    for name, table in declared.items():
        before = stored.get(name)
        if before is None:
            continue
        for column in table.columns:
            prior = before.column(column.name)
            if prior is not None and (prior.shape, prior.dims, prior.dtype) != (column.shape, column.dims, column.dtype):
                raise ValueError(
                    f"{where} stores {name}/{column.name} as {prior.dtype} {prior.shape} {prior.dims}; this writer declares "
                    f"{column.dtype} {column.shape} {column.dims}. Resume with the same model shape, or write a new run."
                )
        if table.extensible:
            out[name] = table.with_columns([c.name for c in before.columns if table.column(c.name) is None])
    return out


# ---- root attributes --------------------------------------------------------------------

# Attributes the store sets itself; a caller's meta may not set them.
STORE_ATTRS = (
    "format", "format_version", "run_id", "segment", "start_step", "created", "schema", "json_attributes",
    "writer_pid", "writer_host", "writer_boot_id", "writer_start_ticks", "repaired",
)
# Provenance every segment carries, with the value used when the caller gives none.
PROVENANCE_DEFAULTS: dict[str, Any] = {
    "optimizer": "unknown",
    "config": {},
    "code_version": "unknown",
    "package_versions": {},
    "device": "unknown",
    "world_size": 1,
}


def encode_meta(meta: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """Caller meta -> (HDF5 attribute values, names stored as JSON text).

    str, int and float are stored as they are; dict, list, tuple, bool and None as JSON
    text ("config" and "package_versions" always as JSON). Raises ValueError naming the key.
    """
    merged = dict(PROVENANCE_DEFAULTS)
    if meta is not None:
        if not isinstance(meta, Mapping):
            raise ValueError(f"meta must be a mapping of attribute name -> value, got {type(meta).__name__}")
        merged.update(meta)
    attrs: dict[str, Any] = {}
    json_names: list[str] = []
    for key, value in merged.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"meta key {key!r} must be a non-empty str without '/'")
        if key in STORE_ATTRS:
            raise ValueError(f"meta[{key!r}] is set by the store itself; leave it out")
        if isinstance(value, np.generic):
            value = value.item()
        if key in ("config", "package_versions") and isinstance(value, str):
            try:
                json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"meta[{key!r}] is a str but not JSON ({error}); pass a dict or JSON text") from error
            attrs[key] = value
            json_names.append(key)
        elif value is None or isinstance(value, (Mapping, list, tuple, bool)):
            # bool too: h5py would store it as an HDF5 enum, which netCDF readers reject.
            try:
                attrs[key] = json.dumps(value, allow_nan=True)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"meta[{key!r}] cannot be stored as JSON ({error}); convert it to str, int, float, bool, list and dict"
                ) from error
            json_names.append(key)
        elif isinstance(value, (str, int, float)):
            attrs[key] = value
        else:
            raise ValueError(f"meta[{key!r}] has type {type(value).__name__}; use str, int, float, bool, None, list or dict")
    return attrs, json_names


def decode_attr(value: Any) -> Any:
    """An HDF5 attribute value (numpy scalar, bytes) -> plain Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [decode_attr(v) for v in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    return value
