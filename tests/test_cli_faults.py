"""Hostile and mistaken input to the CLI: one line on stderr, exit 2, nothing on disk
changed; a checkpoint never runs code; a failed command hides no committed row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import CLI, SHORT_RUN, folder_digest, one_error_line, run_cli

from parallax_probe import open_run
from parallax_probe.checkpoint import CheckpointError, load_checkpoint

STORE_WRITER = str(Path(__file__).with_name("store_fixtures.py"))


@pytest.fixture(scope="module")
def ten_step_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    result = run_cli("train", *SHORT_RUN, "--steps", "10", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def run_copy(ten_step_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(ten_step_run, copy)
    return copy


class RunsCode:
    """Pickles to a call of os.system: what a planted checkpoint.pt runs under torch.load(weights_only=False)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_resume_refuses_a_checkpoint_that_would_run_code(run_copy, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"model": RunsCode(marker), "optimizers": [], "step": 5, "history": [], "train_config": {}},
               run_copy / "checkpoint.pt")
    before = folder_digest(run_copy)
    line = one_error_line(run_cli("train", *SHORT_RUN, "--steps", "20", "--out", run_copy, "--resume"))
    assert "refused" in line and "system" in line and "checkpoint.pt" in line
    assert not marker.exists(), "the checkpoint's code ran"
    assert folder_digest(run_copy) == before
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(run_copy / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "small"], "--preset 'tiny' -> 'small'"),
        (["--optimizer", "adamw"], "--optimizer 'muon' -> 'adamw'"),
        (["--model", "n_layers=3"], "--model n_layers None -> 3"),
        (["--task", "compression"], "--task 'in-context-recall' -> 'compression'"),
        (["--steps", "5"], "is at step 10 and --steps is 5: nothing left to train"),
    ],
)
def test_a_resume_that_cannot_continue_the_run_changes_nothing(run_copy, extra, message):
    before, summary = folder_digest(run_copy), run_cli("inspect", run_copy).stdout
    line = one_error_line(run_cli("train", *SHORT_RUN, "--steps", "20", *extra, "--out", run_copy, "--resume"))
    assert message in line
    assert folder_digest(run_copy) == before
    assert run_cli("inspect", run_copy).stdout == summary, "the run shows what it showed before"


def test_resume_from_a_foreign_checkpoint_is_refused(run_copy):
    torch.save({"weights": torch.zeros(3)}, run_copy / "checkpoint.pt")
    before = folder_digest(run_copy)
    line = one_error_line(run_cli("train", *SHORT_RUN, "--steps", "20", "--out", run_copy, "--resume"))
    assert "not a parallax-probe training checkpoint" in line
    assert folder_digest(run_copy) == before


def test_a_run_being_written_is_neither_resumed_nor_overwritten_nor_touched(run_copy):
    for segment in run_copy.glob("segment-*"):
        segment.unlink()
    # a real live writer (the store's test writer) commits a row every 0.2 s into the folder
    writer = subprocess.Popen([sys.executable, STORE_WRITER, str(run_copy), "--sleep", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip()
        kept = {name: (run_copy / name).read_bytes() for name in ("checkpoint.pt", "run.json")}
        for flag in ("--overwrite", "--resume", None):
            result = run_cli("train", *SHORT_RUN, "--steps", "20", "--out", run_copy, *([flag] if flag else []))
            assert "is being written by a running process" in one_error_line(result)
            assert {name: (run_copy / name).read_bytes() for name in kept} == kept
        assert writer.poll() is None, "the live writer was disturbed"
    finally:
        writer.kill()
        writer.wait()


def test_a_folder_left_with_only_an_unpublished_segment_says_how_to_start_again(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "segment-00000.h5.tmp").write_bytes(b"")  # a crash while the first segment was being made
    line = one_error_line(run_cli("train", *SHORT_RUN, "--steps", "2", "--out", out))
    assert "never reached a checkpoint" in line and "--overwrite" in line and "mode=" not in line
    assert run_cli("train", *SHORT_RUN, "--steps", "2", "--out", out, "--overwrite").returncode == 0
    assert open_run(out)["step"].tolist() == [0]


def test_of_two_simultaneous_starts_on_one_folder_one_trains_and_the_other_is_refused(tmp_path):
    out = tmp_path / "run"
    procs = [subprocess.Popen([*CLI, "train", *SHORT_RUN, "--steps", "5", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(*proc.communicate(timeout=300), proc.returncode) for proc in procs]
    assert sorted(rc for _, _, rc in results) == [0, 2], [err[-2000:] for _, err, _ in results]
    loser = next(err for _, err, rc in results if rc == 2)
    assert len([line for line in loser.splitlines() if line.strip()]) == 1, loser
    run = open_run(out)
    assert run.status == "closed" and run["step"].tolist() == [0]


def write_shard(path: Path, tokens: np.ndarray, *, header_count: int | None = None) -> None:
    """A modded-nanogpt shard (256-int32 header) of uint16 tokens."""
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, len(tokens) if header_count is None else header_count)
    path.write_bytes(header.tobytes() + tokens.astype(np.uint16).tobytes())


TOKENS = (np.arange(20_000) % 97).astype(np.uint16)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (write_shard(d / "a_train.bin", TOKENS), write_shard(d / "a_val.bin", TOKENS[:20])),
         "the validation shards (a_val.bin) hold 20 tokens, fewer than one window"),
        (lambda d: (d / "a.bin").write_bytes(b""), "a.bin: the file is empty"),
        (lambda d: (d / "a.bin").write_bytes(TOKENS.tobytes() + b"x"), "40001 bytes, an odd number"),
        (lambda d: write_shard(d / "a.bin", TOKENS[:100]) or (d / "a.bin").open("ab").write(b"x"),
         "201 bytes after the header, an odd number"),
        (lambda d: write_shard(d / "a.bin", TOKENS, header_count=-5), "its header declares -5 tokens"),
        (lambda d: (d / "a.bin").mkdir(), "a.bin is a folder"),
        (lambda d: os.mkfifo(d / "a.bin"), "a.bin is not a regular file"),
    ],
    ids=["short-validation-shard", "empty", "odd-raw", "odd-after-header", "negative-count", "folder", "fifo"],
)
def test_bad_bin_shards_are_refused_before_anything_is_written(tmp_path, make, message):
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    line = one_error_line(run_cli("train", *SHORT_RUN, "--task", f"bin:{data}/a*.bin", "--vocab-size", "128",
                                  "--out", tmp_path / "out", timeout=60))
    assert message in line
    assert not (tmp_path / "out").exists()


def test_a_text_task_on_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "corpus")
    line = one_error_line(run_cli("train", *SHORT_RUN, "--task", f"text:{tmp_path / 'corpus'}", "--out", tmp_path / "out", timeout=60))
    assert "not a regular file" in line
    assert not (tmp_path / "out").exists()


def test_an_empty_out_is_refused_and_the_current_folder_stays_empty(tmp_path):
    line = one_error_line(run_cli("train", *SHORT_RUN, "--out", "", cwd=tmp_path))
    assert "--out is empty" in line
    assert list(tmp_path.iterdir()) == []


def test_the_run_records_the_attention_backend_that_ran(tmp_path):
    """--backend triton on a CPU trains on the reference (the kernel does not cover float32): the run says so."""
    out = tmp_path / "run"
    result = run_cli("train", *SHORT_RUN, "--steps", "1", "--device", "cpu", "--backend", "triton", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run.json").read_text())["model_config"]["attention_backend"] == "reference"
    assert open_run(out).config["model_config"]["attention_backend"] == "reference"


@pytest.mark.parametrize("command", ["inspect", "repair", "analyze"])
def test_reading_commands_refuse_a_fifo_instead_of_hanging(tmp_path, command):
    os.mkfifo(tmp_path / "segment-00000.h5")
    line = one_error_line(run_cli(command, tmp_path / "segment-00000.h5", timeout=60))
    assert "not a folder or a regular file" in line


def test_analyze_reports_the_good_runs_and_exits_2_for_each_bad_path(ten_step_run, tmp_path):
    (tmp_path / "plain.txt").write_text("not a run\n")
    (tmp_path / "empty").mkdir()
    bad = [tmp_path / "missing", tmp_path / "plain.txt", tmp_path / "empty"]
    result = run_cli("analyze", ten_step_run, *bad)
    assert result.returncode == 2
    assert "Rank-collapse report" in result.stdout and "muon" in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == len(bad) and all(str(path) in line for path, line in zip(bad, lines))
    only_bad = run_cli("analyze", *bad)
    assert only_bad.returncode == 2 and only_bad.stdout == "" and len(only_bad.stderr.splitlines()) == len(bad)
    good = run_cli("analyze", ten_step_run)
    assert good.returncode == 0 and good.stderr == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--device", "foo"], "--device 'foo' is not a device"),
        (["train", "--seed", str(2**70)], "--seed must be an integer from 0 to 2**63 - 1"),
        (["train", "--batch-size", "1000000000"], "--batch-size 1000000000: a step of 1000000000 x"),
        (["train", "--out", "{file}/sub"], "is a file, so no folder can be made under it"),
        (["train", "--out", "/proc/parallax-probe-run"], "--out /proc/parallax-probe-run: cannot create files there"),
        (["demo", "--out", "{file}"], "is a file; the demo writes two run folders into a folder"),
        (["dashboard", "{tmp}", "--port", "70000"], "expected a TCP port from 1 to 65535, got 70000"),
        (["dashboard", "{tmp}", "--host", "no.such.host.invalid"], "--host no.such.host.invalid: not an address"),
    ],
    ids=["device", "seed", "batch-size", "out-under-a-file", "out-in-proc", "demo-out-file", "port", "host"],
)
def test_flags_that_cannot_work_get_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "file").write_text("a file\n")
    args = [a.format(file=tmp_path / "file", tmp=tmp_path) for a in args]
    if args[0] == "train" and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    before = folder_digest(tmp_path)
    line = one_error_line(run_cli(*args, "--steps", "2", timeout=60) if args[0] == "train" else run_cli(*args, timeout=60))
    assert message in line
    assert folder_digest(tmp_path) == before and not (tmp_path / "out").exists()
