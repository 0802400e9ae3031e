"""The training loop behind `parallax-probe train` (one process, or DDP or FSDP2 under torchrun).

A run folder holds the probe's segment files, `checkpoint.pt` and `run.json` (the resolved
config, the optimiser's parameter groups and the provenance). Host-device syncs happen
only at the log interval (`loss.item()`), at evaluation, and at checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError, load_training_checkpoint, save_checkpoint
from .config import MODEL_FLAG_FIELDS, TrainConfig, resolve_model_config
from .data import IGNORE_INDEX, TaskData, load_task
from .distributed import all_reduce_mean, full_state, load_optimizer_state, replicas_identical, setup_distributed
from .model import ParallaxLM
from .optim import build_optimizers, lr_multiplier, set_learning_rates
from .provenance import code_version, device_description, package_versions
from .run_folder import CHECKPOINT_NAME, KEPT_CHECKPOINTS, RUN_INFO_NAME
from .store import SCALARS_TABLE, SEGMENT_RE, STORE_FILE_RE, RunExistsError, RunInUseError, live_writer_of

# What the loop logs through probe.log_scalars (eval_* only at evaluation steps, NaN elsewhere).
TRAINING_SCALARS = ("loss", "lr_multiplier", "grad_norm", "tokens_per_second", "eval_loss", "eval_accuracy")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (exists without --resume/--overwrite, ...)."""


class DiskFullError(RuntimeError):
    """The run's disk filled up: training stopped, committed rows and the last checkpoint kept."""


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
    stopped_by: str | None = None
    """The signal (SIGTERM, SIGINT) that stopped the run before --steps; `steps` is then the step it stopped at."""


def check_compiler_for(backend: str, device: torch.device) -> None:
    """Refuse `backend` where it cannot build code for `device`: Inductor's CPU code is C++."""
    if backend != "inductor" or device.type != "cpu":
        return
    import shutil

    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise ValueError(f"--compile inductor on the CPU needs a C++ compiler and {compiler!r} is not on PATH; "
                         "install one (or set CXX), or use --compile aot_eager")


@contextlib.contextmanager
def open_trackers(specs: list[str], out: Path, config: dict):
    """The trackers that --tracker names, created here and finished when the run ends."""
    trackers, closers = [], []
    try:
        for spec in specs:
            kind, _, target = spec.partition(":")
            if kind == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=target)
                trackers.append(writer)
                closers.append(writer.close)
            else:
                import wandb

                run = wandb.init(project=target, name=Path(out).absolute().name, config=config, reinit="create_new")
                trackers.append(run)
                closers.append(run.finish)
        yield trackers
    finally:
        for close in reversed(closers):
            close()


class StopSignals:
    """SIGTERM (what SLURM and Kubernetes send before a kill) and SIGINT ask the loop to stop at
    the next step boundary; a second signal ends the process at once, as the signal's default
    action would. Installed only around the training loop, in the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # the default action: the process ends now, as if never caught
            return
        self.received = signal.Signals(signum).name
        print(f"[parallax-probe] {self.received}: stopping after this step (checkpoint, then close the run); "
              "send it again to exit at once", file=sys.stderr, flush=True)


# What a resume must keep: a change would mix two models, data streams or optimisers in one
# run. (--steps, learning rates and the cadences may change; --backend too, it computes the same.)
RESUME_FIXED_FLAGS = {
    "preset": "--preset", "task": "--task", "seq_len": "--seq-len", "mad_overrides": "--mad",
    "vocab_size": "--vocab-size", "seed": "--seed", "batch_size": "--batch-size",
    "model_overrides.attention": "--attention", "model_overrides.wr_init": "--wr-init",
    "model_overrides.window": "--window", "optimizer.name": "--optimizer", "init_from": "--init-from",
    **{f"model_overrides.{name}": f"--model {name}" for name in MODEL_FLAG_FIELDS},
}


def any_rank(flag: bool, dist, device: torch.device) -> bool:
    """Whether `flag` is set on any data-parallel rank (one all-reduce; a host-device sync)."""
    import torch.distributed as torch_dist

    flags = torch.tensor([int(flag)], device=device)
    torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
    return bool(flags.item())


def folder_holds_run(out: Path) -> bool:
    return out.is_dir() and any(
        SEGMENT_RE.match(p.name) or STORE_FILE_RE.match(p.name) or p.name in (CHECKPOINT_NAME, RUN_INFO_NAME)
        for p in out.iterdir()
    )


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse before touching anything: --out unusable, a run there that a process is still writing,
    a run there without --resume/--overwrite, or --resume with nothing to resume."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose another --out")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunFolderError(f"--out {out}: {parent} is a file, so no folder can be made under it; choose another --out")
            break
    if folder_holds_run(out):
        live = live_writer_of(out)
        if live is not None:
            raise RunFolderError(f"{out} is being written by a running process (pid {live.attrs.get('writer_pid')} "
                                 f"on {live.attrs.get('writer_host')}); stop it first, or choose another --out")
    if folder_holds_run(out) and not (cfg.resume or cfg.overwrite):
        if (out / CHECKPOINT_NAME).exists():
            raise RunFolderError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        raise RunFolderError(f"{out} holds the files of a run that never reached a checkpoint, so it cannot be resumed; "
                             "pass --overwrite to start it again, or choose another --out")
    if cfg.resume and not (out / CHECKPOINT_NAME).exists():
        raise RunFolderError(f"--resume: {out / CHECKPOINT_NAME} does not exist; nothing to resume (drop --resume)")


def create_run_folder(out: Path) -> None:
    """Make `out` (and its parents) and check that files can be created in it.

    The last check before anything is written; a folder made here is removed again when it fails.
    """
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        if made and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        raise RunFolderError(f"--out {out}: cannot create files there ({error.strerror or error}); choose another --out") from error


def check_resume(cfg: TrainConfig, checkpoint: dict, path: Path) -> None:
    """Refuse a resume that would mix two runs, or that has nothing left to train."""
    saved, asked = _flatten(checkpoint["train_config"]), _flatten(cfg.to_dict())
    changed = [f"{flag} {saved.get(key)!r} -> {asked.get(key)!r}"
               for key, flag in RESUME_FIXED_FLAGS.items() if saved.get(key) != asked.get(key)]
    if changed:
        raise RunFolderError(f"--resume: the run in {path.parent} was trained with other settings ({'; '.join(changed)}); "
                             "resume with the run's own flags, or start a new run with another --out")
    if checkpoint["step"] >= cfg.steps:
        raise RunFolderError(f"--resume: {path} is at step {checkpoint['step']} and --steps is {cfg.steps}: nothing left to train; "
                             f"pass --steps above {checkpoint['step']} to train further")


SCHEDULE_FIELDS = ("schedule", "warmup_steps", "min_lr_ratio", "decay_fraction")


def schedule_change_on_resume(cfg: TrainConfig, checkpoint: dict) -> str | None:
    """What a resume with another --steps (or schedule) does to the learning rate, or None: the
    schedule is a function of the run's length, so the lr at the resumed step jumps."""
    saved = checkpoint["train_config"]
    step = checkpoint["step"]
    if not isinstance(saved.get("steps"), int) or not isinstance(saved.get("optimizer"), dict):
        return None  # a checkpoint without them was refused by check_resume or predates them
    saved_schedule = {name: saved["optimizer"][name] for name in SCHEDULE_FIELDS if name in saved["optimizer"]}
    before = lr_multiplier(step, saved["steps"], dataclasses.replace(cfg.optimizer, **saved_schedule))
    after = lr_multiplier(step, cfg.steps, cfg.optimizer)
    if math.isclose(before, after, rel_tol=1e-9):
        return None
    why = (f"--steps {saved['steps']} -> {cfg.steps}: the {cfg.optimizer.schedule} schedule spans the run's length"
           if saved["steps"] != cfg.steps else "the schedule's flags changed")
    return (f"{why}, so the learning rate at step {step} becomes {after:.3g} x its peak instead of {before:.3g} "
            "(scalars/lr_multiplier shows the jump)")


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in ("model_overrides", "optimizer"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def pick_device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--device {requested!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {requested}: training runs on cpu or cuda; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def attention_backend_that_runs(model_config, device: torch.device) -> str:
    """The backend the model's attention will take ("triton" or "reference"), so the run records
    what ran rather than what was asked for (--backend triton on a CPU runs the reference)."""
    from .kernels.attention import resolve_backend

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the training autocast
    probe_q = torch.empty((0, 0, 0, model_config.head_dim), dtype=dtype, device=device)
    return resolve_backend(probe_q, model_config.attention_backend)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on `device` (host: MemAvailable), or None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_batch_fits(task: TaskData, cfg: TrainConfig, model_config, device: torch.device, world_size: int) -> None:
    """Refuse a batch that cannot fit, before it is built (building one of 10^9 sequences first
    filled 16 GB of host memory here before failing).

    The bound is a floor, not an estimate: per token, the batch itself (int64 inputs and targets),
    the float32 residual stream each layer keeps for the backward pass, and the float32 logits.
    A batch over it cannot run; a batch under it may still run out of memory later.
    """
    available = available_memory(device)
    tokens = cfg.batch_size // world_size * task.seq_len
    floor = tokens * (16 + 4 * model_config.d_model * model_config.n_layers + 4 * model_config.vocab_size)
    if available is not None and floor > available:
        raise ValueError(
            f"--batch-size {cfg.batch_size}: a step of {cfg.batch_size} x {task.seq_len} tokens needs at least "
            f"{floor / 2**30:.1f} GiB on {device.type}, which has {available / 2**30:.1f} GiB free; use a smaller --batch-size"
        )


def check_first_batches(task: TaskData, cfg: TrainConfig, start_step: int) -> None:
    """Build one training and one held-out batch now, so a data set too short for --seq-len
    fails before the run folder is written, not at step 0."""
    task.train_batch(start_step, cfg.batch_size, cfg.seed)
    next(iter(task.eval_batches(cfg.batch_size, cfg.eval_examples)))


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


@contextlib.contextmanager
def checkpoint_fits(path: Path):
    """A checkpoint that `check_resume` accepted but that does not load (a file from another
    version of the model, another optimiser setup) becomes a CheckpointError naming it."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: does not fit this model and optimiser ({first_line}); "
                              "resume with the flags the run was started with") from error


def load_model_state(checkpoint: dict, model: ParallaxLM, path: Path) -> None:
    """The checkpoint's full model state, into the model before it is sharded (FSDP2 shards what it finds)."""
    with checkpoint_fits(path):
        model.load_state_dict(checkpoint["model"])


def load_optimizer_states(checkpoint: dict, optimizers: list, path: Path, *, sharded: bool) -> None:
    """The checkpoint's full optimiser states; under FSDP2 (`sharded`) each cut into this rank's shards."""
    if len(checkpoint["optimizers"]) != len(optimizers):
        raise CheckpointError(f"{path}: holds {len(checkpoint['optimizers'])} optimiser states, this run builds {len(optimizers)}; "
                              "it was written by another optimiser setup")
    with checkpoint_fits(path):
        for opt, state in zip(optimizers, checkpoint["optimizers"]):
            load_optimizer_state(opt, state) if sharded else opt.load_state_dict(state)


def is_disk_full(error: BaseException) -> bool:
    """Whether ENOSPC is behind `error` (h5py reports it as a RuntimeError naming errno 28)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(current) or "errno = 28" in str(current):
            return True
        pending += [current.__cause__, current.__context__]
    return False


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    while not os.path.ismount(path):
        path = path.parent
    return path


@contextlib.contextmanager
def full_disk_stops_cleanly(out: Path, model: ParallaxLM, optimizers: list):
    """Turn a full disk anywhere in the run (probe rows, checkpoint, run.json) into DiskFullError
    naming the disk and the space needed. Whatever fails removes its own temporary file; rows
    committed before stay readable, and the last complete checkpoint stays in place."""
    try:
        yield
    except BaseException as error:
        if not is_disk_full(error):
            raise
        # What finishing needs: a checkpoint (the model and about two optimiser states per
        # parameter) and, when a segment closes, a compressed copy of it (at most its size).
        state = 3 * sum(p.numel() * p.element_size() for p in model.state_dict().values())
        segments = [p.stat().st_size for p in out.iterdir() if SEGMENT_RE.match(p.name)]
        needed = state + max(segments, default=0)
        free = shutil.disk_usage(out).free
        raise DiskFullError(
            f"no space left on {_mount_point(out)}, the disk holding {out} ({free:,} bytes free; this run needs about "
            f"{needed:,} more). Training stopped; every committed row and the last checkpoint are kept: free space, then "
            + ("continue with --resume" if (out / CHECKPOINT_NAME).exists() else "start again with --overwrite (no checkpoint yet)")
        ) from error


def keep_checkpoint(model: ParallaxLM, step: int, out: Path) -> None:
    """checkpoints/step-{step}.pt: the weights entering `step` (after `step` optimiser updates), for
    `parallax-probe scan`; the model alone, which is all a scan reads."""
    (out / KEPT_CHECKPOINTS).mkdir(exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "step": step}, out / KEPT_CHECKPOINTS / f"step-{step}.pt")


def _atomic_save(obj, path: Path) -> None:
    save_checkpoint(obj, path)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def train(cfg: TrainConfig) -> TrainResult:
    """Train one run; returns its summary. Raises RunFolderError/ValueError on bad input before writing."""
    # Everything that can be checked is checked before the first byte is written.
    check_run_folder(cfg)
    if cfg.device is not None:
        pick_device(cfg.device)  # a malformed --device fails here, not inside torchrun's setup
    dist = setup_distributed(cfg.device, fsdp=cfg.fsdp)
    device = dist.device if dist.enabled else pick_device(cfg.device)
    if cfg.compile is not None:
        check_compiler_for(cfg.compile, device)
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the world size {dist.world_size}")
    out = Path(cfg.out)
    checkpoint = None
    if cfg.resume:
        checkpoint = load_training_checkpoint(out / CHECKPOINT_NAME, map_location=device)
        check_resume(cfg, checkpoint, out / CHECKPOINT_NAME)
        change = schedule_change_on_resume(cfg, checkpoint)
        if change and dist.is_main:
            print(f"[parallax-probe] {change}", file=sys.stderr, flush=True)
    start_step = checkpoint["step"] if checkpoint else 0
    task = load_task(cfg.task, seq_len=cfg.seq_len, seed=cfg.seed, vocab_size=cfg.vocab_size, mad_overrides=cfg.mad_overrides)
    source = None
    if cfg.init_from is not None:
        from .retrofit import softmax_source

        source = softmax_source(cfg.init_from)
        model_config = source.parallax_config(**{"max_seq_len": max(source.config.max_seq_len, task.seq_len), **cfg.model_overrides})
        if task.vocab_size > model_config.vocab_size:
            raise ValueError(f"--init-from {cfg.init_from}: the model's vocabulary has {model_config.vocab_size} ids and "
                             f"--task {cfg.task} uses {task.vocab_size}; train on a task within its vocabulary")
    else:
        overrides = {"vocab_size": task.vocab_size, "max_seq_len": max(task.seq_len, 16), **cfg.model_overrides}
        model_config = resolve_model_config(cfg.preset, **overrides)
    model_config = dataclasses.replace(model_config, attention_backend=attention_backend_that_runs(model_config, device))
    check_batch_fits(task, cfg, model_config, device, dist.world_size)
    check_first_batches(task, cfg, start_step)

    torch.manual_seed(cfg.seed)
    model = ParallaxLM(model_config)
    if source is not None and checkpoint is None:
        source.load_into(model)  # a resume takes every weight from its own checkpoint instead
    model = model.to(device)
    history = []
    if checkpoint is not None:
        load_model_state(checkpoint, model, out / CHECKPOINT_NAME)
        history = checkpoint["history"]
    train_model = dist.wrap(model)  # FSDP2 shards `model` in place: the optimisers must see its DTensor parameters
    optimizers, groups = build_optimizers(model, cfg.optimizer)
    if checkpoint is not None:
        load_optimizer_states(checkpoint, optimizers, out / CHECKPOINT_NAME, sharded=dist.fsdp)
    if dist.is_main:
        create_run_folder(out)
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
        "data_parallel": "fsdp2" if dist.fsdp else ("ddp" if dist.enabled else None),
    }
    run_info = {
        "train_config": cfg.to_dict(),
        "model_config": model_config.to_dict(),
        "optimizer_groups": groups.to_dict(),
        "task": {
            "name": task.name,
            "description": task.description,
            "vocab_size": task.vocab_size,
            "seq_len": task.seq_len,
            **task.details,
        },
        "seed": cfg.seed,
        **provenance,
    }
    with full_disk_stops_cleanly(out, model, optimizers), open_trackers(cfg.trackers if dist.is_main else [], out, run_info) as trackers:
        probe = baseline = None
        run_meta = {"optimizer": cfg.optimizer.name, "config": run_info, "preset": cfg.preset,
                    "attention": model_config.attention, "seed": cfg.seed, "task": task.name, **provenance}
        run_mode = "resume" if cfg.resume else ("overwrite" if cfg.overwrite else "new")
        try:
            if cfg.probe_every and model_config.attention == "parallax":
                from .hooks import Probe

                probe = Probe(
                    model, out, every=cfg.probe_every, spectra_every=cfg.spectra_every or cfg.steps + 1, meta=run_meta,
                    mode=run_mode, start_step=start_step, distributed=dist, scalar_names=TRAINING_SCALARS, trackers=trackers,
                )
            elif model_config.attention == "softmax" and dist.is_main:
                # A softmax model has no W_R for the probe; its training scalars still make a run
                # folder, so the dashboard and the analysis can put the baseline beside Parallax runs.
                from .store import Column, RunWriter

                baseline = RunWriter(out, tables={SCALARS_TABLE: {n: Column(n, (), (), "f8") for n in TRAINING_SCALARS}},
                                     meta=run_meta, mode=run_mode, start_step=start_step)
        except (RunExistsError, RunInUseError) as error:
            # another process started on this folder between our check and now
            raise RunFolderError(f"{out}: another process is writing this run ({error})") from error
        if dist.is_main:
            if cfg.overwrite and not cfg.resume:
                # only now: the probe has checked that no writer is live and replaced the segments
                (out / CHECKPOINT_NAME).unlink(missing_ok=True)
                for kept in (out / KEPT_CHECKPOINTS).glob("step-*.pt"):
                    kept.unlink()  # the replaced run's trajectory must not mix into a scan of this one
            if cfg.keep_checkpoints and start_step == 0:
                keep_checkpoint(model, 0, out)
            _write_json(out / RUN_INFO_NAME, run_info)
            if cfg.progress:
                shape = "".join(f" {name}={cfg.model_overrides[name]}" for name in MODEL_FLAG_FIELDS if name in cfg.model_overrides)
                print(f"[parallax-probe] {out}: {cfg.preset}{shape} {model_config.attention} model, "
                      f"{sum(p.numel() for p in model.parameters()):,} parameters, {cfg.optimizer.name} on {provenance['device']}"
                      f"{f', world size {dist.world_size}' if dist.enabled else ''}", file=sys.stderr)
                print(f"[parallax-probe] parameter groups:\n{groups.describe()}", file=sys.stderr)
                asked = cfg.model_overrides.get("attention_backend", "auto")
                if asked not in ("auto", model_config.attention_backend):
                    print(f"[parallax-probe] --backend {asked}: not available for this model on {device.type}; "
                          f"attention runs on the {model_config.attention_backend} backend (recorded as such)", file=sys.stderr)
                if cfg.compile is not None:
                    # the bar stands still meanwhile: say why
                    print(f"[parallax-probe] torch.compile ({cfg.compile}): the first steps compile the model's graphs "
                          "(one with the probe's statistics, one without; tens of seconds on a GPU)", file=sys.stderr)

        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        chance = chance_accuracy(task)
        tokens_per_step = cfg.batch_size * task.seq_len
        bar = tqdm(
            total=cfg.steps,
            initial=start_step,
            disable=not (cfg.progress and dist.is_main),
            dynamic_ncols=True,
            unit="step",
            file=sys.stderr,
        )
        t0, window_start, window_steps = time.perf_counter(), time.perf_counter(), 0
        eval_loss, eval_accuracy, loss_value = math.nan, math.nan, math.nan
        stop, completed = StopSignals(), cfg.steps
        try:
            with stop:
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
                    logged = (step + 1) % cfg.log_every == 0 or last
                    if logged:
                        loss_value = all_reduce_mean(loss.detach(), dist).item()  # host-device sync, at the log interval only
                        elapsed = time.perf_counter() - window_start
                        tokens_per_second = window_steps * tokens_per_step / max(elapsed, 1e-9)
                        window_start, window_steps = time.perf_counter(), 0
                        record = {
                            "step": step,
                            "loss": loss_value,
                            "lr_multiplier": multiplier,
                            "grad_norm": float(grad_norm),
                            "tokens_per_second": tokens_per_second,
                        }
                        if (step + 1) % cfg.eval_every == 0 or last:
                            eval_loss, eval_accuracy = evaluate(model, task, cfg, device, autocast)
                            record.update(eval_loss=eval_loss, eval_accuracy=eval_accuracy)
                        history.append(record)
                        if probe:
                            probe.log_scalars(step, **{k: v for k, v in record.items() if k != "step"})
                        if baseline:
                            baseline.append(SCALARS_TABLE, step, **{k: v for k, v in record.items() if k != "step"})
                            baseline.commit()  # every log_every steps: a few rows, cheap next to the steps between
                        bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{eval_accuracy:.3f}", tok_s=f"{tokens_per_second:,.0f}")
                    bar.update(1)
                    # A stop asked for by a signal takes effect here, at the step boundary: the step
                    # is complete (optimiser stepped), so the checkpoint resumes right after it. Under
                    # DDP the ranks agree at the log interval, where they synchronise anyway.
                    if dist.enabled:
                        stopping = logged and any_rank(stop.received is not None, dist, device)
                    else:
                        stopping = stop.received is not None
                    if (step + 1) % cfg.checkpoint_every == 0 or last or stopping:
                        # Under FSDP2 every rank takes part in gathering the full state; rank 0 writes it.
                        state = full_state({"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers]}, dist)
                        if dist.is_main:
                            if probe:
                                # The checkpoint says "resume after this step": the probe's rows up to it
                                # must be in the file first, or a crash between the two loses them for good
                                # (the sink commits at most every store.sink.COMMIT_INTERVAL_S).
                                probe.flush()
                            _atomic_save({**state, "step": step + 1, "history": history, "train_config": cfg.to_dict()},
                                         out / CHECKPOINT_NAME)
                    if dist.is_main and cfg.keep_checkpoints and (step + 1) % cfg.keep_checkpoints == 0:
                        keep_checkpoint(model, step + 1, out)
                    if stopping:
                        completed = step + 1
                        break
            stopped_by = stop.received if completed < cfg.steps else None
            if stopped_by is None and probe:
                probe.record_spectra(cfg.steps)  # the final weights, whatever the spectra cadence
            identical = None if dist.fsdp else replicas_identical(model, dist)  # FSDP2 keeps no replicas to compare
            if dist.is_main:
                stopped = {"stopped_by": stopped_by} if stopped_by else {}
                _write_json(
                    out / RUN_INFO_NAME, {**run_info, "replicas_identical_at_end": identical, "completed_steps": completed, **stopped}
                )
            if identical is False:
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
        out=out, steps=completed, stopped_by=stopped_by, final_loss=loss_value, eval_loss=eval_loss, eval_accuracy=eval_accuracy,
        chance_accuracy=chance, seconds=seconds,
        tokens_per_second=(completed - start_step) * tokens_per_step / max(seconds, 1e-9), history=history,
        is_main_process=dist.is_main,
    )
