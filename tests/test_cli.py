"""The CLI: bad input exits 2 with one line and touches nothing; a short run learns and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CLI, SHORT_RUN, folder_digest, run_cli

from parallax_probe import open_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "recall"
    result = run_cli("train", *SHORT_RUN, "--steps", "40", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--preset", "huge"], "invalid choice: 'huge'"),
        (["train", "--task", "sorting"], "unknown task 'sorting'"),
        (["train", "--optimizer", "sgd"], "invalid choice: 'sgd'"),
        (["train", "--steps", "0"], "expected a positive integer"),
        (["train", "--steps", "-5"], "expected a positive integer"),
        (["train", "--task", "text:/nonexistent/corpus.txt"], "does not exist"),
        (["train", "--task", "bin:/nonexistent/*.bin"], "no file matches"),
        (["train", "--resume", "--overwrite"], "exclude each other"),
        (["train", "--mad", "no_such_knob=3"], "unknown MADTaskConfig field"),
        (["train", "--compile", "no_such_backend"], "not a torch.compile backend"),
        (["train", "--model", "n_layers=1.5"], "--model n_layers=1.5: n_layers takes an integer"),
        (["train", "--model", "depth=16"], "--model depth: not a model field; choose one of d_model, n_layers"),
        (["train", "--model", "attention=softmax"], "--model attention: set it with --attention"),
        (["train", "--model", "n_heads=3"], "n_heads (3) must be a multiple of n_kv_heads (2)"),
        (["train", "--init-from", "runs/softmax", "--model", "n_layers=3"], "drop --model n_layers"),
        (["inspect", "/nonexistent/run"], "/nonexistent/run"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli(*args, "--out", tmp_path / "out") if args[0] == "train" else run_cli(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_model_fields_replace_the_presets_and_the_run_records_the_shape_it_trained(tmp_path):
    out = tmp_path / "deeper"
    result = run_cli("train", *SHORT_RUN, "--steps", "10", "--model", "n_layers=3", "--model", "d_model=48", "--out", out)
    assert result.returncode == 0, result.stderr
    model = json.loads((out / "run.json").read_text())["model_config"]
    assert (model["n_layers"], model["d_model"]) == (3, 48)
    assert (model["n_heads"], model["head_dim"]) == (4, 16), "fields not named keep the preset's values"
    assert open_run(out)["attn/cor_mean"].shape[1:] == (3, 4)


def test_an_existing_run_is_refused_without_resume_or_overwrite_and_left_untouched(finished_run):
    before = folder_digest(finished_run)
    result = run_cli("train", *SHORT_RUN, "--steps", "40", "--out", finished_run)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "--resume" in result.stderr
    assert folder_digest(finished_run) == before


def test_a_short_run_lowers_the_loss_and_records_the_probe(finished_run):
    run = open_run(finished_run)
    loss = run["scalars/loss"]
    assert loss[-1] < loss[0] - 0.2
    assert run.status == "closed"
    assert run["step"].tolist() == list(range(0, 40, 5))
    assert run["wr/step"].tolist() == [0, 10, 20, 30, 40]
    assert run.meta["optimizer"] == "muon" and run.meta["preset"] == "tiny"
    info = json.loads((finished_run / "run.json").read_text())
    assert set(info["optimizer_groups"]) == {"muon", "adamw_decay", "adamw_no_decay"}
    assert info["replicas_identical_at_end"] is True
    assert np.isfinite(run["attn/cor_mean"]).all()


def test_resume_continues_into_a_new_segment_without_duplicate_steps(tmp_path):
    out = tmp_path / "run"
    first = run_cli("train", *SHORT_RUN, "--steps", "20", "--checkpoint-every", "10", "--out", out)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("train", *SHORT_RUN, "--steps", "30", "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    # cosine at step 20: over 20 steps (warmup 2) its floor, 0.1;
    # over 30 steps (warmup 3), 0.1 + 0.9 * (1 + cos(pi * 17 / 27)) / 2 = 0.372
    assert "--steps 20 -> 30: the cosine schedule spans the run's length, so the learning rate at step 20 becomes 0.372 x its peak " \
           "instead of 0.1" in resumed.stderr
    run = open_run(out)
    assert len(run.segments) >= 2
    assert run["step"].tolist() == list(range(0, 30, 5))
    assert run["scalars/step"].tolist() == sorted(set(run["scalars/step"].tolist()))


def test_the_same_seed_gives_the_same_run_on_cpu(tmp_path):
    results = [run_cli("train", *SHORT_RUN, "--steps", "10", "--seed", "3", "--out", tmp_path / f"r{i}") for i in range(2)]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    a, b = open_run(tmp_path / "r0"), open_run(tmp_path / "r1")
    np.testing.assert_array_equal(a["scalars/loss"], b["scalars/loss"])
    np.testing.assert_array_equal(a["attn/cor_mean"], b["attn/cor_mean"])


def test_a_compiled_run_records_what_the_eager_run_records(tmp_path):
    """--compile traces the training step (aot_eager: Dynamo and AOTAutograd without Inductor's
    code generation, so the arithmetic is the eager one): same losses, same probe rows."""
    eager = run_cli("train", *SHORT_RUN, "--steps", "10", "--seed", "3", "--out", tmp_path / "eager")
    traced = run_cli("train", *SHORT_RUN, "--steps", "10", "--seed", "3", "--compile", "aot_eager", "--out", tmp_path / "traced")
    assert eager.returncode == 0 and traced.returncode == 0, eager.stderr + traced.stderr
    a, b = open_run(tmp_path / "eager"), open_run(tmp_path / "traced")
    assert b["step"].tolist() == a["step"].tolist() == [0, 5]
    np.testing.assert_array_equal(a["scalars/loss"], b["scalars/loss"])
    np.testing.assert_array_equal(a["attn/cor_mean"], b["attn/cor_mean"])
    assert json.loads((tmp_path / "traced" / "run.json").read_text())["train_config"]["compile"] == "aot_eager"


def test_inductor_on_the_cpu_without_a_compiler_is_refused_before_anything_is_written(tmp_path):
    env = {**os.environ, "CXX": "no-such-compiler++"}
    result = subprocess.run([*CLI, "train", *SHORT_RUN, "--device", "cpu", "--compile", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "needs a C++ compiler" in result.stderr and "--compile aot_eager" in result.stderr
    assert not (tmp_path / "out").exists()


def test_text_and_bin_tasks_train(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    tokens = (np.arange(20_000) % 97).astype(np.uint16)
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, len(tokens))
    with open(tmp_path / "shard_train_000.bin", "wb") as f:
        f.write(header.tobytes() + tokens.tobytes())
    tokens[:4000].tofile(tmp_path / "shard_val_000.bin")  # nanoGPT's raw layout, no header
    for task, extra in ((f"text:{corpus}", []), (f"bin:{tmp_path}/shard_*.bin", ["--vocab-size", "128"])):
        result = run_cli("train", *SHORT_RUN, "--steps", "10", "--task", task, *extra, "--out", tmp_path / task[:3])
        assert result.returncode == 0, result.stderr
        assert "held-out accuracy" in result.stdout


def test_help_for_every_subcommand():
    for sub in ("train", "demo", "inspect", "repair", "analyze", "dashboard"):
        result = run_cli(sub, "--help")
        assert result.returncode == 0 and "usage: parallax-probe" in result.stdout
    console = Path(sys.executable).parent / "parallax-probe"
    assert subprocess.run([console, "--help"], capture_output=True).returncode == 0


def test_inspect_prints_a_summary(finished_run):
    result = run_cli("inspect", finished_run)
    assert result.returncode == 0
    assert "2 layers, 4 heads" in result.stdout and "closed" in result.stdout
