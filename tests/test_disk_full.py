"""A full disk under a real `parallax-probe train`: a real tmpfs, filled by a real file.

On ENOSPC the trainer stops with one line naming the disk and the space needed (exit 2),
leaves no temporary file, keeps every committed row readable and the last checkpoint whole,
and the run resumes once space is free. Mounting needs CAP_SYS_ADMIN: without it the test skips.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SHORT_RUN, one_error_line, run_cli

from parallax_probe import open_run

DISK_BYTES = 16 * 1024**2
# A fresh segment takes about 1 MB (one live chunk per dataset), a checkpoint of the tiny
# preset about 1.3 MB and its temporary copy as much again: with this much free, the first
# checkpoint fits and a later one does not (the free space when each write fails differs).
FREE_BYTES = (512 * 1024, 2_900_000)


@contextlib.contextmanager
def tmpfs(path: Path, size: int):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("free", FREE_BYTES, ids=["no-room-for-a-checkpoint", "room-for-one-checkpoint"])
def test_a_full_disk_stops_training_cleanly_and_the_run_resumes_once_space_is_free(tmp_path, free):
    with tmpfs(tmp_path / "disk", DISK_BYTES) as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (DISK_BYTES - free))
        out = disk / "run"
        cadence = ["--probe-every", "1", "--spectra-every", "2", "--checkpoint-every", "3"]
        line = one_error_line(run_cli("train", *SHORT_RUN, *cadence, "--steps", "15", "--out", out))
        assert f"no space left on {disk}" in line and "this run needs about" in line
        assert not list(out.glob("*.tmp")), "temporary files left behind"
        run = open_run(out)  # every committed row is readable
        steps = run["step"]
        np.testing.assert_array_equal(steps, np.arange(len(steps)))
        assert np.isfinite(run["attn/cor_mean"]).all()

        filler.unlink()  # space is free again
        has_checkpoint = (out / "checkpoint.pt").exists()
        again = run_cli("train", *SHORT_RUN, *cadence, "--steps", "15", "--out", out, "--resume" if has_checkpoint else "--overwrite")
        assert again.returncode == 0, again.stderr[-3000:]
        finished = open_run(out)
        assert finished.status == "closed"
        assert finished["step"].tolist() == list(range(15))
        if has_checkpoint:
            np.testing.assert_array_equal(finished["step"][: len(steps)], steps)
