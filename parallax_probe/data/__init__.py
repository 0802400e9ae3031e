"""Training data: MAD synthetic tasks, byte-level text, and pre-tokenised uint16 shards.

Every source is local and deterministic: batch `step` of a run is a function of the seed
and the step alone, so a resumed run sees the batches it would have seen, and a global
batch is the same whatever the number of data-parallel ranks (each rank takes a
contiguous slice of it).
"""

from .sources import IGNORE_INDEX, TaskData, TaskSpecError, load_task

__all__ = ["IGNORE_INDEX", "TaskData", "TaskSpecError", "load_task"]
