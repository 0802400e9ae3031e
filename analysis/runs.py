"""The read model that `parallax-probe analyze` and the dashboards share: how runs become groups,
which shape a group keeps, and which stored column gives a per-layer series.

Each rule is stated once here; the report (`report.py`) and the dashboards (`dashboards/data.py`)
call these functions and differ only in how they present the result. The functions take what a
caller has read (run names with their metadata, arrays through a `read` callable) and never
open files themselves. What a metadata key means (`lookup`), what "trained the same way" means
(`configuration`) and the order and sign of comparisons (`group_order`) are in `groups.py`.

Shapes: N logged steps, L layers, H heads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from parallax_probe.store import HEAD_MEAN_PREFIX, HEAD_MEAN_STATS, nan_mean

from .groups import (
    configuration,
    differing_fields,
    group_order,
    has_training_config,
    lookup,
    short_value,
    user_metadata,
)

__all__ = [
    "ALL_RUNS_GROUP",
    "GROUP_KEYS",
    "RUN_GROUP_KEY",
    "Groups",
    "group_keys",
    "group_label",
    "group_runs",
    "layer_column",
    "most_common_shape",
    "read_layer_means",
]

# Metadata keys a user groups by most often: the dashboard's Runs table shows them and its
# group picker offers them first.
GROUP_KEYS = ("optimizer", "seed", "preset", "attention", "task")
RUN_GROUP_KEY = "run"  # group by run name: every run its own group
ALL_RUNS_GROUP = "all"  # the one group when there is no grouping key

Shape = TypeVar("Shape", bound=tuple)


def group_label(value: Any) -> str | None:
    """The group a metadata value names, or None when it names none (missing, or a mapping or list)."""
    if value is None or isinstance(value, (Mapping, list, tuple)):
        return None
    return str(value)


def _no_group_reason(key: str, value: Any) -> str:
    if value is None:
        return f"has no '{key}' in its metadata or config"
    return (f"'{key}' is a {type(value).__name__}, not a value that can name a group; "
            f"group by one of its fields, e.g. '{key}.name'")


@dataclass(frozen=True, slots=True)
class Groups:
    """Runs (by name) split into groups, in `group_order`.

    left_out: (run name, why) for each run in no group; notes: what the grouping did that a
    reader should know (a label split by configuration, runs without a training configuration).
    """

    groups: dict[str, tuple[str, ...]]
    left_out: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]


def _split_by_configuration(label: str, members: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, list[str]], str | None]:
    """Runs of one label that were trained differently (`groups.configuration`) become one group
    each, labelled with what differs; (groups, a note saying so, or None)."""
    configs = {name: configuration(meta) for name, meta in members.items()}
    differing = differing_fields(configs.values())
    if not differing:
        return {label: list(members)}, None
    parts: dict[str, list[str]] = {}
    for name, config in configs.items():
        detail = ", ".join(f"{field}={short_value(config.get(field))}" for field in differing)
        parts.setdefault(f"{label} · {detail}", []).append(name)
    note = (f"The runs labelled '{label}' differ in {', '.join(differing)}: {len(parts)} groups, not one average "
            "(parallax-probe analyze --merge-configurations, or the dashboard's \"Average runs whose configurations "
            "differ\", averages them).")
    return parts, note


def group_runs(metas: Mapping[str, Mapping[str, Any]], key: str | None, *, merge_configurations: bool = False) -> Groups:
    """Split runs, given as {run name: metadata}, into groups by the value of `key` (`lookup`).

    key: a metadata key or dotted config path; RUN_GROUP_KEY makes every run its own group;
        None puts every run in the group ALL_RUNS_GROUP.
    merge_configurations: average runs that share a label but were trained differently. By
        default they are split, one group per configuration, each labelled with what differs
        ("muon · train_config.steps=3000"): runs are seeds of one group only when they were
        trained the same way.
    """
    by_label: dict[str, dict[str, Mapping[str, Any]]] = {}
    left_out: list[tuple[str, str]] = []
    notes: list[str] = []
    for name, meta in metas.items():
        if key is None:
            label: str | None = ALL_RUNS_GROUP
        elif key == RUN_GROUP_KEY:
            label = name
        else:
            value = lookup(meta, key)
            label = group_label(value)
            if label is None:
                left_out.append((name, _no_group_reason(key, value)))
                continue
        by_label.setdefault(label, {})[name] = meta
    groups: dict[str, list[str]] = {}
    for label, members in by_label.items():
        if merge_configurations or key == RUN_GROUP_KEY:
            groups[label] = list(members)
            continue
        parts, note = _split_by_configuration(label, members)
        groups.update(parts)
        if note:
            notes.append(note)
    if not merge_configurations and any(not has_training_config(m) for members in by_label.values() for m in members.values()):
        notes.append("Runs written through Probe without a training configuration are grouped only with runs "
                     "of the same metadata (all but the seed).")
    return Groups({label: tuple(groups[label]) for label in group_order(groups)}, tuple(left_out), tuple(notes))


def most_common_shape(shapes: Iterable[Shape]) -> Shape:
    """The shape most runs have ((L,) or (L, H); None counts as 0); on a tie, the larger (the deeper model).

    Seeds are averaged layer by layer and groups compared layer by layer, so the runs of
    another shape are left out, never the majority.
    """
    counts = Counter(shapes)
    return max(counts, key=lambda shape: (counts[shape], tuple(n or 0 for n in shape)))


def group_keys(metas: Iterable[Mapping[str, Any]]) -> list[str]:
    """Keys worth grouping by: GROUP_KEYS and RUN_GROUP_KEY, the user's own scalar metadata, and the
    compared training-configuration fields (`groups.configuration`, dotted paths) whose values
    differ between the runs.

    Keys the store, the probe and the provenance record (writer ids, format version, package
    versions) are not offered: nobody groups by them.
    """
    metas = list(metas)
    keys = [GROUP_KEYS[0], RUN_GROUP_KEY, *GROUP_KEYS[1:]]
    user: set[str] = set()
    for meta in metas:
        user |= {k for k, v in user_metadata(meta).items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    differing = differing_fields(configuration(meta) for meta in metas if has_training_config(meta))
    extra = [*sorted(user - set(keys)), *[path for path in differing if path not in keys and "." in path]]
    return [*keys, *extra]


def layer_column(name: str) -> str | None:
    """The probe's stored mean over heads of a per-head column ("attn/cor_mean" -> "attn/layer_cor_mean"),
    or None when the probe stores no such mean of it (`HEAD_MEAN_STATS`)."""
    table, _, column = name.partition("/")
    return f"{table}/{HEAD_MEAN_PREFIX}{column}" if column in HEAD_MEAN_STATS else None


def _has_every_row(layer_values: np.ndarray) -> bool:
    # A row the writer had no head mean for (a segment of an older probe in a resumed run)
    # reads as NaN in every layer; a layer whose heads are all NaN stays NaN either way.
    return not np.isnan(layer_values).all(axis=tuple(range(1, layer_values.ndim))).any()


def read_layer_means(
    read: Callable[..., Mapping[str, np.ndarray]], available: Collection[str], names: Sequence[str], *, step: str = "step"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps (N,), {name: (N, L)}): per-layer series of attn columns, each the mean over heads.

    read(*names) -> {name: array}: the columns asked for, read together (one snapshot of a
    live run). available: the run's column names.

    A per-head column (N, L, H) whose head mean the probe stores (`layer_column`) is read
    from that mean, L values per step instead of L x H, where every row has it; otherwise
    (a run written before the probe stored it, or resumed from one) from the per-head
    column, reduced with the same NaN-skipping mean (`nan_mean`, float64). A column that is
    per layer already ((N, L), e.g. "attn/probe_gain_norm") is returned as read.
    """
    sources = {name: layer_column(name) if layer_column(name) in available else name for name in names}
    raw = read(step, *dict.fromkeys(sources.values()))
    short = {name for name, source in sources.items() if source != name and not _has_every_row(raw[source])}
    if short:
        sources = {name: name if name in short else source for name, source in sources.items()}
        raw = read(step, *dict.fromkeys(sources.values()))
    values = {}
    for name, source in sources.items():
        array = raw[source]
        values[name] = nan_mean(array, axis=2) if array.ndim == 3 else array
    return raw[step], values
