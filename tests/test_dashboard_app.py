"""The dashboard app in Streamlit's AppTest, on runs written by the real CLI, and on bad input."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import test_dashboard_support as support
from streamlit.testing.v1 import AppTest

from parallax_probe.dashboards import page_cor, page_probe, page_wr
from parallax_probe.store import RunWriter, open_run

PAGES = ("Runs", "COR", "W_R rank", "Probe norms", "Training", "Rank collapse")
CHART_PAGES = PAGES[1:]
VIEWS = [("COR", "cor-view", page_cor.VIEWS), ("W_R rank", "wr-view", page_wr.VIEWS), ("Probe norms", "probe-view", page_probe.VIEWS)]
TIMEOUT_S = 120
SEEDS = support.SEEDS


def dashboard(runs_dir: str) -> None:
    from parallax_probe.dashboards.app import main

    main(runs_dir)


def app(runs_dir: Path, **query) -> AppTest:
    at = AppTest.from_function(dashboard, kwargs={"runs_dir": str(runs_dir)}, default_timeout=TIMEOUT_S)
    at.query_params.update(query)
    return at.run()


def page(at: AppTest, name: str) -> AppTest:
    return at.radio(key="page").set_value(name).run()


def view(at: AppTest, key: str, label: str) -> AppTest:
    """Open the view `label` of a page (what a click on its button does)."""
    return at.segmented_control(key=key).set_value(label).run()


def messages(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in (at.error, at.warning, at.info) for e in kind)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Path:
    return support.train_runs(tmp_path_factory.getbasetemp() / "dashboard-runs")


@pytest.fixture(scope="module")
def at(runs) -> AppTest:
    return app(runs)


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders(at, name):
    page(at, name)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    if name in CHART_PAGES:
        assert len(at.get("plotly_chart")) >= 1


@pytest.mark.parametrize(("name", "key", "views"), VIEWS)
def test_every_view_renders_and_draws_only_its_own_figures(at, name, key, views):
    page(at, name)
    seen = []
    for label in views:
        view(at, key, label)
        assert not at.exception and not at.error, (label, [e.value for e in (*at.exception, *at.error)])
        titles = tuple(spec["layout"]["title"]["text"] for spec in support.chart_specs(at))
        assert titles, label
        seen.append(titles)
    assert len(set(seen)) == len(views), "each view draws other figures"
    view(at, key, views[0])


def test_runs_table_lists_every_run_with_its_metadata(at):
    page(at, "Runs")
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["adamw-s0", "adamw-s1", "muon-s0", "muon-s1"]
    row = table.set_index("run").loc["muon-s1"]
    assert (row["optimizer"], row["seed"], row["preset"], row["attention"], row["status"]) == ("muon", "1", "tiny", "parallax", "closed")
    assert (row["layers"], row["steps logged"], row["last step"]) == (2, 8, 35)
    assert set(table["group"]) == {"muon", "adamw"}


def test_cor_heatmap_holds_the_files_values(at, runs):
    page(at, "COR")
    fig = support.chart(at, "layer x step")
    panels = [trace for trace in fig["data"] if trace["type"] == "heatmap"]
    assert [p["name"] for p in panels] == ["adamw (2 runs)", "muon (2 runs)", "adamw - muon"]
    expected = {}
    for optimizer in ("adamw", "muon"):
        per_seed = []
        for seed in (0, 1):
            run = open_run(runs / f"{optimizer}-s{seed}")
            per_seed.append(run["attn/cor_mean"].astype(np.float64).mean(axis=2))  # (N, L): mean over heads
            steps = run["step"]
        expected[optimizer] = np.mean(per_seed, axis=0).T  # (L, N), the seeds' mean
        panel = panels[0 if optimizer == "adamw" else 1]
        np.testing.assert_allclose(support.decode(panel["z"]), expected[optimizer], rtol=1e-5)
        np.testing.assert_array_equal(support.decode(panel["x"]), steps)
    np.testing.assert_allclose(support.decode(panels[2]["z"]), expected["adamw"] - expected["muon"], rtol=1e-4, atol=1e-5)
    # One colour scale for the groups; the difference has its own, centred on zero.
    assert panels[0]["coloraxis"] == panels[1]["coloraxis"] == "coloraxis" and panels[2]["coloraxis"] == "coloraxis2"
    high = max(expected["adamw"].max(), expected["muon"].max())
    assert fig["layout"]["coloraxis"]["cmax"] == pytest.approx(high, rel=1e-5)


def test_changing_the_groups_changes_the_traces(runs):
    at = page(app(runs), "COR")
    names = {t["name"] for t in support.chart(at, "layer x step")["data"]}
    assert names == {"adamw (2 runs)", "muon (2 runs)", "adamw - muon"}

    at.multiselect(key="groups-optimizer").set_value(["muon"]).run()
    assert {t["name"] for t in support.chart(at, "layer x step")["data"]} == {"muon (2 runs)"}

    # By seed, each seed's runs differ in their optimizer: not averaged unless asked for.
    at.selectbox(key="group_by").set_value("seed").run()
    names = {t["name"] for t in support.chart(at, "layer x step")["data"]}
    assert names == {"0 · train_config.optimizer.name=adamw (1 run)", "0 · train_config.optimizer.name=muon (1 run)",
                     "0 · train_config.optimizer.name=adamw - 0 · train_config.optimizer.name=muon"}
    at.checkbox(key="merge").check().run()
    names = {t["name"] for t in support.chart(at, "layer x step")["data"]}
    assert names == {"0 (2 runs)", "1 (2 runs)", "0 - 1"}
    view(at, "cor-view", page_cor.CURVES)
    curves = {t.get("name") for t in support.chart(at, "per layer")["data"] if t.get("name")}
    assert curves == {"0 (2 runs)", "1 (2 runs)", "0 (2 runs), not smoothed", "1 (2 runs), not smoothed"}


def test_wr_page_spectrum_is_the_files_last_spectrum(at, runs):
    page(at, "W_R rank")
    view(at, "wr-view", page_wr.SPECTRUM)
    fig = support.chart(at, "singular values, layer")
    lines = [t for t in fig["data"] if t.get("name")]
    values = np.mean([open_run(runs / f"muon-s{seed}")["wr/singular_values"][-1, -1] for seed in (0, 1)], axis=0)
    muon = next(t for t in lines if t["name"].startswith("muon"))
    np.testing.assert_allclose(support.decode(muon["y"]), values, rtol=1e-5)
    assert fig["layout"]["yaxis"]["type"] == "log"


def test_figures_export_as_png_or_svg_and_tables_as_csv(at):
    page(at, "COR")
    config = at.get("plotly_chart")[0].proto.config
    assert '"format": "png"' in config or '"format":"png"' in config
    at.radio(key="image_format").set_value("svg").run()
    config = at.get("plotly_chart")[0].proto.config
    assert '"format": "svg"' in config or '"format":"svg"' in config
    view(at, "cor-view", page_cor.DEPTH)
    assert any(b.proto.label.startswith("Download COR vs depth (CSV)") for b in at.get("download_button"))
    view(at, "cor-view", page_cor.HEATMAPS)


def test_rank_collapse_page_shows_the_analysis(at):
    page(at, "Rank collapse")
    tables = [df.value for df in at.dataframe]
    per_group = tables[0]
    assert set(per_group["group"]) == {"adamw", "muon"} and set(per_group["layer"]) == {0, 1}
    assert any("Download the report (Markdown)" == b.proto.label for b in at.get("download_button"))


def test_empty_folder(tmp_path):
    at = app(tmp_path)
    assert not at.exception
    assert "No runs in" in messages(at)
    for name in CHART_PAGES:
        page(at, name)
        assert not at.exception and "No runs found" in messages(at)


def test_non_run_files_are_listed_as_skipped(runs, tmp_path):
    shutil.copytree(runs / "muon-s0", tmp_path / "muon-s0")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "stray.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    (tmp_path / "empty").mkdir()
    at = app(tmp_path)
    skipped = at.dataframe[1].value
    assert set(skipped["entry"]) == {"notes.txt", "stray.h5", "empty"}
    assert all(skipped["reason"].str.len() > 10)


@pytest.fixture()
def damaged(runs, tmp_path) -> Path:
    """The four real runs plus a truncated copy and a file of garbage, side by side."""
    for name in ("muon-s0", "muon-s1", "adamw-s0", "adamw-s1"):
        shutil.copytree(runs / name, tmp_path / name)
    shutil.copytree(runs / "muon-s0", tmp_path / "truncated")
    segment = tmp_path / "truncated" / "segment-00000.h5"
    segment.write_bytes(segment.read_bytes()[: segment.stat().st_size // 2])
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "segment-00000.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp_path


def test_a_damaged_run_gets_its_error_on_its_row_and_the_others_still_work(damaged):
    at = app(damaged)
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["truncated", "status"] == "error" and "truncated" in table.loc["truncated", "error"]
    assert table.loc["garbage", "status"] == "error" and "not an HDF5 file" in table.loc["garbage", "error"]
    assert table.loc["muon-s0", "error"] == ""
    for name in CHART_PAGES:
        page(at, name)
        assert not at.exception
        assert len(at.get("plotly_chart")) >= 1


def _add(segment: Path, how: str) -> None:
    """Give a closed segment one of the HDF5 features that would make a reader open other files."""
    with h5py.File(segment, "a") as f:
        if how == "external link":
            f["attn/elsewhere"] = h5py.ExternalLink("/etc/other.h5", "/data")
        elif how == "external storage":
            raw = segment.parent / "raw.bin"
            raw.write_bytes(bytes(64))
            f.create_dataset("attn/outside", shape=(16,), dtype="f4", external=[(str(raw), 0, 64)])
        else:
            layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
            layout[:] = h5py.VirtualSource("/etc/other.h5", "data", shape=(4,))
            f.create_virtual_dataset("attn/virtual", layout, fillvalue=0)


@pytest.mark.parametrize("how,message", [
    ("external link", "external link"), ("external storage", "external file"), ("virtual dataset", "virtual dataset"),
])
def test_hdf5_that_reaches_other_files_is_refused(runs, tmp_path, how, message):
    shutil.copytree(runs / "muon-s0", tmp_path / "muon-s0")
    shutil.copytree(runs / "adamw-s0", tmp_path / "evil")
    _add(tmp_path / "evil" / "segment-00000.h5", how)
    at = app(tmp_path)
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["evil", "status"] == "error"
    assert message in table.loc["evil", "error"] and "refusing" in table.loc["evil", "error"]


def test_runs_of_different_depths_are_compared_by_relative_depth(tmp_path):
    support.write_run(tmp_path / "muon", layers=4, heads=2, optimizer="muon")
    support.write_run(tmp_path / "adamw", layers=2, heads=3, optimizer="adamw")
    support.write_run(tmp_path / "muon-deep", layers=6, heads=2, optimizer="muon", seed=1)
    support.write_run(tmp_path / "muon-again", layers=4, heads=2, optimizer="muon", seed=2)
    at = app(tmp_path)
    left_out = at.dataframe[1].value.set_index("run")
    assert "6 layers x 2 heads" in left_out.loc["muon-deep", "reason"]
    for name in CHART_PAGES:
        page(at, name)
        assert not at.exception, (name, [e.value for e in at.exception])
    for name, key, views in VIEWS:
        page(at, name)
        for label in views:
            view(at, key, label)
            assert not at.exception, (name, label, [e.value for e in at.exception])
        view(at, key, views[0])
    page(at, "COR")
    assert "relative depth" in messages(at)
    heatmaps = [t for t in support.chart(at, "layer x step")["data"] if t["type"] == "heatmap"]
    np.testing.assert_allclose(support.decode(heatmaps[0]["y"]), [0, 1])  # adamw: 2 layers
    np.testing.assert_allclose(support.decode(heatmaps[1]["y"]), [0, 1 / 3, 2 / 3, 1])  # muon: 4 layers
    assert support.decode(heatmaps[2]["z"]).shape[0] == 4  # the difference on the deeper grid


def test_run_names_in_the_url_leading_outside_are_refused(runs):
    at = app(runs, run=["../../etc", "/etc/passwd", "muon-s0"])
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and all("refused" in e and "outside the runs folder" in e for e in errors)
    assert at.multiselect(key="run").value == ["muon-s0"]
    page(at, "COR")
    assert not at.exception
    assert {t["name"] for t in support.chart(at, "layer x step")["data"]} == {"muon (1 run)"}


def test_a_run_that_appears_is_included(runs, tmp_path):
    shutil.copytree(runs / "muon-s0", tmp_path / "muon-s0")
    at = app(tmp_path)
    at.multiselect(key="run").set_value(["muon-s0"]).run()
    shutil.copytree(runs / "adamw-s0", tmp_path / "adamw-s0")
    at.run()
    assert at.multiselect(key="run").value == ["muon-s0", "adamw-s0"]
    assert not at.warning and not at.exception


# ---- text from run files is never markup -------------------------------------------------------

PAYLOAD = "muon ![b](http://127.0.0.1:8709/beacon.png) [Re-login](http://127.0.0.1:8709/phish)"
HTML_PAYLOAD = '<a href="http://127.0.0.1:8709/phish">Re-login</a> <img src="http://127.0.0.1:8709/beacon.png">'
# Markdown that would render an image or a link: "![" or "](" not escaped by a backslash.
UNESCAPED_MARKUP = re.compile(r"(?<!\\)!(?<!\\)\[|(?<!\\)\]\(|(?<!\\)<[a-z]")


def markdown_bodies(at: AppTest) -> list[str]:
    kinds = (at.markdown, at.caption, at.header, at.subheader, at.title, at.error, at.warning, at.info, at.success)
    return [str(e.value) for kind in kinds for e in kind]


def shown_text(at: AppTest) -> str:
    """The Markdown bodies as a reader sees them: backslash escapes removed."""
    return re.sub(r"\\(.)", r"\1", "\n".join(markdown_bodies(at)))


def plotly_texts(at: AppTest) -> list[str]:
    texts = []
    for spec in support.chart_specs(at):
        texts.append(spec["layout"]["title"]["text"])
        texts += [a.get("text", "") for a in spec["layout"].get("annotations", [])]
        texts += [t.get("name", "") for t in spec["data"]]
        texts += [t.get("hovertemplate", "") for t in spec["data"]]
    return texts


def test_metadata_is_shown_as_text_on_every_page(tmp_path):
    support.write_run(tmp_path / "plain", layers=2, heads=2, optimizer=PAYLOAD)
    support.write_run(tmp_path / "html", layers=2, heads=2, optimizer=HTML_PAYLOAD, seed=1)
    at = app(tmp_path)
    assert at.multiselect(key="groups-optimizer").value == [HTML_PAYLOAD, PAYLOAD]
    for name in PAGES:
        page(at, name)
        assert not at.exception, (name, [e.value for e in at.exception])
        bodies = markdown_bodies(at)
        assert not [b for b in bodies if UNESCAPED_MARKUP.search(b)], name
        if name == "Runs":
            assert any(r"muon \!\[b\]\(http\:" in b for b in bodies)  # the label is there, as text
        for text in plotly_texts(at):
            assert "<a " not in text and "<img" not in text, (name, text)
        if name == "COR":
            assert any("&lt;a href=" in t for t in plotly_texts(at))


# ---- ?run= naming an unreadable run ----------------------------------------------------------------

def test_a_link_naming_an_unreadable_run_shows_its_error_and_draws_the_rest(damaged):
    at = app(damaged, run=["truncated", "muon-s0", "adamw-s0"])
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="run").value == ["truncated", "muon-s0", "adamw-s0"]
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["truncated", "status"] == "error" and "truncated" in table.loc["truncated", "error"]
    page(at, "COR")
    assert not at.exception
    names = {t["name"] for t in support.chart(at, "layer x step")["data"]}
    assert names == {"adamw (1 run)", "muon (1 run)", "adamw - muon"}


# ---- run summaries, filters and live runs ---------------------------------------------------------

def test_summary_columns_hold_the_files_last_values(at, runs):
    page(at, "Runs")
    table = at.dataframe[0].value.set_index("run")
    scalars = open_run(runs / "muon-s0").read("scalars/loss", "scalars/eval_accuracy")
    loss, accuracy = scalars["scalars/loss"], scalars["scalars/eval_accuracy"]
    row = table.loc["muon-s0"]
    assert row["final loss"] == pytest.approx(loss[np.isfinite(loss)][-1])
    assert row["held-out accuracy"] == pytest.approx(accuracy[np.isfinite(accuracy)][-1])
    assert (row["steps"], row["status"]) == (40, "closed") and row["duration (min)"] >= 0
    assert list(table.columns[:5]) == ["status", "final loss", "held-out accuracy", "steps", "duration (min)"]


def test_evaluation_points_are_never_smoothed(runs):
    at = page(app(runs), "Training")
    assert at.slider(key="training-ema").value > 0
    fig = support.chart(at, "training")
    traces = {t["name"]: t for t in fig["data"] if t.get("name")}
    evals = [open_run(runs / f"adamw-s{seed}").read("scalars/step", "scalars/eval_loss") for seed in SEEDS]
    logged = np.mean([e["scalars/eval_loss"][np.isfinite(e["scalars/eval_loss"])] for e in evals], axis=0)
    np.testing.assert_allclose(support.decode(traces["adamw (2 runs) held-out"]["y"]), logged, rtol=1e-6)
    assert len(logged) >= 2  # an EMA would change the second point
    raw = support.decode(traces["adamw (2 runs), not smoothed"]["y"])
    smoothed = support.decode(traces["adamw (2 runs)"]["y"])
    assert traces["adamw (2 runs), not smoothed"]["opacity"] < 1 and not np.allclose(raw, smoothed)


def test_colours_stay_with_their_group_when_another_is_removed(runs):
    at = view(page(app(runs), "COR"), "cor-view", page_cor.CURVES)

    def colours() -> dict[str, str]:
        return {t["name"]: t["line"]["color"] for t in support.chart(at, "per layer")["data"] if t.get("name")}

    before = colours()
    assert before["muon (2 runs)"] != before["adamw (2 runs)"]
    at.multiselect(key="groups-optimizer").set_value(["muon"]).run()
    assert colours()["muon (2 runs)"] == before["muon (2 runs)"]
    page(at, "Training")
    assert {t["line"]["color"] for t in support.chart(at, "training")["data"] if t.get("name", "").startswith("muon")} == {
        before["muon (2 runs)"]
    }


def test_per_head_ranks_follow_the_normalised_measure(tmp_path):
    support.write_run(tmp_path / "muon", layers=2, heads=3, optimizer="muon")
    at = view(page(app(tmp_path), "W_R rank"), "wr-view", page_wr.HEADS)
    at.radio(key="wr-measure").set_value(page_wr.EFFECTIVE_NORMALISED).run()
    fig = support.chart(at, "of each head block")
    assert "effective rank / min(m, n)" in fig["layout"]["title"]["text"]
    (heatmap,) = [t for t in fig["data"] if t["type"] == "heatmap"]
    # write_run stores head effective rank 3.0; a head block is (head_dim 4) x (d_model 16): min(m, n) = 4.
    np.testing.assert_allclose(support.decode(heatmap["z"]), np.full((2, 3), 3.0 / 4))


def test_differences_point_the_way_analyze_reports_them(at, runs, capsys):
    page(at, "COR")
    assert "Sign: differences are the first group minus the second" in "\n".join(markdown_bodies(at))
    page(at, "Rank collapse")
    subheaders = [s.value for s in at.subheader if " \\- " in s.value]
    assert subheaders and all(s.startswith("adamw \\- muon") for s in subheaders)
    from parallax_probe.analysis import analyze_main

    for order in (["muon-s0", "adamw-s0"], ["adamw-s0", "muon-s0"]):
        assert analyze_main([str(runs / name) for name in order], "optimizer", "text", sys.stdout, sys.stderr) == 0
        out = capsys.readouterr().out
        assert "adamw vs muon" in out and "muon vs adamw" not in out and "Sign: differences are the first" in out


def test_runs_trained_differently_are_separate_groups_and_live_members_are_flagged(runs, tmp_path):
    for name in ("muon-s0", "muon-s1"):
        shutil.copytree(runs / name, tmp_path / name)
    subprocess.run([str(support.CLI), "train", *support.TRAIN_ARGS[:-1], "--steps", "30", "--optimizer", "muon", "--seed", "2",
                    "--out", str(tmp_path / "muon-short"), "--no-progress"], check=True, capture_output=True)
    at = page(app(tmp_path), "COR")
    names = {t["name"] for t in support.chart(at, "layer x step")["data"]}
    # The trainer derives the warmup from the steps, so both differ; the label names each.
    short, full = (f"muon · train_config.optimizer.warmup_steps={w}, train_config.steps={n}" for w, n in ((3, 30), (4, 40)))
    assert names == {f"{short} (1 run)", f"{full} (2 runs)", f"{short} - {full}"}
    assert "differ in train_config.optimizer.warmup_steps, train_config.steps" in shown_text(at)
    at.checkbox(key="merge").check().run()
    assert {t["name"] for t in support.chart(at, "layer x step")["data"]} == {"muon (3 runs)"}

    writer = RunWriter(tmp_path / "live", tables=support.probe_tables(2, 2), meta={"optimizer": "probe-only"}, start_step=0,
                       fsync_every_s=None)
    try:
        support.append_rows(writer, range(10), 2, 2)
        support.write_run(tmp_path / "closed", layers=2, heads=2, optimizer="probe-only", seed=1)
        at = app(tmp_path)
        at.selectbox(key="group_by").set_value("run").run()
        at.multiselect(key="groups-run").set_value(["live", "closed"]).run()
        page(at, "COR")
        names = {t["name"] for t in support.chart(at, "layer x step")["data"] if t["type"] == "heatmap"}
        assert "live (1 run, live)" in names and "closed (1 run)" in names
    finally:
        writer.close()


# A writer that commits rows of a probe-shaped run, then dies by SIGKILL: its run reads as "crashed".
KILLED_WRITER = """
import os, signal, sys
import test_dashboard_support as support
from parallax_probe.store import RunWriter
meta = {"optimizer": "probe-only", "seed": 0, "preset": "synthetic", "attention": "parallax", "task": "synthetic"}
writer = RunWriter(sys.argv[1], tables=support.probe_tables(2, 2), meta=meta, start_step=0, fsync_every_s=None)
support.append_rows(writer, range(20), 2, 2)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_crashed_run_is_flagged_in_every_chart_that_averages_it(tmp_path):
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "crashed")],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert open_run(tmp_path / "crashed").status == "crashed"
    support.write_run(tmp_path / "closed", layers=2, heads=2, steps=20, optimizer="probe-only", seed=1)

    at = page(app(tmp_path), "COR")  # one group, two seeds: the crashed one is counted and named
    heatmaps = [t["name"] for t in support.chart(at, "layer x step")["data"] if t["type"] == "heatmap"]
    assert heatmaps == ["probe-only (2 runs, 1 crashed)"]
    page(at, "Training")
    assert {t["name"] for t in support.chart(at, "training")["data"] if t.get("showlegend", True)} == {"probe-only (2 runs, 1 crashed)"}

    at.selectbox(key="group_by").set_value("run").run()  # one group per run
    at.multiselect(key="groups-run").set_value(["closed", "crashed"]).run()
    page(at, "COR")
    names = {t["name"] for t in support.chart(at, "layer x step")["data"] if t["type"] == "heatmap"}
    assert names == {"closed (1 run)", "crashed (1 run, crashed)", "closed - crashed"}


def test_softmax_baseline_is_listed_and_drawn_on_the_training_page(runs, tmp_path):
    shutil.copytree(runs / "muon-s0", tmp_path / "muon-s0")
    subprocess.run([str(support.CLI), "train", *support.TRAIN_ARGS, "--optimizer", "muon", "--seed", "0", "--attention", "softmax",
                    "--out", str(tmp_path / "softmax-s0")], check=True, capture_output=True)
    at = app(tmp_path)
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["softmax-s0", "status"] == "closed" and table.loc["softmax-s0", "steps"] == 40
    assert len(at.dataframe) == 1 or "softmax-s0" not in set(at.dataframe[-1].value.iloc[:, 0])  # not skipped
    label = "muon · model_config.attention=softmax"
    assert label in at.multiselect(key="groups-optimizer").options
    at.multiselect(key="groups-optimizer").set_value(["muon · model_config.attention=parallax", label]).run()
    page(at, "Training")
    names = {t.get("name") for t in support.chart(at, "training")["data"]}
    assert f"{label} (1 run)" in names and "muon · model_config.attention=parallax (1 run)" in names
    page(at, "COR")
    assert not at.exception and "No COR statistics in: softmax-s0" in shown_text(at)


def test_step_range_log_axes_filter_and_csv_of_every_figure(runs):
    at = view(page(app(runs), "COR"), "cor-view", page_cor.CURVES)
    at.slider(key="steps").set_value((10, 30)).run()
    steps = np.concatenate([support.decode(t["x"]) for t in support.chart(at, "per layer")["data"]])
    assert steps.min() >= 10 and steps.max() <= 30
    at.checkbox(key="log").check().run()
    fig = support.chart(at, "per layer")
    assert all(fig["layout"][axis]["type"] == "log" for axis in fig["layout"] if axis.startswith("yaxis"))
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download cor-per-layer (CSV)" in labels
    at.text_input(key="filter").input("seed=1").run()
    assert {t["name"] for t in support.chart(at, "per layer")["data"] if t.get("name")} >= {"muon (1 run)", "adamw (1 run)"}
    for name in CHART_PAGES:
        page(at, name)
        assert len([b for b in at.get("download_button") if b.proto.label.startswith("Download")]) >= len(at.get("plotly_chart"))


def test_group_picker_offers_no_internal_keys(at):
    options = at.selectbox(key="group_by").options
    assert not {"writer_boot_id", "writer_start_ticks", "format_version", "run_id", "code_version"} & set(options)
    assert options[:6] == ["optimizer", "run", "seed", "preset", "attention", "task"]
