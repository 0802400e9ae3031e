"""Does the order of measurement move the attention benchmark's times? Ours, plain and in
statistics mode, timed as benchmarks/attention.py times them (same inputs, same `time_one`),
eager and graph-replayed, in rounds of alternating order, each time with the GPU's SM clock,
temperature and power sampled while it ran (nvidia-smi every 100 ms). A third time per mode, "eager, no flush": calls
launched back to back with no L2 flush between them (the benchmark's eager time flushes L2
before each call; graph replay does not), so a cold-cache cost shows apart from the order.

    python benchmarks/tools/eager_order.py [--shape 4,16,4096,128] [--rounds 4] [--pass fwd+bwd]

Why: in the 2026-12-05 H200 table (benchmarks/RESULTS.md), plain ours came out 7-8% faster eager
than graph-replayed at the long shapes, while its statistics mode, SDPA, fla and the official
kernel stayed within 3% of their graph times; so statistics mode cost 8% over plain eager and
0.3-2.2% graph-replayed. Host time cannot make 8% of a 4-7 ms call. Plain ours is the first
kernel each shape measures, its eager time first of all, right after compilation has left the
GPU idle. If that is the cause, round 0 here shows it and the later rounds do not. If
statistics mode stays slower eager in every round but not without the flush, the cause is how
its kernels meet a cold L2. What it showed on the H200 (RESULTS.md): the order. Round 0's plain
eager time was 8% below every later time; the flush moved them by 0-2%.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for attention.py and results.py

import attention  # benchmarks/attention.py: its inputs and its timing
import torch

BACK_TO_BACK_CALLS = 50


class GpuSamples:
    """nvidia-smi's SM clock (MHz), temperature (C) and power (W) every 100 ms while the block
    runs; `summary` after it. Without nvidia-smi, or with no sample, the summary says so."""

    QUERY = ["nvidia-smi", "--query-gpu=clocks.sm,temperature.gpu,power.draw", "--format=csv,noheader,nounits",
             "-lms", "100"]

    def __enter__(self):
        try:
            self.process = subprocess.Popen(self.QUERY, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.process = None
        return self

    def __exit__(self, *exc):
        self.rows = []
        if self.process is not None:
            self.process.terminate()
            try:
                out, _ = self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                out, _ = self.process.communicate()
            for line in out.splitlines():
                try:
                    self.rows.append([float(x) for x in line.split(",")[:3]])
                except ValueError:  # a field nvidia-smi cannot read here ("[N/A]")
                    pass

    def summary(self) -> str:
        if not self.rows:
            return "no GPU samples"
        clocks, temperatures, powers = zip(*self.rows)
        return (f"SM clock {min(clocks):.0f}-{max(clocks):.0f} MHz, {max(temperatures):.0f} C, "
                f"{min(powers):.0f}-{max(powers):.0f} W, {len(self.rows)} samples")


def back_to_back_ms(candidate, mode: str) -> float:
    """ms per call over BACK_TO_BACK_CALLS calls launched one after another (after 5 unmeasured
    ones), nothing between them but resetting the gradients: eager, without the L2 flush. The
    calls are the ones `attention.time_one` times."""
    call = attention.one_call(candidate.run, candidate.tensors, mode)
    for _ in range(5):
        call()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(BACK_TO_BACK_CALLS):
        call()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / BACK_TO_BACK_CALLS


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="4,16,4096,128", help="B,H,T,D")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; odd rounds take the kernels in reverse order")
    parser.add_argument("--pass", dest="mode", choices=attention.PASSES, default="fwd+bwd")
    args = parser.parse_args()
    B, H, T, D = (int(x) for x in args.shape.split(","))
    table = attention.candidates(B, H, T, D, parallel_parallax=None, official=None)
    names = ["ours", "ours+stats"]
    print(f"{args.shape} {args.mode}", flush=True)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            candidate = table[name]
            for how in ("eager", "graph", "eager, no flush"):
                with GpuSamples() as gpu:
                    if how == "eager, no flush":
                        ms = back_to_back_ms(candidate, args.mode)
                    else:
                        ms = attention.time_one(candidate.run, candidate.tensors, args.mode, graph=how == "graph")
                print(f"round {round_}  {name:10s} {how:15s}  {ms:.3f} ms  ({gpu.summary()})", flush=True)


if __name__ == "__main__":
    main()
