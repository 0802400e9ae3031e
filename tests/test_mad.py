"""The MAD task generators against the task definitions of Poli et al. 2024 (athms/mad-lab)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from parallax_probe.data.mad import (
    IGNORE_INDEX,
    MAD_TASKS,
    MADTaskConfig,
    mad_accuracy,
    mad_baseline,
    make_mad_dataset,
)

# Small example counts keep the suite fast; lengths and vocabularies stay at MAD's baseline.
FEW = dict(num_train_examples=200, num_test_examples=100)


def small(task: str, **overrides) -> MADTaskConfig:
    return mad_baseline(task, **{**FEW, **overrides})


def recall_targets_by_definition(tokens: np.ndarray, key_ids: range, value_ids: range, multi_query: bool) -> np.ndarray:
    """The held-out targets a recall sequence must carry, read off the sequence itself.

    The sequence is key runs each followed by a value run (with noise or padding between
    pairs). A key keeps its value; the last pair is the query and its key occurred before.
    Scored: the value tokens of the query, and with multi_query of every repeated key.
    Returned after the next-token shift, like the split's targets.
    """
    is_key, is_value = np.isin(tokens, key_ids), np.isin(tokens, value_ids)
    token_class = np.where(is_key, 1, np.where(is_value, 2, 0))
    boundaries = np.flatnonzero(np.diff(token_class)) + 1
    runs = [(int(token_class[start]), start, stop) for start, stop in zip([0, *boundaries], [*boundaries, len(tokens)])]
    pairs = []
    for (kind, start, stop), (next_kind, next_start, next_stop) in zip(runs, runs[1:] + [(0, 0, 0)]):
        if kind == 1:
            assert next_kind == 2, f"key at {start} is not followed by a value"
            pairs.append((tuple(tokens[start:stop]), tuple(tokens[next_start:next_stop]), next_start, next_stop))
    assert runs[-1][0] == 2, "the sequence ends with the query's value"

    expected = np.full(len(tokens), IGNORE_INDEX)
    value_of_key: dict[tuple, tuple] = {}
    for index, (key, value, value_start, value_stop) in enumerate(pairs):
        is_query = index == len(pairs) - 1
        if key in value_of_key:
            assert value_of_key[key] == value, f"key {key} showed {value_of_key[key]} earlier, now {value}"
            if multi_query or is_query:
                expected[value_start:value_stop] = value
        else:
            assert not is_query, f"queried key {key} never occurred before the query"
        value_of_key[key] = value
    return expected[1:]


def key_motif_sizes(tokens: np.ndarray, key_ids: range) -> set[int]:
    is_key = np.isin(tokens, key_ids).astype(int)
    edges = np.diff(np.concatenate([[0], is_key, [0]]))
    return set((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist())


@pytest.mark.parametrize(
    "task, expected",
    [
        ("in-context-recall", dict(vocab_size=16, seq_len=128, num_train_examples=12_800, multi_query=True, frac_noise=0.0)),
        ("noisy-in-context-recall", dict(vocab_size=32, seq_len=128, noise_vocab_size=16, frac_noise=0.2, multi_query=True)),
        ("fuzzy-in-context-recall", dict(vocab_size=16, seq_len=128, k_motif_size=3, v_motif_size=3, multi_query=True)),
        ("selective-copying", dict(vocab_size=16, seq_len=256, num_tokens_to_copy=16, num_train_examples=12_800)),
        ("compression", dict(vocab_size=16, seq_len=32, num_train_examples=12_800, frac_noise=0.0)),
        ("memorization", dict(vocab_size=256, seq_len=32, num_train_examples=256)),
    ],
)
def test_defaults_are_mad_baselines(task, expected):
    config = MADTaskConfig(task=task)
    assert config == mad_baseline(task)
    assert config.num_test_examples == 1_280
    assert {name: getattr(config, name) for name in expected} == expected


def test_overrides_give_small_variants():
    config = mad_baseline("in-context-recall", vocab_size=32, seq_len=64, num_train_examples=500, seed=3)
    dataset = make_mad_dataset(config)
    assert dataset.train.inputs.shape == (500, 63)  # multi-query recall: seq_len tokens, shifted
    assert dataset.vocab_size == 32 and dataset.train.inputs.max() < 32
    assert dataclasses.replace(config, seq_len=96).seq_len == 96


@pytest.mark.parametrize(
    "task, overrides, message",
    [
        ("recall", {}, "not a MAD task"),
        ("in-context-recall", dict(seq_len=63), "must be even"),
        ("in-context-recall", dict(seq_len=2), "at least 2"),
        ("in-context-recall", dict(vocab_size=1), "vocab_size >= 2"),
        ("noisy-in-context-recall", dict(vocab_size=17), "vocab_size >= 18"),
        ("noisy-in-context-recall", dict(noise_vocab_size=0), "noise_vocab_size >= 1"),
        ("noisy-in-context-recall", dict(frac_noise=1.0), r"\[0, 1\)"),
        ("in-context-recall", dict(num_tokens_to_copy=4), "has no num_tokens_to_copy knob"),
        ("selective-copying", dict(seq_len=33), r"num_tokens_to_copy=16.*seq_len >= 34"),
        ("selective-copying", dict(num_tokens_to_copy=0), "at least 1"),
        ("selective-copying", dict(frac_noise=0.1), "has no frac_noise knob"),
        ("fuzzy-in-context-recall", dict(seq_len=12), "seq_len >= 13"),
        ("fuzzy-in-context-recall", dict(vocab_size=6), "vocab_size >= 7"),
        ("memorization", dict(k_motif_size=2), "has no k_motif_size knob"),
        ("memorization", dict(seq_len=31), "even"),
        ("compression", dict(seq_len=1), "seq_len >= 2"),
        ("compression", dict(num_train_examples=0), "at least 1"),
        ("compression", dict(seed=-1), "non-negative"),
        ("compression", dict(vocab_size=16.0), "must be an integer"),
    ],
)
def test_bad_configs_raise_value_error_naming_the_field(task, overrides, message):
    with pytest.raises(ValueError, match=message):
        mad_baseline(task, **overrides)


def test_unknown_override_names_the_valid_fields():
    with pytest.raises(ValueError, match="unknown MADTaskConfig field.*vocab.*choose from"):
        mad_baseline("in-context-recall", vocab=16)


@pytest.mark.parametrize("task", MAD_TASKS)
def test_same_seed_gives_identical_arrays_and_another_seed_differs(task):
    first, again, other = (make_mad_dataset(small(task, seed=seed)) for seed in (7, 7, 8))
    for split in ("train", "test"):
        for field in ("inputs", "targets"):
            array = getattr(getattr(first, split), field)
            assert array.tobytes() == getattr(getattr(again, split), field).tobytes()
        assert not np.array_equal(getattr(first, split).inputs, getattr(other, split).inputs)


@pytest.mark.parametrize("task", MAD_TASKS)
def test_test_split_is_its_own_stream(task):
    dataset = make_mad_dataset(small(task))
    rows = min(len(dataset.train.inputs), len(dataset.test.inputs))
    assert not np.array_equal(dataset.train.inputs[:rows], dataset.test.inputs[:rows])
    more_training = make_mad_dataset(small(task, num_train_examples=300))
    assert np.array_equal(more_training.test.inputs, dataset.test.inputs)


@pytest.mark.parametrize(
    "task, width", [("in-context-recall", 127), ("noisy-in-context-recall", 127), ("fuzzy-in-context-recall", 128),
                    ("selective-copying", 256), ("compression", 32), ("memorization", 32)],
)
def test_shapes_dtypes_and_vocabulary_bounds(task, width):
    dataset = make_mad_dataset(small(task))
    for split, count in ((dataset.train, 200), (dataset.test, 100)):
        assert split.inputs.shape == split.targets.shape == (count, width)
        assert split.inputs.dtype == split.targets.dtype == np.int64
        assert 0 <= split.inputs.min() and split.inputs.max() < dataset.vocab_size
        scored = split.targets[split.targets != IGNORE_INDEX]
        assert scored.size > 0 and 0 <= scored.min() and scored.max() < dataset.vocab_size


@pytest.mark.parametrize("task", ["in-context-recall", "noisy-in-context-recall", "fuzzy-in-context-recall"])
def test_recall_trains_on_every_next_token(task):
    train = make_mad_dataset(small(task)).train
    assert np.array_equal(train.targets[:, :-1], train.inputs[:, 1:])
    assert not np.any(train.targets == IGNORE_INDEX)


@pytest.mark.parametrize(
    "task, overrides, key_ids, value_ids",
    [
        ("in-context-recall", {}, range(0, 8), range(8, 16)),
        ("in-context-recall", dict(vocab_size=24, seq_len=64), range(0, 12), range(12, 24)),
        ("noisy-in-context-recall", {}, range(0, 8), range(8, 16)),
        ("fuzzy-in-context-recall", {}, range(0, 7), range(7, 15)),
    ],
)
def test_recall_test_targets_are_the_values_that_followed_the_key_earlier(task, overrides, key_ids, value_ids):
    test = make_mad_dataset(small(task, **overrides)).test
    assert np.all(test.targets[:, -1] != IGNORE_INDEX), "the query's value is always scored"
    for inputs, targets in zip(test.inputs, test.targets):
        tokens = np.append(inputs, targets[-1])
        assert np.array_equal(targets, recall_targets_by_definition(tokens, key_ids, value_ids, multi_query=True))


@pytest.mark.parametrize("task", ["in-context-recall", "fuzzy-in-context-recall"])
def test_single_query_recall_scores_only_the_query_after_the_copy_prefix(task):
    config = small(task, multi_query=False)
    test = make_mad_dataset(config).test
    num_ids = config.vocab_size - (1 if task == "in-context-recall" else 2)  # copy prefix (and pad) on top
    key_ids, value_ids = range(0, num_ids // 2), range(num_ids // 2, num_ids)
    for inputs, targets in zip(test.inputs, test.targets):
        tokens = np.append(inputs, targets[-1])
        assert np.array_equal(targets, recall_targets_by_definition(tokens, key_ids, value_ids, multi_query=False))
        query_key_start = np.flatnonzero(~np.isin(tokens, key_ids) & ~np.isin(tokens, value_ids))[-1] + 1
        assert tokens[query_key_start - 1] == config.vocab_size - 1, "the copy prefix precedes the query"


def test_noisy_recall_replaces_about_frac_noise_of_the_pairs_with_noise_tokens():
    config = small("noisy-in-context-recall", num_test_examples=1_000)
    test = make_mad_dataset(config).test
    context = test.inputs[:, : config.seq_len - 2]  # the final pair is the query, never noise
    is_noise = context >= 16  # noise ids: [16, 32)
    assert np.array_equal(is_noise[:, 0::2], is_noise[:, 1::2]), "noise replaces whole pairs"
    assert abs(is_noise.mean() - 0.2) < 0.01
    scored = test.targets[test.targets != IGNORE_INDEX]
    assert scored.max() < 16, "a noise token is never a target"


def test_fuzzy_recall_keys_span_one_to_three_tokens_in_training_and_three_in_test():
    dataset = make_mad_dataset(small("fuzzy-in-context-recall"))
    key_ids = range(0, 7)
    train_tokens = np.concatenate([dataset.train.inputs[:, :1], dataset.train.targets], axis=1)
    assert set().union(*(key_motif_sizes(row, key_ids) for row in train_tokens)) == {1, 2, 3}
    for row in train_tokens:  # a key keeps its value in training sequences too
        recall_targets_by_definition(row, key_ids, range(7, 15), multi_query=True)
    assert set().union(*(key_motif_sizes(row, key_ids) for row in dataset.test.inputs)) == {3}


def test_fuzzy_recall_pads_on_the_left_to_exactly_seq_len():
    test = make_mad_dataset(small("fuzzy-in-context-recall")).test
    is_pad = test.inputs == 15
    first_content = np.argmin(is_pad, axis=1)
    assert np.all(first_content >= 1) and np.all(is_pad == (np.arange(128) < first_content[:, None]))


def test_selective_copying_targets_are_the_non_blank_tokens_in_order():
    config = small("selective-copying")
    blank, copy = 14, 15
    for split in make_mad_dataset(config).train, make_mad_dataset(config).test:
        for inputs, targets in zip(split.inputs, split.targets):
            assert inputs[256 - 17] == copy and np.all(inputs[256 - 16:] == blank)
            to_copy = inputs[: 256 - 17][inputs[: 256 - 17] != blank]
            assert len(to_copy) == 16 and np.all(to_copy < blank)
            assert np.array_equal(targets[256 - 16:], to_copy)
            assert np.all(targets[: 256 - 16] == IGNORE_INDEX)


def test_compression_targets_are_the_inputs_ending_in_the_compression_token():
    dataset = make_mad_dataset(small("compression"))
    for split in dataset.train, dataset.test:
        assert np.array_equal(split.targets, split.inputs)
        assert np.all(split.inputs[:, -1] == 15) and np.all(split.inputs[:, :-1] < 15)


def test_compression_noise_replaces_about_frac_noise_of_the_tokens():
    config = small("compression", vocab_size=20, noise_vocab_size=4, frac_noise=0.3, num_test_examples=1_000)
    inputs = make_mad_dataset(config).test.inputs
    is_noise = (inputs >= 15) & (inputs < 19)  # data [0, 15), noise [15, 19), compression token 19
    assert abs(is_noise[:, :-1].mean() - 0.3) < 0.01 and not is_noise[:, -1].any()


def test_memorization_maps_each_key_to_one_value_across_the_whole_dataset():
    dataset = make_mad_dataset(small("memorization"))
    keys, values = [], []
    for split in dataset.train, dataset.test:
        assert np.all(split.inputs[:, 1::2] == 255), "every key is followed by the insert token"
        assert np.all(split.targets[:, 0::2] == IGNORE_INDEX)
        keys.append(split.inputs[:, 0::2].ravel())
        values.append(split.targets[:, 1::2].ravel())
    keys, values = np.concatenate(keys), np.concatenate(values)
    pairs = np.unique(np.stack([keys, values], axis=1), axis=0)
    assert np.array_equal(np.unique(pairs[:, 0]), np.arange(127)), "keys are ids 0..126, all seen"
    assert len(pairs) == 127, "one value per key"
    assert len(np.unique(pairs[:, 1])) == 127 and pairs[:, 1].min() >= 127 and pairs[:, 1].max() <= 254

    other_seed = make_mad_dataset(small("memorization", seed=1)).train
    other_values = dict(zip(other_seed.inputs[:, 0::2].ravel(), other_seed.targets[:, 1::2].ravel()))
    assert any(other_values.get(key) != value for key, value in pairs.tolist()), "the map follows the seed"


def test_memorization_noise_pairs_are_not_scored():
    config = small("memorization", noise_vocab_size=8, frac_noise=0.25, num_test_examples=1_000)
    test = make_mad_dataset(config).test
    is_noise_pair = (test.inputs[:, 0::2] >= 247) & (test.inputs[:, 0::2] < 255)
    assert abs(is_noise_pair.mean() - 0.25 * 15 / 16) < 0.015  # one pair per example is never noise
    assert np.all(test.targets[:, 1::2][is_noise_pair] == IGNORE_INDEX)
    assert np.all(test.targets[:, 1::2][~is_noise_pair] < 247), "values avoid the noise ids"


def test_accuracy_counts_only_scored_positions():
    targets = np.array([[IGNORE_INDEX, 3, IGNORE_INDEX, 5], [IGNORE_INDEX, IGNORE_INDEX, 2, 2]])
    predictions = np.array([[9, 3, 9, 4], [9, 9, 2, 2]])
    assert mad_accuracy(predictions, targets) == pytest.approx(3 / 4)
    assert mad_accuracy(targets.clip(0), targets) == 1.0


def test_accuracy_takes_the_argmax_of_logits():
    targets = np.array([[IGNORE_INDEX, 1, 2]])
    logits = np.eye(4)[[[0, 1, 3]]]  # (1, 3, 4): predicts 0, 1, 3
    assert mad_accuracy(logits, targets) == pytest.approx(1 / 2)


def test_macro_accuracy_is_torchmetrics_multiclass_default():
    # torchmetrics' MulticlassAccuracy docstring example: per-class recall 1/2, 1, 1
    targets, predictions = np.array([2, 1, 0, 0]), np.array([2, 1, 0, 1])
    assert mad_accuracy(predictions, targets, average="macro") == pytest.approx(5 / 6)
    assert mad_accuracy(predictions, targets) == pytest.approx(3 / 4)
    # a class that is predicted but never a target counts as 0
    assert mad_accuracy(np.array([0, 1]), np.array([0, 0]), average="macro") == pytest.approx(1 / 4)


def test_accuracy_rejects_inputs_it_cannot_score():
    with pytest.raises(ValueError, match="no scored position"):
        mad_accuracy(np.zeros((2, 3), dtype=np.int64), np.full((2, 3), IGNORE_INDEX))
    with pytest.raises(ValueError, match="shaped like targets"):
        mad_accuracy(np.zeros((2, 4), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="average"):
        mad_accuracy(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64), average="weighted")
