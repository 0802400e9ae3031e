"""A real `parallax-probe train` sent SIGTERM or SIGINT stops at a step boundary, checkpoints, closes
its run, and resumes without a lost or duplicated step; a second signal ends it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from parallax_probe import open_run
from parallax_probe.checkpoint import load_checkpoint
from parallax_probe.store import RunFileError

TRAIN = [sys.executable, "-m", "parallax_probe", "train", "--preset", "tiny", "--seq-len", "16", "--batch-size", "4",
         "--probe-every", "1", "--spectra-every", "3", "--log-every", "1", "--eval-every", "1000",
         "--checkpoint-every", "1000", "--no-progress", "--device", "cpu"]
DEADLINE_S = 120  # bounds every wait; none of them is a timing assertion


def start_and_wait_for_rows(out, rows=3, command=TRAIN, env=None) -> subprocess.Popen:
    """Start a long run and return once a reader sees `rows` committed probe rows."""
    proc = subprocess.Popen([*command, "--steps", "100000", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if len(open_run(out)["step"]) >= rows:
                return proc
        except (RunFileError, FileNotFoundError, KeyError):
            pass
        if proc.poll() is not None:
            pytest.fail(f"training exited early (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
    proc.kill()
    pytest.fail(f"no {rows} committed rows within {DEADLINE_S} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_at_a_step_boundary_and_resume_loses_no_step(tmp_path, sig):
    out = tmp_path / "run"
    proc = start_and_wait_for_rows(out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 128 + sig, stderr[-3000:]
    assert f"stopped by {sig.name}" in stderr

    run = open_run(out)
    assert run.status == "closed"
    stopped_at = load_checkpoint(out / "checkpoint.pt")["step"]
    steps = run["step"].tolist()
    assert steps == list(range(stopped_at)), "every step up to the checkpoint has its row, and none past it"
    assert run["scalars/step"].tolist() == list(range(stopped_at))
    if sig == signal.SIGINT:
        return  # the stop path is the same for both signals; one resume proves it (tests stay short)

    resumed = subprocess.run([*TRAIN, "--steps", str(stopped_at + 4), "--out", str(out), "--resume"],
                             capture_output=True, text=True, timeout=DEADLINE_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = open_run(out)
    assert after.status == "closed"
    assert after["step"].tolist() == list(range(stopped_at + 4))
    assert after["scalars/step"].tolist() == list(range(stopped_at + 4))
    history = load_checkpoint(out / "checkpoint.pt")["history"]
    assert [r["step"] for r in history] == list(range(stopped_at + 4))


def test_a_second_signal_exits_at_once(tmp_path):
    """Both signals are pending when the process resumes (it is SIGSTOPped while they are sent), so
    the second handler runs before any step boundary: the process dies by that signal, without the
    stop path's checkpoint, and its run reads as crashed (committed rows kept). Which of the two
    comes second is the kernel's choice: it may hand them to two of the process's threads (the
    probe's writer thread, torch's), and Python runs each handler once its thread has flagged it."""
    out = tmp_path / "run"
    proc = start_and_wait_for_rows(out)
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode in (-signal.SIGINT, -signal.SIGTERM)
    assert not (out / "checkpoint.pt").exists()
    assert open_run(out).status == "crashed"


@pytest.mark.slow
def test_torchrun_forwards_sigterm_and_every_rank_stops_after_the_same_step(tmp_path):
    """torchrun passes SIGTERM on to its workers; they agree at the log interval (every step here),
    rank 0 checkpoints after the last row it wrote, and the run closes."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = start_and_wait_for_rows(out, command=[*launcher, *TRAIN[1:]], env=env)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=DEADLINE_S)
    assert "stopped by SIGTERM" in stderr, stderr[-3000:]
    run = open_run(out)
    assert run.status == "closed"
    assert run["step"].tolist() == list(range(load_checkpoint(out / "checkpoint.pt")["step"]))
