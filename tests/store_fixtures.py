"""Shared by the store tests, and run as the writer subprocess they kill or read live.

Every value is a function of (table, column, step, version), so a test can check any row it
reads against what was written: a wrong number anywhere fails, not just a wrong count.

    python tests/store_fixtures.py RUN_DIR [--mode new|resume] [--start-step S] [--rows N]
                                          [--sleep SECONDS] [--version V]

writes attention rows at steps S, S+1, ... (a W_R row every 5 steps, scalars every step,
a new scalar name at step S+7 and S+20 so the schema grows mid-run), commits after each
step, and prints the attention table's committed row count of this process, flushed,
after each commit. It loops until killed unless --rows is given, then closes the run.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from parallax_probe.store import Column, RunWriter

LAYERS, HEADS, SV = 28, 16, 24
ATTN_COLUMNS = (
    "cor_mean", "cor_p50", "cor_p90", "cor_max", "sum_osm_sq", "sum_c_sq", "sum_osm_c", "tokens",
    "probe_norm_mean", "probe_norm_p50", "probe_norm_p90", "probe_norm_max", "nonfinite",
)
INTEGER_COLUMNS = ("tokens", "nonfinite")
WR_EVERY = 5


def tables(layers: int = LAYERS, heads: int = HEADS) -> dict[str, dict[str, Column]]:
    attn = {
        name: Column(name, (layers, heads), ("layer", "head"), "i8" if name in INTEGER_COLUMNS else "f4", doc=f"test {name}")
        for name in ATTN_COLUMNS
    }
    wr = {
        "singular_values": Column("singular_values", (layers, SV), ("layer", "sv"), "f4"),
        "stable_rank": Column("stable_rank", (layers,), ("layer",), "f8"),
        "effective_rank": Column("effective_rank", (layers,), ("layer",), "f8"),
        "head_stable_rank": Column("head_stable_rank", (layers, heads), ("layer", "head"), "f4"),
    }
    return {"attn": attn, "wr": wr}


def value(table: str, column: Column, step: int, version: int = 0) -> np.ndarray:
    """The row a writer of `version` logs for `column` at `step` (distinct per column and version)."""
    salt = sum(map(ord, f"{table}/{column.name}")) % 97
    pattern = np.arange(int(np.prod(column.shape)), dtype=np.float64).reshape(column.shape) % 13
    if column.dtype.startswith("f"):
        return (step * 1000 + salt + version * 0.5 + pattern).astype(column.dtype)
    return (step * 1000 + salt + version + pattern).astype(column.dtype)


def scalar_values(step: int, start: int, version: int = 0) -> dict[str, float]:
    out = {"loss": 1.0 / (step + 1) + version}
    if step >= start + 7:
        out["lr"] = 0.001 * step + version
    if step >= start + 20:
        out["grad_norm"] = float(step % 11) + version
    return out


def write_step(writer: RunWriter, step: int, version: int = 0) -> None:
    """One training step's rows: attention, W_R every WR_EVERY steps, scalars. Not committed."""
    attn = writer.tables["attn"]
    writer.append("attn", step, **{name: value("attn", c, step, version) for name, c in attn.items()})
    if step % WR_EVERY == 0:
        wr = writer.tables["wr"]
        writer.append("wr", step, **{name: value("wr", c, step, version) for name, c in wr.items()})


def check_run_values(run, version_of=lambda step: 0) -> None:
    """Assert every row of every attn/wr column equals `value` at its step (version per step)."""
    schema = tables(run.layers, run.heads)
    for table, step_name in (("attn", "step"), ("wr", "wr/step")):
        names = [f"{table}/{c}" for c in schema[table]]
        data = run.read(step_name, *names)
        steps = data[step_name]
        assert np.all(np.diff(steps) > 0), f"{table} steps not strictly increasing: {steps}"
        for column in schema[table].values():
            got = data[f"{table}/{column.name}"]
            assert got.shape == (len(steps),) + column.shape
            for i, step in enumerate(steps):
                expected = value(table, column, int(step), version_of(int(step)))
                np.testing.assert_array_equal(got[i], expected, err_msg=f"{table}/{column.name} at step {step}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--mode", default="new")
    parser.add_argument("--start-step", type=int, default=0)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--version", type=int, default=0)
    args = parser.parse_args()
    writer = RunWriter(args.run_dir, tables=tables(), meta={"optimizer": "test"}, mode=args.mode, start_step=args.start_step)
    step = args.start_step
    while args.rows is None or step < args.start_step + args.rows:
        write_step(writer, step, args.version)
        writer.append("scalars", step, **scalar_values(step, args.start_step, args.version))
        writer.commit()
        sys.stdout.write(f"{step - args.start_step + 1}\n")
        sys.stdout.flush()
        step += 1
        if args.sleep:
            time.sleep(args.sleep)
    writer.close()


if __name__ == "__main__":
    main()
