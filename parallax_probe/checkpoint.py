"""Checkpoint files: the one place that loads and saves them.

    checkpoint = load_checkpoint("runs/muon/checkpoint.pt")     # dict of tensors and plain values
    save_checkpoint({"model": model.state_dict(), ...}, path)  # atomic: path or nothing

A checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever code it names
(a planted `checkpoint.pt` whose reduce calls `os.system` does so on `torch.load`).
`load_checkpoint` therefore unpickles with `torch.load(weights_only=True)`: only tensors
and plain containers (dict, list, tuple, str, int, float, bool, None) are built, and a
file that asks for anything else is refused before any of it runs. Our checkpoints hold
nothing else (state dicts and `dataclasses.asdict` configs), so no type needs allowing.
Every command that reads a checkpoint, the user's or a downloaded one, goes through here.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch

TRAINING_KEYS = {"model": dict, "optimizers": list, "step": int, "history": list, "train_config": dict}
"""What `parallax-probe train` stores in checkpoint.pt, with each value's type."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the file, the problem and the fix."""


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Any:
    """Unpickle `path` without running code from it (tensors and plain Python values only).

    Raises CheckpointError for a missing or non-regular file, a file that is not a torch
    checkpoint, and one that holds any other kind of object (refused unread).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({error.strerror})") from error
    if not stat.S_ISREG(mode):
        # a FIFO or a device would block or stream forever; a folder is not a checkpoint
        raise CheckpointError(f"{path}: not a regular file, so not a checkpoint; point at a checkpoint.pt file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is a page of advice; the line that matters names what was refused
        named = re.search(r"GLOBAL (\S+)", str(error))
        if named is None:
            raise CheckpointError(f"{path}: not a torch checkpoint (it does not unpickle); point at a checkpoint.pt file") from error
        raise CheckpointError(
            f"{path}: refused: it asks to run {named.group(1)} when loaded; a checkpoint holds only tensors and plain "
            "values. Use a checkpoint written by parallax-probe, from a source you trust"
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({first_line}); it is damaged, cut short or of another format"
        ) from error


def load_model_weights(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The model state dict of a checkpoint parallax-probe wrote (its "model" entry): training
    checkpoints and the kept `step-N.pt` files alike."""
    checkpoint = load_checkpoint(path, map_location=map_location)
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict)):
        raise CheckpointError(f"{path}: holds no model state ('model'); point at a checkpoint parallax-probe wrote")
    return checkpoint["model"]


def load_training_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint `parallax-probe train` wrote: every key of TRAINING_KEYS, of its type."""
    checkpoint = load_checkpoint(path, map_location=map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, not a parallax-probe training checkpoint")
    wrong = [key for key, kind in TRAINING_KEYS.items() if not isinstance(checkpoint.get(key), kind)]
    if wrong:
        raise CheckpointError(
            f"{path}: not a parallax-probe training checkpoint (missing or malformed: {', '.join(wrong)}); "
            "resume only from the checkpoint.pt that `parallax-probe train` wrote in this folder"
        )
    return checkpoint


def save_checkpoint(obj: Any, path: str | Path) -> None:
    """Write `obj` to `path` atomically: a reader (or a crash) sees the old file or the new one.

    On failure (a full disk) the temporary file is removed and the old checkpoint stays.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        # through a Python file: a full disk then surfaces as OSError(ENOSPC) (as the exception's
        # context), where torch's own writer reports only "unexpected pos"
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
