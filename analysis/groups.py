"""How runs form groups and which way a group difference points: the rules that the dashboard
and `parallax-probe analyze` share, stated once.

Order and sign: groups are taken in `group_order` (sorted by name, numbers by value), and a
difference is the earlier group minus the later one ("adamw - muon"), whatever order the
runs were given or the groups picked in.

Configuration: runs are averaged as seeds of one group only when `configuration` says they
were trained the same way (model, attention, task, optimizer with its learning rates and
schedule, steps, batch size, sequence length). A run written through `Probe` in a user's own
loop has no training configuration; its user metadata (less the seed) stands in for it.

Pure functions of a run's metadata (the mapping `run.meta`); no torch, no h5py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from parallax_probe.store.probe_schema import PROBE_META_KEYS
from parallax_probe.store.format import PROVENANCE_DEFAULTS, STORE_ATTRS

DIFFERENCE_RULE = "differences are the first group minus the second, groups in sorted order of their names"

# Where the compared fields sit in the run's `config` metadata, which the trainer writes as
# {train_config, model_config, task, ...} (parallax_probe/train.py): the model (attention
# included), the optimizer with its learning rates and schedule, the task and its settings,
# sequence length, steps and batch size.
COMPARED_FIELDS = (
    "model_config",
    "train_config.optimizer",
    "task.name",
    "train_config.mad_overrides",
    "task.seq_len",
    "train_config.steps",
    "train_config.batch_size",
)
# Model fields that change how a number is computed, not what is trained.
IGNORED_MODEL_FIELDS = ("attention_backend", "max_seq_len")
# Keys written by the store, the trainer's provenance and the probe about itself: not the user's.
SYSTEM_KEYS = frozenset(STORE_ATTRS) | (frozenset(PROVENANCE_DEFAULTS) - {"optimizer"}) | frozenset(PROBE_META_KEYS) | {
    "distributed_backend",
}
SEED_KEY = "seed"


def _sort_key(label: str) -> tuple:
    try:
        number = float(label)
    except ValueError:
        return (1, label.casefold(), label)
    return (0, number if math.isfinite(number) else math.inf, label)


def group_order(labels: Iterable[str]) -> list[str]:
    """Group labels in the order every comparison uses: numbers by value first, then names A-Z."""
    return sorted(labels, key=_sort_key)


def difference_name(group_a: str, group_b: str) -> str:
    return f"{group_a} - {group_b}"


# A name for the learning rate a run's optimizer peaks at, whichever optimizer it is.
LR_KEY = "lr"


def lookup(meta: Mapping[str, Any], path: str) -> Any:
    """meta[path], else the run's config at the dotted `path` (e.g. 'train_config.optimizer.muon_lr'); None if absent.

    'lr' is the peak learning rate of the run's own optimizer (muon_lr under Muon, adamw_lr
    under AdamW), unless the metadata has an 'lr' of its own.
    """
    if meta.get(path) is not None:
        return meta[path]
    if path == LR_KEY:
        optimizer = lookup(meta, "train_config.optimizer")
        if isinstance(optimizer, Mapping):
            return optimizer.get(f"{optimizer.get('name')}_lr")
        return None
    node: Any = meta.get("config")
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def has_training_config(meta: Mapping[str, Any]) -> bool:
    config = meta.get("config")
    return isinstance(config, Mapping) and isinstance(config.get("train_config"), Mapping)


def user_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata a user passed (Probe's `meta=`, or the trainer's optimizer, seed, preset, ...)."""
    return {key: value for key, value in meta.items() if key not in SYSTEM_KEYS}


def configuration(meta: Mapping[str, Any]) -> dict[str, str]:
    """What runs must share to be averaged as seeds: {field: value as canonical JSON}, one entry
    per leaf, named by its dotted path ("train_config.optimizer.muon_lr"), so a label can name
    exactly what differs, and the name can be used to group or filter by.

    With a training configuration: the COMPARED_FIELDS. Without one (a run written through
    `Probe` directly): every user metadata key but the seed.
    """
    out: dict[str, str] = {}
    if not has_training_config(meta):
        for key, value in user_metadata(meta).items():
            if key != SEED_KEY:
                _flatten(key, value, out)
        return out
    for path in COMPARED_FIELDS:
        value = lookup(meta, path)
        if path == "model_config" and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in IGNORED_MODEL_FIELDS}
        _flatten(path, value, out)
    return out


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key in sorted(value):
            _flatten(f"{prefix}.{key}", value[key], out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def differing_fields(configurations: Iterable[Mapping[str, str]]) -> list[str]:
    """Fields whose values are not the same in every configuration (a missing field counts as a value)."""
    configurations = list(configurations)
    names = sorted({name for c in configurations for name in c})
    return [name for name in names if len({c.get(name) for c in configurations}) > 1]


def short_value(value_json: str | None, limit: int = 40) -> str:
    """A configuration value for a label: strings without quotes, long values cut."""
    if value_json is None:
        return "none"
    value = json.loads(value_json)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
