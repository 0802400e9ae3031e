"""The training loop behind `parallax-probe train` (one process, or DDP under torchrun).

A run folder holds the probe's segment files, `checkpoint.pt` and `run.json` (the resolved
config, the optimiser's parameter groups and the provenance). Host-device syncs happen
only at the log interval (`loss.item()`), at evaluation, and at checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import PRESETS, resolve_model_config
from .data import IGNORE_INDEX, TaskData, load_task
from .distributed import all_reduce_mean, replicas_identical, setup_distributed
from .model import ParallaxLM
from .optim import OptimizerConfig, build_optimizers, lr_multiplier, set_learning_rates
from .provenance import code_version, device_description, package_versions

CHECKPOINT_NAME = "checkpoint.pt"
RUN_INFO_NAME = "run.json"
# What the loop logs through probe.log_scalars (eval_* only at evaluation steps, NaN elsewhere).
TRAINING_SCALARS = ("loss", "lr_multiplier", "grad_norm", "tokens_per_second", "eval_loss", "eval_accuracy")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (exists without --resume/--overwrite, ...)."""


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    preset: str = "tiny"
    """Model preset: tiny, small, qwen3-0.6b, qwen3-1.7b."""
    model_overrides: dict = field(default_factory=dict)
    """ModelConfig fields to replace (attention, wr_init, window, n_layers, ...)."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    task: str = "in-context-recall"
    """A MAD task name, text:PATH or bin:GLOB."""
    seq_len: int | None = None
    """None: the MAD task's baseline length (or 256 for text/bin)."""
    mad_overrides: dict = field(default_factory=dict)
    """MAD knobs (vocab_size, num_train_examples, ...)."""
    vocab_size: int | None = None
    """Model vocabulary for bin: tasks (MAD and text set their own)."""
    steps: int = 2000
    batch_size: int = 32
    """Global batch in sequences; split evenly over data-parallel ranks."""
    seed: int = 0
    device: str | None = None
    """None: cuda when available, else cpu."""
    out: str = "runs/run"
    resume: bool = False
    overwrite: bool = False
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_examples: int = 512
    log_every: int = 10
    checkpoint_every: int = 500
    probe_every: int = 50
    """Probe statistics every N steps (0 turns the probe off)."""
    spectra_every: int = 250
    """W_R spectra every N steps (a multiple of nothing in particular; cheap, from the weights)."""
    progress: bool = True
    compile: str | None = None
    """A torch.compile backend for the training forward and backward ('inductor' fuses the
    small ops whose launches bound the step); None trains eagerly. Evaluation stays eager."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "eval_examples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("probe_every", "spectra_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 turns it off)")
        if self.seq_len is not None and self.seq_len < 2:
            raise ValueError(f"--seq-len must be at least 2, got {self.seq_len}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pick one")
        if self.compile is not None:
            check_compile_backend(self.compile)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    out: Path
    steps: int
    final_loss: float
    eval_loss: float
    eval_accuracy: float
    chance_accuracy: float
    seconds: float
    tokens_per_second: float
    history: list[dict]
    is_main_process: bool = True
    """False on data-parallel ranks other than 0, which print and write nothing."""


def check_compile_backend(backend: str) -> None:
    """Refuse a backend torch.compile does not know when the config is made, before anything
    is written, not at the first step (`check_compiler_for` does the same for Inductor on a
    CPU without a C++ compiler, once the device is known)."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        common = ", ".join(sorted(torch._dynamo.list_backends()))
        raise ValueError(f"--compile {backend}: not a torch.compile backend; choose one of {common}")


def check_compiler_for(backend: str, device: torch.device) -> None:
    """Refuse `backend` where it cannot build code for `device`: Inductor's CPU code is C++."""
    if backend != "inductor" or device.type != "cpu":
        return
    import shutil

    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise ValueError(f"--compile inductor on the CPU needs a C++ compiler and {compiler!r} is not on PATH; "
                         "install one (or set CXX), or use --compile aot_eager")


def folder_holds_run(out: Path) -> bool:
    return out.is_dir() and (any(out.glob("segment-*.h5")) or (out / CHECKPOINT_NAME).exists() or (out / RUN_INFO_NAME).exists())


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse before touching anything: exists without --resume/--overwrite, or --resume with nothing to resume."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose another --out")
    if folder_holds_run(out) and not (cfg.resume or cfg.overwrite):
        raise RunFolderError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if cfg.resume and not (out / CHECKPOINT_NAME).exists():
        raise RunFolderError(f"--resume: {out / CHECKPOINT_NAME} does not exist; nothing to resume (drop --resume)")


def pick_device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
    return device


def chance_accuracy(task: TaskData) -> float:
    """Accuracy of guessing uniformly among the tokens that ever appear as scored targets."""
    targets = task.test_targets if task.test_targets is not None else task.test_stream[1:]
    scored = targets[targets != IGNORE_INDEX]
    return 1.0 / max(1, len(np.unique(scored)))


@torch.no_grad()
def evaluate(model: ParallaxLM, task: TaskData, cfg: TrainConfig, device, autocast) -> tuple[float, float]:
    """Held-out loss and accuracy (MAD's accuracy on MAD tasks) on rank-local data; every rank evaluates the same set."""
    was_training = model.training
    model.eval()
    loss_sum, count, predictions, targets = 0.0, 0, [], []
    for x, y in task.eval_batches(cfg.batch_size, cfg.eval_examples):
        x, y = x.to(device), y.to(device)
        with autocast:
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((y != IGNORE_INDEX).sum())
        predictions.append(logits.argmax(-1).cpu().numpy())
        targets.append(y.cpu().numpy())
    model.train(was_training)
    accuracy = task.accuracy(np.concatenate(predictions), np.concatenate(targets))
    return loss_sum / max(1, count), accuracy


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def train(cfg: TrainConfig) -> TrainResult:
    """Train one run; returns its summary. Raises RunFolderError/ValueError on bad input before writing."""
    check_run_folder(cfg)
    dist = setup_distributed(cfg.device)
    device = dist.device if dist.enabled else pick_device(cfg.device)
    if cfg.compile is not None:
        check_compiler_for(cfg.compile, device)
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the world size {dist.world_size}")
    task = load_task(cfg.task, seq_len=cfg.seq_len, seed=cfg.seed, vocab_size=cfg.vocab_size, mad_overrides=cfg.mad_overrides)
    overrides = {"vocab_size": task.vocab_size, "max_seq_len": max(task.seq_len, 16), **cfg.model_overrides}
    model_config = resolve_model_config(cfg.preset, **overrides)

    torch.manual_seed(cfg.seed)
    model = ParallaxLM(model_config).to(device)
    optimizers, groups = build_optimizers(model, cfg.optimizer)
    start_step, history = 0, []
    out = Path(cfg.out)
    if cfg.resume:
        checkpoint = torch.load(out / CHECKPOINT_NAME, map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        for opt, state in zip(optimizers, checkpoint["optimizers"]):
            opt.load_state_dict(state)
        start_step, history = checkpoint["step"], checkpoint.get("history", [])
    elif cfg.overwrite and dist.is_main and out.exists():
        for stale in (out / CHECKPOINT_NAME, out / RUN_INFO_NAME):
            stale.unlink(missing_ok=True)
    train_model = dist.wrap(model)
    if cfg.compile is not None:
        # Around DDP, not inside it, so Dynamo splits the graph at DDP's gradient buckets.
        # The probe hooks the uncompiled modules; they trace into the graph (README).
        train_model = torch.compile(train_model, backend=cfg.compile)

    provenance = {
        "code_version": code_version(),
        "package_versions": package_versions(),
        "device": device_description(device),
        "world_size": dist.world_size,
        "distributed_backend": dist.backend,
    }
    run_info = {
        "train_config": cfg.to_dict(),
        "model_config": model_config.to_dict(),
        "optimizer_groups": groups.to_dict(),
        "task": {"name": task.name, "description": task.description, "vocab_size": task.vocab_size, "seq_len": task.seq_len, **task.details},
        "seed": cfg.seed,
        **provenance,
    }
    probe = baseline = None
    run_meta = {"optimizer": cfg.optimizer.name, "config": run_info, "preset": cfg.preset,
                "attention": model_config.attention, "seed": cfg.seed, "task": task.name, **provenance}
    run_mode = "resume" if cfg.resume else ("overwrite" if cfg.overwrite else "new")
    if cfg.probe_every and model_config.attention == "parallax":
        from .hooks import Probe

        probe = Probe(
            model, out, every=cfg.probe_every, spectra_every=cfg.spectra_every or cfg.steps + 1, meta=run_meta,
            mode=run_mode, start_step=start_step, distributed=dist, scalar_names=TRAINING_SCALARS,
        )
    elif model_config.attention == "softmax" and dist.is_main:
        # A softmax model has no W_R for the probe; its training scalars still make a run
        # folder, so the dashboard and the analysis can put the baseline beside Parallax runs.
        from .store import Column, RunWriter

        baseline = RunWriter(out, tables={"scalars": {n: Column(n, (), (), "f8") for n in TRAINING_SCALARS}}, meta=run_meta,
                             mode=run_mode, start_step=start_step)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / RUN_INFO_NAME, run_info)
        if cfg.progress:
            print(f"[parallax-probe] {out}: {cfg.preset} {model_config.attention} model, "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters, {cfg.optimizer.name} on {provenance['device']}"
                  f"{f', world size {dist.world_size}' if dist.enabled else ''}", file=sys.stderr)
            print(f"[parallax-probe] parameter groups:\n{groups.describe()}", file=sys.stderr)
            if cfg.compile is not None:
                # the bar stands still meanwhile: say why
                print(f"[parallax-probe] torch.compile ({cfg.compile}): the first steps compile the model's graphs "
                      "(one with the probe's statistics, one without; tens of seconds on a GPU)", file=sys.stderr)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    chance = chance_accuracy(task)
    tokens_per_step = cfg.batch_size * task.seq_len
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not (cfg.progress and dist.is_main), dynamic_ncols=True, unit="step", file=sys.stderr)
    t0, window_start, window_steps = time.perf_counter(), time.perf_counter(), 0
    eval_loss, eval_accuracy, loss_value = math.nan, math.nan, math.nan
    try:
        for step in range(start_step, cfg.steps):
            multiplier = lr_multiplier(step, cfg.steps, cfg.optimizer)
            set_learning_rates(optimizers, multiplier)
            x, y = task.train_batch(step, cfg.batch_size, cfg.seed, dist.rank, dist.world_size)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with probe.step(step) if probe else nullcontext(), autocast:
                logits = train_model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            window_steps += 1
            last = step + 1 == cfg.steps
            if (step + 1) % cfg.log_every == 0 or last:
                loss_value = all_reduce_mean(loss.detach(), dist).item()  # host-device sync, at the log interval only
                elapsed = time.perf_counter() - window_start
                tokens_per_second = window_steps * tokens_per_step / max(elapsed, 1e-9)
                window_start, window_steps = time.perf_counter(), 0
                record = {"step": step, "loss": loss_value, "lr_multiplier": multiplier, "grad_norm": float(grad_norm), "tokens_per_second": tokens_per_second}
                if (step + 1) % cfg.eval_every == 0 or last:
                    eval_loss, eval_accuracy = evaluate(model, task, cfg, device, autocast)
                    record.update(eval_loss=eval_loss, eval_accuracy=eval_accuracy)
                history.append(record)
                if probe:
                    probe.log_scalars(step, **{k: v for k, v in record.items() if k != "step"})
                if baseline:
                    baseline.append("scalars", step, **{k: v for k, v in record.items() if k != "step"})
                    baseline.commit()  # every log_every steps: a few rows, cheap next to the steps between
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{eval_accuracy:.3f}", tok_s=f"{tokens_per_second:,.0f}")
            bar.update(1)
            if dist.is_main and ((step + 1) % cfg.checkpoint_every == 0 or last):
                if probe:
                    # The checkpoint says "resume after this step": the probe's rows up to it
                    # must be in the file first, or a crash between the two loses them for good
                    # (the writer commits at most every COMMIT_INTERVAL_S).
                    probe.flush()
                _atomic_save({"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                              "step": step + 1, "history": history, "train_config": cfg.to_dict()}, out / CHECKPOINT_NAME)
        if probe:
            probe.record_spectra(cfg.steps)  # the final weights, whatever the spectra cadence
        identical = replicas_identical(model, dist)
        if dist.is_main:
            _write_json(out / RUN_INFO_NAME, {**run_info, "replicas_identical_at_end": identical, "completed_steps": cfg.steps})
        if not identical:
            raise RuntimeError("data-parallel replicas diverged: parameters differ across ranks")
    finally:
        bar.close()
        if probe:
            probe.close()
        if baseline:
            baseline.close()
    seconds = time.perf_counter() - t0
    dist.shutdown()
    return TrainResult(
        out=out, steps=cfg.steps, final_loss=loss_value, eval_loss=eval_loss, eval_accuracy=eval_accuracy,
        chance_accuracy=chance, seconds=seconds,
        tokens_per_second=(cfg.steps - start_step) * tokens_per_step / max(seconds, 1e-9), history=history,
        is_main_process=dist.is_main,
    )
