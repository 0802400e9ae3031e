"""Training-step time with no probe, with the probe at every=50 and at every=1.

    python benchmarks/probe_overhead.py                      # tiny preset, CPU
    python benchmarks/probe_overhead.py --preset small --device cuda --batch-size 16 --seq-len 1024
    python benchmarks/probe_overhead.py --model fla --device cuda --batch-size 8 --seq-len 2048 --vocab-size 8192

Each configuration runs the same model, data and optimiser (AdamW, so the step is cheap
and the probe's share is not hidden); configurations are interleaved in rounds so that
drift in machine load hits them alike. Prints the median step time per configuration
and the overhead against no probe.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from results import add_result_args, write_result
from training_setup import add_training_args, training_setup

from parallax_probe import Probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser, preset="tiny", device="cpu", batch_size=32, seq_len=64, vocab_size=64)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spectra-every", type=int, default=500, help="the probe's default; steps count on across rounds")
    add_result_args(parser, "probe_overhead")
    args = parser.parse_args()

    setup = training_setup(args)
    device, model, optimizer, x = setup.device, setup.model, setup.optimizer, setup.x
    folder = Path(tempfile.mkdtemp(prefix="probe-overhead-"))

    def timed_steps(probe: Probe | None, steps) -> list[float]:
        times = []
        for step in steps:
            setup.sync()
            t0 = time.perf_counter()
            with probe.step(step) if probe else nullcontext(), setup.autocast():
                logits = setup.step_model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), x.flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            setup.sync()
            times.append(time.perf_counter() - t0)
        return times

    def retrace(probe: Probe | None, first: int) -> None:
        """With --compile, a graph traced under other hooks (or none) would run on without this
        configuration's hooks: trace afresh, a logging step and (unless every step logs) a
        plain one, untimed, just before `first`."""
        if args.compile:
            torch._dynamo.reset()
            every = probe.every if probe else 1
            logging_step = (first - 2) // every * every
            timed_steps(probe, [logging_step, logging_step + 1])

    configs = {"no probe": None, "every=50": 50, "every=1": 1}
    results: dict[str, list[float]] = {name: [] for name in configs}
    timed_steps(None, range(args.steps))  # warm-up
    # also warm up the statistics-mode kernel (compiled on its first call): a one-time cost, not overhead
    warm_probe = Probe(model, folder / "warm-up", every=1, spectra_every=1)
    retrace(warm_probe, 100)
    timed_steps(warm_probe, range(100, 100 + args.steps))
    warm_probe.close()
    # Timed steps count on across rounds, so the W_R spectra come at their cadence over all the
    # timed steps (--spectra-every), not once per round: with a fresh count per round, 100-step
    # rounds took a spectra step in every 100 (about 165 ms on the H200's small preset), which
    # read as probe overhead of 2-3% at every=50. They start at 100 to leave room for retrace().
    timed = [100 + i for i in range(args.rounds * args.steps)]
    for round_index in range(args.rounds):
        first = timed[round_index * args.steps]
        for name, every in configs.items():
            probe = None
            if every is not None:
                run_dir = folder / f"{name}-{round_index}"
                probe = Probe(model, run_dir, every=every, spectra_every=args.spectra_every, start_step=first - 100)
            retrace(probe, first)
            traced_before = dict(torch._dynamo.utils.counters["stats"])
            results[name] += timed_steps(probe, range(first, first + args.steps))
            if args.compile:  # a graph traced during timed steps would be compile time read as overhead
                compiled = {k: v - traced_before.get(k, 0) for k, v in torch._dynamo.utils.counters["stats"].items()}
                print(f"round {round_index} {name}: Dynamo during the timed steps: {compiled or 'nothing compiled'}; "
                      f"graph breaks so far: {sum(torch._dynamo.utils.counters['graph_break'].values())}")
            if probe:
                probe.close()
    shutil.rmtree(folder, ignore_errors=True)

    # The mean, not the median: at every=50 the cost sits in one step of fifty.
    base = statistics.fmean(results["no probe"])
    parameters = sum(p.numel() for p in model.parameters())
    model_name = "fla ParallaxForCausalLM" if args.model == "fla" else f"preset {args.preset}"
    print(
        f"\nprobe overhead: {model_name} ({parameters / 1e6:.0f}M parameters), device {device}, "
        f"compile {args.compile or 'off'}, batch {args.batch_size} x {args.seq_len}, "
        f"{args.rounds} rounds x {args.steps} steps, torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    # Steps at which the probe also took the W_R spectra, told apart: a spectra step is a cost of
    # its own, paid once per --spectra-every steps.
    spectra = [i for i, step in enumerate(timed) if step % args.spectra_every == 0]
    plain = [i for i, step in enumerate(timed) if step % args.spectra_every != 0]
    base_plain = statistics.fmean(results["no probe"][i] for i in plain)
    print("| configuration | median step (ms) | mean step (ms) | overhead of the mean vs no probe | "
          "same, spectra steps left out | spectra steps (ms, each) |")
    print("|---|---|---|---|---|---|")
    records = []
    for name, times in results.items():
        median = statistics.median(times)
        without = statistics.fmean(times[i] for i in plain)
        at_spectra = ", ".join(f"{times[i] * 1e3:.0f}" for i in spectra)
        print(f"| {name} | {median * 1e3:.2f} | {statistics.fmean(times) * 1e3:.2f} | {100 * (statistics.fmean(times) / base - 1):+.1f}% | "
              f"{100 * (without / base_plain - 1):+.1f}% | {at_spectra} |")
        records.append({"configuration": name, "median_step_ms": median * 1e3, "mean_step_ms": statistics.fmean(times) * 1e3,
                        "overhead_pct": 100 * (statistics.fmean(times) / base - 1),
                        "overhead_without_spectra_pct": 100 * (without / base_plain - 1),
                        "spectra_step_ms": [times[i] * 1e3 for i in spectra], "step_ms": [t * 1e3 for t in times]})
    write_result(args, records, config={**{k: v for k, v in vars(args).items() if k not in ("json", "benchmark")},
                                        "model_name": model_name, "parameters": parameters})


if __name__ == "__main__":
    main()
