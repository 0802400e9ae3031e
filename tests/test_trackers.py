"""Probe(..., trackers=[...]) and `train --tracker`: what TensorBoard and W&B receive equals the run folder's rows."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from parallax_probe import Probe, open_run
from parallax_probe.config import resolve_model_config
from parallax_probe.model import ParallaxLM

SUMMARY_COLUMNS = {  # tracker name -> run folder column (one value per layer)
    "cor_mean": "attn/layer_cor_mean",
    "cor_p90": "attn/layer_cor_p90",
    "probe_norm_mean": "attn/layer_probe_norm_mean",
    "wr_stable_rank": "wr/stable_rank",
    "wr_effective_rank": "wr/effective_rank",
}


def train_tiny(run_dir, trackers, steps=6):
    torch.manual_seed(0)
    model = ParallaxLM(resolve_model_config("tiny", vocab_size=32, max_seq_len=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    probe = Probe(model, run_dir, every=2, spectra_every=3, trackers=trackers)
    for step in range(steps):
        x = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(step))
        with probe.step(step):
            loss = model(x).logsumexp(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    probe.close()
    return open_run(run_dir)


def expected_series(run) -> dict[str, dict[int, float]]:
    """`parallax/<name>/layer_LL` -> {step: value}, from the run folder."""
    out = {}
    for name, column in SUMMARY_COLUMNS.items():
        table = column.split("/")[0]
        steps = run["step"] if table == "attn" else run[f"{table}/step"]
        values = run[column]  # (N, L)
        for layer in range(values.shape[1]):
            out[f"parallax/{name}/layer_{layer:02d}"] = {int(s): float(v) for s, v in zip(steps, values[:, layer])}
    return out


def tensorboard_series(log_dir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def read_wandb_records(path):
    """The records of an offline run's .wandb file: wandb's LevelDB-style log (a 7-byte ':W&B'
    header, then 32 KiB blocks of chunks with a 7-byte header: crc32c, length, type), each
    record a wandb_internal_pb2.Record. wandb 0.31 ships no Python reader of its own."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    block, offset, pending = 32768, 7, b""
    records = []
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a chunk header is padding
            offset += block - offset % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            break  # zero fill: the end of what was written
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_series(wandb_dir) -> dict[str, dict[int, float]]:
    (path,) = wandb_dir.glob("wandb/offline-run-*/*.wandb")
    out: dict[str, dict[int, float]] = {}
    for record in read_wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {"/".join(item.nested_key) if item.nested_key else item.key: json.loads(item.value_json) for item in record.history.item}
        step = row.pop("parallax/step", None)
        for name, value in row.items():
            if name.startswith("parallax/"):
                out.setdefault(name, {})[int(step)] = value
    return out


def assert_same_series(got, expected):
    assert sorted(got) == sorted(expected)
    for name, series in expected.items():
        assert sorted(got[name]) == sorted(series), name
        np.testing.assert_allclose([got[name][s] for s in sorted(series)], [series[s] for s in sorted(series)], rtol=1e-6, err_msg=name)


def test_tensorboard_receives_the_run_folders_layer_summaries(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    run = train_tiny(tmp_path / "run", [writer])
    writer.close()
    got = tensorboard_series(tmp_path / "tb")
    assert "parallax/cor_mean/layer_01" in got and "parallax/wr_stable_rank/layer_00" in got
    assert_same_series(got, expected_series(run))


def test_wandb_offline_run_receives_the_run_folders_layer_summaries(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb_run = wandb.init(project="parallax-probe-test", reinit="create_new")
    wandb_run.log({"loss": 1.0})  # the user's own values, logged without step=, stay beside the probe's
    run = train_tiny(tmp_path / "run", [wandb_run])
    wandb_run.finish()
    assert_same_series(wandb_series(tmp_path), expected_series(run))


def test_probe_refuses_a_tracker_it_cannot_send_to(tmp_path):
    model = ParallaxLM(resolve_model_config("tiny", vocab_size=32, max_seq_len=16))
    with pytest.raises(ValueError, match="neither a TensorBoard SummaryWriter"):
        Probe(model, tmp_path / "run", trackers=[object()])
    assert not (tmp_path / "run").exists()


def test_train_cli_sends_to_tensorboard_and_wandb(tmp_path, monkeypatch):
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)  # inherited by the training subprocess
    args = ["train", "--preset", "tiny", "--seq-len", "16", "--batch-size", "4", "--steps", "6", "--probe-every", "2",
            "--spectra-every", "3", "--eval-every", "1000", "--no-progress", "--device", "cpu", "--out", tmp_path / "run",
            "--tracker", f"tensorboard:{tmp_path / 'tb'}", "--tracker", "wandb:parallax-probe-test"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = expected_series(open_run(tmp_path / "run"))
    assert_same_series(tensorboard_series(tmp_path / "tb"), expected)
    assert_same_series(wandb_series(tmp_path), expected)


def test_train_cli_refuses_a_malformed_tracker(tmp_path):
    result = run_cli("train", "--steps", "2", "--out", tmp_path / "run", "--tracker", "mlflow:x")
    assert result.returncode == 2 and "expected tensorboard:DIR or wandb:PROJECT" in result.stderr
    assert not (tmp_path / "run").exists()
