"""The dashboard's pure parts: finding runs, refusing paths, grouping, downsampling, smoothing, serving flags."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import test_dashboard_support as support

from parallax_probe.analysis.runs import read_layer_means
from parallax_probe.dashboards import data, reduce, serve, text
from parallax_probe.dashboards.figures import GROUP_COLORS, assign_colors, integer_ticks, layer_color
from parallax_probe.store import COR_MEAN, COR_P90, HEAD_MEAN_PREFIX, LAYER_COR_MEAN, RunWriter, head_means, open_run


def test_discover_lists_runs_and_says_why_others_are_skipped(tmp_path):
    support.write_run(tmp_path / "muon-s0", layers=2, heads=2)
    support.write_run(tmp_path / "sweep" / "adamw-s0", layers=2, heads=2, optimizer="adamw")
    (tmp_path / "notes.txt").write_text("not a run")
    (tmp_path / "stray.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    starting = tmp_path / "starting"
    starting.mkdir()
    (starting / "segment-00000.h5.tmp").write_bytes(b"")

    found = data.discover_runs(tmp_path)

    assert [r.name for r in found.runs] == ["muon-s0", "sweep/adamw-s0"]
    reasons = {s.name: s.reason for s in found.skipped}
    assert set(reasons) == {"notes.txt", "stray.h5", "empty", "starting"}
    assert "not a run" in reasons["notes.txt"]
    assert "HDF5 file outside a run folder" in reasons["stray.h5"]
    assert "no segment-NNNNN.h5" in reasons["empty"]
    assert "no published segment yet" in reasons["starting"]


def test_discover_refuses_symlinks_leading_outside(tmp_path):
    outside = support.write_run(tmp_path / "outside" / "run", layers=2, heads=2)
    root = tmp_path / "runs"
    root.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    inner = support.write_run(tmp_path / "runs" / "real", layers=2, heads=2)
    (root / "alias").symlink_to(inner, target_is_directory=True)

    found = data.discover_runs(root)

    assert sorted(r.name for r in found.runs) == ["alias", "real"]
    assert [s.name for s in found.skipped] == ["escape"]
    assert "outside the runs folder" in found.skipped[0].reason


def test_discover_a_missing_folder_and_a_run_folder_itself(tmp_path):
    assert "is not a folder" in data.discover_runs(tmp_path / "nope").error
    run = support.write_run(tmp_path / "one", layers=2, heads=2)
    assert [r.name for r in data.discover_runs(run).runs] == ["one"]


@pytest.mark.parametrize("name", ["../outside", "/etc", "a/../../b", "", "muon-s0/../../x"])
def test_run_names_leading_outside_are_refused(tmp_path, name):
    support.write_run(tmp_path / "muon-s0", layers=2, heads=2)
    found = data.discover_runs(tmp_path)
    with pytest.raises(data.RunNameError, match="outside the runs folder"):
        data.resolve_run_name(found, name)
    assert data.resolve_run_name(found, "muon-s0").name == "muon-s0"
    with pytest.raises(data.RunNameError, match="not found"):
        data.resolve_run_name(found, "adamw-s9")


def test_signature_changes_when_a_writer_commits(tmp_path):
    writer = RunWriter(tmp_path / "live", tables=support.probe_tables(2, 2), meta={"optimizer": "muon"}, start_step=0, fsync_every_s=None)
    try:
        support.append_rows(writer, range(5), 2, 2)
        before = data.segment_signature(tmp_path / "live")
        support.append_rows(writer, range(5, 600), 2, 2)
        after = data.segment_signature(tmp_path / "live")
        assert before != after
        summary = data.load_summary(data.RunEntry("live", tmp_path / "live", after))
        assert summary.status == "live" and summary.last_step == 599
    finally:
        writer.close()


def test_a_broken_run_becomes_an_error_summary(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "segment-00000.h5").write_bytes(b"garbage" * 100)
    summary = data.load_summary(data.RunEntry("broken", run, data.segment_signature(run)))
    assert summary.status == "error" and not summary.ok
    assert "not an HDF5 file" in summary.error


def _old_format_tables(layers: int, heads: int) -> dict:
    """The probe's schema before it stored per-layer head means."""
    tables = support.probe_tables(layers, heads)
    return {**tables, "attn": {n: c for n, c in tables["attn"].items() if not n.startswith(HEAD_MEAN_PREFIX)}}


def test_layer_series_read_the_stored_head_means(tmp_path):
    run = tmp_path / "run"
    with RunWriter(run, tables=support.probe_tables(3, 4), meta={"optimizer": "muon"}, start_step=0, fsync_every_s=None) as writer:
        rng = np.random.default_rng(0)
        for step in range(7):
            row = support.attn_row(rng, 3, 4)
            means = head_means(row)
            means["layer_cor_mean"] = np.array([100.0 + step, 200, 300], np.float32)  # not the mean: shows which is read
            writer.append("attn", step, **row, **means, probe_gain_norm=np.ones(3, np.float32))
    series = data.load_layer_series(run, ("attn/cor_mean", "attn/cor_p90", "attn/probe_gain_norm"))
    np.testing.assert_array_equal(series.values["attn/cor_mean"][:, 0], 100 + np.arange(7))
    full = open_run(run)["attn/cor_p90"]
    np.testing.assert_allclose(series.values["attn/cor_p90"], full.mean(axis=2), rtol=1e-6)
    assert series.values["attn/probe_gain_norm"].shape == (7, 3)  # a per-layer column is read as it is


def test_layer_series_of_a_run_resumed_from_an_older_format_use_every_head(tmp_path):
    run = tmp_path / "run"
    with RunWriter(run, tables=_old_format_tables(2, 3), meta={"optimizer": "muon"}, start_step=0, fsync_every_s=None) as writer:
        rng = np.random.default_rng(1)
        for step in range(4):
            row = support.attn_row(rng, 2, 3)
            row["cor_mean"][1, 2] = np.nan  # a head without tokens is left out of the mean
            writer.append("attn", step, **row, probe_gain_norm=np.ones(2, np.float32))
    with RunWriter(
        run, tables=support.probe_tables(2, 3), meta={"optimizer": "muon"}, mode="resume", start_step=4, fsync_every_s=None
    ) as writer:
        support.append_rows(writer, range(4, 9), 2, 3)
    per_head = open_run(run)["attn/cor_mean"]
    assert np.isnan(open_run(run)["attn/layer_cor_mean"][:4]).all()
    series = data.load_layer_series(run, ("attn/cor_mean",))
    np.testing.assert_allclose(series.values["attn/cor_mean"], np.nanmean(per_head, axis=2), rtol=1e-6)
    assert np.isfinite(series.values["attn/cor_mean"]).all()


def test_head_buckets_and_spectra_read_one_layer(tmp_path):
    run = support.write_run(tmp_path / "run", layers=3, heads=4, steps=1234)
    full = open_run(run).read("step", "attn/cor_mean", "wr/step", "wr/singular_values", "wrk/singular_values")
    buckets = data.load_head_buckets(run, "attn/cor_mean", 1)
    step, values = reduce.bucket_mean(full["step"], full["attn/cor_mean"][:, 1], reduce.HEATMAP_BUCKETS)
    np.testing.assert_array_equal(buckets.step, step)
    np.testing.assert_allclose(buckets.values, values)
    assert len(buckets.step) <= reduce.HEATMAP_BUCKETS < 1234 and buckets.values.shape == (len(buckets.step), 4)
    for table in ("wr", "wrk"):
        spectrum = data.load_spectrum(run, table, 2)
        np.testing.assert_array_equal(spectrum.step, full["wr/step"])
        np.testing.assert_array_equal(spectrum.values, full[f"{table}/singular_values"][:, 2])
    ranks = data.load_spectra(run, "wr")
    assert ranks.k == full["wr/singular_values"].shape[-1] and ranks.stable_rank.shape == (len(full["wr/step"]), 3)


def _summary(name, layers=2, heads=2, **meta):
    return data.RunSummary(name=name, path=Path(name), signature=(), status="closed", meta=meta, layers=layers, heads=heads)


def test_group_runs_by_metadata_and_config_path_keeping_one_shape():
    runs = [
        _summary("a", optimizer="muon", config={"train_config": {"lr": 1}}),
        _summary("b", optimizer="muon", config={"train_config": {"lr": 2}}),
        _summary("c", optimizer="adamw", config={"train_config": {"lr": 1}}),
        _summary("d", layers=4, optimizer="muon"),
        _summary("e"),
    ]
    grouping = data.group_runs(runs, "optimizer", merge_configurations=True)
    assert list(grouping.groups) == ["adamw", "muon"]
    assert [r.name for r in grouping.groups["muon"]] == ["a", "b"]
    left_out = {s.name: s.reason for s in grouping.left_out}
    assert "4 layers x 2 heads" in left_out["d"] and "no 'optimizer'" in left_out["e"]

    by_lr = data.group_runs(runs[:3], "train_config.lr", merge_configurations=True)
    assert {k: [r.name for r in v] for k, v in by_lr.groups.items()} == {"1": ["a", "c"], "2": ["b"]}
    assert list(data.group_runs(runs[:3], "run").groups) == ["a", "b", "c"]


def _trained(name, *, optimizer="muon", seed=0, steps=600, lr=0.02, **meta):
    """A summary whose metadata looks like the trainer's (analysis.groups.COMPARED_FIELDS)."""
    config = {"train_config": {"steps": steps, "batch_size": 32, "optimizer": {"name": optimizer, "muon_lr": lr, "adamw_lr": 3e-3},
                               "mad_overrides": {}, "seed": seed, "out": f"runs/{name}"},
              "model_config": {"n_layers": 2, "attention": "parallax", "attention_backend": "auto"},
              "task": {"name": "in-context-recall", "seq_len": 64}}
    return _summary(name, optimizer=optimizer, seed=seed, config=config, **meta)


def test_runs_trained_differently_are_not_averaged_unless_asked():
    runs = [_trained("a", seed=0), _trained("b", seed=1), _trained("long", steps=3000), _trained("fast", lr=0.05)]
    grouping = data.group_runs(runs, "optimizer")
    assert {k: [r.name for r in v] for k, v in grouping.groups.items()} == {
        "muon · train_config.optimizer.muon_lr=0.02, train_config.steps=600": ["a", "b"],
        "muon · train_config.optimizer.muon_lr=0.02, train_config.steps=3000": ["long"],
        "muon · train_config.optimizer.muon_lr=0.05, train_config.steps=600": ["fast"],
    }
    assert any("differ in train_config.optimizer.muon_lr, train_config.steps" in note for note in grouping.notes)
    assert list(data.group_runs(runs, "optimizer", merge_configurations=True).groups) == ["muon"]
    # The seed, the output folder and the backend are not part of what must match.
    backend = _trained("c", seed=2)
    backend.meta["config"]["model_config"]["attention_backend"] = "triton"
    assert list(data.group_runs([runs[0], backend], "optimizer").groups) == ["muon"]


def test_probe_runs_without_a_training_config_group_by_their_metadata():
    runs = [_summary("a", optimizer="muon", seed=0, lr=0.1), _summary("b", optimizer="muon", seed=1, lr=0.1),
            _summary("c", optimizer="muon", seed=0, lr=0.2)]
    grouping = data.group_runs(runs, "optimizer")
    assert {k: [r.name for r in v] for k, v in grouping.groups.items()} == {"muon · lr=0.1": ["a", "b"], "muon · lr=0.2": ["c"]}
    assert any("without a training configuration" in note for note in grouping.notes)


def test_group_keys_are_the_users_and_the_configurations_not_the_stores():
    runs = [_trained("a", writer_boot_id="x", writer_start_ticks=1, format_version=1, code_version="git:1", note="mine"),
            _trained("b", lr=0.05, note="mine")]
    keys = data.group_keys(runs)
    assert keys[:6] == ["optimizer", "run", "seed", "preset", "attention", "task"]
    assert "note" in keys and "train_config.optimizer.muon_lr" in keys
    assert not {"writer_boot_id", "writer_start_ticks", "format_version", "code_version", "train_config.out"} & set(keys)


def test_filter_runs_by_metadata_and_config():
    runs = [_trained("a", seed=0), _trained("b", seed=1), _trained("c", optimizer="adamw", seed=0),
            _trained("d", lr=0.005), _summary("p", optimizer="muon")]

    def names(expression):
        return [r.name for r in data.filter_runs(runs, expression)]

    assert names("optimizer=muon") == ["a", "b", "d", "p"]
    assert names("optimizer=muon lr<0.01") == ["d"]  # lr: the run's own optimizer's peak learning rate
    assert names("seed>=1") == ["b"]
    assert names("train_config.steps=600 optimizer!=muon") == ["c"]
    assert names("") == ["a", "b", "c", "d", "p"]
    with pytest.raises(data.FilterError, match="'lr~1'"):
        data.filter_runs(runs, "lr~1")


def test_crop_keeps_the_steps_of_the_range():
    series = data.LayerSeries(np.array([0, 5, 10, 15]), {"attn/cor_mean": np.arange(8, dtype=np.float32).reshape(4, 2)})
    cropped = data.crop(series, 5, 10)
    np.testing.assert_array_equal(cropped.step, [5, 10])
    np.testing.assert_array_equal(cropped.values["attn/cor_mean"], [[2, 3], [4, 5]])
    assert data.crop(series, 20, 30) is None
    assert data.crop((series, series), 0, 0)[1].step.tolist() == [0]


def test_colours_stay_with_their_group():
    memory: dict[str, int] = {}
    first = assign_colors(memory, ["adamw", "muon", "sgd"])
    assert first == {"adamw": 0, "muon": 1, "sgd": 2}
    assert assign_colors(memory, ["muon", "sgd"]) == {"muon": 1, "sgd": 2}  # adamw removed: nobody recoloured
    assert assign_colors(memory, ["lion", "muon"]) == {"lion": 3, "muon": 1}
    assert "#F0E442" not in GROUP_COLORS  # Okabe-Ito's yellow: too light on white
    assert all(layer_color(layer, 28) != "rgb(253, 231, 37)" for layer in range(28))


PAYLOAD = "muon ![b](http://127.0.0.1:8709/beacon.png) [Re-login](http://127.0.0.1:8709/phish)"


def test_text_from_runs_is_escaped_for_markdown_and_plotly():
    escaped = text.md(PAYLOAD + "\n# title :red[x] $x$ <b>y</b> www.example.com")
    # Every ASCII punctuation character is preceded by a backslash: none can start markup.
    assert re.search(r"(?<!\\)[!\[\]()<>#:$.]", escaped.replace("\\\\", "")) is None
    assert "\n" not in escaped
    assert "http\\:\u200b\\/\\/" in escaped and "www\u200b\\." in escaped  # no autolink can match
    assert (
        re.sub(r"\\(.)", r"\1", escaped).replace("\u200b", "") == PAYLOAD + " # title :red[x] $x$ <b>y</b> www.example.com"
    )  # the text itself
    assert text.plot('<a href="http://x">y</a> & more') == '&lt;a href="http://x"&gt;y&lt;/a&gt; &amp; more'


def test_aggregate_aligns_runs_on_their_steps():
    a = reduce.aggregate([np.array([0, 10, 20]), np.array([10, 20, 30])], [np.array([1.0, 2.0, 3.0]), np.array([4.0, 6.0, 8.0])])
    np.testing.assert_array_equal(a.step, [0, 10, 20, 30])
    np.testing.assert_allclose(a.mean, [1, 3, 4.5, 8])
    np.testing.assert_allclose(a.low, [1, 2, 3, 8])
    np.testing.assert_allclose(a.high, [1, 4, 6, 8])
    assert a.n_runs == 2


def test_bucket_mean_is_exact_on_whole_buckets_and_identity_on_short_series():
    steps = np.arange(10) * 5
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    same_steps, same = reduce.bucket_mean(steps, values, 10)
    assert same_steps is steps and same is values
    bucket_steps, means = reduce.bucket_mean(steps, values, 4)  # buckets of 3 rows, the last of 1
    np.testing.assert_array_equal(bucket_steps, [0, 15, 30, 45])
    np.testing.assert_allclose(means[:, 0], [2, 8, 14, 18])
    values[1, 0] = np.nan
    np.testing.assert_allclose(reduce.bucket_mean(steps, values, 4)[1][0, 0], 2)  # NaN ignored: mean of 0 and 4


def test_minmax_indices_keep_every_extreme_and_both_ends():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(100_000)
    y[12_345], y[67_890] = 50.0, -50.0
    keep = reduce.minmax_indices(y, points=1000)
    assert len(keep) <= 1002 and keep[0] == 0 and keep[-1] == len(y) - 1
    assert {12_345, 67_890} <= set(keep.tolist())
    assert np.all(np.diff(keep) > 0)
    low, high = y - 1, y + 1
    high[999] = 100.0
    assert 999 in reduce.minmax_indices(y, low, high, points=3000)
    np.testing.assert_array_equal(reduce.minmax_indices(y[:50], points=1000), np.arange(50))


@pytest.mark.parametrize("weight", [0.01, 0.5, 0.73, 0.9, 0.999])
def test_ema_matches_a_loop_and_skips_nan(weight):
    rng = np.random.default_rng(3)
    x = rng.normal(5, 3, 3001)  # longer than any block of the vectorised recursion
    x[[0, 7, 8, 1500, 3000]] = np.nan
    expected, average, count = [], 0.0, 0
    for value in x:
        if np.isnan(value):
            expected.append(np.nan)
            continue
        count += 1
        average = weight * average + (1 - weight) * value
        expected.append(average / (1 - weight**count))
    np.testing.assert_allclose(reduce.ema(x, weight), expected, rtol=1e-9)
    np.testing.assert_allclose(reduce.ema(np.stack([x, 2 * x], axis=1), weight)[:, 1], 2 * np.array(expected), rtol=1e-9)
    np.testing.assert_array_equal(reduce.ema(x, 0.0), x)


def test_relative_depth_pairs_layers_of_different_depths():
    np.testing.assert_allclose(reduce.relative_depth(3), [0, 0.5, 1])
    values = np.array([[10.0, 20.0, 30.0]])  # 3 layers
    np.testing.assert_allclose(reduce.resample_layers(values, 4), [[10, 20, 20, 30]])


def test_integer_axes_tick_every_layer():
    assert integer_ticks(np.arange(4))["tickvals"] == [0, 1, 2, 3]
    assert integer_ticks(np.linspace(0, 1, 4)) == {}
    assert integer_ticks(np.arange(100)) == {}


def test_streamlit_command_binds_loopback_and_limits_hosts(tmp_path):
    command = serve.streamlit_command(tmp_path, port=8765, host="127.0.0.1")
    assert command[:4] == [sys.executable, "-m", "parallax_probe.dashboards.launch", "run"]
    assert command[-3:] == [str(serve.APP), "--", str(tmp_path)]
    flags = [c for c in command if c.startswith("--")]
    for flag in (
        "--server.address=127.0.0.1", "--server.port=8765", "--server.headless=true", "--browser.gatherUsageStats=false",
        "--client.showErrorDetails=none", "--server.enableCORS=true", "--server.enableXsrfProtection=true",
    ):
        assert flag in flags
    hosts = sorted(c.split("=", 1)[1] for c in flags if c.startswith("--server.allowedHosts="))
    assert hosts == sorted(serve.LOOPBACK_NAMES)


def test_an_explicit_host_is_allowed_and_announced():
    assert "10.1.2.3" in serve.allowed_hosts("10.1.2.3")
    assert serve.allowed_hosts("0.0.0.0")[:3] == list(serve.LOOPBACK_NAMES) and len(serve.allowed_hosts("0.0.0.0")) > 3
    assert serve.url("::1", 80) == "http://[::1]:80/"


def test_dashboard_cli_refuses_a_missing_folder(tmp_path):
    result = subprocess.run([str(support.CLI), "dashboard", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "is not a folder" in result.stderr


def test_dashboards_and_analysis_never_import_torch():
    code = """
import sys
import parallax_probe.dashboards.app, parallax_probe.dashboards.serve, parallax_probe.analysis
from parallax_probe.dashboards import data, figures, cache, ui
from parallax_probe.dashboards import page_runs, page_cor, page_wr, page_probe, page_training, page_collapse, page_tokens, traces
assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr


def test_layer_series_read_l_values_per_step_when_the_run_has_the_head_means(tmp_path):
    """What makes a COR overview of a 100,000-step run fast: (N, L) is read, never (N, L, H)."""
    path = support.write_run(tmp_path / "run", layers=3, heads=4, steps=12)
    run = open_run(path)
    asked = []

    def read(*names):
        asked.append(names)
        return run.read(*names)

    step, values = read_layer_means(read, frozenset(run.names()), [COR_MEAN, COR_P90])
    assert asked == [("step", LAYER_COR_MEAN, "attn/layer_cor_p90")] and COR_P90 in run
    assert values[COR_MEAN].shape == (12, 3) and len(step) == 12


def test_a_closed_runs_summary_is_not_read_again(tmp_path, monkeypatch):
    """A rerun of the page reopens no closed run: its summary changes only with its files."""
    from parallax_probe.dashboards import cache

    support.write_run(tmp_path / "closed", layers=2, heads=2, steps=5)
    (entry,) = data.discover_runs(tmp_path).runs
    cache._summary.clear()
    first = cache.summary(entry)
    monkeypatch.setattr(cache, "STATUS_RECHECK_S", 1e-3)
    shutil.rmtree(tmp_path / "closed")  # were it read again, the summary would say "error"
    time.sleep(0.01)  # past the recheck interval
    assert cache.summary(entry) is first and first.status == "closed"
