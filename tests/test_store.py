"""The run store: layout, round trip, segments, schema growth, modes, summary. Real files only."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import store_fixtures as fx

from parallax_probe.run_summary import format_run_summary
from parallax_probe.store import (
    FORMAT,
    FORMAT_VERSION,
    Column,
    RunExistsError,
    RunInUseError,
    RunWriter,
    open_run,
)
from parallax_probe.store.liveness import LIVE_HEARTBEAT_S, segment_status

SMALL = fx.tables(layers=3, heads=2)
META = {
    "optimizer": "muon",
    "config": {"model": {"layers": 3}, "seed": 7},
    "code_version": "git:abc123",
    "package_versions": {"numpy": np.__version__},
    "device": "cpu (test)",
    "world_size": 2,
    "native_statistics": True,
    "layer_modules": ["layers.0.attn", "layers.1.attn", "layers.2.attn"],
    "seed": 7,
}


def write_steps(run_dir: Path, steps, *, mode="new", start_step=None, version=0, schema=SMALL, close=True, **kwargs):
    steps = list(steps)
    start = steps[0] if start_step is None else start_step
    writer = RunWriter(run_dir, tables=schema, meta=META, mode=mode, start_step=start, **kwargs)
    for step in steps:
        fx.write_step(writer, step, version)
        writer.append("scalars", step, loss=1.0 / (step + 1) + version)
        writer.commit()
    if close:
        writer.close()
    return writer


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- layout --------------------------------------------------------------------------------


def test_round_trip_of_every_column_and_the_metadata(tmp_path):
    write_steps(tmp_path / "run", range(12))
    run = open_run(tmp_path / "run")
    assert run.status == "closed"
    assert (run.layers, run.heads, run.steps_logged, run.last_step) == (3, 2, 12, 11)
    np.testing.assert_array_equal(run["step"], np.arange(12))
    np.testing.assert_array_equal(run["wr/step"], np.arange(0, 12, fx.WR_EVERY))
    np.testing.assert_allclose(run["scalars/loss"], 1.0 / (np.arange(12) + 1))
    np.testing.assert_array_equal(run["scalars/step"], np.arange(12))
    fx.check_run_values(run)
    assert run["attn/tokens"].dtype == np.int64 and run["attn/cor_mean"].dtype == np.float32
    assert run["wr/stable_rank"].dtype == np.float64
    assert set(run.names()) == {"step", "wr/step", "scalars/step", "scalars/loss"} | {
        f"{t}/{c}" for t in ("attn", "wr") for c in SMALL[t]
    }
    meta = run.meta
    assert meta["format"] == FORMAT and meta["format_version"] == FORMAT_VERSION
    assert run.config == META["config"] and meta["package_versions"] == META["package_versions"]
    assert meta["native_statistics"] is True and meta["layer_modules"] == META["layer_modules"]
    for key in ("optimizer", "code_version", "device", "world_size", "seed"):
        assert meta[key] == META[key]
    for key in ("run_id", "segment", "start_step", "created", "writer_pid", "writer_host"):
        assert key in meta


def test_layout_names_chunking_and_compression(tmp_path):
    writer = write_steps(tmp_path / "run", range(6), close=False)
    live_path = writer.path

    def datasets(f):
        out = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj

        f.visititems(visit)
        return out

    with h5py.File(live_path, "r", swmr=True, locking=False) as f:
        live = datasets(f)
        for name in ("step", "committed", "status", "heartbeat", "attn/cor_mean", "attn/tokens", "wr/step",
                     "wr/committed", "wr/singular_values", "scalars/step", "scalars/committed", "scalars/loss"):
            assert name in live, name
        assert all(ds.chunks is not None for ds in live.values()), "every dataset chunked, also the tiny ones"
        scales = ("layer", "head", "sv", "one")
        assert all(ds.maxshape[0] is None for name, ds in live.items() if name.split("/")[-1] not in scales)
        assert live["attn/cor_mean"].compression is None, "live chunks are rewritten in place: unfiltered"
        assert f["committed"][0] == 6 and f["wr/committed"][0] == 2
    writer.close()
    with h5py.File(live_path, "r") as f:  # a closed segment opens with a plain read
        closed = datasets(f)
        assert all(ds.chunks is not None for ds in closed.values())
        assert closed["attn/cor_mean"].compression == "gzip" and closed["attn/cor_mean"].fletcher32
        assert f["status"][0] == 1
        schema = json.loads(f.attrs["schema"])
        assert [t["name"] for t in schema["tables"]] == ["attn", "wr", "scalars"]


def test_closed_segments_chunk_each_layer_apart(tmp_path):
    writer = write_steps(tmp_path / "run", range(6))
    with h5py.File(writer.path, "r") as f:
        assert f["attn/cor_mean"].chunks == (6, 1, 2)  # (rows, one layer, heads)
        assert f["wr/singular_values"].chunks == (2, 1, fx.SV)
        assert f["wr/stable_rank"].chunks == (2, 3)  # one axis per row: whole rows


@pytest.mark.parametrize("close", [False, True], ids=["live", "closed"])
def test_select_reads_part_of_each_row_across_segments(tmp_path, close):
    run_dir = tmp_path / "run"
    write_steps(run_dir, range(4))
    writer = write_steps(run_dir, range(4, 9), mode="resume", version=1, close=close)
    run = open_run(run_dir)
    full = run.read("attn/cor_mean", "attn/tokens", "wr/head_stable_rank")
    for select in [(2,), (-1,), (0, 1), (slice(1, 3),), (slice(None), 0), (slice(0, 3, 2), slice(None))]:
        part = run.read("attn/cor_mean", "attn/tokens", "wr/head_stable_rank", "step", select=select)
        for name, array in full.items():
            np.testing.assert_array_equal(part[name], array[(slice(None), *select)], err_msg=f"{name} {select}")
            assert part[name].dtype == array.dtype
        np.testing.assert_array_equal(part["step"], range(9))  # step indexes are not selected
    if not close:
        writer.close()


def test_select_out_of_range_or_malformed_names_the_column(tmp_path):
    write_steps(tmp_path / "run", range(3))
    run = open_run(tmp_path / "run")
    with pytest.raises(IndexError, match=r"out of range for axis 1 of 'attn/cor_mean' \(size 3\)"):
        run.read("attn/cor_mean", select=(3,))
    with pytest.raises(IndexError, match="has 3 indices but rows of 'attn/cor_mean' have shape"):
        run.read("attn/cor_mean", select=(0, 0, 0))
    with pytest.raises(IndexError, match="positive step"):
        run.read("attn/cor_mean", select=(slice(None, None, -1),))
    with pytest.raises(TypeError, match="tuple of ints and slices"):
        run.read("attn/cor_mean", select=[0])


def test_select_of_a_column_missing_from_a_segment_reads_as_nan(tmp_path):
    run_dir = tmp_path / "run"
    write_steps(run_dir, range(2))
    grown = {**SMALL, "attn": {**SMALL["attn"], "extra": Column("extra", (3, 2), ("layer", "head"), "f4")}}
    writer = RunWriter(run_dir, tables=grown, meta=META, mode="resume", start_step=2)
    row = {name: fx.value("attn", c, 2) for name, c in SMALL["attn"].items()}
    writer.append("attn", 2, **row, extra=np.arange(6, dtype=np.float32).reshape(3, 2))
    writer.close()
    extra = open_run(run_dir).read("attn/extra", select=(1,))["attn/extra"]
    assert extra.shape == (3, 2) and np.isnan(extra[:2]).all()
    np.testing.assert_array_equal(extra[2], [2, 3])


def test_xarray_reads_named_dimensions(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    write_steps(tmp_path / "run", range(7))
    path = tmp_path / "run" / "segment-00000.h5"
    run = open_run(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no phony dimensions: every dataset has named ones
        ds = xr.open_dataset(path, engine="h5netcdf", group="attn")
        wr = xr.open_dataset(path, engine="h5netcdf", group="wr")
        root = xr.open_dataset(path, engine="h5netcdf")
    with ds, wr, root:
        assert ds["cor_mean"].dims == ("step", "layer", "head")
        assert dict(ds.sizes) == {"step": 7, "layer": 3, "head": 2}
        np.testing.assert_array_equal(ds["cor_mean"].values, run["attn/cor_mean"])
        np.testing.assert_array_equal(ds["layer"].values, np.arange(3))
        assert ds["tokens"].attrs["doc"] == "test tokens"
        assert wr["singular_values"].dims == ("step", "layer", "sv")
        np.testing.assert_array_equal(wr["step"].values, run["wr/step"])
        np.testing.assert_array_equal(root["step"].values, np.arange(7))


# ---- segments -----------------------------------------------------------------------------


def test_resume_joins_segments_and_the_later_segment_wins(tmp_path):
    run_dir = tmp_path / "run"
    write_steps(run_dir, range(0, 10), version=0)
    write_steps(run_dir, range(6, 14), mode="resume", version=1)  # restarted from a step-6 checkpoint
    write_steps(run_dir, range(4, 9), mode="resume", version=2)  # and again from step 4
    run = open_run(run_dir)
    assert [s.start_step for s in run.segments] == [0, 6, 4]
    assert len({s.attrs["run_id"] for s in run.segments}) == 1, "one run_id across segments"
    # segment 0 keeps steps < 4 (segment 2 starts there); segment 1 keeps none (4 <= 6); segment 2 all
    np.testing.assert_array_equal(run["step"], np.arange(9))
    fx.check_run_values(run, version_of=lambda step: 0 if step < 4 else 2)
    np.testing.assert_allclose(run["scalars/loss"], [1 / (s + 1) + (0 if s < 4 else 2) for s in range(9)])


def test_new_scalar_names_grow_the_schema_in_a_new_segment(tmp_path):
    run_dir = tmp_path / "run"
    writer = RunWriter(run_dir, tables=SMALL, meta=META, start_step=0)
    for step in range(10):
        fx.write_step(writer, step)
        writer.commit()  # the attention row is committed before the scalars arrive, as in the probe
        scalars = {"loss": float(step)}
        if step >= 4:
            scalars["lr"] = 0.1 * step
        writer.append("scalars", step, **scalars)
        if step == 6:
            writer.commit()
            writer.append("scalars", step, grad_norm=6.5)  # second call at a committed step: new name
        if step == 8:
            writer.append("scalars", step, val_loss=8.25)  # second call at a buffered step: new name
            writer.commit()
            writer.append("scalars", step, accuracy=0.5)  # and a third once committed, all new names
        writer.commit()
    writer.close()
    run = open_run(run_dir)
    # A segment all of whose rows move to its successor is replaced in place: scalars first
    # logged at step 0, and "accuracy" in the segment that "val_loss" started at step 8.
    assert [s.start_step for s in run.segments] == [0, 4, 6, 8]
    np.testing.assert_array_equal(run["step"], np.arange(10))
    np.testing.assert_array_equal(run["scalars/step"], np.arange(10))
    fx.check_run_values(run)
    np.testing.assert_array_equal(run["scalars/loss"], np.arange(10.0))
    lr = run["scalars/lr"]
    assert np.isnan(lr[:4]).all()
    np.testing.assert_allclose(lr[4:], 0.1 * np.arange(4, 10))
    grad = run["scalars/grad_norm"]
    assert np.isnan(grad[:6]).all() and grad[6] == 6.5 and np.isnan(grad[7:]).all()
    assert run["scalars/val_loss"][8] == 8.25 and run["scalars/accuracy"][8] == 0.5
    assert np.isnan(run["scalars/accuracy"][[7, 9]]).all()


def test_same_step_scalars_fill_one_row_and_a_repeat_is_refused(tmp_path):
    writer = RunWriter(tmp_path / "run", tables=SMALL, meta=META, start_step=0)
    writer.append("scalars", 0, loss=1.0, lr=0.5)
    writer.commit()
    writer.append("scalars", 1, loss=2.0)
    writer.append("scalars", 1, lr=0.25)  # buffered row
    writer.commit()
    with pytest.raises(ValueError, match="already logged at step 1"):
        writer.append("scalars", 1, loss=3.0)
    writer.append("scalars", 2, loss=4.0)
    writer.commit()
    writer.append("scalars", 2, lr=0.125)  # committed row: patched in place
    writer.commit()
    with pytest.raises(ValueError, match="\\['loss'\\] already logged at step 2"):
        writer.append("scalars", 2, loss=5.0, momentum=0.9)  # refused before any segment switch
    writer.append("scalars", 3, loss=6.0)  # and the writer goes on
    run = open_run(tmp_path / "run")
    np.testing.assert_array_equal(run["scalars/step"], [0, 1, 2])
    np.testing.assert_array_equal(run["scalars/lr"], [0.5, 0.25, 0.125])
    np.testing.assert_array_equal(run["scalars/loss"], [1.0, 2.0, 4.0])
    assert "scalars/momentum" not in run
    assert len(run.segments) == 1
    writer.close()
    np.testing.assert_array_equal(open_run(tmp_path / "run")["scalars/loss"], [1.0, 2.0, 4.0, 6.0])


def test_a_column_missing_from_a_segment_reads_as_nan(tmp_path):
    run_dir = tmp_path / "run"
    write_steps(run_dir, range(3))
    grown = {**SMALL, "attn": {**SMALL["attn"], "extra_count": Column("extra_count", (3, 2), ("layer", "head"), "i8")}}
    writer = RunWriter(run_dir, tables=grown, meta=META, mode="resume", start_step=3)
    for step in range(3, 5):
        row = {name: fx.value("attn", c, step) for name, c in SMALL["attn"].items()}
        writer.append("attn", step, **row, extra_count=np.full((3, 2), step))
    writer.close()
    run = open_run(run_dir)
    extra = run["attn/extra_count"]
    assert extra.dtype == np.float64 and extra.shape == (5, 3, 2)
    assert np.isnan(extra[:3]).all()
    np.testing.assert_array_equal(extra[3:], [np.full((3, 2), 3), np.full((3, 2), 4)])
    assert run["scalars/loss"].shape == (3,)


def test_resume_refuses_a_changed_column_shape(tmp_path):
    write_steps(tmp_path / "run", range(2))
    with pytest.raises(ValueError, match="same model shape"):
        RunWriter(tmp_path / "run", tables=fx.tables(layers=4, heads=2), meta=META, mode="resume", start_step=2)


# ---- modes ----------------------------------------------------------------------------------


def test_new_on_an_existing_run_raises_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    write_steps(run_dir, range(3))
    (run_dir / "checkpoint-3.pt").write_bytes(b"weights")
    before = file_hashes(run_dir)
    with pytest.raises(RunExistsError, match="mode='resume'.*mode='overwrite'"):
        RunWriter(run_dir, tables=SMALL, meta=META, mode="new", start_step=0)
    assert file_hashes(run_dir) == before


def test_overwrite_removes_segments_only(tmp_path):
    run_dir = tmp_path / "run"
    write_steps(run_dir, range(3))
    write_steps(run_dir, range(2, 5), mode="resume")
    (run_dir / "checkpoint-3.pt").write_bytes(b"weights")
    (run_dir / "run_info.json").write_text("{}")
    old_id = open_run(run_dir).run_id
    write_steps(run_dir, range(10, 12), mode="overwrite")
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["checkpoint-3.pt", "run_info.json", "segment-00000.h5"]
    run = open_run(run_dir)
    np.testing.assert_array_equal(run["step"], [10, 11])
    assert run.run_id != old_id


def test_resume_of_an_empty_folder_starts_segment_zero(tmp_path):
    write_steps(tmp_path / "run", range(5, 7), mode="resume")
    run = open_run(tmp_path / "run")
    assert [s.path.name for s in run.segments] == ["segment-00000.h5"]
    np.testing.assert_array_equal(run["step"], [5, 6])


def test_a_live_writer_blocks_resume_and_overwrite(tmp_path):
    writer = write_steps(tmp_path / "run", range(3), close=False)
    assert open_run(tmp_path / "run").status == "live"
    for mode in ("resume", "overwrite"):
        with pytest.raises(RunInUseError, match="live writer"):
            RunWriter(tmp_path / "run", tables=SMALL, meta=META, mode=mode, start_step=3)
    writer.close()
    assert open_run(tmp_path / "run").status == "closed"


def test_append_validates_its_input(tmp_path):
    writer = RunWriter(tmp_path / "run", tables=SMALL, meta=META, start_step=5, fsync_every_s=0)
    row = {name: fx.value("attn", c, 5) for name, c in SMALL["attn"].items()}
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        writer.append("nope", 5, x=1.0)
    with pytest.raises(ValueError, match="before this segment's start_step 5"):
        writer.append("attn", 4, **row)
    with pytest.raises(ValueError, match="missing columns \\['tokens'\\]"):
        writer.append("attn", 5, **{k: v for k, v in row.items() if k != "tokens"})
    with pytest.raises(ValueError, match="expected shape \\(3, 2\\)"):
        writer.append("attn", 5, **{**row, "cor_mean": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="step must be an int"):
        writer.append("attn", 5.0, **row)
    with pytest.raises(ValueError, match="expected one number"):
        writer.append("scalars", 5, loss=np.zeros(3))
    writer.append("attn", 5, **row)
    with pytest.raises(ValueError, match="steps must increase strictly"):
        writer.append("attn", 5, **row)
    writer.commit()  # fsync_every_s=0: fsync at every commit
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="after close"):
        writer.append("scalars", 6, loss=1.0)


def test_meta_is_validated(tmp_path):
    with pytest.raises(ValueError, match="set by the store itself"):
        RunWriter(tmp_path / "a", tables=SMALL, meta={"run_id": "x"}, start_step=0)
    with pytest.raises(ValueError, match="cannot be stored as JSON"):
        RunWriter(tmp_path / "b", tables=SMALL, meta={"config": {"f": object()}}, start_step=0)
    with pytest.raises(ValueError, match="shape \\(2,\\) has 1 axes but dims"):
        Column("x", (2,), ("a", "b"))


def test_caller_reuses_its_buffer(tmp_path):
    writer = RunWriter(tmp_path / "run", tables={"t": {"x": Column("x", (2,), ("i",))}}, start_step=0)
    buffer = np.zeros(2, dtype=np.float32)
    for step in range(3):
        buffer[:] = step
        writer.append("t", step, x=buffer)
    writer.close()
    np.testing.assert_array_equal(open_run(tmp_path / "run")["t/x"], [[0, 0], [1, 1], [2, 2]])


def test_commits_of_one_row_rewrite_the_live_chunks_in_place(tmp_path):
    """A row per commit, as the probe commits: each commit is readable at once, and the live
    file grows with the data only (unfiltered chunks are rewritten where they are, never
    copied; docs/file-format.md, "Closing and compaction")."""
    names = [f"stat_{i}" for i in range(15)]
    schema = {"attn": {n: Column(n, (28, 16), ("layer", "head")) for n in names}}
    writer = RunWriter(tmp_path / "run", tables=schema, start_step=0, fsync_every_s=None)
    rng = np.random.default_rng(0)
    rows = []
    for step in range(60):
        rows.append({n: rng.random((28, 16), dtype=np.float32) for n in names})
        writer.append("attn", step, **rows[-1])
        writer.commit()
        if step % 20 == 0:
            np.testing.assert_array_equal(open_run(tmp_path / "run")["attn/stat_3"][-1], rows[-1]["stat_3"])
    data_bytes = 60 * 15 * 28 * 16 * 4
    assert writer.path.stat().st_size < 1.3 * data_bytes + 256 * 1024
    writer.close()
    stored = open_run(tmp_path / "run").read(*(f"attn/{n}" for n in names))
    for n in names:
        np.testing.assert_array_equal(stored[f"attn/{n}"], np.stack([row[n] for row in rows]))


# ---- status and summary ---------------------------------------------------------------------


def test_status_of_a_writer_on_another_host_follows_its_heartbeat():
    attrs = {"writer_host": "some-other-host", "writer_pid": 1}
    assert segment_status(0, time.time() - 5, attrs) == "live"
    assert segment_status(0, time.time() - LIVE_HEARTBEAT_S - 1, attrs) == "crashed"
    assert segment_status(1, 0.0, attrs) == "closed"
    assert segment_status(2, 0.0, attrs) == "continued"


def test_summary_of_a_full_run(tmp_path):
    write_steps(tmp_path / "run", range(11))
    text = format_run_summary(open_run(tmp_path / "run"))
    assert "status       closed" in text
    assert "3 layers, 2 heads" in text and "11 logged, last step 10" in text
    assert "3 spectra logged, last at step 10" in text
    assert "W_R stable rank (step 10)" in text and "COR (head mean, step 10)" in text
    cor = fx.value("attn", SMALL["attn"]["cor_mean"], 10)
    assert f"{cor[2].mean():.4g}" in text
    assert "loss=" in text


def test_summary_without_rows_or_spectra(tmp_path):
    writer = RunWriter(tmp_path / "run", tables={"attn": SMALL["attn"]}, start_step=0)
    text = format_run_summary(open_run(tmp_path / "run"))
    assert "status       live" in text and "no attention rows logged yet" in text and "no spectra logged yet" in text
    writer.close()
    writer = RunWriter(tmp_path / "wr_only", tables={"wr": SMALL["wr"]}, start_step=0)
    writer.append("wr", 0, **{n: fx.value("wr", c, 0) for n, c in SMALL["wr"].items()})
    writer.close()
    text = format_run_summary(open_run(tmp_path / "wr_only"))
    assert "? layers" not in text and "W_R stable rank (step 0)" in text


def test_the_store_imports_no_torch(tmp_path):
    code = (
        "import sys; import numpy as np\n"
        "from parallax_probe.store import RunWriter, Column, open_run\n"
        "from parallax_probe.run_summary import format_run_summary\n"
        f"w = RunWriter({str(tmp_path / 'run')!r}, tables={{'attn': {{'x': Column('x', (2,), ('layer',))}}}}, start_step=0)\n"
        "w.append('attn', 0, x=np.ones(2)); w.close()\n"
        f"format_run_summary(open_run({str(tmp_path / 'run')!r}))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# A resumed writer that opens its segment, says so, and waits to be killed before logging a row.
_RESUME_THEN_WAIT = """
import sys, time
sys.path.insert(0, sys.argv[2])
import store_fixtures as fx
from parallax_probe.store import RunWriter
writer = RunWriter(sys.argv[1], tables=fx.tables(layers=3, heads=2), mode="resume", start_step=4)
print("open", flush=True)
time.sleep(600)
"""


def test_a_resume_that_stops_before_its_first_row_hides_no_row(tmp_path):
    """A resumed segment supersedes the earlier rows at or after its start_step; published before
    it held a row, a resume that failed (or was killed) hid rows 4..7 it never replaced."""
    run_dir = tmp_path / "run"
    write_steps(run_dir, range(8))
    names = ("step", "attn/cor_mean", "wr/step", "scalars/loss")
    before = open_run(run_dir).read(*names)

    killed = subprocess.Popen([sys.executable, "-c", _RESUME_THEN_WAIT, str(run_dir), str(Path(__file__).parent)],
                              stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "open"
    killed.kill()  # a real SIGKILL while the resumed segment is open
    killed.wait()
    failed = RunWriter(run_dir, tables=SMALL, meta=META, mode="resume", start_step=4)
    failed.close()  # what a resume that raises before its first row does on the way out

    run = open_run(run_dir)
    assert [s.path.name for s in run.segments] == ["segment-00000.h5"]
    after = run.read(*names)
    for name in names:
        np.testing.assert_array_equal(after[name], before[name])
    write_steps(run_dir, range(4, 6), mode="resume", version=1)  # the next resume goes on as usual
    assert open_run(run_dir)["step"].tolist() == list(range(6))
    assert not list(run_dir.glob("*.tmp"))
