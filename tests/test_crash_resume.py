"""A real `parallax-probe train` killed with SIGKILL keeps every committed row and resumes cleanly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from parallax_probe import open_run
from parallax_probe.store import RunFileError

TRIALS = 10
TRAIN = [sys.executable, "-m", "parallax_probe", "train", "--preset", "tiny", "--seq-len", "16", "--batch-size", "4",
         "--probe-every", "1", "--spectra-every", "3", "--log-every", "2", "--eval-every", "1000",
         "--checkpoint-every", "4", "--no-progress"]


def snapshot(path):
    """What a reader sees now: (committed attn rows, their steps and COR), or None before the first segment."""
    try:
        run = open_run(path)
        return run["step"].copy(), run["attn/cor_mean"].copy()
    except (RunFileError, FileNotFoundError, KeyError):
        return None


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_committed_row_and_resumes(tmp_path):
    rng = random.Random(os.getpid() ^ int(time.time()))
    for trial in range(TRIALS):
        out = tmp_path / f"trial{trial}"
        proc = subprocess.Popen([*TRAIN, "--steps", "100000", "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + rng.uniform(0.2, 4.0)
        seen = None
        while time.monotonic() < deadline or seen is None:
            # a live reader in this process, while the trainer writes
            seen = snapshot(out) or seen
            if time.monotonic() > deadline + 60:
                proc.kill()
                pytest.fail(f"trial {trial}: no segment appeared within a minute: {proc.stderr.read().decode()[-2000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run = open_run(out)
        assert run.status == "crashed", f"trial {trial}: status {run.status}"
        steps, cor = run["step"], run["attn/cor_mean"]
        seen_steps, seen_cor = seen
        assert len(steps) >= len(seen_steps), f"trial {trial}: rows went missing after the kill"
        np.testing.assert_array_equal(steps[: len(seen_steps)], seen_steps)
        np.testing.assert_array_equal(cor[: len(seen_cor)], seen_cor)
        assert steps.tolist() == list(range(len(steps))), "probe-every 1 logs every step"
        if trial % 3 == 0 and (out / "checkpoint.pt").exists():
            resumed = subprocess.run([*TRAIN, "--steps", str(int(steps[-1]) + 6 if len(steps) else 8), "--out", str(out), "--resume"],
                                     capture_output=True, text=True, timeout=300)
            assert resumed.returncode == 0, resumed.stderr
            after = open_run(out)
            assert after.status == "closed"
            assert len(after.segments) >= 2
            resumed_steps = after["step"].tolist()
            assert resumed_steps == sorted(set(resumed_steps)), "duplicate or unordered steps after resume"
            assert resumed_steps == list(range(len(resumed_steps)))


def test_every_probe_row_a_checkpoint_covers_is_committed_before_the_checkpoint(tmp_path, monkeypatch):
    """The checkpoint says "resume after step s"; a crash right after it is written must not
    lose probe rows up to s (the writer commits at most every 0.5 s otherwise). A reader
    opened at the moment each checkpoint is saved sees every one of those rows."""
    from parallax_probe import train as training

    seen_at_checkpoint = []
    real_save = training._atomic_save

    def save_and_look(obj, path):
        seen_at_checkpoint.append((obj["step"], open_run(tmp_path / "run")["step"].tolist()))
        real_save(obj, path)

    monkeypatch.setattr(training, "_atomic_save", save_and_look)
    training.train(training.TrainConfig(
        preset="tiny", seq_len=16, batch_size=4, steps=12, probe_every=1, spectra_every=3, log_every=2,
        eval_every=1000, checkpoint_every=4, progress=False, device="cpu", out=str(tmp_path / "run"),
    ))
    assert [s for s, _ in seen_at_checkpoint] == [4, 8, 12]
    for step, committed in seen_at_checkpoint:
        assert committed == list(range(step)), f"checkpoint at step {step}: committed probe steps {committed}"
