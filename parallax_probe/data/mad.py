"""The six synthetic tasks of MAD (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"), generated with numpy from a seed.

Re-implemented from the task definitions and baseline settings of the authors' code
(github.com/athms/mad-lab: `mad/data/instances.py` for the generators, `configs/tasks/*.yml`
for the baselines, `mad/configs.py` for the defaults every task shares, `mad/metrics.py` and
`mad/model/pl_model_wrapper.py` for the loss and accuracy). Each task's generator docstring
says which positions carry targets in the train and in the test split, and where this
module departs from MAD's code (only to fix draws that could make an example unanswerable).

Token layout, as in MAD: the special tokens (copy prefix, pad, blank, insert, compression)
take the top ids of the vocabulary, the noise vocabulary sits just below them, and the
rest is split into keys (lower half) and values (upper half) where the task has both.
Every id is below `vocab_size`.

Arrays are `(N, T)` int64 with `IGNORE_INDEX` where a position is not scored. T is
`seq_len`, except for multi-query in-context recall, where MAD lays out `seq_len` tokens of
key-value pairs and the next-token shift leaves `seq_len - 1`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

IGNORE_INDEX = -100
"""Target value at positions that are not scored (PyTorch's cross-entropy default)."""

MADTaskName = Literal[
    "in-context-recall",
    "noisy-in-context-recall",
    "fuzzy-in-context-recall",
    "selective-copying",
    "compression",
    "memorization",
]
MAD_TASKS: tuple[str, ...] = get_args(MADTaskName)

_RECALL_TASKS = tuple(name for name in MAD_TASKS if name.endswith("in-context-recall"))  # the tasks with multi_query

# MAD's baseline setting per task: configs/tasks/<task>.yml, with the defaults of
# mad/configs.py::MADConfig for what the yml leaves out (num_test_examples=1280 for all;
# multi_query=True, frac_noise=0, noise_vocab_size=0, motif sizes 1).
_MAD_BASELINES: dict[str, dict[str, object]] = {
    "in-context-recall": dict(vocab_size=16, seq_len=128, num_train_examples=12_800, multi_query=True),
    "noisy-in-context-recall": dict(
        vocab_size=32, seq_len=128, num_train_examples=12_800, multi_query=True, noise_vocab_size=16, frac_noise=0.2
    ),
    "fuzzy-in-context-recall": dict(
        vocab_size=16, seq_len=128, num_train_examples=12_800, multi_query=True, k_motif_size=3, v_motif_size=3
    ),
    "selective-copying": dict(vocab_size=16, seq_len=256, num_train_examples=12_800, num_tokens_to_copy=16),
    "compression": dict(vocab_size=16, seq_len=32, num_train_examples=12_800),
    "memorization": dict(vocab_size=256, seq_len=32, num_train_examples=256),
}
_SHARED_BASELINE: dict[str, object] = dict(num_test_examples=1_280)

# The knobs each of MAD's generators reads; any other knob must stay at its neutral value,
# so that a setting the task would silently ignore is reported instead.
_NEUTRAL_KNOBS: dict[str, object] = dict(
    noise_vocab_size=0, frac_noise=0.0, num_tokens_to_copy=0, k_motif_size=1, v_motif_size=1, multi_query=False
)
_TASK_KNOBS: dict[str, frozenset[str]] = {
    "in-context-recall": frozenset({"noise_vocab_size", "frac_noise", "multi_query"}),
    "noisy-in-context-recall": frozenset({"noise_vocab_size", "frac_noise", "multi_query"}),
    "fuzzy-in-context-recall": frozenset(
        {"noise_vocab_size", "frac_noise", "multi_query", "k_motif_size", "v_motif_size"}
    ),
    "selective-copying": frozenset({"num_tokens_to_copy"}),
    "compression": frozenset({"noise_vocab_size", "frac_noise"}),
    "memorization": frozenset({"noise_vocab_size", "frac_noise"}),
}


@dataclass(kw_only=True, slots=True, frozen=True)
class MADTaskConfig:
    """One MAD task setting. Fields left at None take MAD's baseline value for `task`."""

    task: MADTaskName
    """Which of the six MAD tasks (`MAD_TASKS`)."""
    vocab_size: int | None = None
    """Model vocabulary, special and noise ids included. MAD: 16; 32 for noisy recall; 256 for memorization."""
    seq_len: int | None = None
    """Tokens per example. MAD: 128 for recall, 256 for selective copying, 32 for compression and memorization."""
    num_train_examples: int | None = None
    """Training examples. MAD: 12,800; 256 for memorization."""
    num_test_examples: int | None = None
    """Held-out examples. MAD: 1,280 for every task."""
    noise_vocab_size: int | None = None
    """Ids reserved for noise, out of vocab_size (recall, compression, memorization). MAD: 16 for noisy recall, else 0."""
    frac_noise: float | None = None
    """Chance a pair (recall, memorization) or token (compression) is noise. MAD: 0.2 for noisy recall, else 0."""
    num_tokens_to_copy: int | None = None
    """Data tokens to copy in selective copying. MAD: 16. Selective copying only."""
    k_motif_size: int | None = None
    """Fuzzy recall's longest key: training keys have 1..k_motif_size tokens, test keys exactly that. MAD: 3."""
    v_motif_size: int | None = None
    """Fuzzy recall's longest value: values have 1..v_motif_size tokens. MAD: 3."""
    multi_query: bool | None = None
    """Recall: score every repeated key's value (True) or only a final query after a copy prefix (False). MAD: True."""
    seed: int = 0
    """Seed of the dataset; train, test and memorization's fixed map draw from separate streams derived from it."""

    def __post_init__(self) -> None:
        if self.task not in MAD_TASKS:
            raise ValueError(f"task={self.task!r} is not a MAD task; choose one of {', '.join(MAD_TASKS)}")
        baseline = {**_SHARED_BASELINE, **_NEUTRAL_KNOBS, **_MAD_BASELINES[self.task]}
        for name, value in baseline.items():
            if getattr(self, name) is None:
                # frozen dataclass: resolving the None defaults happens once, here
                object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        for name in ("vocab_size", "seq_len", "num_train_examples", "num_test_examples", "noise_vocab_size",
                     "num_tokens_to_copy", "k_motif_size", "v_motif_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"{name}={value!r} must be an integer")
        for name in ("vocab_size", "seq_len", "num_train_examples", "num_test_examples", "k_motif_size", "v_motif_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("noise_vocab_size", "num_tokens_to_copy", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be non-negative")
        if not isinstance(self.multi_query, bool):
            raise ValueError(f"multi_query={self.multi_query!r} must be True or False")
        for name, neutral in _NEUTRAL_KNOBS.items():
            if name in _TASK_KNOBS[self.task] or getattr(self, name) == neutral:
                continue
            if name == "multi_query" and self.task not in _RECALL_TASKS:
                continue  # MAD sets multi_query=True for every task and only the recall tasks read it
            raise ValueError(
                f"{self.task} has no {name} knob (MAD's generator ignores it), but {name}={getattr(self, name)!r}; "
                f"leave it unset. Knobs of {self.task}: {', '.join(sorted(_TASK_KNOBS[self.task]))}"
            )
        if not isinstance(self.frac_noise, numbers.Real) or not 0.0 <= self.frac_noise < 1.0:
            raise ValueError(
                f"frac_noise={self.frac_noise!r} must be in [0, 1): it is a probability, and 1 would leave no signal"
            )
        if self.frac_noise > 0 and self.noise_vocab_size == 0:
            raise ValueError(
                f"frac_noise={self.frac_noise} needs noise tokens; set noise_vocab_size >= 1 (MAD's noisy recall uses 16)"
            )

        _VALIDATORS[self.task](self)


def mad_baseline(task: str, **overrides) -> MADTaskConfig:
    """MAD's baseline setting for `task`, with `overrides` (any MADTaskConfig field) applied.

    `mad_baseline("in-context-recall", vocab_size=16, seq_len=64, seed=1)` is a small recall
    variant; unknown field names raise ValueError.
    """
    fields = {f.name for f in dataclasses.fields(MADTaskConfig)} - {"task"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown MADTaskConfig field(s) {', '.join(unknown)}; choose from {', '.join(sorted(fields))}")
    return MADTaskConfig(task=task, **overrides)


@dataclass(frozen=True)
class MADSplit:
    """One split: each row is an example; targets[i, t] is what the model should output after reading inputs[i, :t+1]."""

    inputs: np.ndarray
    """(N, T) int64 token ids."""
    targets: np.ndarray
    """(N, T) int64 token ids, IGNORE_INDEX where not scored."""


@dataclass(frozen=True)
class MADDataset:
    """A generated MAD task: the resolved config, both splits, and the vocabulary they need."""

    config: MADTaskConfig
    train: MADSplit
    test: MADSplit
    vocab_size: int
    """The model's vocabulary: every input and target id is below it."""


def make_mad_dataset(config: MADTaskConfig) -> MADDataset:
    """Generate the train and test splits of `config.task`; the same config gives identical arrays."""
    if not isinstance(config, MADTaskConfig):
        raise ValueError(f"config must be a MADTaskConfig (see mad_baseline), got {type(config).__name__}")
    generate = _GENERATORS[config.task]
    train_seed, test_seed, _ = _seed_streams(config.seed)
    # Separate streams: the test set does not change when num_train_examples does.
    train = generate(config, np.random.default_rng(train_seed), config.num_train_examples, is_training=True)
    test = generate(config, np.random.default_rng(test_seed), config.num_test_examples, is_training=False)
    return MADDataset(config=config, train=_contiguous(train), test=_contiguous(test), vocab_size=config.vocab_size)


def _contiguous(split: MADSplit) -> MADSplit:
    # the shifted splits are views one column short of a larger array; a compact copy
    # drops the hidden column and gives the training loop plain row-major arrays
    return MADSplit(inputs=np.ascontiguousarray(split.inputs), targets=np.ascontiguousarray(split.targets))


def mad_accuracy(
    predictions: np.ndarray, targets: np.ndarray, *, average: Literal["micro", "macro"] = "micro"
) -> float:
    """Accuracy over the positions where targets != IGNORE_INDEX.

    predictions: token ids shaped like targets, or logits with one more trailing
    (vocabulary) axis, reduced by argmax as MAD's `Accuracy` does.

    average="micro" is the fraction of scored positions predicted correctly. average="macro"
    is the number MAD logs: torchmetrics' `MulticlassAccuracy` default, the mean over token
    classes of per-class recall, over the classes that occur as a target or a prediction
    (a class only ever predicted counts as 0). Both pool all examples before reducing, as
    MAD's epoch-level metric does.
    """
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if predictions.ndim == targets.ndim + 1 and predictions.shape[:-1] == targets.shape:
        predicted_ids = predictions.argmax(axis=-1)
    elif predictions.shape == targets.shape and np.issubdtype(predictions.dtype, np.integer):
        predicted_ids = predictions
    else:
        raise ValueError(
            f"predictions {predictions.shape} {predictions.dtype} must be integer ids shaped like targets "
            f"{targets.shape}, or logits shaped {targets.shape + ('V',)}"
        )
    scored = targets != IGNORE_INDEX
    if not scored.any():
        raise ValueError(f"targets {targets.shape} has no scored position (all are IGNORE_INDEX={IGNORE_INDEX})")
    predicted, expected = predicted_ids[scored].astype(np.int64), targets[scored].astype(np.int64)
    if average == "micro":
        return float(np.mean(predicted == expected))
    if average != "macro":
        raise ValueError(f"average={average!r}; choose 'micro' or 'macro'")
    if predicted.min() < 0 or expected.min() < 0:
        raise ValueError("token ids must be non-negative outside IGNORE_INDEX positions")
    num_classes = int(max(predicted.max(), expected.max())) + 1
    true_positives = np.bincount(expected[predicted == expected], minlength=num_classes)
    support = np.bincount(expected, minlength=num_classes)
    predicted_count = np.bincount(predicted, minlength=num_classes)
    occurs = (support + predicted_count) > 0  # tp + fp + fn > 0
    per_class_recall = true_positives / np.maximum(support, 1)
    return float(per_class_recall[occurs].mean())


def _seed_streams(seed: int) -> tuple[np.random.SeedSequence, ...]:
    """Independent (train, test, fixed-structure) seed sequences derived from one seed."""
    return tuple(np.random.SeedSequence(seed).spawn(3))


def _draw_distinct(rng: np.random.Generator, shape: tuple[int, ...], count: int, vocab_size: int) -> np.ndarray:
    """(*shape, count) ids in [0, vocab_size), distinct along the last axis, uniform over ordered tuples.

    Any prefix of length s is then a uniform ordered s-tuple too, which is how MAD's
    motifs of varying size are drawn (from `itertools.permutations` of the vocabulary).
    """
    chosen = np.empty((*shape, count), dtype=np.int64)
    for i in range(count):
        # a rank among the ids not yet chosen, mapped to its id by stepping over the
        # chosen ones in increasing order
        draw = rng.integers(0, vocab_size - i, size=shape)
        for taken in np.moveaxis(np.sort(chosen[..., :i], axis=-1), -1, 0):
            draw += draw >= taken
        chosen[..., i] = draw
    return chosen


def _first_occurrence(codes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, S) index of the first valid slot of the same row holding the same code; own index where not valid."""
    num_slots = codes.shape[1]
    masked = np.where(valid, codes, -1)
    # stable: equal codes keep their slot order, so each group of equal codes starts at its first slot
    order = np.argsort(masked, axis=1, kind="stable")
    sorted_codes = np.take_along_axis(masked, order, axis=1)
    starts_group = np.ones(codes.shape, dtype=bool)
    starts_group[:, 1:] = sorted_codes[:, 1:] != sorted_codes[:, :-1]
    group_start = np.maximum.accumulate(np.where(starts_group, np.arange(num_slots), 0), axis=1)
    first = np.empty_like(order)
    np.put_along_axis(first, order, np.take_along_axis(order, group_start, axis=1), axis=1)
    return np.where(valid, first, np.arange(num_slots))


def _recall_layout(config: MADTaskConfig) -> tuple[int, int]:
    """(number of key ids, number of value ids); keys are [0, K), values [K, K + V)."""
    num_key_value_ids = (config.vocab_size if config.multi_query else config.vocab_size - 1) - config.noise_vocab_size
    return num_key_value_ids // 2, num_key_value_ids - num_key_value_ids // 2


def _validate_recall(config: MADTaskConfig) -> None:
    if config.seq_len % 2:
        raise ValueError(
            f"seq_len={config.seq_len} must be even for {config.task}: the sequence is key-value pairs; "
            f"use {config.seq_len + 1}"
        )
    if config.seq_len < 4:
        raise ValueError(
            f"seq_len={config.seq_len} holds {config.seq_len // 2} key-value pair(s); {config.task} needs at least 2 "
            "(one to recall from and the query), so seq_len >= 4"
        )
    num_keys, num_values = _recall_layout(config)
    if num_keys < 1 or num_values < 1:
        reserved = config.noise_vocab_size + (0 if config.multi_query else 1)
        raise ValueError(
            f"vocab_size={config.vocab_size} leaves {num_keys + num_values} ids for keys and values after "
            f"{reserved} noise/copy-prefix ids (noise_vocab_size={config.noise_vocab_size}, "
            f"multi_query={config.multi_query}); {config.task} needs 2: use vocab_size >= {reserved + 2}"
        )


def _recall_split(
    config: MADTaskConfig, rng: np.random.Generator, num_examples: int, *, is_training: bool
) -> MADSplit:
    """In-context recall (noisy when frac_noise > 0): seq_len/2 key-value pairs, the last a query.

    Each example draws its own key -> value map (keys [0, K), values [K, 2K) or so). The
    first seq_len/2 - 1 pairs are key-value pairs with uniform keys, or, with probability
    frac_noise each, two noise tokens (at least one pair is never noise). The last pair
    queries a key that occurred, uniformly among the distinct ones; without multi_query a
    copy-prefix token (vocab_size - 1) precedes it.

    Targets, after the next-token shift (inputs = tokens[:-1]):
    - train: every next token (tokens[1:]), as MAD trains the recall tasks;
    - test: only the recall positions: the final query's value, and with multi_query the
      value of every pair whose key occurred earlier in the sequence.

    Departure from MAD: MAD can pick its one never-noise pair among the final query's slot
    too, which lets every context pair be noise and leaves nothing to query; here it is
    always a context pair.
    """
    num_keys, num_values = _recall_layout(config)
    noise_start = num_keys + num_values
    num_context_pairs = config.seq_len // 2 - 1
    rows = np.arange(num_examples)
    slot_index = np.arange(num_context_pairs)

    keys = rng.integers(0, num_keys, size=(num_examples, num_context_pairs))
    value_of_key = rng.integers(num_keys, num_keys + num_values, size=(num_examples, num_keys))
    values = np.take_along_axis(value_of_key, keys, axis=1)
    pair_tokens = np.stack([keys, values], axis=-1)  # (N, C, 2)
    is_noise = np.zeros((num_examples, num_context_pairs), dtype=bool)
    if config.frac_noise > 0:
        is_noise = rng.random((num_examples, num_context_pairs)) < config.frac_noise
        is_noise[rows, rng.integers(0, num_context_pairs, size=num_examples)] = False
        noise_tokens = rng.integers(
            noise_start, noise_start + config.noise_vocab_size, size=(num_examples, num_context_pairs, 2)
        )
        pair_tokens = np.where(is_noise[..., None], noise_tokens, pair_tokens)
    is_pair = ~is_noise

    key_occurred = np.zeros((num_examples, num_keys), dtype=bool)
    key_occurred[np.nonzero(is_pair)[0], keys[is_pair]] = True
    query_key = np.argmax(np.where(key_occurred, rng.random((num_examples, num_keys)), -1.0), axis=1)
    query_value = value_of_key[rows, query_key]
    query = [query_key, query_value]
    if not config.multi_query:
        query.insert(0, np.full(num_examples, config.vocab_size - 1))  # the copy prefix
    tokens = np.concatenate([pair_tokens.reshape(num_examples, -1), np.stack(query, axis=1)], axis=1)

    if is_training:
        return MADSplit(inputs=tokens[:, :-1], targets=tokens[:, 1:].copy())
    pair_targets = np.full((num_examples, num_context_pairs, 2), IGNORE_INDEX, dtype=np.int64)
    if config.multi_query:
        is_repeat = is_pair & (_first_occurrence(keys, is_pair) != slot_index)
        pair_targets[..., 1] = np.where(is_repeat, values, IGNORE_INDEX)
    query_targets = np.full((num_examples, len(query)), IGNORE_INDEX, dtype=np.int64)
    query_targets[:, -1] = query_value
    targets = np.concatenate([pair_targets.reshape(num_examples, -1), query_targets], axis=1)
    return MADSplit(inputs=tokens[:, :-1], targets=targets[:, 1:])


def _fuzzy_layout(config: MADTaskConfig) -> tuple[int, int, int]:
    """(number of key ids, number of value ids, pad id); copy prefix is vocab_size - 1."""
    num_key_value_ids = (config.vocab_size - (1 if config.multi_query else 2)) - config.noise_vocab_size
    pad_token = config.vocab_size - (1 if config.multi_query else 2)
    return num_key_value_ids // 2, num_key_value_ids - num_key_value_ids // 2, pad_token


def _validate_fuzzy_recall(config: MADTaskConfig) -> None:
    motif_pair = config.k_motif_size + config.v_motif_size
    if config.seq_len <= 2 * motif_pair:
        raise ValueError(
            f"seq_len={config.seq_len} is too short for fuzzy-in-context-recall with k_motif_size={config.k_motif_size} "
            f"and v_motif_size={config.v_motif_size}: the longest key-value pair ({motif_pair} tokens) must fit twice "
            f"(in context and as the query), so seq_len >= {2 * motif_pair + 1}"
        )
    num_keys, num_values, _ = _fuzzy_layout(config)
    if num_keys < config.k_motif_size or num_values < config.v_motif_size:
        reserved = config.noise_vocab_size + (1 if config.multi_query else 2)
        needed = max(2 * config.k_motif_size, 2 * config.v_motif_size - 1)
        raise ValueError(
            f"vocab_size={config.vocab_size} leaves {num_keys} key ids and {num_values} value ids; motifs of "
            f"k_motif_size={config.k_motif_size} and v_motif_size={config.v_motif_size} distinct tokens need at least "
            "as many. "
            f"Use vocab_size >= {needed + reserved} (noise_vocab_size={config.noise_vocab_size}, "
            f"multi_query={config.multi_query}) or smaller motifs"
        )
    if (num_keys + 1) ** config.k_motif_size >= 2**62:
        raise ValueError(
            f"k_motif_size={config.k_motif_size} with {num_keys} key ids gives too many distinct keys; "
            "use a smaller k_motif_size"
        )


def _motif_code(tokens: np.ndarray, sizes: np.ndarray, num_ids: int) -> np.ndarray:
    """One integer per motif (tokens[..., :size]), distinct across motifs of different sizes."""
    code = np.zeros(tokens.shape[:-1], dtype=np.int64)
    for position in range(tokens.shape[-1]):
        code = np.where(position < sizes, code * (num_ids + 1) + tokens[..., position] + 1, code)
    return code


def _pair_token(offset: int, key: np.ndarray, key_size: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Token `offset` of the key-value pair (key[..., :key_size], value) laid end to end."""
    in_key = offset < key_size
    key_token = key[..., min(offset, key.shape[-1] - 1)]
    value_index = np.clip(offset - key_size, 0, value.shape[-1] - 1)
    value_token = np.take_along_axis(value, value_index[..., None], axis=-1)[..., 0]
    return np.where(in_key, key_token, value_token)


def _fuzzy_recall_split(
    config: MADTaskConfig, rng: np.random.Generator, num_examples: int, *, is_training: bool
) -> MADSplit:
    """Fuzzy in-context recall: keys and values are motifs of several tokens.

    Keys are ordered tuples of distinct key ids, values of distinct value ids; training keys
    have 1..k_motif_size tokens, test keys exactly k_motif_size; values 1..v_motif_size.
    One key-value pair (the probe) is placed at a uniform point of the context; pairs
    (or, with probability frac_noise, as many noise tokens) fill the context until about
    seq_len minus two pairs; then, after a copy-prefix token if not multi_query, the probe
    key and value close the sequence, which is left-padded with the pad token to seq_len + 1.
    A key keeps the value of its first occurrence within the sequence.

    Targets, after the next-token shift:
    - train: every next token (MAD trains on the whole shifted sequence, pads included);
    - test: only the recall positions: the final probe value's tokens, and with multi_query
      the value tokens of every pair whose key occurred earlier.

    Departure from MAD: MAD can draw the probe's position past the end of the context,
    leaving the final query unanswerable; here the probe is then placed at the last pair.
    """
    k_motif, v_motif = config.k_motif_size, config.v_motif_size
    seq_len, longest_pair = config.seq_len, config.k_motif_size + config.v_motif_size
    num_keys, num_values, pad_token = _fuzzy_layout(config)
    noise_start = num_keys + num_values
    max_slots = seq_len // 2 + 2  # pairs are >= 2 tokens and fill < seq_len, plus the first unused one
    rows = np.arange(num_examples)
    slot_index = np.arange(max_slots)

    def motif_sizes(largest: int, shape: tuple[int, ...], vary: bool) -> np.ndarray:
        return rng.integers(1, largest + 1, size=shape) if vary else np.full(shape, largest)

    probe_key_size = motif_sizes(k_motif, (num_examples,), is_training)
    probe_value_size = motif_sizes(v_motif, (num_examples,), True)
    probe_key = _draw_distinct(rng, (num_examples,), k_motif, num_keys)
    probe_value = num_keys + _draw_distinct(rng, (num_examples,), v_motif, num_values)
    probe_len = probe_key_size + probe_value_size
    probe_earliest_start = rng.integers(0, seq_len - 2 * probe_len)

    slots = (num_examples, max_slots)
    slot_key_size = motif_sizes(k_motif, slots, is_training)
    slot_value_size = motif_sizes(v_motif, slots, True)
    slot_key = _draw_distinct(rng, slots, k_motif, num_keys)
    slot_value = num_keys + _draw_distinct(rng, slots, v_motif, num_values)
    slot_is_noise = np.zeros(slots, dtype=bool)
    if config.frac_noise > 0:
        slot_is_noise = rng.random(slots) < config.frac_noise
        slot_noise = rng.integers(noise_start, noise_start + config.noise_vocab_size, size=(*slots, longest_pair))
    is_pair = ~slot_is_noise

    # A key shows the value drawn at its first occurrence; the probe key always shows the probe value.
    key_code = _motif_code(slot_key, slot_key_size, num_keys)
    is_probe_key = is_pair & (key_code == _motif_code(probe_key, probe_key_size, num_keys)[:, None])
    first = _first_occurrence(key_code, is_pair)
    shown_value = np.take_along_axis(slot_value, first[..., None], axis=1)
    shown_value_size = np.take_along_axis(slot_value_size, first, axis=1)
    shown_value = np.where(is_probe_key[..., None], probe_value[:, None, :], shown_value)
    shown_value_size = np.where(is_probe_key, probe_value_size[:, None], shown_value_size)
    slot_len = slot_key_size + np.where(slot_is_noise, slot_value_size, shown_value_size)

    # Pairs are appended while the sequence is shorter than `context_end`; the probe goes in
    # at the first pair boundary at or after its drawn start, unless its key already occurred.
    context_end = seq_len - probe_len - longest_pair
    start_without_probe = np.cumsum(slot_len, axis=1) - slot_len
    last_started = (start_without_probe < context_end[:, None]).sum(axis=1) - 1
    probe_slot = np.minimum(np.argmax(start_without_probe >= probe_earliest_start[:, None], axis=1), last_started)
    insert_probe = ~np.any(is_probe_key & (slot_index < probe_slot[:, None]), axis=1)
    after_probe = insert_probe[:, None] & (slot_index >= probe_slot[:, None])
    slot_start = start_without_probe + np.where(after_probe, probe_len[:, None], 0)
    slot_used = slot_start < context_end[:, None]
    probe_start = start_without_probe[rows, probe_slot]
    context_len = slot_start[rows, slot_used.sum(axis=1)]

    query_len = probe_len + (0 if config.multi_query else 1)
    left_pad = seq_len + 1 - (context_len + query_len)
    tokens = np.full((num_examples, seq_len + 1), pad_token, dtype=np.int64)
    recall_targets = np.full((num_examples, seq_len + 1), IGNORE_INDEX, dtype=np.int64)

    key_occurred_before = (is_pair & (first != slot_index)) | (is_probe_key & after_probe)
    scores_value = is_pair & key_occurred_before & config.multi_query
    for offset in range(longest_pair):
        token = _pair_token(offset, slot_key, slot_key_size, shown_value)
        if config.frac_noise > 0:
            token = np.where(slot_is_noise, slot_noise[..., offset], token)
        present = slot_used & (offset < slot_len)
        position = left_pad[:, None] + slot_start + offset
        tokens[np.nonzero(present)[0], position[present]] = token[present]
        scored = present & scores_value & (offset >= slot_key_size)
        recall_targets[np.nonzero(scored)[0], position[scored]] = token[scored]

    query_start = left_pad + context_len
    if not config.multi_query:
        tokens[rows, query_start] = config.vocab_size - 1
        query_start = query_start + 1
    for offset in range(longest_pair):
        token = _pair_token(offset, probe_key, probe_key_size, probe_value)
        in_probe = offset < probe_len
        inserted = in_probe & insert_probe
        tokens[rows[inserted], (left_pad + probe_start + offset)[inserted]] = token[inserted]
        tokens[rows[in_probe], (query_start + offset)[in_probe]] = token[in_probe]
        in_value = in_probe & (offset >= probe_key_size)
        recall_targets[rows[in_value], (query_start + offset)[in_value]] = token[in_value]

    if is_training:
        return MADSplit(inputs=tokens[:, :-1], targets=tokens[:, 1:].copy())
    return MADSplit(inputs=tokens[:, :-1], targets=recall_targets[:, 1:])


def _validate_selective_copying(config: MADTaskConfig) -> None:
    if config.num_tokens_to_copy < 1:
        raise ValueError(
            f"num_tokens_to_copy={config.num_tokens_to_copy} must be at least 1 for selective-copying (MAD: 16)"
        )
    if config.seq_len <= 2 * config.num_tokens_to_copy + 1:
        raise ValueError(
            f"seq_len={config.seq_len} is too short for selective-copying with "
            f"num_tokens_to_copy={config.num_tokens_to_copy}: "
            f"the tokens, a copy token, as many output slots and at least one blank need "
            f"seq_len >= {2 * config.num_tokens_to_copy + 2}"
        )
    if config.vocab_size < 3:
        raise ValueError(
            f"vocab_size={config.vocab_size}: selective-copying needs a blank, a copy token and data tokens, "
            "so vocab_size >= 3"
        )


def _selective_copying_split(
    config: MADTaskConfig, rng: np.random.Generator, num_examples: int, *, is_training: bool
) -> MADSplit:
    """Selective copying: data tokens scattered among blanks, then a copy token, then blanks to copy into.

    Layout: num_tokens_to_copy data tokens (uniform over [0, vocab_size - 2)) in order with
    seq_len - 2 * num_tokens_to_copy - 1 blanks (vocab_size - 2) among them, a copy token
    (vocab_size - 1), and num_tokens_to_copy blanks. As in MAD, each blank goes in front
    of a uniformly chosen data token, so the last data token always sits just before the
    copy token.

    Targets (train and test alike, no shift): the data tokens, in order, on the last
    num_tokens_to_copy positions.

    Departure from MAD: MAD places the blanks with numpy's global random state; here they
    come from the seeded stream like everything else.
    """
    num_to_copy = config.num_tokens_to_copy
    num_blanks = config.seq_len - 2 * num_to_copy - 1
    blank_token, copy_token = config.vocab_size - 2, config.vocab_size - 1
    to_copy = rng.integers(0, config.vocab_size - 2, size=(num_examples, num_to_copy))
    blanks_in_front = rng.multinomial(num_blanks, np.full(num_to_copy, 1.0 / num_to_copy), size=num_examples)
    positions = np.arange(num_to_copy) + np.cumsum(blanks_in_front, axis=1)

    inputs = np.full((num_examples, config.seq_len), blank_token, dtype=np.int64)
    np.put_along_axis(inputs, positions, to_copy, axis=1)
    inputs[:, config.seq_len - num_to_copy - 1] = copy_token
    targets = np.full((num_examples, config.seq_len), IGNORE_INDEX, dtype=np.int64)
    targets[:, config.seq_len - num_to_copy:] = to_copy
    return MADSplit(inputs=inputs, targets=targets)


def _validate_compression(config: MADTaskConfig) -> None:
    if config.seq_len < 2:
        raise ValueError(
            f"seq_len={config.seq_len}: compression needs a token before the compression token, so seq_len >= 2"
        )
    if config.vocab_size - 1 - config.noise_vocab_size < 1:
        raise ValueError(
            f"vocab_size={config.vocab_size} leaves no data tokens after the compression token and "
            f"noise_vocab_size={config.noise_vocab_size}; use vocab_size >= {config.noise_vocab_size + 2}"
        )


def _compression_split(
    config: MADTaskConfig, rng: np.random.Generator, num_examples: int, *, is_training: bool
) -> MADSplit:
    """Compression: seq_len - 1 uniform data tokens, then a compression token (vocab_size - 1).

    With frac_noise > 0 each data token is replaced, with that probability, by a noise token.

    Targets (train and test alike, no shift): the input itself at every position, noise
    and compression token included (MAD's generator computes a noise-masked target but
    returns the inputs). MAD trains this task with an autoencoder backbone that squeezes
    the whole sequence into the compression token's state and decodes every position from
    it; a causal model that reads position t's target at position t solves it trivially.
    """
    num_data_ids = config.vocab_size - 1 - config.noise_vocab_size
    inputs = rng.integers(0, num_data_ids, size=(num_examples, config.seq_len))
    inputs[:, -1] = config.vocab_size - 1
    if config.frac_noise > 0:
        is_noise = rng.random((num_examples, config.seq_len - 1)) < config.frac_noise
        noise = rng.integers(num_data_ids, num_data_ids + config.noise_vocab_size, size=is_noise.shape)
        inputs[:, :-1] = np.where(is_noise, noise, inputs[:, :-1])
    return MADSplit(inputs=inputs, targets=inputs.copy())


def _validate_memorization(config: MADTaskConfig) -> None:
    if config.seq_len % 2 or config.seq_len < 2:
        raise ValueError(
            f"seq_len={config.seq_len} must be even and >= 2 for memorization: the sequence is (key, insert) pairs"
        )
    if config.vocab_size - 1 - config.noise_vocab_size < 2:
        raise ValueError(
            f"vocab_size={config.vocab_size} leaves fewer than 2 ids for keys and values after the insert token and "
            f"noise_vocab_size={config.noise_vocab_size}; use vocab_size >= {config.noise_vocab_size + 3}"
        )


def _memorization_value_of_key(config: MADTaskConfig) -> np.ndarray:
    """(num_keys,) the value id of each key id in `config`'s memorization task, fixed by the seed."""
    num_key_value_ids = config.vocab_size - 1 - config.noise_vocab_size
    num_keys = num_key_value_ids // 2
    _, _, fixed_seed = _seed_streams(config.seed)
    # keys [0, K) are paired with K distinct values of [K, 2K) or [K, 2K + 1), in random order
    return num_keys + np.random.default_rng(fixed_seed).permutation(num_key_value_ids - num_keys)[:num_keys]


def _memorization_split(
    config: MADTaskConfig, rng: np.random.Generator, num_examples: int, *, is_training: bool
) -> MADSplit:
    """Memorization: (key, insert) pairs; the model must output each key's value from its weights.

    One key -> value map, fixed by the seed, is shared by every example of both splits (see
    `_memorization_value_of_key`). Each of the seq_len/2 pairs is a uniform key followed by
    the insert token (vocab_size - 1), or with probability frac_noise two noise tokens (at
    least one pair is never noise).

    Targets (train and test alike, no shift): the key's value at each insert token; keys
    and noise are not scored. The test split is fresh draws over the same map.

    Departure from MAD: MAD builds its map over vocab_size - 1 ids whatever
    noise_vocab_size is, so values can collide with noise ids; here the map avoids them.
    """
    value_of_key = _memorization_value_of_key(config)
    num_keys = len(value_of_key)
    noise_start = config.vocab_size - 1 - config.noise_vocab_size
    num_pairs = config.seq_len // 2
    keys = rng.integers(0, num_keys, size=(num_examples, num_pairs))
    inputs = np.stack([keys, np.full_like(keys, config.vocab_size - 1)], axis=-1)
    targets = np.stack([np.full_like(keys, IGNORE_INDEX), value_of_key[keys]], axis=-1)
    if config.frac_noise > 0:
        is_noise = rng.random((num_examples, num_pairs)) < config.frac_noise
        is_noise[np.arange(num_examples), rng.integers(0, num_pairs, size=num_examples)] = False
        noise = rng.integers(noise_start, noise_start + config.noise_vocab_size, size=(num_examples, num_pairs, 2))
        inputs = np.where(is_noise[..., None], noise, inputs)
        targets = np.where(is_noise[..., None], IGNORE_INDEX, targets)
    return MADSplit(inputs=inputs.reshape(num_examples, -1), targets=targets.reshape(num_examples, -1))


_VALIDATORS: dict[str, Callable[[MADTaskConfig], None]] = {
    "in-context-recall": _validate_recall,
    "noisy-in-context-recall": _validate_recall,
    "fuzzy-in-context-recall": _validate_fuzzy_recall,
    "selective-copying": _validate_selective_copying,
    "compression": _validate_compression,
    "memorization": _validate_memorization,
}
_GENERATORS: dict[str, Callable[..., MADSplit]] = {
    "in-context-recall": _recall_split,
    "noisy-in-context-recall": _recall_split,
    "fuzzy-in-context-recall": _fuzzy_recall_split,
    "selective-copying": _selective_copying_split,
    "compression": _compression_split,
    "memorization": _memorization_split,
}
