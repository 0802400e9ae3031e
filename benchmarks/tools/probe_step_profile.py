"""Where a logging step's extra time goes: forward (with the probe's reduction) versus backward, and a profile.

    python benchmarks/tools/probe_step_profile.py --device cuda      # small preset, batch 16 x 1024, AdamW

Prints, for no probe and for every=1, the median time of the forward (which includes the
probe's end-of-step reduction and its device-to-host copy) and of backward + optimiser
step, each synchronised; then `torch.profiler`'s table of the operators of three logging
steps, by device time and by host time. `benchmarks/probe_overhead.py` measures the
overhead itself; this says where it is.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the suite's shared setup
from training_setup import add_training_args, training_setup

from parallax_probe import Probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser, preset="small", device="cuda", batch_size=16, seq_len=1024, vocab_size=50304)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    setup = training_setup(args)
    device, model, optimizer, x, sync = setup.device, setup.model, setup.optimizer, setup.x, setup.sync
    folder = Path(tempfile.mkdtemp(prefix="probe-profile-"))

    counter = iter(range(1, 10**9))  # the run's steps increase strictly; step 0 would also take the W_R spectra

    def steps(probe: Probe | None, n: int) -> tuple[list[float], list[float]]:
        forward, backward = [], []
        for step in (next(counter) for _ in range(n)):
            sync()
            t0 = time.perf_counter()
            with probe.step(step) if probe else nullcontext(), setup.autocast():
                logits = setup.step_model(x)
            sync()
            t1 = time.perf_counter()
            F.cross_entropy(logits.float().flatten(0, 1), x.flatten()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync()
            forward.append(t1 - t0)
            backward.append(time.perf_counter() - t1)
        return forward, backward

    steps(None, 5)
    probe = Probe(model, folder / "run", every=1, spectra_every=10**9)
    steps(probe, 5)  # compiles the statistics-mode kernel
    print(f"preset {args.preset}, batch {args.batch_size} x {args.seq_len}, {device}, torch {torch.__version__}\n")
    print("| configuration | forward + probe reduction (ms) | backward + optimiser (ms) |")
    print("|---|---|---|")
    for name, p in (("no probe", None), ("every=1", probe), ("no probe", None), ("every=1", probe)):
        forward, backward = steps(p, args.steps)
        print(f"| {name} | {statistics.median(forward) * 1e3:.2f} | {statistics.median(backward) * 1e3:.2f} |")

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as profiler:
        steps(probe, 3)
    probe.close()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print("\nthree logging steps, by device time:\n")
    print(profiler.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
    print("\nby host time:\n")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))


if __name__ == "__main__":
    main()
