"""The README's `make demo` numbers, from the demo's run files: one command makes them.

    .venv/bin/python scripts/readme_demo.py --train --write    # fresh demo in /tmp/parallax-probe-demo, README updated
    .venv/bin/python scripts/readme_demo.py --runs DIR --check # exit 1 if README's tables differ from DIR's

Prints the two Markdown tables (per optimiser: final loss and held-out accuracy; per layer:
final mean COR and W_R stable and effective rank) read from `DIR/muon` and `DIR/adamw`,
the folders `parallax-probe demo --out DIR` writes (seed 0). `--write` puts them into
README.md between the demo-numbers markers. The screenshots come from
scripts/dashboard_screenshots.py, on the same folder.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from parallax_probe.store import COR_MEAN, SCALARS_TABLE, WR_EFFECTIVE_RANK, WR_STABLE_RANK, open_run

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- demo-numbers:begin -->", "<!-- demo-numbers:end -->"
OPTIMIZERS = ("muon", "adamw")
NAMES = {"muon": "Muon", "adamw": "AdamW"}


def _last_finite(values: np.ndarray) -> float:
    return float(values[np.isfinite(values)][-1])


def tables(runs_dir: Path) -> str:
    """The README's demo tables for the runs under `runs_dir`."""
    runs = {name: open_run(runs_dir / name) for name in OPTIMIZERS}
    lines = ["| optimizer | final loss | held-out accuracy (chance 0.125) |", "|---|---|---|"]
    for name, run in runs.items():
        loss, accuracy = run[f"{SCALARS_TABLE}/loss"], run[f"{SCALARS_TABLE}/eval_accuracy"]
        lines.append(f"| {name} | {_last_finite(loss):.3f} | {_last_finite(accuracy):.3f} |")
    lines += [
        "",
        "| layer | "
        + " | ".join(f"{NAMES[n]} {what}" for n in OPTIMIZERS for what in ("COR", "W_R stable rank", "W_R effective rank"))
        + " |",
        "|---" * (1 + 3 * len(OPTIMIZERS)) + "|",
    ]
    layers = runs["muon"].layers
    for layer in range(layers):
        cells = []
        for run in runs.values():
            cor = float(np.asarray(run[COR_MEAN])[-1, layer].mean())  # mean over heads, last logged step
            cells += [f"{cor:.2f}", f"{float(run[WR_STABLE_RANK][-1, layer]):.2f}", f"{float(run[WR_EFFECTIVE_RANK][-1, layer]):.2f}"]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readme_tables(readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[start:end].strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path(tempfile.gettempdir()) / "parallax-probe-demo")
    parser.add_argument("--train", action="store_true", help="run `parallax-probe demo --out RUNS` first (minutes on 2 cores)")
    parser.add_argument("--write", action="store_true", help="put the tables into README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md holds other numbers")
    args = parser.parse_args()
    if args.train:
        subprocess.run([str(Path(sys.executable).with_name("parallax-probe")), "demo", "--out", str(args.runs)], check=True)
    text = tables(args.runs)
    print(text)
    readme = README.read_text()
    if args.write:
        start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
        README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])
    if args.check and readme_tables(readme) != text:
        print(f"README.md's demo numbers differ from those of {args.runs}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
