"""FSDP2 (`fully_shard`) with 2 CPU processes (gloo): the probe's rows, Muon on DTensor shards,
checkpoints and --resume, and what the probe still refuses.

Seeds: the runs use --seed 5; tests/fsdp_muon_check.py uses seed 11 for its matrices and model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_distributed import launch

from parallax_probe import open_run
from parallax_probe.checkpoint import load_training_checkpoint
from parallax_probe.config import resolve_model_config
from parallax_probe.model import ParallaxLM
from parallax_probe.optim import OptimizerConfig, build_optimizers

# A constant schedule, so that a run stopped at step 6 and resumed to 12 gets the lr of a 12-step run.
ARGS = ["train", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--seed", "5", "--schedule", "constant",
        "--warmup-steps", "2", "--probe-every", "3", "--spectra-every", "6", "--log-every", "2", "--eval-every", "6",
        "--checkpoint-every", "4", "--device", "cpu", "--no-progress"]
STATISTICS = ("cor_mean", "cor_p50", "cor_p90", "cor_max", "sum_osm_sq", "sum_c_sq", "sum_osm_c",
              "probe_norm_mean", "probe_norm_p90", "probe_norm_max", "probe_gain_norm")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    for optimizer in ("adamw", "muon"):
        launch(root / f"one-{optimizer}", 1, "--optimizer", optimizer, "--steps", "12", args=ARGS)
    launch(root / "fsdp-muon", 2, "--optimizer", "muon", "--steps", "12", "--fsdp", args=ARGS)
    # AdamW under FSDP2 stopped after 6 steps and resumed to 12 from its checkpoint
    launch(root / "fsdp-adamw", 2, "--optimizer", "adamw", "--steps", "6", "--fsdp", args=ARGS)
    launch(root / "fsdp-adamw", 2, "--optimizer", "adamw", "--steps", "12", "--fsdp", "--resume", args=ARGS)
    return {p.name: p for p in root.iterdir()}


@pytest.mark.slow
def test_an_fsdp_run_records_the_rows_of_one_process_on_the_global_batch(runs):
    """AdamW, resumed at step 6. FSDP2 reduce-scatters float32 gradients in another order than one
    process's backward sums them; over 12 steps that moved grad_norm by at most 3.5e-5 and every
    statistic by at most 2e-5 (relative) on the machine that wrote this test: rtol 1e-4."""
    one, fsdp = open_run(runs["one-adamw"]), open_run(runs["fsdp-adamw"])
    np.testing.assert_array_equal(fsdp["step"], one["step"])
    np.testing.assert_array_equal(fsdp["scalars/step"], one["scalars/step"])
    np.testing.assert_array_equal(fsdp["attn/tokens"], one["attn/tokens"])
    for name in ("loss", "grad_norm", "eval_loss"):
        np.testing.assert_allclose(fsdp[f"scalars/{name}"], one[f"scalars/{name}"], rtol=1e-4, err_msg=name)
    for name in STATISTICS:
        np.testing.assert_allclose(fsdp[f"attn/{name}"], one[f"attn/{name}"], rtol=1e-4, atol=1e-7, err_msg=name)
    # spectra of the whole W_R, gathered from the shards (a shard's would differ at every step)
    np.testing.assert_array_equal(fsdp["wr/step"], one["wr/step"])
    np.testing.assert_array_equal(fsdp["wrk/step"], one["wrk/step"])
    for name in ("wr/singular_values", "wr/stable_rank", "wr/head_singular_values", "wr/effective_rank", "wrk/singular_values"):
        np.testing.assert_allclose(fsdp[name], one[name], rtol=1e-4, atol=1e-7, err_msg=name)
    assert fsdp.meta["world_size"] == 2 and fsdp.meta["data_parallel"] == "fsdp2"


@pytest.mark.slow
def test_resume_under_fsdp_continues_from_a_full_one_process_checkpoint(runs):
    folder = runs["fsdp-adamw"]
    assert sorted(p.name for p in folder.glob("segment-*.h5")) == ["segment-00000.h5", "segment-00001.h5"]
    run = open_run(folder)
    assert run.status == "closed"
    np.testing.assert_array_equal(run["scalars/step"], np.arange(1, 12, 2))  # no step lost or written twice
    info = json.loads((folder / "run.json").read_text())
    assert info["completed_steps"] == 12 and info["replicas_identical_at_end"] is None  # shards, not replicas
    # The checkpoint is the one-process layout: full matrices, loadable without FSDP2.
    checkpoint = load_training_checkpoint(folder / "checkpoint.pt")
    model = ParallaxLM(resolve_model_config("tiny", **info["model_config"]))
    model.load_state_dict(checkpoint["model"])
    (adamw,) = checkpoint["optimizers"]
    (optimizer,), _ = build_optimizers(model, OptimizerConfig(name="adamw"))
    params = [p for group in optimizer.param_groups for p in group["params"]]  # the state dict's numbering
    assert [adamw["state"][i]["exp_avg"].shape for i in range(len(params))] == [p.shape for p in params]


@pytest.mark.slow
def test_the_fsdp_muon_arm_trains_as_full_matrix_muon_on_one_process(runs):
    """End to end, through the trainer's --fsdp (gradients reduce-scattered, then Muon on the shards).
    Muon orthogonalises in bfloat16, where any change of rounding order moves a 12-step run by more
    than AdamW's float32 does: on this configuration a DDP run (2 processes, full matrices, the
    reduction order its all-reduce takes) differed from the one-process run by 2.6e-4 on the loss
    and 5.6e-3 on W_R's stable rank, and the FSDP2 run by 3.4e-4 and 7.0e-3. So rtol 2e-3 on the
    loss and 1.5e-2 on the stable rank; tests/fsdp_muon_check.py measures the optimiser step alone,
    against float64, and shows that orthogonalising each shard instead is a different update."""
    one, fsdp = open_run(runs["one-muon"]), open_run(runs["fsdp-muon"])
    np.testing.assert_allclose(fsdp["scalars/loss"], one["scalars/loss"], rtol=2e-3)
    np.testing.assert_allclose(fsdp["wr/stable_rank"], one["wr/stable_rank"], rtol=1.5e-2)
    assert json.loads((runs["fsdp-muon"] / "run.json").read_text())["optimizer_groups"]["muon"]


@pytest.fixture(scope="module")
def muon_check() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    script = Path(__file__).parent / "fsdp_muon_check.py"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))


@pytest.mark.slow
def test_muon_on_shard0_dtensors_computes_the_whole_matrix_not_each_shard(muon_check):
    """Against float64 Newton-Schulz of the whole matrix (the rule for kernels: at most twice the
    error of the same computation in plain PyTorch at the same precision): torch.optim.Muon on a
    Shard(0) DTensor is within 2x plain bf16 Muon's error; each shard orthogonalised alone is
    not Muon (its error is over 10x)."""
    for shape, errors in muon_check["shard_versus_matrix"].items():
        assert errors["dtensor"] <= 2 * errors["plain"], (shape, errors)
        assert errors["per_shard"] >= 10 * errors["plain"], (shape, errors)


@pytest.mark.slow
def test_the_fsdp_muon_arm_steps_as_full_matrix_muon_on_the_unsharded_model(muon_check):
    """The trainer's --fsdp optimisers (shard_model + build_optimizers) and the same optimisers on
    the unsharded model, given the same gradients for 3 steps, against a float64 Muon: every Muon
    matrix within twice the unsharded bf16 Muon's error."""
    model = muon_check["model"]
    for name, errors in model["error_against_float64"].items():
        assert errors["fsdp"] <= 2 * errors["plain"], (name, errors)
    assert model["state_round_trip_equal"] and model["checkpoint_holds_full_matrices"]


@pytest.mark.slow
def test_the_probe_refuses_only_what_it_cannot_measure(muon_check):
    refused = muon_check["refusals"]
    assert "not given the process group" in refused["without_distributed"] and "distributed=" in refused["without_distributed"]
    assert "mesh of shape (1, 2)" in refused["hsdp_mesh"] and "not HSDP" in refused["hsdp_mesh"]


def test_fsdp_needs_torchrun_and_refuses_compile_before_writing(tmp_path):
    from parallax_probe.train import TrainConfig, train

    with pytest.raises(ValueError, match="--compile with --fsdp"):
        TrainConfig(fsdp=True, compile="aot_eager")
    with pytest.raises(ValueError, match="torchrun --nproc_per_node N"):
        train(TrainConfig(fsdp=True, steps=1, device="cpu", out=str(tmp_path / "run"), progress=False))
    assert not (tmp_path / "run").exists()
