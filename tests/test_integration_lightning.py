"""`ProbeLightningCallback` under the real `lightning.pytorch.Trainer` (CPU): the hand-written
loop's run, and a fit resumed from a Lightning checkpoint continues the same run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning", reason="lightning is a test dependency (pip install parallax-probe[lightning])")
import lightning.pytorch as pl
from integration_loops import (
    BATCH,
    MAX_GRAD_NORM,
    SEED,
    STATISTICS,
    TinyLM,
    assert_same_scalars,
    assert_same_statistics,
    examples,
    hand_written_run,
    optimizer_and_schedule,
)
from lightning.pytorch.callbacks import ModelCheckpoint

from parallax_probe import open_run
from parallax_probe.integrations import ProbeLightningCallback

EVERY, SPECTRA_EVERY = 2, 4


class TinyLMModule(pl.LightningModule):
    def __init__(self, note: str = "lightning-test") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinyLM()

    def training_step(self, batch, batch_idx):
        return self.model(**batch)["loss"]

    def configure_optimizers(self):
        optimizer, schedule = optimizer_and_schedule(self)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def fit(run_dir, root, *, max_steps: int, accumulate: int, steps_per_epoch: int, ckpt_path=None, checkpoint_every_epoch=False, processes=1):
    """Train TinyLMModule; the data is one epoch of steps_per_epoch optimizer steps, in order."""
    data = examples(steps_per_epoch * accumulate * BATCH * processes)
    # Under DDP, rank r takes examples r, r + 2, ...: each step's 2 * BATCH examples in turn. (Lightning's
    # own sampler shuffles them.)
    sampler = (torch.utils.data.DistributedSampler(data, num_replicas=processes, rank=int(os.environ["RANK"]), shuffle=False)
               if processes > 1 else None)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False, sampler=sampler)
    callbacks = [ProbeLightningCallback(run_dir, every=EVERY, spectra_every=SPECTRA_EVERY, meta={"experiment": "pl-test"})]
    if checkpoint_every_epoch:
        callbacks.append(ModelCheckpoint(dirpath=root / "checkpoints", every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True))
    trainer = pl.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=MAX_GRAD_NORM,
        accelerator="cpu",
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
        logger=False,
        enable_checkpointing=checkpoint_every_epoch,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
        use_distributed_sampler=False,
    )
    pl.seed_everything(SEED, verbose=False)
    trainer.fit(TinyLMModule(), loader, ckpt_path=ckpt_path)
    return trainer


def test_lightning_callback_writes_the_hand_written_loops_run(tmp_path):
    steps, accumulate = 5, 2
    fit(tmp_path / "pl", tmp_path, max_steps=steps, accumulate=accumulate, steps_per_epoch=steps)
    hand_written_run(tmp_path / "hand", steps=steps, accumulate=accumulate, every=EVERY, spectra_every=SPECTRA_EVERY)

    assert_same_statistics(tmp_path / "pl", tmp_path / "hand")
    assert_same_scalars(tmp_path / "pl", tmp_path / "hand")
    run = open_run(tmp_path / "pl")
    assert list(run["step"]) == [0, 2, 4] and list(run["wr/step"]) == [0, 4, 5]
    assert run.status == "closed"
    assert run.meta["experiment"] == "pl-test" and run.meta["optimizer"] == "adamw"
    assert run.meta["hparams"] == {"note": "lightning-test"}
    assert run.meta["trainer"]["accumulate_grad_batches"] == accumulate
    assert run.meta["package_versions"]["lightning"] != "not installed"


def test_a_fit_resumed_from_its_checkpoint_continues_the_run_folder(tmp_path):
    """The first fit runs 7 steps with a checkpoint after each; the second resumes from the one after
    step 3 and reruns 4..6. The folder then reads exactly as after the first fit: the resumed
    segment supersedes rows 4.. and repeats none. Epochs are one batch long because Lightning
    restarts a plain DataLoader's epoch from its first batch on resume; so each step sees the
    same batch in both fits and the rows must agree."""
    run_dir = tmp_path / "pl"
    fit(run_dir, tmp_path, max_steps=7, accumulate=1, steps_per_epoch=1, checkpoint_every_epoch=True)
    first = open_run(run_dir)
    names = [n for n in first.names() if n.startswith(STATISTICS) or n.startswith("scalars/")]
    before = first.read(*names)
    assert list(before["step"]) == [0, 2, 4, 6] and list(before["scalars/step"]) == list(range(7))

    checkpoint = next((tmp_path / "checkpoints").glob("*step=4.ckpt"))
    fit(run_dir, tmp_path, max_steps=7, accumulate=1, steps_per_epoch=1, ckpt_path=checkpoint)

    resumed = open_run(run_dir)
    assert len(resumed.segments) == 2 and resumed.status == "closed"
    assert resumed.segments[1].start_step == 4  # the second fit wrote steps 4.. only
    after = resumed.read(*names)
    for name in names:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6, equal_nan=True, err_msg=name)


def test_under_ddp_every_rank_gathers_and_rank_zero_writes(tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 2 each: examples 0, 2 go to rank 0 and 1, 3 to rank 1,
    and the probe gathers both ranks' rows, so the run's
    statistics equal one process's hand loop on batches of 4 (tokens in another order and DDP's
    averaged half-batch gradients: float rounding apart). `loss` is rank 0's own, so only lr and
    the (all-reduced) gradient norm are compared."""
    steps = 5
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(Path(__file__).parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__).parent / "pl_ddp_train.py"), str(tmp_path / "ddp"), str(tmp_path), str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    hand_written_run(tmp_path / "hand", steps=steps, accumulate=1, every=EVERY, spectra_every=SPECTRA_EVERY, batch=2 * BATCH)

    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.suffix == ".h5") == ["segment-00000.h5"]  # one writer
    run = open_run(tmp_path / "ddp")
    assert run.meta["world_size"] == 2 and run.meta["trainer"]["world_size"] == 2
    assert_same_statistics(tmp_path / "ddp", tmp_path / "hand", rtol=1e-4)
    assert_same_scalars(tmp_path / "ddp", tmp_path / "hand", names=("lr", "grad_norm"), rtol=1e-4)
