"""`parallax-probe analyze` on runs written by the demo: text, JSON and markdown agree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from parallax_probe import open_run

CLI = [sys.executable, "-m", "parallax_probe"]
NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run([*CLI, "demo", "--out", str(out), "--steps", "30"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "muon" in result.stdout and "adamw" in result.stdout and "held-out acc" in result.stdout
    return out / "muon", out / "adamw"


def analyze(runs, fmt):
    result = subprocess.run([*CLI, "analyze", *map(str, runs), "--format", fmt], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_text_json_and_markdown_agree_on_the_demo_runs(demo_runs):
    text, markdown, report = analyze(demo_runs, "text"), analyze(demo_runs, "markdown"), json.loads(analyze(demo_runs, "json"))
    assert NUMBER.findall(text) == NUMBER.findall(markdown)
    groups = {g["name"]: g for g in report["groups"]}
    assert set(groups) == {"muon", "adamw"}
    for name, path in zip(("muon", "adamw"), demo_runs):
        run = open_run(path)
        for layer in groups[name]["layers"]:
            i = layer["layer"]
            np.testing.assert_allclose(layer["final_cor"], run["attn/cor_mean"][-1, i].mean(), rtol=1e-6)
            np.testing.assert_allclose(layer["final_stable_rank"], run["wr/stable_rank"][-1, i], rtol=1e-6)
            assert f"{layer['final_stable_rank']:.4g}" in text and f"{layer['final_stable_rank']:.4g}" in markdown
    assert "No significance can be claimed" in text
    assert all(value is None for value in p_values(report["comparisons"])), "one seed per group supports no p-value"


def p_values(node):
    """Every value stored under a key named p_value, anywhere in the report."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "p_value":
                yield value
            else:
                yield from p_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from p_values(item)


@pytest.mark.slow
def test_a_missing_run_is_reported_and_the_rest_still_prints(demo_runs, tmp_path):
    result = subprocess.run([*CLI, "analyze", str(demo_runs[0]), str(tmp_path / "nope")], capture_output=True, text=True, timeout=300)
    assert "nope" in result.stdout + result.stderr
    assert "muon" in result.stdout and "Final values per layer" in result.stdout


@pytest.mark.slow
def test_runs_are_named_by_their_folders_as_the_dashboard_names_them(demo_runs, tmp_path):
    muon, adamw = demo_runs
    copy = tmp_path / "elsewhere" / "muon"  # a second folder of the same name
    shutil.copytree(muon, copy)
    segment = adamw / "segment-00000.h5"  # one segment file opened alone
    report = json.loads(analyze([muon, adamw, copy, segment], "json"))
    assert [run["run"] for run in report["runs"]] == ["muon", "adamw", f"muon ({copy})", "adamw/segment-00000.h5"]
    text = analyze([muon, adamw], "text")
    assert "adamw: adamw; muon: muon." in text
    assert open_run(muon).run_id not in text  # the 32-hex-digit id names nothing a reader can find
