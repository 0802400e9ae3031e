"""`parallax-probe demo`: the tiny preset trained twice on MAD in-context recall, Muon vs AdamW.

Same data, same seed, same model; only the optimiser differs. Prints a side-by-side
summary (loss, held-out accuracy against chance, time) and, from the probe's run files,
per layer the mean COR and W_R's stable and effective rank at the end of training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .config import OptimizerConfig, TrainConfig, default_warmup_steps
from .store import COR_MEAN, WR_EFFECTIVE_RANK, WR_STABLE_RANK
from .train import RunFolderError, TrainResult, check_run_folder, train

DEMO_STEPS = 600
DEMO_SEQ_LEN = 64  # MAD's recall task at half its baseline length: learnable in a minute on 2 cores
OPTIMIZERS = ("muon", "adamw")  # the comparison the demo shows, one run folder each


def demo_config(optimizer: str, out: Path, steps: int, overwrite: bool) -> TrainConfig:
    return TrainConfig(
        preset="tiny",
        optimizer=OptimizerConfig(name=optimizer, warmup_steps=default_warmup_steps(steps)),
        task="in-context-recall",
        seq_len=DEMO_SEQ_LEN,
        steps=steps,
        batch_size=32,
        seed=0,
        device="cpu",
        out=str(out / optimizer),
        overwrite=overwrite,
        eval_every=max(1, steps // 4),
        eval_examples=512,
        log_every=10,
        checkpoint_every=steps,
        probe_every=10,
        spectra_every=50,
    )


def layer_table(run_dirs: dict[str, Path]) -> str:
    """Per layer: final mean COR and W_R stable / effective rank, one column pair per optimiser."""
    from .store import open_run

    runs = {name: open_run(path) for name, path in run_dirs.items()}
    layers = max(run.meta["layers"] for run in runs.values())
    header = f"{'layer':>5} | " + " | ".join(f"{name:^28}" for name in runs)
    sub = f"{'':>5} | " + " | ".join(f"{'COR':>8} {'stable':>9} {'effective':>9}" for _ in runs)
    lines = [header, sub, "-" * len(sub)]
    for layer in range(layers):
        cells = []
        for run in runs.values():
            cor = np.asarray(run[COR_MEAN])[-1, layer].mean()
            stable = np.asarray(run[WR_STABLE_RANK])[-1, layer]
            effective = np.asarray(run[WR_EFFECTIVE_RANK])[-1, layer]
            cells.append(f"{cor:8.3f} {stable:9.2f} {effective:9.2f}")
        lines.append(f"{layer:>5} | " + " | ".join(cells))
    return "\n".join(lines)


def summary_table(results: dict[str, TrainResult]) -> str:
    lines = [f"{'optimizer':>9} | {'final loss':>10} | {'held-out acc':>12} | {'chance':>6} | {'time':>7} | {'tokens/s':>9}"]
    lines.append("-" * len(lines[0]))
    for name, r in results.items():
        lines.append(
            f"{name:>9} | {r.final_loss:10.4f} | {r.eval_accuracy:12.3f} | {r.chance_accuracy:6.3f} | "
            f"{r.seconds:6.1f}s | {r.tokens_per_second:9,.0f}"
        )
    return "\n".join(lines)


def run_demo(out: str = "runs/demo", steps: int | None = None, overwrite: bool = True) -> int:
    out_dir = Path(out)
    steps = steps or DEMO_STEPS
    results: dict[str, TrainResult] = {}
    configs = {optimizer: demo_config(optimizer, out_dir, steps, overwrite) for optimizer in OPTIMIZERS}
    try:
        for config in configs.values():  # both folders, before the first run writes anything
            check_run_folder(config)
        for optimizer, config in configs.items():
            print(f"\n== training tiny Parallax on MAD in-context recall with {optimizer} ({steps} steps) ==", file=sys.stderr)
            results[optimizer] = train(config)
    except RunFolderError as error:
        print(f"parallax-probe demo: error: {error}", file=sys.stderr)
        return 2
    print("\nMuon vs AdamW, tiny preset, MAD in-context recall (same data and seed)\n")
    print(summary_table(results))
    print("\nPer layer at the end of training (COR: mean over heads of mean ||c||/||o_sm||; W_R ranks of r_proj.weight)\n")
    print(layer_table({name: out_dir / name for name in OPTIMIZERS}))
    print(f"\nRun folders: {', '.join(str(out_dir / o) for o in OPTIMIZERS)}  (parallax-probe inspect RUN, parallax-probe analyze RUN RUN)")
    return 0
