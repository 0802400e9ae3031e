"""Does the order of measurement move the attention benchmark's times? Ours, plain and in
statistics mode, timed as benchmarks/attention.py times them (same inputs, same `time_one`),
eager and graph-replayed, in rounds of alternating order, each time with the GPU's SM clock,
temperature and power read right after it.

    python benchmarks/tools/eager_order.py [--shape 4,16,4096,128] [--rounds 4] [--pass fwd+bwd]

Why: in the 2026-12-05 H200 table (benchmarks/RESULTS.md), plain ours came out 7-8% faster eager
than graph-replayed at the long shapes, while its statistics mode, SDPA, fla and the official
kernel stayed within 3% of their graph times; so statistics mode cost 8% over plain eager and
0.3-2.2% graph-replayed. Host time cannot make 8% of a 4-7 ms call. Plain ours is the first
kernel each shape measures, its eager time first of all, right after compilation has left the
GPU idle. If that is the cause, round 0 here shows it and the later rounds do not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for attention.py and results.py

import attention  # benchmarks/attention.py: its inputs and its timing


def gpu_state() -> str:
    """SM clock, temperature and power now, as nvidia-smi reports them ('?' where it cannot)."""
    query = ["nvidia-smi", "--query-gpu=clocks.sm,temperature.gpu,power.draw", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="4,16,4096,128", help="B,H,T,D")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; odd rounds take the kernels in reverse order")
    parser.add_argument("--pass", dest="mode", choices=attention.PASSES, default="fwd+bwd")
    args = parser.parse_args()
    B, H, T, D = (int(x) for x in args.shape.split(","))
    table = attention.candidates(B, H, T, D, parallel_parallax=None, official=None)
    names = ["ours", "ours+stats"]
    print(f"{args.shape} {args.mode}; before round 0: {gpu_state()}", flush=True)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            for graph in (False, True):
                candidate = table[name]
                ms = attention.time_one(candidate.run, candidate.tensors, args.mode, graph)
                print(f"round {round_}  {name:10s} {'graph' if graph else 'eager'}  {ms:.3f} ms  "
                      f"(SM clock, temperature, power: {gpu_state()})", flush=True)


if __name__ == "__main__":
    main()
