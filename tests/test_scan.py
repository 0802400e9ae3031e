"""`parallax-probe scan`: rows of saved checkpoints equal the live probe's rows, resumably.

Seeds: the model is built under torch.manual_seed(SEED); batches come from torch.Generator seeded SEED.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parallax_probe import Probe, build_model
from parallax_probe import train as training
from parallax_probe.checkpoint import save_checkpoint
from parallax_probe.cli import main
from parallax_probe.store import open_run

SEED = 11
LOGGING = (0, 3, 6)  # the live probe's logging steps (every=3), where the checkpoints are kept


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A hand-written loop: at its logging steps it feeds the fixed batch X and keeps the weights entering that step."""
    folder = tmp_path_factory.mktemp("scan")
    torch.manual_seed(SEED)
    model = build_model("tiny", vocab_size=48)
    generator = torch.Generator().manual_seed(SEED)
    x_fixed = torch.randint(0, 48, (4, 24), generator=generator)
    np.save(folder / "x.npy", x_fixed.numpy())
    (folder / "run.json").write_text(json.dumps({"model_config": model.config.to_dict()}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    probe = Probe(model, folder / "live", every=3, spectra_every=3, meta={"optimizer": "adamw"})
    for step in range(8):
        logging = step in LOGGING
        if logging:
            # step-N.pt holds the weights entering step N: those the probe sees in this step's forward
            save_checkpoint({"model": model.state_dict(), "step": step}, folder / f"step-{step}.pt")
        x = x_fixed if logging else torch.randint(0, 48, (4, 24), generator=generator)
        with probe.step(step):
            logits = model(x)
        F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    probe.close()
    return folder


COLUMNS = ("attn/cor_mean", "attn/cor_p90", "attn/sum_c_sq", "attn/sum_osm_sq", "attn/sum_osm_c", "attn/tokens",
           "attn/probe_norm_max", "attn/layer_cor_mean", "attn/probe_gain_norm", "wr/singular_values", "wr/stable_rank",
           "wr/head_effective_rank", "wrk/stable_rank")


def test_scan_of_kept_checkpoints_equals_the_live_rows_and_resumes(live, capsys):
    out = live / "scanned"
    first = [str(live / f"step-{s}.pt") for s in LOGGING[:2]]
    assert main(["scan", *first, "--eval", str(live / "x.npy"), "--out", str(out), "--no-progress"]) == 0
    assert "scanned 2 checkpoint(s) (steps 0 to 3)" in capsys.readouterr().out
    # again, with one more checkpoint: the two scanned ones are skipped, the new one is added
    every = [str(live / f"step-{s}.pt") for s in LOGGING]
    assert main(["scan", *every, "--eval", str(live / "x.npy"), "--out", str(out), "--no-progress"]) == 0
    assert "scanned 1 checkpoint(s) (steps 6 to 6); 2 already in the run, skipped" in capsys.readouterr().out
    scanned, recorded = open_run(out), open_run(live / "live")
    np.testing.assert_array_equal(scanned["step"], LOGGING)
    np.testing.assert_array_equal(scanned["wr/step"], LOGGING)
    for name in COLUMNS:
        np.testing.assert_allclose(scanned[name], recorded[name], rtol=1e-6, atol=1e-9, err_msg=name)
    assert np.isfinite(scanned["scalars/eval_loss"]).all()
    assert main(["scan", *every, "--eval", str(live / "x.npy"), "--out", str(out), "--no-progress"]) == 0
    assert "scanned 0 checkpoint(s); 3 already in the run, skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{live}/nothing.pt", "--eval", "{live}/x.npy"], "not a checkpoint"),
        (["{live}/step-0.pt", "{live}/step-0.pt", "--eval", "{live}/x.npy"], "step 0 is named by more than one"),
        (["{live}/step-0.pt", "--eval", "{live}/run.json"], "not a text file of integer ids"),
        (["{live}/step-0.pt", "--eval", "no-such-task"], "unknown task"),
    ],
    ids=["missing", "repeated", "bad-eval-file", "bad-task"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(live, tmp_path, capsys, args, message):
    assert main(["scan", *[a.format(live=live) for a in args], "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_keep_checkpoints_leaves_a_trajectory_the_scan_reads(tmp_path, capsys):
    (tmp_path / "text.txt").write_text("scan the trajectory of a run that kept its weights. " * 30)
    out = tmp_path / "run"
    training.train(training.TrainConfig(
        preset="tiny", task=f"text:{tmp_path / 'text.txt'}", seq_len=16, batch_size=4, steps=4, probe_every=2, spectra_every=2,
        log_every=1, eval_every=1000, checkpoint_every=4, keep_checkpoints=2, progress=False, device="cpu", out=str(out), seed=SEED,
    ))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0.pt", "step-2.pt", "step-4.pt"]
    assert main(["scan", str(out), "--eval", f"text:{tmp_path / 'text.txt'}", "--eval-batch-size", "2", "--out",
                 str(tmp_path / "scanned"), "--no-progress"]) == 0
    scanned = open_run(tmp_path / "scanned")
    np.testing.assert_array_equal(scanned["step"], [0, 2, 4])
    assert scanned.meta["optimizer"] == "muon" and scanned.meta["scan_eval"].startswith("text:")
    # the final weights are those of the run's checkpoint.pt (step 4) and of its spectra row at step 4
    live = open_run(out)
    np.testing.assert_allclose(scanned["wr/stable_rank"][-1], live["wr/stable_rank"][-1], rtol=1e-6)


def test_hugging_face_folders_named_by_step_are_scanned_in_step_order(tmp_path, capsys):
    pytest.importorskip("fla")
    from fla_on_cpu import fla_kernels_on_cpu, tiny_fla_model

    from parallax_probe.scan import scan

    x = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(SEED))
    np.save(tmp_path / "x.npy", x.numpy())
    models = {5: tiny_fla_model(seed=SEED), 0: tiny_fla_model(seed=SEED + 1)}
    models[5].save_pretrained(tmp_path / "checkpoint-5")  # the Trainer's name
    models[0].save_pretrained(tmp_path / "step-0")
    with fla_kernels_on_cpu():
        scanned, skipped = scan([str(tmp_path / "checkpoint-5"), str(tmp_path / "step-0")], eval_spec=str(tmp_path / "x.npy"),
                                out=str(tmp_path / "scanned"), progress=False)
        assert (scanned, skipped) == ([0, 5], [])
        for step, model in models.items():  # the live probe on the saved model, at that step
            with Probe(model, tmp_path / f"live-{step}", every=1, spectra_every=1, serve=False) as probe, probe.step(step), torch.no_grad():
                model(input_ids=x, use_cache=False)
    run = open_run(tmp_path / "scanned")
    np.testing.assert_array_equal(run["step"], [0, 5])
    for index, step in enumerate((0, 5)):
        live = open_run(tmp_path / f"live-{step}")
        for name in ("attn/cor_mean", "attn/sum_c_sq", "attn/probe_norm_p90", "wr/stable_rank"):
            np.testing.assert_allclose(run[name][index], live[name][0], rtol=1e-6, err_msg=name)


def test_a_checkpoint_that_fails_midway_keeps_the_rows_before_it_and_a_rerun_continues(live, tmp_path, capsys):
    for name in [f"step-{step}.pt" for step in LOGGING] + ["run.json"]:
        shutil.copy(live / name, tmp_path / name)
    (tmp_path / "step-6.pt").write_bytes((live / "step-6.pt").read_bytes()[:200])  # cut off, as by a full disk
    every = [str(tmp_path / f"step-{s}.pt") for s in LOGGING]
    out = tmp_path / "scanned"
    assert main(["scan", *every, "--eval", str(live / "x.npy"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "step-6.pt: not a readable torch checkpoint" in err and len(err.strip().splitlines()) == 1, err
    assert "the 2 step(s) before it are kept" in err and "run the command again to continue" in err
    stopped = open_run(out)
    np.testing.assert_array_equal(stopped["step"], LOGGING[:2])
    assert stopped.status == "closed"

    shutil.copy(live / "step-6.pt", tmp_path / "step-6.pt")
    assert main(["scan", *every, "--eval", str(live / "x.npy"), "--out", str(out), "--no-progress"]) == 0
    assert "scanned 1 checkpoint(s) (steps 6 to 6); 2 already in the run, skipped" in capsys.readouterr().out
    scanned, recorded = open_run(out), open_run(live / "live")
    np.testing.assert_array_equal(scanned["step"], LOGGING)
    for name in COLUMNS:
        np.testing.assert_allclose(scanned[name], recorded[name], rtol=1e-6, atol=1e-9, err_msg=name)
