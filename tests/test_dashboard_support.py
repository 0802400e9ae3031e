"""Helpers shared by the dashboard tests (test_dashboard_app.py, test_dashboard_browser.py); no tests here.

Real runs come from the real CLI (`parallax-probe train`), made once per test session
under pytest's base temp folder; odd shapes (other depths, damaged files, a live writer)
are written with the store's own `RunWriter` in the probe's schema.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from parallax_probe.store import Column, RunWriter
from parallax_probe.store.probe_schema import ATTN_STAT_NAMES, head_means
from parallax_probe.store.probe_schema import probe_tables as probe_schema

CLI = Path(sys.executable).with_name("parallax-probe")
OPTIMIZERS = ("muon", "adamw")
SEEDS = (0, 1)
TRAIN_ARGS = (
    "--preset", "tiny", "--task", "in-context-recall", "--seq-len", "32", "--steps", "40", "--batch-size", "8",
    "--probe-every", "5", "--spectra-every", "10", "--eval-every", "20", "--no-progress",
)
ATTN_STATS = ATTN_STAT_NAMES


def train_runs(folder: Path) -> Path:
    """muon-s0, muon-s1, adamw-s0, adamw-s1 under `folder`, trained by the CLI (once: a marker file says done)."""
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # Two at a time, one thread each: on a 2-core machine that beats four processes fighting.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(job: tuple[str, int]) -> None:
        optimizer, seed = job
        out = folder / f"{optimizer}-s{seed}"
        subprocess.run(
            [str(CLI), "train", *TRAIN_ARGS, "--optimizer", optimizer, "--seed", str(seed), "--out", str(out), "--overwrite"],
            check=True, env=env, capture_output=True, text=True,
        )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(train, [(o, s) for o in OPTIMIZERS for s in SEEDS]))
    done.touch()
    return folder


def probe_tables(layers: int, heads: int, head_dim: int = 4, d_model: int = 16) -> dict[str, dict[str, Column]]:
    """The probe's schema (parallax_probe.store.probe_schema), so synthetic runs read exactly like real ones."""
    return probe_schema(layers, heads, head_dim, d_model)


def attn_row(rng: np.random.Generator, layers: int, heads: int) -> dict[str, np.ndarray]:
    """The per-head columns of one attn row: plausible floats, 64 tokens, nothing non-finite."""
    row = {n: rng.uniform(0.5, 2.0, (layers, heads)).astype(np.float32) for n in ATTN_STATS}
    row["tokens"] = np.full((layers, heads), 64)
    row["nonfinite"] = np.zeros((layers, heads), np.int64)
    return row


def append_rows(writer: RunWriter, steps, layers: int, heads: int, *, seed: int = 0) -> None:
    """Rows of plausible numbers at `steps`: attn every step, spectra and scalars every 10th."""
    rng = np.random.default_rng(seed)
    k = writer.tables["wr"]["singular_values"].shape[-1]
    d = writer.tables["wr"]["head_singular_values"].shape[-1]
    for step in steps:
        row = attn_row(rng, layers, heads)
        writer.append("attn", step, **row, **head_means(row), probe_gain_norm=np.ones(layers, np.float32))
        if step % 10 == 0:
            s = np.sort(rng.uniform(0.1, 1.0, (layers, k)))[:, ::-1].astype(np.float32)
            sh = np.sort(rng.uniform(0.1, 1.0, (layers, heads, d)))[..., ::-1].astype(np.float32)
            writer.append("wr", step, singular_values=s, stable_rank=np.full(layers, 3.0, np.float32),
                          effective_rank=np.full(layers, 4.0, np.float32), head_singular_values=sh,
                          head_stable_rank=np.full((layers, heads), 2.0, np.float32),
                          head_effective_rank=np.full((layers, heads), 3.0, np.float32))
            writer.append("wrk", step, singular_values=sh, stable_rank=np.full((layers, heads), 2.0, np.float32),
                          effective_rank=np.full((layers, heads), 3.0, np.float32))
            writer.append("scalars", step, loss=2.0 - step / 1000, lr_multiplier=1.0)
    writer.commit()


def write_run(path: Path, *, layers: int, heads: int, steps: int = 30, optimizer: str = "muon", seed: int = 0) -> Path:
    """A closed synthetic run in the probe's schema."""
    meta = {"optimizer": optimizer, "seed": seed, "preset": "synthetic", "attention": "parallax", "task": "synthetic",
            "layers": layers, "heads": heads}
    with RunWriter(path, tables=probe_tables(layers, heads), meta=meta, mode="new", start_step=0, fsync_every_s=None) as writer:
        append_rows(writer, range(steps), layers, heads, seed=seed)
    return path


def decode(value) -> np.ndarray:
    """A Plotly JSON array: a plain list, or Plotly 6's typed array {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(n) for n in str(shape).split(",")])
        return array
    return np.asarray(value, dtype=float)


def chart_specs(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def chart(at, title_part: str) -> dict:
    """The one figure whose title contains `title_part`."""
    found = [spec for spec in chart_specs(at) if title_part in spec["layout"]["title"]["text"]]
    assert len(found) == 1, f"{len(found)} figures titled *{title_part}*: {[s['layout']['title']['text'] for s in chart_specs(at)]}"
    return found[0]


def write_trace_file(path: Path, token_text: list[str]) -> tuple[object, list[tuple[int, int]]]:
    """A real trace (`parallax_probe.trace`) of the tiny model on len(token_text) tokens, shown as `token_text`."""
    import torch

    from parallax_probe import build_model
    from parallax_probe.trace import Tokens, trace_model, write_trace

    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=32).eval()
    ids = np.random.default_rng(0).integers(0, 32, len(token_text))
    maps = [(0, 0), (1, 2)]
    trace = trace_model(model, ids, maps=maps)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_trace(path, trace, Tokens(ids=ids, text=token_text, display="bytes"), meta={"model": "tiny"})
    return trace, maps

