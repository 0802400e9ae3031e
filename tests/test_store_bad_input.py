"""Files from elsewhere: each kind of bad input gives one RunFileError naming the file and the problem."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import store_fixtures as fx

from parallax_probe.store import FORMAT_VERSION, RunFileError, RunWriter, open_run

CLI = [sys.executable, "-m", "parallax_probe"]
MiB = 1024**2


@pytest.fixture(scope="module")
def good_segment(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("good") / "run"
    writer = RunWriter(run_dir, tables=fx.tables(layers=3, heads=2), meta={"optimizer": "test"}, start_step=0)
    for step in range(4):
        fx.write_step(writer, step)
        writer.append("scalars", step, loss=float(step))
        writer.commit()
    writer.close()
    return run_dir / "segment-00000.h5"


@pytest.fixture
def edited(good_segment, tmp_path):
    """A copy of the good (closed) segment, for a test to damage."""
    path = tmp_path / "segment-00000.h5"
    shutil.copy(good_segment, path)
    return path


def refused(path: Path, match: str, **kwargs) -> RunFileError:
    with pytest.raises(RunFileError, match=match) as info:
        run = open_run(path, **kwargs)
        run.read(*run.names())
    assert str(path) in str(info.value), "the message names the file"
    return info.value


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("loss went down\n" * 100)
    refused(path, "not an HDF5 file")
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    refused(empty, "not an HDF5 file")


def test_hdf5_of_another_program(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
        f.attrs["format"] = "something-else"
    refused(path, "not a parallax-probe run \\(format = 'something-else'")
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    refused(path, "not a parallax-probe run \\(no 'format' attribute")


def test_newer_format_version(edited):
    with h5py.File(edited, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    refused(edited, f"format version {FORMAT_VERSION + 1}.*Upgrade parallax-probe")


def test_external_link(edited, tmp_path):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["x"] = np.arange(3)
    with h5py.File(edited, "r+") as f:
        f["attn/elsewhere"] = h5py.ExternalLink(str(secret), "/x")
    refused(edited, "/attn/elsewhere is an external link")


def test_soft_link(edited):
    with h5py.File(edited, "r+") as f:
        f["wr/alias"] = h5py.SoftLink("/step")
    refused(edited, "/wr/alias is a soft link")


def test_external_storage(edited, tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\0" * 64)
    with h5py.File(edited, "r+") as f:
        f.create_dataset("attn/outside", shape=(4,), dtype="f4", external=[(str(raw), 0, 16)])
    refused(edited, "/attn/outside keeps its data in external file")


def test_virtual_dataset(edited, tmp_path):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f["x"] = np.arange(4, dtype="f4")
    layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(source), "x", shape=(4,))
    with h5py.File(edited, "r+") as f:
        f.create_virtual_dataset("attn/mapped", layout)
    refused(edited, "/attn/mapped is a virtual dataset")


def test_filter_outside_the_allowed_set(edited):
    with h5py.File(edited, "r+") as f:
        f.create_dataset("attn/packed", data=np.arange(8, dtype="i4"), scaleoffset=0)
    refused(edited, "uses HDF5 filter 6")


def test_huge_declared_shape_is_refused_before_reading(edited):
    with h5py.File(edited, "r+") as f:
        for path in ("step", "attn/cor_mean"):
            f[path].resize(10**12, axis=0)  # declares ~2 TB of cor_mean; stores nothing
        f["committed"][0] = 10**12
    assert edited.stat().st_size < 1024**2
    run = open_run(edited)  # the structure is fine: only reading would be too much
    with pytest.raises(RunFileError, match="/step counts 1000000000000 committed rows but stores only 1 of"):
        run["attn/cor_mean"]


def test_byte_budget_is_configurable(good_segment):
    assert len(open_run(good_segment, byte_budget=10_000)["attn/cor_mean"]) == 4
    refused(good_segment, "over the byte budget of 100 bytes.*byte_budget=", byte_budget=100)


def test_committed_beyond_the_rows(edited):
    with h5py.File(edited, "r+") as f:
        f["wr/committed"][0] = 99
    refused(edited, "/wr/committed says 99 rows but /wr/step holds 1")


def test_truncated_closed_segment(good_segment, tmp_path):
    path = tmp_path / "cut.h5"
    data = good_segment.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    refused(path, "truncated")


def test_damaged_metadata_of_a_live_segment_fails_fast(tmp_path):
    # A live (SWMR-flagged) file: HDF5 retries failed metadata checksums with a back-off
    # that, left at its default, waited more than 25 minutes here.
    writer = RunWriter(tmp_path / "run", tables=fx.tables(layers=3, heads=2), start_step=0)
    fx.write_step(writer, 0)
    writer.commit()
    data = writer.path.read_bytes()
    path = tmp_path / "damaged.h5"
    path.write_bytes(data[:200] + bytes(60) + data[260:])
    start = time.perf_counter()
    refused(path, "reading failed.*checksum")
    assert time.perf_counter() - start < 5
    writer.close()


def test_folder_problems(good_segment, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        open_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFileError, match="no segment-NNNNN.h5 files"):
        open_run(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(good_segment, mixed / "segment-00000.h5")
    RunWriter(tmp_path / "other", tables=fx.tables(layers=3, heads=2), start_step=0).close()
    shutil.copy(tmp_path / "other" / "segment-00000.h5", mixed / "segment-00001.h5")
    with pytest.raises(RunFileError, match="different runs"):
        open_run(mixed)


def test_unknown_name_lists_what_exists(good_segment):
    run = open_run(good_segment)
    with pytest.raises(KeyError, match="'attn/nope' is not in run.*attn/cor_mean"):
        run["attn/nope"]
    assert "attn/cor_mean" in run and "attn/nope" not in run


# Runs argv and writes its peak resident memory to a file. The CLI is started from this small
# process, not from pytest: a child forked from pytest counts pytest's pages (hundreds of MB after
# a test built a large chunk) in its peak until it execs.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))\n"
    "sys.exit(code)\n"
)


def run_measured(*args) -> tuple[int, str, str, int]:
    """Run the CLI: (exit code, stdout, stderr, peak resident bytes of the CLI process)."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak"
        result = subprocess.run([sys.executable, "-c", _MEASURE, str(peak_file), *CLI, *map(str, args)],
                                capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout, result.stderr, int(peak_file.read_text())


@pytest.fixture(scope="module")
def inspect_baseline_rss(good_segment) -> int:
    rc, _, _, peak = run_measured("inspect", good_segment)
    assert rc == 0
    return peak


@pytest.mark.timeout(300)
def test_committed_rows_never_written_are_refused_without_allocating_them(edited, inspect_baseline_rss):
    """A file of a few hundred KB declaring 10^8 committed steps that were never written (they read
    as fill values) made inspect allocate for all of them: refused from the chunks actually stored."""
    with h5py.File(edited, "r+") as f:
        f["step"].resize(10**8, axis=0)
        f["committed"][0] = 10**8
    assert edited.stat().st_size < MiB
    rc, _, err, peak = run_measured("inspect", edited)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "/step counts 100000000 committed rows but stores only" in err
    assert peak < inspect_baseline_rss + 100 * MiB, f"inspect peaked at {peak / MiB:.0f} MiB"


@pytest.mark.timeout(300)
def test_a_chunk_that_decompresses_to_256_mib_is_refused_unread(edited, inspect_baseline_rss):
    """Reading one row decompresses its whole chunk: a small gzip chunk of zeros can expand to
    gigabytes, under any byte budget a reader would choose."""
    with h5py.File(edited, "r+") as f:
        rows = f["attn/cor_mean"][...]
        del f["attn/cor_mean"]
        f.create_dataset("attn/cor_mean", data=rows, maxshape=(None, 3, 2), chunks=(256 * MiB // 24, 3, 2), compression="gzip")
    assert edited.stat().st_size < 2 * MiB
    rc, _, err, peak = run_measured("inspect", edited)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "/attn/cor_mean declares chunks of" in err and "Refusing the file" in err
    assert peak < inspect_baseline_rss + 100 * MiB, f"inspect peaked at {peak / MiB:.0f} MiB"


def replace_counter(f: h5py.File, name: str, value: int) -> None:
    """The same one-element counter, in a chunk of 2^20 elements: reading it decompresses all of them."""
    del f[name]
    f.create_dataset(name, data=np.array([value], dtype="i8"), maxshape=(None,), chunks=(2**20,), compression="gzip")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f["attn/cor_mean"].resize(2, axis=0), "/attn/cor_mean holds 2 rows but /committed says 4"),
        (lambda f: f["wr/stable_rank"].resize(0, axis=0), "/wr/stable_rank holds 0 rows but /wr/committed says 1"),
        (lambda f: replace_counter(f, "committed", 4), "/committed should be one integer in a chunk of one"),
        (lambda f: replace_counter(f, "status", 1), "/status should be one integer in a chunk of one"),
    ],
    ids=["attn-column-short", "wr-column-empty", "committed-in-a-large-chunk", "status-in-a-large-chunk"],
)
def test_inspect_of_inconsistent_counters_gives_one_line(edited, damage, message):
    with h5py.File(edited, "r+") as f:
        damage(f)
    rc, _, err, _ = run_measured("inspect", edited)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert message in err
