"""Per-layer summaries of the probe's rows, sent to TensorBoard and W&B.

The probe's writer thread hands `Trackers.send` each row it has just written to the run
folder (the values are already on the host: no device work here). Of an `attn` row it
sends each layer's COR mean and p90 and probe norm mean, of a `wr` row each layer's W_R
stable and effective rank, under names like `parallax/cor_mean/layer_03`. The run folder
stays the full record (every head, every quantile, the spectra); a tracker gets the few
numbers worth a chart next to the loss.

A tracker is what the user already has:
- a TensorBoard `SummaryWriter` (`torch.utils.tensorboard` or tensorboardX): anything with
  `add_scalar(tag, value, global_step)`; values go in at the training step.
- a W&B run (`wandb.init(...)`): anything with `log(dict)` and `define_metric`. The values
  are logged with their training step as `parallax/step`, the x-axis of every `parallax/*`
  chart, and without `step=`: the writer thread runs behind the training loop, and W&B drops
  a row logged with a `step=` below one the user's own `run.log` has already reached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from parallax_probe.store import LAYER_COR_MEAN, LAYER_COR_P90, LAYER_PROBE_NORM_MEAN, WR_EFFECTIVE_RANK, WR_STABLE_RANK

PREFIX = "parallax"
STEP_METRIC = f"{PREFIX}/step"
# (table, column of the row, name in the tracker): one value per layer each.
SUMMARIES = tuple(
    (*column.split("/"), name)
    for column, name in (
        (LAYER_COR_MEAN, "cor_mean"),
        (LAYER_COR_P90, "cor_p90"),
        (LAYER_PROBE_NORM_MEAN, "probe_norm_mean"),
        (WR_STABLE_RANK, "wr_stable_rank"),
        (WR_EFFECTIVE_RANK, "wr_effective_rank"),
    )
)


def is_tensorboard(tracker: Any) -> bool:
    return callable(getattr(tracker, "add_scalar", None))


def is_wandb(tracker: Any) -> bool:
    return callable(getattr(tracker, "log", None)) and callable(getattr(tracker, "define_metric", None))


def check_trackers(trackers: Sequence[Any]) -> None:
    for tracker in trackers:
        if not (is_tensorboard(tracker) or is_wandb(tracker)):
            raise ValueError(
                f"Probe: tracker {tracker!r} is neither a TensorBoard SummaryWriter (add_scalar) nor a W&B run "
                "(log, define_metric); pass torch.utils.tensorboard.SummaryWriter(...) or wandb.init(...)"
            )


def layer_summaries(table: str, row: Mapping[str, np.ndarray]) -> dict[str, float]:
    """`parallax/<name>/layer_LL` -> value for the summaries of one row of `table` (empty for other tables)."""
    out = {}
    for source_table, column, name in SUMMARIES:
        if source_table == table:
            for layer, value in enumerate(np.asarray(row[column], dtype=np.float64)):
                out[f"{PREFIX}/{name}/layer_{layer:02d}"] = float(value)
    return out


class Trackers:
    """Sends the summaries of each row to every tracker; flushes them (never closes them: they are the user's)."""

    def __init__(self, trackers: Sequence[Any]) -> None:
        check_trackers(trackers)
        self.trackers = list(trackers)
        for tracker in self.trackers:
            if is_wandb(tracker) and not is_tensorboard(tracker):
                tracker.define_metric(STEP_METRIC)
                tracker.define_metric(f"{PREFIX}/*", step_metric=STEP_METRIC)

    def send(self, table: str, step: int, row: Mapping[str, np.ndarray]) -> None:
        summaries = layer_summaries(table, row)
        if not summaries:
            return
        for tracker in self.trackers:
            if is_tensorboard(tracker):
                for name, value in summaries.items():
                    tracker.add_scalar(name, value, global_step=step)
            else:
                tracker.log({STEP_METRIC: step, **summaries})

    def flush(self) -> None:
        for tracker in self.trackers:
            if is_tensorboard(tracker) and callable(getattr(tracker, "flush", None)):
                tracker.flush()
