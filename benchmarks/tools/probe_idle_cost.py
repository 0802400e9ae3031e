"""The probe's host cost at a step that is not a logging step, on fla's real model.

    python benchmarks/tools/probe_idle_cost.py [--layers 12] [--calls 20] [--rounds 200]

At a non-logging step the probe's hooks only check a flag: each watched layer's enter and
leave hooks, the wrapper around the attention op, and `probe.step`'s context. On a GPU that
host work runs ahead of the device's and costs nothing unless the step is host-bound; this
measures it as host time so that it can be bounded. fla's `ParallaxForCausalLM` (fla's own
code, its Triton-only pieces swapped for fla's references as the tests do: tests/fla_on_cpu.py)
at a tiny width and one token, so that the forward's arithmetic is small next to its Python;
short rounds of forwards with and without the probe alternate (in ABBA order, so that a drift
in the machine's speed cancels), and the probe's cost is the mean over the rounds of the paired
difference in process CPU time per forward, with a 95% Student-t interval.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # fla on the CPU, as the tests run it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the overhead benchmark's interval
from fla_on_cpu import fla_kernels_on_cpu, tiny_fla_model
from probe_overhead import mean_interval

from parallax_probe import Probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12, help="fla layers (the overhead benchmark's fla model has 12)")
    parser.add_argument("--calls", type=int, default=20, help="forwards per configuration and round")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = tiny_fla_model(layers=args.layers, hidden=64, heads=4, vocab=50, seed=0)
    input_ids = torch.zeros(1, 1, dtype=torch.long)
    folder = Path(tempfile.mkdtemp(prefix="probe-idle-"))
    per_call = {"no probe": [], "probe, not a logging step": []}
    with fla_kernels_on_cpu(), torch.no_grad():
        probe = Probe(model, folder / "run", every=10**9, spectra_every=10**9)  # step 0 logs; the timed steps do not

        def forwards(with_probe: bool) -> float:
            start = time.process_time()
            for step in range(1, args.calls + 1):
                with probe.step(step) if with_probe else nullcontext():
                    model(input_ids)
            return (time.process_time() - start) / args.calls

        with probe.step(0):  # one logging step first: the probe is live, as in training
            model(input_ids)
        forwards(True), forwards(False)  # warm-up
        for index in range(args.rounds):
            order = (True, False) if index % 2 == 0 else (False, True)
            for with_probe in order:
                per_call["probe, not a logging step" if with_probe else "no probe"].append(forwards(with_probe))
        probe.close()
    paired = [(a - b) * 1e6 for a, b in zip(per_call["probe, not a logging step"], per_call["no probe"])]
    mean, half = mean_interval(paired)
    print(f"fla ParallaxForCausalLM, {args.layers} layers, one token, torch {torch.__version__}, 1 thread, "
          f"{args.rounds} rounds x {args.calls} forwards per configuration")
    for name, times in per_call.items():
        print(f"  {name}: median {statistics.median(times) * 1e6:.1f} us per forward")
    print(f"  the probe at a non-logging step, paired by round: {mean:+.1f} us per step (95% interval "
          f"{mean - half:+.1f} to {mean + half:+.1f}), {mean / args.layers:+.2f} us per layer")


if __name__ == "__main__":
    main()
