"""build_report and its renderings on in-memory runs with planted effects and bad input.

`StoredRun` (tests/stored_run.py) is only a data holder with the shape of what
`parallax_probe.store.open_run` returns (named arrays, names(), meta, path); tests on files
written by the demo live with the CLI.
"""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from stored_run import StoredRun

from parallax_probe.analysis import build_report, render_json, render_markdown, render_text
from parallax_probe.analysis import report as report_module

N_LAYERS, N_HEADS = 6, 4
COR_STEPS = np.arange(0, 1001, 20)
SPECTRA_STEPS = np.arange(0, 1001, 50)
PLANTED_COLLAPSE_STEP = 410  # AdamW's W_R stable rank falls from ~30 to ~5 here


def planted_run(optimizer: str, seed: int, n_layers: int = N_LAYERS, with_spectra: bool = True, **meta) -> StoredRun:
    """Muon: COR twice AdamW's, growing with depth; W_R stable rank ~30 throughout.
    AdamW: the stable rank collapses to ~5 at PLANTED_COLLAPSE_STEP in every layer."""
    rng = np.random.default_rng(seed + (100 if optimizer == "muon" else 0))
    depth_scale = np.arange(1, n_layers + 1)[None, :, None]
    cor_scale = 2.0 if optimizer == "muon" else 1.0
    cor = cor_scale * depth_scale * rng.uniform(0.8, 1.2, size=(COR_STEPS.size, n_layers, N_HEADS))
    arrays = {"step": COR_STEPS, "attn/cor_mean": cor.astype(np.float32)}
    if with_spectra:
        stable = 30 + rng.normal(0, 1, size=(SPECTRA_STEPS.size, n_layers))
        if optimizer == "adamw":
            collapsed = 5 + rng.normal(0, 0.3, size=stable.shape)
            stable = np.where(SPECTRA_STEPS[:, None] >= PLANTED_COLLAPSE_STEP, collapsed, stable)
        arrays |= {"wr/step": SPECTRA_STEPS, "wr/stable_rank": stable, "wr/effective_rank": 2 * stable}
    meta = {"optimizer": optimizer, "run_id": f"{optimizer}-{seed}", "seed": seed} | meta
    return StoredRun(arrays, meta, f"runs/{meta['run_id']}")


def planted_runs(seeds_per_group: int = 3) -> list[StoredRun]:
    return [planted_run(optimizer, seed) for optimizer in ("muon", "adamw") for seed in range(seeds_per_group)]


def comparison_of(report, statistic_prefix: str):
    (comparison,) = [c for c in report.comparisons if c.statistic.startswith(statistic_prefix)]
    return comparison


def test_importing_analysis_does_not_import_torch():
    code = "import parallax_probe.analysis, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_planted_muon_adamw_difference_and_collapse_are_reported():
    report = build_report(planted_runs())
    assert report.problems == ()
    # groups.group_order: sorted by name, each difference the first minus the second (adamw - muon).
    assert [group.name for group in report.groups] == ["adamw", "muon"]

    stable = comparison_of(report, "final W_R stable rank")
    assert (stable.group_a, stable.group_b) == ("adamw", "muon")
    assert stable.across_layers.p_value == pytest.approx(2 / 2**N_LAYERS)
    for layer in stable.layers:
        assert layer.difference == pytest.approx(-25, abs=2)
        assert layer.interval_high < 0

    cor = comparison_of(report, "final COR")
    assert all(layer.interval_high < 0 for layer in cor.layers)

    adamw, muon = report.groups
    for layer in range(N_LAYERS):
        assert muon.layers[layer].stable_rank_onsets == (None, None, None)
        onsets = adamw.layers[layer].stable_rank_onsets
        # The first spectra log at or after the planted step (every 50 steps: 450).
        assert all(PLANTED_COLLAPSE_STEP <= onset < PLANTED_COLLAPSE_STEP + 50 for onset in onsets)
    assert muon.cor_depth_trend.spearman_rho == pytest.approx(1.0)
    assert muon.cor_depth_trend.first_layer_above == 0  # COR ~ 2 x depth exceeds 1 from layer 0
    assert adamw.cor_depth_trend.first_layer_above == 1


def test_the_sign_does_not_depend_on_the_order_of_the_runs():
    forward, backward = build_report(planted_runs()), build_report(planted_runs()[::-1])
    for report in (forward, backward):
        assert [(c.group_a, c.group_b) for c in report.comparisons] == [("adamw", "muon")] * len(report.comparisons)
        assert "Sign: differences are the first group minus the second" in render_text(report)
    assert [d.difference for d in comparison_of(forward, "final COR").layers] == pytest.approx(
        [d.difference for d in comparison_of(backward, "final COR").layers]
    )


def numbers(text: str) -> list[str]:
    return re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", text)


def test_text_markdown_and_json_agree_on_the_numbers():
    report = build_report(planted_runs())
    text, markdown = render_text(report), render_markdown(report)
    as_json = json.loads(render_json(report))
    assert as_json == report.to_dict()
    assert numbers(text) == numbers(markdown)

    for comparison in as_json["comparisons"]:
        for layer in comparison["layers"]:
            row = (
                f"{layer['mean_a']:.4g} ({layer['n_a']})",
                f"{layer['mean_b']:.4g} ({layer['n_b']})",
                f"{layer['difference']:.4g}",
                f"[{layer['interval_low']:.4g}, {layer['interval_high']:.4g}]",
            )
            assert "| " + " | ".join((str(layer["layer"]), *row)) + " |" in markdown
            assert re.search(r"\s{2,}".join(map(re.escape, (str(layer["layer"]), *row))), text)
        test = comparison["across_layers"]
        for rendered in (text, markdown):
            assert f"p = {test['p_value']:.4g}" in rendered
            assert f"rank-biserial r = {test['rank_biserial']:.4g}" in rendered
    for run in as_json["runs"]:
        for layer in run["layers"]:
            for value in (layer["cor"]["final"], layer["stable_rank"]["final"], layer["stable_rank"]["final_over_peak"]):
                assert f" {value:.4g} |" in markdown


def test_one_seed_per_group_reports_differences_without_p_values():
    report = build_report(planted_runs(seeds_per_group=1))
    assert all(comparison.across_layers is None for comparison in report.comparisons)
    assert all(layer.difference is not None for c in report.comparisons for layer in c.layers)
    as_json = json.loads(render_json(report))
    assert all(comparison["across_layers"] is None for comparison in as_json["comparisons"])
    text = render_text(report)
    assert "No significance can be claimed" in " ".join(text.split())
    assert "Across layers: no test" in text


def test_bad_input_is_named_and_the_rest_still_prints():
    softmax = planted_run("adamw", 7, with_spectra=False, run_id="softmax-7")
    short = planted_run("muon", 8, run_id="short-8")
    short.arrays = {name: array[:2] for name, array in short.arrays.items()}
    deep = planted_run("muon", 9, n_layers=N_LAYERS + 2, run_id="deep-9")
    ungrouped = planted_run("muon", 10, run_id="ungrouped-10")
    del ungrouped.meta["optimizer"]
    unreadable = planted_run("adamw", 11, run_id="unreadable-11")
    unreadable.arrays["wr/stable_rank"] = np.zeros((3, 3, 3))  # wrong number of dimensions

    report = build_report([*planted_runs(), softmax, short, deep, ungrouped, unreadable])
    messages = {problem.run: [] for problem in report.problems}
    for problem in report.problems:
        messages[problem.run].append(problem.message)
    assert any("no W_R spectra" in m for m in messages["softmax-7"])
    assert any("2 logged step(s)" in m for m in messages["short-8"])
    assert any(f"has {N_LAYERS + 2} layers where the other runs have {N_LAYERS}" in m for m in messages["deep-9"])
    assert any("no 'optimizer'" in m for m in messages["ungrouped-10"])
    assert any("'wr/stable_rank' has shape (3, 3, 3)" in m for m in messages["unreadable-11"])

    adamw, muon = report.groups
    assert "deep-9" not in muon.runs and "short-8" in muon.runs
    assert "softmax-7" in adamw.runs and "softmax-7" not in adamw.runs_with_spectra
    assert comparison_of(report, "final W_R stable rank").n_seeds_a == 3  # softmax-7 and unreadable-11 lack ranks
    assert comparison_of(report, "final COR").n_seeds_a == 5

    text, markdown = render_text(report), render_markdown(report)
    for rendered in (text, markdown):
        assert "softmax-7: has no W_R spectra" in rendered
        assert "final W_R stable rank (wr/stable_rank): adamw vs muon" in rendered
    json.loads(render_json(report))


def test_group_key_from_the_config_and_dotted_paths():
    from_config = planted_run("muon", 1)
    from_config.meta = {"run_id": "cfg-1", "config": json.dumps({"optimizer": {"name": "muon"}, "seed": 1})}
    report = build_report([from_config, planted_run("adamw", 0)], group_by="optimizer.name")
    assert [group.name for group in report.groups] == ["muon"]
    assert report.runs[0].seed == 1
    assert any("'optimizer.name'" in p.message and p.run == "adamw-0" for p in report.problems)

    report = build_report([from_config], group_by="optimizer")
    assert any("not a value that can name a group" in p.message for p in report.problems)


def test_runs_sharing_a_seed_in_one_group_are_flagged():
    report = build_report([planted_run("muon", 0), planted_run("muon", 0, run_id="muon-0-again")])
    assert any("share seed 0" in problem.message for problem in report.problems)


def test_no_runs_still_render():
    report = build_report([])
    assert report.problems[0].message == "no runs given"
    assert "no runs given" in render_text(report) and "no runs given" in render_markdown(report)


@pytest.fixture
def stored_runs(monkeypatch):
    runs = {run.path: run for run in planted_runs()}

    def open_run(path):
        if path not in runs:
            raise FileNotFoundError(f"no run folder at {path}")
        return runs[path]

    monkeypatch.setattr(report_module, "_open_run", open_run)
    return list(runs)


def test_analyze_main_reports_the_good_runs_and_names_each_bad_path_on_stderr(stored_runs):
    for fmt in ("text", "markdown", "json"):
        out, err = io.StringIO(), io.StringIO()
        assert report_module.analyze_main([*stored_runs, "runs/missing"], "optimizer", fmt, out, err) == 2
        assert err.getvalue().splitlines() == ["parallax-probe analyze: error: no run folder at runs/missing"]
        assert "runs/missing" in out.getvalue() and "no run folder" in out.getvalue()
    assert json.loads(out.getvalue())["problems"][0]["run"] == "runs/missing"


def test_analyze_main_exit_codes(stored_runs):
    out, err = io.StringIO(), io.StringIO()
    assert report_module.analyze_main(stored_runs, "optimizer", "text", out, err) == 0
    assert out.getvalue() and not err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert report_module.analyze_main(["runs/missing"], "optimizer", "text", out, err) == 2
    assert not out.getvalue() and "runs/missing" in err.getvalue()
    err = io.StringIO()
    assert report_module.analyze_main(stored_runs, "optimizer", "yaml", io.StringIO(), err) == 2
    assert "unknown format 'yaml'" in err.getvalue()


def _final_cor(report) -> np.ndarray:
    """(layers, 2): each layer's final COR, mean over the runs of the first and the second group."""
    return np.array([(d.mean_a, d.mean_b) for d in comparison_of(report, "final COR").layers])


def _with_layer_cor(run: StoredRun, layer_cor: np.ndarray) -> StoredRun:
    return StoredRun({**run.arrays, "attn/layer_cor_mean": layer_cor.astype(np.float32)}, run.meta, run.path)


def test_the_stored_per_layer_cor_is_read_and_a_gap_in_it_falls_back_to_every_head():
    runs = planted_runs(seeds_per_group=3)
    per_head = build_report(runs)
    head_means = [r.arrays["attn/cor_mean"].astype(np.float64).mean(axis=2) for r in runs]
    stored = build_report([_with_layer_cor(r, m) for r, m in zip(runs, head_means)])
    assert stored.problems == ()
    np.testing.assert_allclose(_final_cor(stored), _final_cor(per_head), rtol=1e-6)

    # Planted so that reading it shows: the stored column, ten times the head mean, is what is used.
    scaled = build_report([_with_layer_cor(r, 10 * m) for r, m in zip(runs, head_means)])
    np.testing.assert_allclose(_final_cor(scaled), 10 * _final_cor(per_head), rtol=1e-5)

    # A run resumed from an older format has NaN rows in it: every head is read instead.
    gapped = []
    for r, m in zip(runs, head_means):
        m = 10 * m
        m[:3] = np.nan
        gapped.append(_with_layer_cor(r, m))
    fallback = build_report(gapped)
    np.testing.assert_allclose(_final_cor(fallback), _final_cor(per_head), rtol=1e-12)


def _with_training_config(run: StoredRun, *, steps: int = 1000, muon_lr: float = 0.02) -> StoredRun:
    """The run with a trainer's configuration in its metadata (analysis.groups.COMPARED_FIELDS)."""
    optimizer = run.meta["optimizer"]
    config = {
        "train_config": {"steps": steps, "batch_size": 32, "seed": run.meta["seed"], "mad_overrides": {},
                         "optimizer": {"name": optimizer, "muon_lr": muon_lr, "adamw_lr": 3e-3}},
        "model_config": {"n_layers": N_LAYERS, "attention": "parallax"},
        "task": {"name": "in-context-recall", "seq_len": 64},
    }
    return StoredRun(run.arrays, {**run.meta, "config": config}, run.path)


def test_runs_trained_differently_are_separate_groups_unless_merged():
    runs = [_with_training_config(run) for run in planted_runs(seeds_per_group=2)]
    longer = _with_training_config(planted_run("muon", 5), steps=3000)
    faster = _with_training_config(planted_run("muon", 6), muon_lr=0.05)
    report = build_report([*runs, longer, faster])
    groups = {group.name: group.runs for group in report.groups}
    assert groups == {
        "adamw": ("adamw-0", "adamw-1"),
        "muon · train_config.optimizer.muon_lr=0.02, train_config.steps=1000": ("muon-0", "muon-1"),
        "muon · train_config.optimizer.muon_lr=0.02, train_config.steps=3000": ("muon-5",),
        "muon · train_config.optimizer.muon_lr=0.05, train_config.steps=1000": ("muon-6",),
    }
    assert any("differ in train_config.optimizer.muon_lr, train_config.steps: 3 groups" in note for note in report.notes)
    assert "muon-5" in render_text(report) and "train_config.steps=3000" in render_markdown(report)

    merged = build_report([*runs, longer, faster], merge_configurations=True)
    assert {group.name: len(group.runs) for group in merged.groups} == {"adamw": 2, "muon": 4}
    assert merged.settings.merge_configurations and not report.settings.merge_configurations


def test_probe_runs_without_a_training_config_are_grouped_by_their_metadata():
    runs = [planted_run("muon", 0, lr=0.1), planted_run("muon", 1, lr=0.1), planted_run("muon", 2, lr=0.2)]
    report = build_report(runs)
    assert {group.name: group.runs for group in report.groups} == {"muon · lr=0.1": ("muon-0", "muon-1"), "muon · lr=0.2": ("muon-2",)}
    assert any("without a training configuration" in note for note in report.notes)


def test_analyze_main_splits_by_configuration_and_merges_when_asked(monkeypatch):
    runs = {
        run.path: run for run in [_with_training_config(planted_run("muon", 0)), _with_training_config(planted_run("muon", 1), steps=3000)]
    }
    monkeypatch.setattr(report_module, "_open_run", runs.__getitem__)
    out = io.StringIO()
    assert report_module.analyze_main(list(runs), "optimizer", "json", out, io.StringIO()) == 0
    assert [group["name"] for group in json.loads(out.getvalue())["groups"]] == [
        "muon · train_config.steps=1000", "muon · train_config.steps=3000"]
    out = io.StringIO()
    assert report_module.analyze_main(list(runs), "optimizer", "json", out, io.StringIO(), merge_configurations=True) == 0
    assert [group["name"] for group in json.loads(out.getvalue())["groups"]] == ["muon"]
