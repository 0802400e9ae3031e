"""`ProbeCallback` under the real `transformers.Trainer` (CPU) writes the hand-written loop's run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is a test dependency (pip install parallax-probe[hf])")
from fla_on_cpu import fla_kernels_on_cpu, tiny_fla_model
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
from transformers import Trainer, TrainingArguments

from parallax_probe import open_run
from parallax_probe.integrations import ProbeCallback

STEPS, EVERY, SPECTRA_EVERY = 5, 2, 4


def fla_model():
    return tiny_fla_model(qk_norm=True, seed=SEED).train()


class InOrder(torch.utils.data.IterableDataset):
    """The examples in a fixed order: the Trainer's sampler would shuffle a map-style dataset."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def train_with_trainer(
    run_dir, out_dir, *, accumulate: int, processes: int = 1, make_model=TinyLM, save_steps=None, resume=None
) -> Trainer:
    model = make_model()
    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=STEPS, per_device_train_batch_size=BATCH, gradient_accumulation_steps=accumulate,
        max_grad_norm=MAX_GRAD_NORM, logging_steps=1, save_strategy="steps" if save_steps else "no", save_steps=save_steps,
        report_to="none", use_cpu=True, seed=SEED, disable_tqdm=True, dataloader_num_workers=0,
        ddp_backend="gloo" if processes > 1 else None,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=InOrder(examples(STEPS * accumulate * BATCH * processes)),
        optimizers=optimizer_and_schedule(model),
        callbacks=[ProbeCallback(run_dir, every=EVERY, spectra_every=SPECTRA_EVERY, meta={"experiment": "hf-test"})],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.mark.parametrize("accumulate", [1, 2], ids=["no-accumulation", "accumulate-2"])
def test_trainer_callback_writes_the_hand_written_loops_run(tmp_path, accumulate):
    train_with_trainer(tmp_path / "hf", tmp_path / "hf-out", accumulate=accumulate)
    hand_written_run(tmp_path / "hand", steps=STEPS, accumulate=accumulate, every=EVERY, spectra_every=SPECTRA_EVERY)

    assert_same_statistics(tmp_path / "hf", tmp_path / "hand")
    assert_same_scalars(tmp_path / "hf", tmp_path / "hand")
    run = open_run(tmp_path / "hf")
    assert list(run["step"]) == [0, 2, 4] and list(run["wr/step"]) == [0, 4, 5]
    assert run.status == "closed"
    assert run.meta["experiment"] == "hf-test" and run.meta["optimizer"] == "adamw"
    assert run.meta["training_args"]["gradient_accumulation_steps"] == accumulate
    assert run.meta["optimizer_param_groups"][0]["weight_decay"] == 0.01
    assert run.meta["package_versions"]["transformers"] != "not installed"


def test_trainer_callback_reads_flas_parallax_for_causal_lm(tmp_path):
    """fla's real model (its Triton-only pieces swapped for fla's references, tests/fla_on_cpu.py):
    the probe reads it through the op wrapper, the Trainer passes labels and takes fla's loss."""
    pytest.importorskip("fla")
    with fla_kernels_on_cpu():
        train_with_trainer(tmp_path / "hf", tmp_path / "hf-out", accumulate=1, make_model=fla_model)
        hand_written_run(tmp_path / "hand", steps=STEPS, accumulate=1, every=EVERY, spectra_every=SPECTRA_EVERY, make_model=fla_model)
    assert_same_statistics(tmp_path / "hf", tmp_path / "hand")
    assert_same_scalars(tmp_path / "hf", tmp_path / "hand")
    assert open_run(tmp_path / "hf").meta["layer_layouts"] == ["fla", "fla"]


def test_a_trainer_resumed_from_its_checkpoint_continues_the_run_folder(tmp_path):
    """The first run saves a checkpoint after step 3 and runs on to step 4; the second resumes from
    it and reruns step 4. The folder then reads exactly as after the first run, in two segments.
    fla's model: a Trainer checkpoint of a plain module with tied embeddings fails in safetensors."""
    pytest.importorskip("fla")
    with fla_kernels_on_cpu():
        train_with_trainer(tmp_path / "hf", tmp_path / "out", accumulate=1, save_steps=4, make_model=fla_model)
    first = open_run(tmp_path / "hf")
    names = [n for n in first.names() if n.startswith(STATISTICS) or n.startswith("scalars/")]
    before = first.read(*names)

    with fla_kernels_on_cpu():
        train_with_trainer(
            tmp_path / "hf", tmp_path / "out", accumulate=1, make_model=fla_model, resume=str(tmp_path / "out" / "checkpoint-4")
        )
    resumed = open_run(tmp_path / "hf")
    assert len(resumed.segments) == 2 and resumed.segments[1].start_step == 4 and resumed.status == "closed"
    after = resumed.read(*names)
    for name in names:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6, equal_nan=True, err_msg=name)


def test_importing_the_integrations_loads_no_framework():
    code = ("import sys, parallax_probe.integrations as i; assert i.__all__; "
            "loaded = [m for m in ('transformers', 'accelerate', 'lightning') if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)


def test_under_ddp_every_rank_gathers_and_rank_zero_writes(tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 2 each: accelerate hands rank r the r-th half of each
    global batch of 4, and the probe gathers both ranks' rows, so the run equals one process's hand
    loop on batches of 4 (DDP averages the ranks' gradients: float rounding apart, the same update)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(Path(__file__).parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__).parent / "hf_ddp_train.py"), str(tmp_path / "ddp"), str(tmp_path / "ddp-out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    hand_written_run(tmp_path / "hand", steps=STEPS, accumulate=1, every=EVERY, spectra_every=SPECTRA_EVERY, batch=2 * BATCH)

    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.suffix == ".h5") == ["segment-00000.h5"]  # one writer
    run = open_run(tmp_path / "ddp")
    assert run.meta["world_size"] == 2 and run.meta["distributed_backend"] == "gloo"
    assert_same_statistics(tmp_path / "ddp", tmp_path / "hand", rtol=1e-4)
    assert_same_scalars(tmp_path / "ddp", tmp_path / "hand", rtol=1e-4)
