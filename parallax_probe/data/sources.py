"""The three kinds of task behind `--task`: a MAD name, `text:PATH`, `bin:GLOB`."""

from __future__ import annotations

import glob as globlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .mad import MAD_TASKS, mad_accuracy, mad_baseline, make_mad_dataset

# modded-nanogpt shard header: 256 int32, [0] magic, [1] version, [2] token count
BIN_MAGIC = 20240520
BIN_HEADER_INTS = 256


class TaskSpecError(ValueError):
    """A --task value that names nothing usable; the message says what and how to fix it."""


@dataclass
class TaskData:
    """Tokens for one task: fixed-length (inputs, targets) batches with IGNORE_INDEX where unscored."""

    name: str
    vocab_size: int
    seq_len: int
    description: str
    train_inputs: np.ndarray | None = None  # (N, T) int64, for example-based tasks (MAD)
    train_targets: np.ndarray | None = None
    test_inputs: np.ndarray | None = None
    test_targets: np.ndarray | None = None
    train_stream: np.ndarray | None = None  # 1-D token stream, for language modelling
    test_stream: np.ndarray | None = None
    details: dict = field(default_factory=dict)
    _orders: dict = field(default_factory=dict, repr=False)  # epoch orders drawn so far (see _epoch_order)

    def train_batch(self, step: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        """Rank `rank`'s contiguous slice of global batch `step`, as int64 tensors (inputs, targets)."""
        if self.train_inputs is not None:
            n = len(self.train_inputs)
            # epoch-wise permutations keyed by (seed, epoch): every example once per epoch
            first, last = step * global_batch, (step + 1) * global_batch
            idx = np.concatenate([
                self._epoch_order(seed, epoch) for epoch in range(first // n, (last - 1) // n + 1)
            ])[first - (first // n) * n:][:global_batch]
            inputs, targets = self.train_inputs[idx], self.train_targets[idx]
        else:
            rng = np.random.default_rng([seed, step, 0x7A11])
            starts = rng.integers(0, len(self.train_stream) - self.seq_len - 1, size=global_batch)
            windows = np.stack([self.train_stream[s : s + self.seq_len + 1] for s in starts]).astype(np.int64)
            inputs, targets = windows[:, :-1], windows[:, 1:]
        per_rank = global_batch // world_size
        part = slice(rank * per_rank, (rank + 1) * per_rank)
        return torch.from_numpy(np.ascontiguousarray(inputs[part])), torch.from_numpy(np.ascontiguousarray(targets[part]))

    def _epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The example order of one epoch, drawn once and kept until a batch reaches the next epoch."""
        key = (seed, epoch)
        if key not in self._orders:
            self._orders = {key: np.random.default_rng([seed, epoch, 0xE90C]).permutation(len(self.train_inputs))}
        return self._orders[key]

    def eval_batches(self, batch_size: int, max_examples: int = 1024):
        """The held-out set in order (the first `max_examples` examples or windows)."""
        if self.test_inputs is not None:
            inputs, targets = self.test_inputs[:max_examples], self.test_targets[:max_examples]
        else:
            count = min(max_examples, max(1, (len(self.test_stream) - 1) // self.seq_len))
            windows = np.stack([
                self.test_stream[i * self.seq_len : i * self.seq_len + self.seq_len + 1] for i in range(count)
            ]).astype(np.int64)
            inputs, targets = windows[:, :-1], windows[:, 1:]
        for start in range(0, len(inputs), batch_size):
            yield torch.from_numpy(inputs[start : start + batch_size]), torch.from_numpy(targets[start : start + batch_size])

    def accuracy(self, predictions: np.ndarray, targets: np.ndarray) -> float:
        """MAD's accuracy for MAD tasks (scored positions only); next-token accuracy otherwise."""
        return mad_accuracy(predictions, targets)


def _mad_task(name: str, *, seq_len: int | None, seed: int, overrides: dict) -> TaskData:
    knobs = dict(overrides)
    if seq_len is not None:
        knobs["seq_len"] = seq_len
    config = mad_baseline(name, seed=seed, **knobs)
    dataset = make_mad_dataset(config)
    return TaskData(
        name=name,
        vocab_size=dataset.vocab_size,
        seq_len=dataset.train.inputs.shape[1],
        description=f"MAD {name} ({config})",
        train_inputs=dataset.train.inputs,
        train_targets=dataset.train.targets,
        test_inputs=dataset.test.inputs,
        test_targets=dataset.test.targets,
        details={"mad_config": _plain(config)},
    )


def _plain(config) -> dict:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def _split_stream(tokens: np.ndarray, seq_len: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Last 10% held out (at least two windows)."""
    held_out = max(2 * (seq_len + 1), len(tokens) // 10)
    if len(tokens) < held_out + 2 * (seq_len + 1):
        raise TaskSpecError(
            f"{what} holds {len(tokens)} tokens; need at least {held_out + 2 * (seq_len + 1)} for seq_len {seq_len} "
            "(train and held-out windows). Use more data or a smaller --seq-len"
        )
    return tokens[:-held_out], tokens[-held_out:]


def _check_regular_file(path: Path, what: str) -> None:
    """Refuse what is not a regular file: reading a FIFO or a device blocks or never ends."""
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a pipe, socket or device)"
        raise TaskSpecError(f"{what}: {path} is {kind}; point it at data files")


def _text_task(path_text: str, *, seq_len: int) -> TaskData:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise TaskSpecError(f"text task: {path} does not exist; pass text:PATH to a file or folder of text")
    if not path.is_dir():
        _check_regular_file(path, "text task")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise TaskSpecError(f"text task: folder {path} holds no files")
    data = b"".join(f.read_bytes() for f in files)
    tokens = np.frombuffer(data, dtype=np.uint8)
    train, test = _split_stream(tokens, seq_len, f"text:{path}")
    return TaskData(
        name=f"text:{path}", vocab_size=256, seq_len=seq_len,
        description=f"byte-level LM on {len(files)} file(s), {len(tokens):,} bytes",
        train_stream=train, test_stream=test, details={"files": [str(f) for f in files], "bytes": len(tokens)},
    )


def read_bin_shard(path: Path) -> np.ndarray:
    """A uint16 token shard: modded-nanogpt's (256-int32 header) or nanoGPT's raw layout."""
    _check_regular_file(path, "bin task")
    size = path.stat().st_size
    if size == 0:
        raise TaskSpecError(f"bin shard {path}: the file is empty; remove it from the glob or write it again")
    header_bytes = BIN_HEADER_INTS * 4
    with open(path, "rb") as f:
        head = np.frombuffer(f.read(header_bytes), dtype=np.int32)
    if len(head) == BIN_HEADER_INTS and head[0] == BIN_MAGIC:
        count = int(head[2])
        if count < 0:
            raise TaskSpecError(f"bin shard {path}: its header declares {count} tokens; the header is damaged, write the shard again")
        if (size - header_bytes) % 2:
            raise TaskSpecError(f"bin shard {path}: {size - header_bytes} bytes after the header, an odd number, so not "
                                "uint16 tokens; the file is cut short or damaged")
        tokens = np.memmap(path, dtype=np.uint16, mode="r", offset=header_bytes) if size > header_bytes else np.zeros(0, np.uint16)
        if len(tokens) < count:
            raise TaskSpecError(f"bin shard {path}: header declares {count} tokens but the file holds {len(tokens)}")
        return tokens[:count]
    if size % 2:
        raise TaskSpecError(f"bin shard {path}: {size} bytes, an odd number, so not uint16 tokens (nor a shard with "
                            "modded-nanogpt's header); the file is cut short or damaged")
    return np.memmap(path, dtype=np.uint16, mode="r")


def _bin_task(pattern: str, *, seq_len: int, vocab_size: int) -> TaskData:
    paths = sorted(Path(p) for p in globlib.glob(str(Path(pattern).expanduser())))
    if not paths:
        raise TaskSpecError(f"bin task: no file matches {pattern!r}; pass bin:GLOB matching uint16 .bin shards")
    val = [p for p in paths if "val" in p.name]
    train = [p for p in paths if p not in val] or paths
    if val:
        train_tokens = np.concatenate([read_bin_shard(p) for p in train])
        test_tokens = np.concatenate([read_bin_shard(p) for p in val])
        for tokens, kind, files in ((train_tokens, "training", train), (test_tokens, "validation", val)):
            # one window of seq_len inputs and its shifted targets, at least
            if len(tokens) < seq_len + 2:
                raise TaskSpecError(
                    f"bin task: the {kind} shards ({', '.join(p.name for p in files)}) hold {len(tokens)} tokens, "
                    f"fewer than one window of --seq-len {seq_len} needs ({seq_len + 2}); use more data or a smaller --seq-len"
                )
    else:
        train_tokens, test_tokens = _split_stream(np.concatenate([read_bin_shard(p) for p in train]), seq_len, f"bin:{pattern}")
    top = int(max(train_tokens.max(), test_tokens.max()))
    if top >= vocab_size:
        raise TaskSpecError(f"bin task: token id {top} >= the model's vocab_size {vocab_size}; pass --vocab-size {top + 1} or more")
    return TaskData(
        name=f"bin:{pattern}",
        vocab_size=vocab_size,
        seq_len=seq_len,
        description=f"uint16 shards: {len(train)} train, {len(val)} val, {len(train_tokens):,} train tokens",
        train_stream=train_tokens,
        test_stream=test_tokens,
        details={"train_files": [str(p) for p in train], "val_files": [str(p) for p in val]},
    )


def load_task(
    spec: str, *, seq_len: int | None = None, seed: int = 0, vocab_size: int | None = None, mad_overrides: dict | None = None
) -> TaskData:
    """Resolve a --task value. `seq_len`: MAD's baseline length when None; 256 for text/bin."""
    if spec in MAD_TASKS:
        return _mad_task(spec, seq_len=seq_len, seed=seed, overrides=mad_overrides or {})
    if spec.startswith("text:"):
        return _text_task(spec[len("text:"):], seq_len=seq_len or 256)
    if spec.startswith("bin:"):
        return _bin_task(spec[len("bin:"):], seq_len=seq_len or 256, vocab_size=vocab_size or 50304)
    raise TaskSpecError(f"unknown task {spec!r}; choose a MAD task ({', '.join(MAD_TASKS)}), text:PATH or bin:GLOB")
