"""Crash safety and live reading with real writer subprocesses (tests/store_fixtures.py)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import store_fixtures as fx

from parallax_probe.store import RunFileError, RunWriter, open_run, repair_run, repair_segment

WRITER = str(Path(__file__).with_name("store_fixtures.py"))
# Kill moments after the first commit (plus up to 10 ms of jitter): early ones land in the
# schema growth at steps 7 and 20 (a segment switch with compaction takes about 0.1 s),
# later ones in the steady commit loop.
KILL_DELAYS_S = (0.0, 0.01, 0.04, 0.08, 0.15, 0.3, 0.45, 0.6, 0.8, 1.0)


def start_writer(run_dir: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, WRITER, str(run_dir), *args], stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.strip(), f"the writer exited before its first commit (rc {proc.wait()})"
    proc.first_line = first  # type: ignore[attr-defined]
    return proc


def kill_writer(proc: subprocess.Popen) -> int:
    """SIGKILL; return the last committed count the writer printed."""
    proc.kill()
    proc.wait()
    printed = [proc.first_line, *proc.stdout.read().split()]  # type: ignore[attr-defined]
    proc.stdout.close()
    return int(printed[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_scalars(run, first_step: int = 0) -> None:
    steps = run["scalars/step"]
    np.testing.assert_array_equal(steps, np.arange(first_step, first_step + len(steps)))
    data = run.read("scalars/step", *[n for n in run.names() if n.startswith("scalars/")])
    for i, step in enumerate(steps):
        for name, value in fx.scalar_values(int(step), 0).items():
            assert data[f"scalars/{name}"][i] == value, (name, step)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> list[tuple[Path, int]]:
    """(run folder, committed count the writer printed) for each kill moment."""
    root = tmp_path_factory.mktemp("killed")
    rng = np.random.default_rng(1234)
    out = []
    for trial, delay in enumerate(KILL_DELAYS_S):
        run_dir = root / f"trial{trial}"
        proc = start_writer(run_dir)
        time.sleep(delay + rng.uniform(0, 0.01))
        out.append((run_dir, kill_writer(proc)))
    return out


def test_a_killed_writer_keeps_every_committed_row(killed_runs):
    for run_dir, printed in killed_runs:
        run = open_run(run_dir)
        assert run.status == "crashed", run_dir
        steps = run["step"]
        assert len(steps) >= printed, f"{run_dir}: {len(steps)} rows readable, the writer had committed {printed}"
        np.testing.assert_array_equal(steps, np.arange(len(steps)))
        fx.check_run_values(run)
        check_scalars(run)
        # A segment its writer did not close is flagged open for writing: a plain open
        # refuses it (open_run opens it with swmr=True). A kill between closing one
        # segment and publishing the next leaves a closed last segment, status "continued".
        last = run.segments[-1]
        if last.open_for_write:
            with pytest.raises(OSError):
                h5py.File(last.path, "r").close()
    flagged = sum(open_run(run_dir).segments[-1].open_for_write for run_dir, _ in killed_runs)
    assert flagged >= 3, "the kills should mostly land while a segment is open for writing"


def test_resume_after_a_kill_repairs_and_writes_no_duplicate_step(killed_runs, tmp_path):
    for source, _printed in killed_runs:
        run_dir = tmp_path / source.name
        shutil.copytree(source, run_dir)
        before = open_run(run_dir)
        flagged = {s.path.name: sha256(s.path) for s in before.segments if s.open_for_write}
        old_steps = before["step"]
        restart = int(old_steps[len(old_steps) // 2])  # the last checkpoint was mid-way
        writer = RunWriter(run_dir, tables=fx.tables(), meta={"optimizer": "test"}, mode="resume", start_step=restart)
        for step in range(restart, restart + 6):
            fx.write_step(writer, step, version=1)
            writer.append("scalars", step, loss=1.0 / (step + 1))
            writer.commit()
        writer.close()
        for name, digest in flagged.items():
            assert sha256(run_dir / f"{name}.crashed") == digest, "repair keeps the original bytes"
        run = open_run(run_dir)
        assert run.status == "closed"
        steps = run["step"]
        np.testing.assert_array_equal(steps, np.arange(restart + 6))
        fx.check_run_values(run, version_of=lambda step, restart=restart: 0 if step < restart else 1)
        assert len(np.unique(run["scalars/step"])) == len(run["scalars/step"])
        assert not list(run_dir.glob("*.tmp")), "resume removes unpublished temporaries"


def test_repair_segment_writes_a_clean_copy_of_the_committed_rows(killed_runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_runs[-1][0], run_dir)
    before = open_run(run_dir)
    names = before.names()
    expected = before.read(*names)
    segment = before.segments[-1].path
    digest = sha256(segment)
    backup = repair_segment(segment)
    assert backup == segment.with_name(segment.name + ".crashed") and sha256(backup) == digest
    with h5py.File(segment, "r") as f:  # plain open works now
        assert "repaired" in f.attrs and f["attn/cor_mean"].compression == "gzip"
    after = open_run(run_dir)
    assert after.status == "crashed", "its writer still did not finish"
    got = after.read(*names)
    for name in names:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert repair_segment(segment) is None, "a clean segment needs nothing"
    lines = repair_run(run_dir)
    assert all("nothing to do" in line for line in lines), lines


def test_repair_run_repairs_every_dead_segment(killed_runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_runs[-1][0], run_dir)
    dead = [s.path.name for s in open_run(run_dir).segments if s.open_for_write]
    lines = repair_run(run_dir)
    assert [line.split(":")[0] for line in lines if ": repaired (" in line] == dead
    assert all(not s.open_for_write for s in open_run(run_dir).segments)


def test_live_reading_from_another_process(tmp_path):
    run_dir = tmp_path / "run"
    rows = 120
    proc = start_writer(run_dir, "--rows", str(rows), "--sleep", "0.01")
    counts, statuses = [], set()
    cor = fx.tables()["attn"]["cor_mean"]
    tokens = fx.tables()["attn"]["tokens"]
    try:
        while proc.poll() is None:
            run = open_run(run_dir)
            statuses.add(run.status)
            data = run.read("step", "attn/cor_mean", "attn/tokens", "scalars/step", "scalars/loss")
            steps = data["step"]
            assert not counts or len(steps) >= counts[-1], "committed rows never shrink"
            counts.append(len(steps))
            np.testing.assert_array_equal(steps, np.arange(len(steps)))
            for i, step in enumerate(steps):
                np.testing.assert_array_equal(data["attn/cor_mean"][i], fx.value("attn", cor, int(step)))
                np.testing.assert_array_equal(data["attn/tokens"][i], fx.value("attn", tokens, int(step)))
            np.testing.assert_array_equal(data["scalars/loss"], 1.0 / (data["scalars/step"] + 1))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0, "the writer finished on its own"
    assert "live" in statuses and len(set(counts)) >= 5, (statuses, counts)
    run = open_run(run_dir)
    assert run.status == "closed" and run.steps_logged == rows
    fx.check_run_values(run)


def test_truncated_files_give_the_data_or_a_clear_error(killed_runs, tmp_path):
    closed = tmp_path / "closed"
    shutil.copytree(killed_runs[-1][0], closed)
    repair_run(closed)
    sources = [killed_runs[-1][0], closed]
    rng = np.random.default_rng(99)
    errors = intact = 0
    for source in sources:
        path = open_run(source).segments[-1].path
        reference_run = open_run(path)
        names = reference_run.names()
        reference = reference_run.read(*names)
        data = path.read_bytes()
        offsets = {0, 7, 8, 47, 100, len(data) // 2, len(data) - 1}
        offsets |= set(rng.integers(1, len(data), size=20 - len(offsets)).tolist())
        for offset in sorted(offsets):
            cut = tmp_path / f"cut-{offset}.h5"
            cut.write_bytes(data[:offset])
            try:
                got = open_run(cut).read(*names)
            except RunFileError as error:
                assert str(cut) in str(error)
                errors += 1
                continue
            intact += 1
            for name in names:
                n = len(got[name])
                assert n <= len(reference[name])
                np.testing.assert_array_equal(got[name], reference[name][:n], err_msg=f"{name} cut at {offset}")
    assert errors > 0
