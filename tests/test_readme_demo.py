"""scripts/readme_demo.py: the README's demo tables are the demo's run files, and (given a demo folder) equal them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_dashboard_support as support

from parallax_probe.store import open_run

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "readme_demo.py"


def test_the_tables_hold_the_run_files_last_values(tmp_path_factory):
    runs = support.train_runs(tmp_path_factory.getbasetemp() / "dashboard-runs")
    demo = tmp_path_factory.mktemp("demo")
    for name in ("muon", "adamw"):
        shutil.copytree(runs / f"{name}-s0", demo / name)
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(demo)], check=True, capture_output=True, text=True).stdout
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in out.splitlines() if line.startswith("| ")}
    for name in ("muon", "adamw"):
        run = open_run(demo / name)
        loss = run["scalars/loss"]
        assert float(rows[name][0]) == pytest.approx(loss[np.isfinite(loss)][-1], abs=5e-4)
    muon = open_run(demo / "muon")
    assert float(rows["1"][0]) == pytest.approx(muon["attn/cor_mean"][-1, 1].mean(), abs=5e-3)
    assert float(rows["1"][1]) == pytest.approx(muon["wr/stable_rank"][-1, 1], abs=5e-3)
    # --check against the README fails: these short runs are not the demo.
    check = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(demo), "--check"], capture_output=True, text=True)
    assert check.returncode == 1 and "differ" in check.stderr


def test_readme_numbers_equal_the_demos():
    """Runs when PARALLAX_PROBE_DEMO_RUNS names a folder `parallax-probe demo --out` wrote (minutes of training)."""
    demo = os.environ.get("PARALLAX_PROBE_DEMO_RUNS")
    if not demo:
        pytest.skip("set PARALLAX_PROBE_DEMO_RUNS to the folder of `parallax-probe demo --out DIR` to check the README's numbers")
    check = subprocess.run([sys.executable, str(SCRIPT), "--runs", demo, "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert re.search(r"\| muon \| \d\.\d{3} \| \d\.\d{3} \|", (REPO / "README.md").read_text())
