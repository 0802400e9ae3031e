"""`parallax-probe scan CHECKPOINTS... --eval TASK_OR_FILE --out RUN_DIR`: the probe, after the fact.

For each saved checkpoint of a past run, in step order, the probe's statistics on one fixed
evaluation batch and W_R's spectra (and the W_RK circuit's) go into an ordinary run folder,
one row per checkpoint at the checkpoint's step, so `analyze`, `inspect` and the dashboard
read runs that were never instrumented. The held-out loss on the batch is the scalar
`eval_loss`.

Checkpoints, and which weights "step N" means:
- ours: `checkpoints/step-N.pt` from `train --keep-checkpoints` (the weights entering step N,
  after N optimiser updates: the weights the probe of a live run sees in the forward of step
  N), a run's `checkpoint.pt` (its `step` key: the next step to train), or a run folder (its
  kept checkpoints);
- Hugging Face folders of fla Parallax models named `step-N` or `checkpoint-N` (the Trainer's
  name: the weights after N optimiser steps, so again those entering step N).

Resumable: a second call with the same `--eval` skips the steps already in the run and adds
the others (which must come after them: rows are appended in step order).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .run_folder import KEPT_CHECKPOINTS, run_info_of

STEP_NAME = re.compile(r"^(?:step|checkpoint)-(\d+)(?:\.pt)?$")


class ScanInputError(ValueError):
    """Input a scan cannot use; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: Path
    step: int


def find_checkpoints(paths: list[str]) -> list[Checkpoint]:
    """Every checkpoint the arguments name, in step order; refuses unknown paths and repeated steps."""
    from .checkpoint import CheckpointError, load_checkpoint

    found: list[Checkpoint] = []
    for text in paths:
        path = Path(text)
        if path.is_dir() and (path / "config.json").is_file():
            match = STEP_NAME.match(path.name)
            if match is None:
                raise ScanInputError(f"{path}: a Hugging Face folder's step comes from its name; name it step-N or checkpoint-N")
            found.append(Checkpoint(path, int(match.group(1))))
        elif path.is_dir() and (path / KEPT_CHECKPOINTS).is_dir():
            kept = [p for p in (path / KEPT_CHECKPOINTS).glob("*.pt") if STEP_NAME.match(p.name)]
            if not kept:
                raise ScanInputError(f"{path}: its {KEPT_CHECKPOINTS}/ folder holds no step-N.pt files")
            found += [Checkpoint(p, int(STEP_NAME.match(p.name).group(1))) for p in kept]
        elif path.is_file() and path.suffix == ".pt":
            match = STEP_NAME.match(path.name)
            if match is not None:
                found.append(Checkpoint(path, int(match.group(1))))
                continue
            try:
                state = load_checkpoint(path)
            except CheckpointError as error:
                raise ScanInputError(str(error)) from None
            if not (isinstance(state, dict) and isinstance(state.get("step"), int)):
                raise ScanInputError(f"{path}: holds no step; name the file step-N.pt")
            found.append(Checkpoint(path, state["step"]))
        else:
            raise ScanInputError(f"{path}: not a checkpoint: expected a step-N.pt or checkpoint.pt, a run folder with "
                                 f"{KEPT_CHECKPOINTS}/ (train --keep-checkpoints), or a Hugging Face folder named step-N")
    found.sort(key=lambda c: c.step)
    steps = [c.step for c in found]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise ScanInputError(f"step {repeated[0]} is named by more than one checkpoint; pass each step once")
    return found


def read_eval(spec: str, *, batch_size: int, seed: int) -> np.ndarray:
    """The evaluation batch (B, T) int64: a .npy of ids, a text file of ids (one sequence per line),
    or a task (a MAD name, text:PATH, bin:GLOB) whose first held-out batch of `batch_size` is taken."""
    path = Path(spec)
    if path.is_file():
        if path.suffix == ".npy":
            try:
                ids = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as error:
                raise ScanInputError(f"--eval {path}: not a readable .npy array of ids ({error})") from None
            if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2) or ids.size == 0:
                raise ScanInputError(f"--eval {path}: expected a (B, T) or (T,) integer array, got {ids.dtype} {ids.shape}")
            return np.atleast_2d(ids).astype(np.int64)
        try:
            rows = [[int(word) for word in line.split()] for line in path.read_text().splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError) as error:
            raise ScanInputError(f"--eval {path}: not a text file of integer ids, one sequence per line ({error})") from None
        if not rows or len({len(row) for row in rows}) != 1:
            raise ScanInputError(f"--eval {path}: needs one or more lines of token ids, all of one length")
        return np.array(rows, dtype=np.int64)
    from .data import TaskSpecError, load_task

    try:
        task = load_task(spec, seed=seed)
        x, _ = next(iter(task.eval_batches(batch_size, batch_size)))
    except (TaskSpecError, ValueError) as error:
        raise ScanInputError(f"--eval {spec}: {error}") from None
    return x.numpy().astype(np.int64)


def _run_info(checkpoint: Path) -> dict:
    run_info = run_info_of(checkpoint)
    try:
        return json.loads(run_info.read_text()) if run_info else {}
    except json.JSONDecodeError:
        return {}


def _scanned(out: Path, eval_spec: str) -> list[int]:
    """Steps already in the run at `out` (none for a new folder); refuses a run of another kind."""
    from .store import RunFileError, live_writer_of, open_run

    if out.exists() and not out.is_dir():
        raise ScanInputError(f"--out {out} is a file; a scan writes a run folder")
    if not (out.is_dir() and any(out.glob("segment-*.h5"))):
        return []
    if live_writer_of(out) is not None:
        raise ScanInputError(f"--out {out} is being written by a running process; wait for it, or choose another --out")
    try:
        run = open_run(out)
        steps = [int(s) for s in run["step"]]
    except (RunFileError, OSError, KeyError) as error:
        raise ScanInputError(f"--out {out}: {error}") from None
    if run.meta.get("scan_eval") != eval_spec:
        raise ScanInputError(f"--out {out} holds a run that is not a scan with --eval {eval_spec} "
                             f"(it has {run.meta.get('scan_eval')!r}); choose another --out")
    return steps


def scan(paths: list[str], *, eval_spec: str, out: str, device: str = "cpu", batch_size: int = 8, seed: int = 0,
         progress: bool = True) -> tuple[list[int], list[int]]:
    """(steps scanned now, steps skipped because the run had them). Everything is checked before writing."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from .hooks import Probe
    from .load import ModelLoadError, load_model
    from .train import pick_device

    out_path = Path(out)
    try:
        pick_device(device)
    except ValueError as error:
        raise ScanInputError(str(error)) from None
    checkpoints = find_checkpoints(paths)
    x_np = read_eval(eval_spec, batch_size=batch_size, seed=seed)
    done = _scanned(out_path, eval_spec)
    todo = [c for c in checkpoints if c.step not in done]
    skipped = [c.step for c in checkpoints if c.step in done]
    if not todo:
        return [], skipped
    if done and todo[0].step < max(done):
        raise ScanInputError(f"step {todo[0].step} lies before the run's last scanned step {max(done)}; rows go in step order: "
                             "scan it into another --out")
    model = load_model(todo[0].path, device=device)
    vocab = model.config.vocab_size
    if x_np.min() < 0 or x_np.max() >= vocab:
        raise ScanInputError(f"--eval {eval_spec}: token ids from {x_np.min()} to {x_np.max()}, outside the model's vocabulary "
                             f"(0 to {vocab - 1})")
    x = torch.as_tensor(x_np, device=device)
    info = _run_info(todo[0].path)
    train_config = info.get("train_config") or {}
    meta = {"optimizer": (train_config.get("optimizer") or {}).get("name", "unknown"), "config": info or None,
            "preset": train_config.get("preset"), "seed": train_config.get("seed"), "task": (info.get("task") or {}).get("name"),
            "attention": "parallax", "scan_eval": eval_spec, "scan_eval_shape": list(x_np.shape),
            "scan_of": str(todo[0].path.parent), "statistics_batch": "the fixed --eval batch, not a training batch"}
    probe = Probe(model, out_path, every=1, spectra_every=1, meta=meta, mode="resume" if done else "new",
                  start_step=todo[0].step, scalar_names=("eval_loss",), serve=False)
    try:
        for checkpoint in tqdm(todo, disable=not progress, unit="checkpoint", file=sys.stderr, dynamic_ncols=True):
            if checkpoint is not todo[0]:
                try:
                    state = load_model(checkpoint.path, device=device).state_dict()
                except ModelLoadError as error:
                    kept = len(done) + todo.index(checkpoint)
                    raise ScanInputError(f"{error}; the {kept} step(s) before it are kept in {out}: replace or leave out "
                                         f"{checkpoint.path.name} and run the command again to continue") from None
                model.load_state_dict(state)
            with torch.no_grad():
                with probe.step(checkpoint.step):
                    logits = model(x) if hasattr(model, "attention_modules") else model(input_ids=x, use_cache=False).logits
                loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), x[:, 1:].flatten()) if x.shape[1] > 1 else math.nan
            probe.log_scalars(checkpoint.step, eval_loss=float(loss))
    finally:
        probe.close()
    return [c.step for c in todo], skipped
