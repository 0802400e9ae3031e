"""Shared by the CLI tests: run `parallax-probe` as a real subprocess, fingerprint a folder."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "parallax_probe"]
SHORT_RUN = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--eval-every", "20", "--log-every", "5",
             "--probe-every", "5", "--spectra-every", "10", "--no-progress"]


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(result) -> str:
    """The single non-empty stderr line of a refused command (exit 2); fails otherwise."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, f"rc {result.returncode}, stderr:\n{result.stderr[-3000:]}"
    return lines[0]
