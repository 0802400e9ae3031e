"""The names of what `parallax-probe train` writes into a run folder, beside the probe's segments,
and where the run.json that describes a checkpoint is:

    OUT/run.json                  the resolved configuration; at the end, how the run ended
    OUT/checkpoint.pt             the training state `train --resume` continues from
    OUT/checkpoints/step-N.pt     the weights entering step N (`train --keep-checkpoints`)

No torch here: `scan` and `trace` read run.json before they need it.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_NAME = "checkpoint.pt"
RUN_INFO_NAME = "run.json"
KEPT_CHECKPOINTS = "checkpoints"


def run_info_of(checkpoint: Path) -> Path | None:
    """The run.json that describes `checkpoint`: beside it, or one folder up for a kept
    checkpoints/step-N.pt; None where neither folder has one."""
    return next((folder / RUN_INFO_NAME for folder in (checkpoint.parent, checkpoint.parent.parent)
                 if (folder / RUN_INFO_NAME).is_file()), None)
