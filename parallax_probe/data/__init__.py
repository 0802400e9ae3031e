"""Training data: MAD synthetic tasks, byte-level text, and pre-tokenised uint16 shards.

Every source is local and deterministic: batch `step` of a run is a function of the seed
and the step alone, so a resumed run sees the batches it would have seen, and a global
batch is the same whatever the number of data-parallel ranks (each rank takes a
contiguous slice of it).

`mad` is numpy only; `sources` (torch tensors) loads on first use of its names, so the CLI
lists the MAD tasks (`mad.MAD_TASKS`) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .mad import IGNORE_INDEX

if TYPE_CHECKING:
    from .sources import TaskData, TaskSpecError, load_task

_LAZY = ("TaskData", "TaskSpecError", "load_task")

__all__ = ["IGNORE_INDEX", "TaskData", "TaskSpecError", "load_task"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(".sources", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
