"""How a run segment sits in HDF5: layout, safe opening, defensive checks, reading errors, fsync.

Measured with h5py 3.16 / HDF5 2.0 (see docs/file-format.md for the reasons in full):
- A segment is created whole (every dataset, attribute and dimension scale) before
  `swmr_mode = True`; afterwards only raw data of existing chunked datasets changes.
- A live segment's datasets are chunked and *unfiltered*: an unfiltered chunk has a fixed
  size, so HDF5 rewrites it in place. A filtered (compressed) chunk changes size on every
  partial rewrite and, under SWMR, HDF5 never frees the old copy (readers may still hold
  its address): one row per commit into 4-row gzip chunks grew the file to 2.25x the
  data. Closed segments are rewritten compressed (`repair.rewrite_segment`).
- No checksum filter on live chunks either: a SIGKILL can tear an in-place chunk write
  between pages, which leaves committed rows intact (their bytes are the same in the old
  and new chunk) but would fail the chunk's checksum and make those rows unreadable.
- A segment left open for writing (live, or its writer died) must be opened with
  `swmr=True`; a plain open refuses it. With `swmr=True` HDF5 skips its own
  end-of-file check and reads past the end of a truncated file as zeros, so
  `open_for_read` checks the superblock's end address and `check_chunks_in_file` every
  chunk it reads against the file size itself.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .format import (
    FORMAT,
    FORMAT_VERSION,
    RunFileError,
    Table,
    decode_attr,
)

LIBVER = ("v110", "v110")  # HDF5 1.10 tools still read the files; SWMR needs at least v110
LIVE_CHUNK_BYTES = 32 * 1024  # in-place rewrite of the current chunk per commit: keep it small
COMPACT_CHUNK_BYTES = 1024 * 1024  # written once: large chunks read fast and compress well
MAX_CHUNK_ROWS = 4096
GZIP_LEVEL = 1
ALLOWED_FILTERS = {
    h5py.h5z.FILTER_DEFLATE: "gzip",
    h5py.h5z.FILTER_SHUFFLE: "shuffle",
    h5py.h5z.FILTER_FLETCHER32: "fletcher32",
    32000: "lzf",
}
# HDF5 retries a metadata read whose checksum fails under SWMR (a writer may be midway
# through that block); its back-off doubles from 1 ns, so 26 tries wait about 0.13 s in
# all before the read fails. With HDF5's default, 100, a reader of a file cut inside its
# superblock checksum was still waiting after 25 minutes here.
SWMR_READ_ATTEMPTS = 26
DEFAULT_BYTE_BUDGET = 4 * 1024**3
# Reading any element decompresses its whole chunk into a buffer of the chunk's full size,
# whatever the file's size: a few-KB gzip chunk of zeros expands to a gigabyte. The writer's
# chunks hold at most COMPACT_CHUNK_BYTES (one row of a column more, where a row is larger):
# a file declaring chunks over this is not one of ours.
MAX_CHUNK_BYTES = 64 * 1024**2
ATTRIBUTE_BUDGET = 16 * 1024**2  # any one attribute; config JSON is a few KB
MAX_OBJECTS = 100_000  # a run segment holds about 50; more means a file of another kind

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SUPERBLOCK_WRITE = 0x01  # file consistency flags, superblock v2/v3
_SUPERBLOCK_SWMR_WRITE = 0x04
# netCDF-4's marker for a dimension without a coordinate variable (h5netcdf reads it).
NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."


# ---- superblock -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Superblock:
    """What `open_for_read` needs from the first bytes of an HDF5 file."""

    version: int
    flags: int
    end_of_address: int | None  # absolute offset where the file's allocated space ends
    file_size: int  # of the file it was read from, through the same descriptor

    @property
    def open_for_write(self) -> bool:
        """The writer has not closed the file (it is live, or it died)."""
        return self.version >= 2 and bool(self.flags & (_SUPERBLOCK_WRITE | _SUPERBLOCK_SWMR_WRITE))

    def check_not_truncated(self, path: Path) -> None:
        if self.end_of_address is not None and self.end_of_address > self.file_size:
            raise RunFileError(
                f"{path}: truncated: the file is {self.file_size} bytes but its data reaches byte {self.end_of_address}. "
                "It was cut short (incomplete copy, full disk, a crash of the machine before an fsync); "
                "copy it again from the source, or restore it from a backup."
            )


def read_superblock(path: Path, fd: int | None = None) -> Superblock:
    """Find and parse the superblock (at 0, 512, 1024, ...). RunFileError if there is none.

    fd: read through this descriptor (the one HDF5 opened) instead of the path, so the
    superblock and the size belong to the same file even if the name was just replaced.
    """
    if fd is None:
        # O_NONBLOCK: a FIFO put in the file's place would otherwise block this open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RunFileError(f"{path}: not a regular file (a pipe, socket or device); a run segment is an HDF5 file")
            return read_superblock(path, fd)
        finally:
            os.close(fd)
    size = os.fstat(fd).st_size
    offset = 0
    while os.pread(fd, 8, offset) != HDF5_SIGNATURE:
        offset = 512 if offset == 0 else offset * 2
        if offset + 8 > size:
            raise RunFileError(
                f"{path}: not an HDF5 file (no HDF5 signature in its {size} bytes). "
                "A run segment is an HDF5 file named segment-NNNNN.h5; check the path."
            )
    head = os.pread(fd, 120, offset + 8)
    truncated = RunFileError(
        f"{path}: truncated: the file ends inside its HDF5 superblock ({size} bytes). "
        "It was cut short (incomplete copy, full disk); copy it again from the source."
    )
    if not head:
        raise truncated
    version = head[0]
    if version >= 2:
        if len(head) < 4:
            raise truncated
        offset_size, flags, addresses = head[1], head[3], 4
    elif version in (0, 1):
        if len(head) < 16:
            raise truncated
        offset_size, flags = head[5], int.from_bytes(head[12:16], "little")
        addresses = 16 if version == 0 else 20
    else:
        raise RunFileError(f"{path}: HDF5 superblock version {version} is unknown to this HDF5; the file may be damaged.")
    if offset_size not in (2, 4, 8):
        raise RunFileError(f"{path}: HDF5 superblock declares {offset_size}-byte addresses; the file is damaged.")
    # base address, (extension or free-space) address, end-of-file address; v2/v3 end
    # with a root object header address and a checksum
    end = addresses + 3 * offset_size
    if len(head) < (end + offset_size + 4 if version >= 2 else end):
        raise truncated
    base = int.from_bytes(head[addresses : addresses + offset_size], "little")
    eoa = int.from_bytes(head[end - offset_size : end], "little")
    undefined = (1 << (8 * offset_size)) - 1
    return Superblock(version, flags, None if eoa == undefined or base == undefined else eoa, size)


def file_size(f: h5py.File) -> int:
    """Size of the file HDF5 has open (not of whatever the name points at now)."""
    return os.fstat(f.id.get_vfd_handle()).st_size


@functools.cache
def _set_metadata_read_attempts() -> Callable[[int, int], int] | None:
    """HDF5's H5Pset_metadata_read_attempts, which h5py does not wrap (None if not found).

    Under SWMR read HDF5 retries a metadata block whose checksum fails (the writer may be
    rewriting it) 100 times by default, with a back-off that doubles each time: a damaged
    or cut file then hangs a reader for longer than 25 minutes (measured).
    """
    try:
        with open("/proc/self/maps") as maps:
            libraries = {line.split()[-1] for line in maps if "libhdf5" in line and ".so" in line}
    except OSError:
        return None
    for library in sorted(libraries):
        try:
            function = ctypes.CDLL(library).H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
        return function
    return None


def _fapl(swmr: bool, locking: bool | None | str) -> h5py.h5p.PropFAID:
    """File access properties as h5py.File makes them, plus a bound on SWMR read retries."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    if locking is not None:
        fapl.set_file_locking(bool(locking), locking == "best-effort")
    setter = _set_metadata_read_attempts()
    if swmr and setter is not None:
        setter(fapl.id, SWMR_READ_ATTEMPTS)
    return fapl


def _open(path: Path, swmr: bool) -> h5py.File:
    flags = h5py.h5f.ACC_RDONLY | (h5py.h5f.ACC_SWMR_READ if swmr else 0)
    # HDF5 opens a file once per process: if other code here holds it open with other
    # locking settings (xarray and a plain h5py.File use HDF5's default, None), a second
    # open must use the same ones. Ours never lock.
    for locking in (False, None, "best-effort"):
        try:
            return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=_fapl(swmr, locking)))
        except OSError as error:
            if "flag values don't match" not in str(error):
                raise
    return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=_fapl(swmr, True)))


def open_for_read(path: Path) -> tuple[h5py.File, Superblock]:
    """Open a segment read-only without taking a lock; refuses truncated files.

    Never hold the handle: open, read, close (a held plain handle can block a writer).
    """
    superblock = read_superblock(path)
    superblock.check_not_truncated(path)  # before HDF5 sees it: SWMR reads of a cut file read zeros
    # A file not closed by its writer opens only with swmr=True; a closed one either way.
    attempts = (True, False) if superblock.open_for_write else (False, True)
    first_error: OSError | None = None
    for swmr in attempts:
        try:
            f = _open(path, swmr)
            break
        except OSError as error:
            first_error = first_error or error
    else:
        message = str(first_error)
        if "truncated" in message:
            raise RunFileError(
                f"{path}: truncated ({message}). It was cut short (incomplete copy, full disk); copy it again from the source."
            ) from first_error
        raise RunFileError(
            f"{path}: HDF5 cannot open it ({message}). The file is damaged or not a parallax-probe run segment."
        ) from first_error
    try:
        # Again through HDF5's own descriptor: the name may point at a newer file now
        # (a segment replaced by its compacted copy) than the one checked above.
        superblock = read_superblock(path, f.id.get_vfd_handle())
        superblock.check_not_truncated(path)
    except BaseException:
        f.close()
        raise
    return f, superblock


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """HDF5 errors while reading `path` become one RunFileError naming the file."""
    try:
        yield
    except RunFileError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise RunFileError(
            f"{path}: reading failed ({type(error).__name__}: {error}). The file is damaged or was cut short; "
            "copy it again from its source or restore it from a backup."
        ) from error


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so a rename in it survives a machine crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- defensive checks -----------------------------------------------------------------


def _attribute_bytes(obj: h5py.HLObject, name: str) -> int:
    attr = h5py.h5a.open(obj.id, name.encode())
    return attr.get_space().get_simple_extent_npoints() * attr.get_type().get_size()


def check_root(f: h5py.File, path: Path) -> dict[str, Any]:
    """Check `format` and `format_version`; return the root attributes as plain Python."""
    names = list(f.attrs.keys())
    for name in names:
        if _attribute_bytes(f, name) > ATTRIBUTE_BUDGET:
            raise RunFileError(f"{path}: root attribute {name!r} declares more than {ATTRIBUTE_BUDGET} bytes; refusing to read it.")
    attrs = {name: decode_attr(f.attrs[name]) for name in names}
    if attrs.get("format") != FORMAT:
        found = f"format = {attrs['format']!r}" if "format" in attrs else "no 'format' attribute"
        raise RunFileError(
            f"{path}: an HDF5 file, but not a parallax-probe run ({found}; expected format = {FORMAT!r}). "
            "Point at a run folder or one of its segment-NNNNN.h5 files."
        )
    version = attrs.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunFileError(f"{path}: format_version is {version!r}, not an integer; the file is damaged.")
    if version > FORMAT_VERSION:
        raise RunFileError(
            f"{path}: written in run format version {version}; this parallax-probe reads up to version {FORMAT_VERSION}. "
            "Upgrade parallax-probe to read it."
        )
    if version < 1:
        raise RunFileError(f"{path}: format_version {version} is not a valid version; the file is damaged.")
    return attrs


def check_contents(f: h5py.File, path: Path, byte_budget: int) -> None:
    """Refuse what could make a reader open other files or allocate without bound.

    External links, soft links, external raw storage, virtual datasets, filters other
    than gzip/shuffle/fletcher32/lzf, and chunks or attributes over the budgets.
    """
    stack: list[h5py.Group] = [f]
    seen = 0
    while stack:
        group = stack.pop()
        for name in group:
            seen += 1
            if seen > MAX_OBJECTS:
                raise RunFileError(f"{path}: holds more than {MAX_OBJECTS} objects; not a parallax-probe run segment.")
            where = f"{group.name.rstrip('/')}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise RunFileError(
                    f"{path}: {where} is an external link to {link.filename!r}:{link.path}. Run files never hold one, "
                    "and following it would open another file; refusing the file."
                )
            if isinstance(link, h5py.SoftLink):
                raise RunFileError(f"{path}: {where} is a soft link to {link.path}; run files hold none. Refusing the file.")
            obj = group[name]
            for attr in obj.attrs:
                if _attribute_bytes(obj, attr) > ATTRIBUTE_BUDGET:
                    raise RunFileError(f"{path}: attribute {attr!r} of {where} declares more than {ATTRIBUTE_BUDGET} bytes.")
            if isinstance(obj, h5py.Group):
                if where.count("/") > 2:
                    raise RunFileError(f"{path}: group {where} is nested deeper than a run segment's layout.")
                stack.append(obj)
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(obj, path, where, byte_budget)
            else:
                raise RunFileError(f"{path}: {where} is a {type(obj).__name__}; run segments hold only groups and datasets.")


def _check_dataset(ds: h5py.Dataset, path: Path, where: str, byte_budget: int) -> None:
    if ds.is_virtual:
        raise RunFileError(
            f"{path}: {where} is a virtual dataset (it maps other files' data). Run files never hold one; refusing the file."
        )
    if ds.external:
        files = ", ".join(str(e[0]) for e in ds.external)
        raise RunFileError(
            f"{path}: {where} keeps its data in external file(s) {files}. Run files never do; refusing the file."
        )
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            raise RunFileError(
                f"{path}: {where} uses HDF5 filter {code}; run files use only {', '.join(ALLOWED_FILTERS.values())}."
            )
    if ds.dtype.kind not in "iuf":
        raise RunFileError(f"{path}: {where} has dtype {ds.dtype}; run datasets are integer or float.")
    # reading any row decompresses its whole chunk
    if chunk_bytes(ds) > MAX_CHUNK_BYTES:
        raise RunFileError(
            f"{path}: {where} declares chunks of {ds.chunks} ({chunk_bytes(ds)} bytes); reading any row would decompress "
            f"a whole chunk, and run segments use chunks of at most {MAX_CHUNK_BYTES} bytes. Refusing the file."
        )
    if chunk_bytes(ds) > byte_budget:
        raise RunFileError(
            f"{path}: {where} declares chunks of {ds.chunks} ({chunk_bytes(ds)} bytes), over the byte budget of {byte_budget} "
            "bytes. If the file is trusted, pass a larger budget: open_run(path, byte_budget=...)."
        )


def chunk_bytes(ds: h5py.Dataset) -> int:
    """Bytes of one decompressed chunk: what HDF5 allocates to read any element of `ds`."""
    return math.prod(ds.chunks) * ds.dtype.itemsize if ds.chunks is not None else 0


def check_tables(f: h5py.File, path: Path, tables: Mapping[str, Table]) -> None:
    """Every dataset the schema names exists, chunked, with the schema's dtype and row shape;
    the counters /status, /heartbeat and each table's `committed` are one value in a chunk of one."""
    for where, kind in (("/status", "i"), ("/heartbeat", "f")):
        ds = f.get(where)
        if not isinstance(ds, h5py.Dataset) or ds.shape != (1,) or ds.dtype.kind != kind or ds.chunks != (1,):
            raise RunFileError(
                f"{path}: {where} should be one {'integer' if kind == 'i' else 'float'} in a chunk of one; the file is damaged."
            )
    for table in tables.values():
        expected = [(table.step_path, np.dtype("i8"), ()), (table.committed_path, None, None)]
        expected += [(table.column_path(c.name), np.dtype(c.dtype), c.shape) for c in table.columns]
        for where, dtype, row_shape in expected:
            ds = f.get(where)
            if not isinstance(ds, h5py.Dataset):
                raise RunFileError(f"{path}: the schema lists {where} but the file has no such dataset; the file is damaged.")
            if row_shape is None:
                if ds.shape != (1,) or ds.dtype.kind != "i" or ds.chunks != (1,):
                    raise RunFileError(f"{path}: {where} should be one integer in a chunk of one, is {ds.dtype} {ds.shape} "
                                       f"in chunks of {ds.chunks}; the file is damaged.")
                continue
            if ds.chunks is None:  # an unchunked dataset has no per-row allocation to check committed rows against
                raise RunFileError(f"{path}: {where} is not chunked; run datasets always are. The file is damaged.")
            if ds.dtype != dtype or ds.shape[1:] != row_shape or ds.ndim != 1 + len(row_shape):
                raise RunFileError(
                    f"{path}: {where} is {ds.dtype} {ds.shape}; the schema says {dtype} (rows,) + {row_shape}. The file is damaged."
                )


def check_chunks_in_file(ds: h5py.Dataset, rows: int, path: Path) -> None:
    """Every chunk holding rows [0, rows) is stored, inside the file (SWMR reads skip HDF5's check).

    Stored matters as much as inside: rows of a chunk never written read as fill values, so a
    few-KB file can declare 10^8 committed rows and make a reader allocate gigabytes for them.
    """
    if rows == 0 or ds.chunks is None:
        return
    size = file_size(ds.file)
    chunk_rows = ds.chunks[0]
    ends = [0]

    def visit(info) -> None:
        if info.chunk_offset[0] < rows:
            ends.append(info.byte_offset + info.size)

    ds.id.chunk_iter(visit)
    if max(ends) > size:
        raise RunFileError(
            f"{path}: truncated: the file is {size} bytes but {ds.name}'s committed rows reach byte {max(ends)}. "
            "It was cut short (incomplete copy, full disk, a crash of the machine before an fsync); "
            "copy it again from the source, or restore it from a backup."
        )
    stored = len(ends) - 1
    needed = -(-rows // chunk_rows) * math.prod(-(-n // c) for n, c in zip(ds.shape[1:], ds.chunks[1:]))
    if stored < needed:
        raise RunFileError(
            f"{path}: {ds.name} counts {rows} committed rows but stores only {stored} of their {needed} chunks; the file is damaged."
        )


# ---- layout -----------------------------------------------------------------------------


def _chunk_rows(row_bytes: int, target: int, rows: int | None) -> int:
    n = max(1, min(MAX_CHUNK_ROWS, target // max(row_bytes, 1)))
    return n if rows is None else max(1, min(n, rows))


def _dataset(
    parent: h5py.Group, name: str, row_shape: tuple[int, ...], dtype: str, rows: int | None, *, growing: bool = True
) -> h5py.Dataset:
    """A chunked dataset of (0,) + row_shape, or a one-element counter (1,) when not growing.

    rows=None: live layout (unfiltered, small chunks). rows=n: compact layout for n rows.
    """
    target = LIVE_CHUNK_BYTES if rows is None else COMPACT_CHUNK_BYTES
    # Compact rows of two or more axes get one chunk column per index of their first axis
    # (the layer, in the probe's tables): a read of one layer then decompresses 1/L of the
    # data, and a read of every layer costs the same as with whole-row chunks.
    per_chunk_row = (1, *row_shape[1:]) if rows is not None and len(row_shape) >= 2 else row_shape
    row_bytes = np.dtype(dtype).itemsize * math.prod(per_chunk_row)
    chunks = (_chunk_rows(row_bytes, target, rows) if growing else 1,) + per_chunk_row
    filters: dict[str, Any] = {}
    if rows is not None:
        filters = dict(compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True, fletcher32=True)
    fill = np.nan if dtype.startswith("f") else 0
    if growing:
        return parent.create_dataset(
            name, shape=(0,) + row_shape, maxshape=(None,) + row_shape, chunks=chunks, dtype=dtype, fillvalue=fill, **filters
        )
    return parent.create_dataset(name, shape=(1,), maxshape=(None,), chunks=(1,), dtype=dtype, fillvalue=fill, **filters)


def create_layout(
    f: h5py.File, tables: Mapping[str, Table], attrs: Mapping[str, Any], *, rows: Mapping[str, int] | None = None
) -> None:
    """Create every object of a segment (before SWMR: nothing can be created after).

    rows=None: live layout; rows={table: n}: compact (gzip) layout sized for n rows.
    """
    for key, value in attrs.items():
        f.attrs[key] = value
    one = f.create_dataset("one", shape=(1,), maxshape=(1,), chunks=(1,), dtype="i1")
    one.make_scale(f"{NOT_A_VARIABLE}{1:10d}")
    status = _dataset(f, "status", (), "i1", None, growing=False)
    heartbeat = _dataset(f, "heartbeat", (), "f8", None, growing=False)
    status.attrs["doc"] = "0 running, 1 closed, 2 continued in the next segment"
    heartbeat.attrs["doc"] = "unix time of the writer's last commit"
    for ds in (status, heartbeat):
        ds.dims[0].attach_scale(one)
    for table in tables.values():
        n = None if rows is None else rows.get(table.name, 0)
        group = f.require_group(table.group)
        step = _dataset(f if table.index_at_root else group, "step", (), "i8", n)
        step.make_scale("step")
        step.attrs["doc"] = f"training step of each row of table {table.name!r}"
        committed = _dataset(f if table.index_at_root else group, "committed", (), "i8", None, growing=False)
        committed.attrs["doc"] = f"rows of table {table.name!r} complete on disk; read it first, slice every column to it"
        committed.dims[0].attach_scale(one)
        scales = {}
        for dim, size in table.dims.items():
            scale = group.create_dataset(dim, data=np.arange(size, dtype="i8"), chunks=(size,), maxshape=(size,))
            scale.make_scale(dim)
            scales[dim] = scale
        for column in table.columns:
            ds = _dataset(group, column.name, column.shape, column.dtype, n)
            ds.attrs["doc"] = column.doc
            ds.dims[0].attach_scale(step)
            for axis, dim in enumerate(column.dims, start=1):
                ds.dims[axis].attach_scale(scales[dim])


@dataclass(slots=True)
class SegmentHandles:
    """Open datasets of a writable segment, looked up once (h5py lookups cost microseconds)."""

    file: h5py.File
    steps: dict[str, h5py.Dataset]
    committed: dict[str, h5py.Dataset]
    columns: dict[str, dict[str, h5py.Dataset]]
    heartbeat: h5py.Dataset
    rows: dict[str, int]

    @classmethod
    def of(cls, f: h5py.File, tables: Mapping[str, Table]) -> SegmentHandles:
        return cls(
            f,
            {t.name: f[t.step_path] for t in tables.values()},
            {t.name: f[t.committed_path] for t in tables.values()},
            {t.name: {c.name: f[t.column_path(c.name)] for c in t.columns} for t in tables.values()},
            f["heartbeat"],
            {t.name: 0 for t in tables.values()},
        )

    def write_rows(self, table: str, steps: np.ndarray, blocks: Mapping[str, np.ndarray]) -> None:
        """Append rows (steps (k,), blocks name -> (k, ...)): one resize and one write per dataset.

        Through h5py's low-level calls: its high-level slicing costs ~0.2 ms a dataset.
        """
        n0 = self.rows[table]
        k = len(steps)
        for ds, block in [(self.steps[table], steps), *((self.columns[table][name], v) for name, v in blocks.items())]:
            block = np.ascontiguousarray(block, dtype=ds.dtype)
            row_shape = block.shape[1:]
            ds.id.set_extent((n0 + k, *row_shape))
            target = ds.id.get_space()
            target.select_hyperslab((n0,) + (0,) * len(row_shape), block.shape)
            ds.id.write(h5py.h5s.create_simple(block.shape), target, block)
        self.rows[table] = n0 + k

    def write_counters(self, heartbeat: float) -> None:
        for table, ds in self.committed.items():
            ds[0] = self.rows[table]
        self.heartbeat[0] = heartbeat


# ---- reading ----------------------------------------------------------------------------


def read_committed(f: h5py.File, table: Table, path: Path) -> int:
    """The table's committed row count, checked against its step dataset and the chunks stored for it."""
    n = int(f[table.committed_path][0])
    step = f[table.step_path]
    length = step.shape[0]
    if n < 0 or n > length:
        raise RunFileError(
            f"{path}: {table.committed_path} says {n} rows but {table.step_path} holds {length}; the file is damaged."
        )
    check_chunks_in_file(step, n, path)
    return n


def read_status(f: h5py.File) -> tuple[int, float]:
    return int(f["status"][0]), float(f["heartbeat"][0])
