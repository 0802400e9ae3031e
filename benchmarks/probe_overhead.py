"""Training-step time with no probe, with the probe at every=50 and at every=1.

    python benchmarks/probe_overhead.py                      # tiny preset, CPU
    python benchmarks/probe_overhead.py --preset small --device cuda --batch-size 16 --seq-len 1024
    python benchmarks/probe_overhead.py --model fla --device cuda --batch-size 8 --seq-len 2048 --vocab-size 8192

Each configuration runs the same model, data and optimiser (AdamW, so the step is cheap
and the probe's share is not hidden); configurations are interleaved in rounds so that
drift in machine load hits them alike. Prints the median step time per configuration
and the overhead against no probe, then two estimates that drift between rounds does not swamp
(on the H200, round means of one configuration spread over 20%, so the plain means cannot
resolve 1%):
- paired by round: each configuration's round mean minus no probe's mean in the same round,
  averaged over the rounds, with a 95% Student-t interval;
- at a logging step: for every > 1, how much longer each logging step took than the median step
  of its own round and configuration, and that excess spread over `every` steps. It counts what
  the logging step does (statistics, the device-to-host copy, the store's queue) and not the
  hooks' cost at the other steps, which the paired estimate includes.

    python benchmarks/probe_overhead.py --report RESULT.json   # the same report from a saved result
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from results import add_result_args, read_result, write_result
from scipy import stats as scipy_stats
from training_setup import add_training_args, training_setup

from parallax_probe import Probe

# the configurations, each with its probe's logging cadence
CONFIG_EVERY = {"no probe": None, "every=50": 50, "every=1": 1}


def timed_step_numbers(rounds: int, steps: int) -> list[int]:
    """The step numbers of the timed steps, round after round."""
    # Timed steps count on across rounds, so the W_R spectra come at their cadence over all the
    # timed steps (--spectra-every), not once per round: with a fresh count per round, 100-step
    # rounds took a spectra step in every 100 (about 165 ms on the H200's small preset), which
    # read as probe overhead of 2-3% at every=50. They start at 100 to leave room for retrace().
    return [100 + i for i in range(rounds * steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser, preset="tiny", device="cpu", batch_size=32, seq_len=64, vocab_size=64)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spectra-every", type=int, default=500, help="the probe's default; steps count on across rounds")
    add_result_args(parser, "probe_overhead")
    parser.add_argument("--report", metavar="RESULT_JSON", help="print the report of a saved result; run nothing")
    args = parser.parse_args()
    if args.report:
        report_saved(args.report)
        return

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

    results: dict[str, list[float]] = {name: [] for name in CONFIG_EVERY}
    timed_steps(None, range(args.steps))  # warm-up
    # also warm up the statistics-mode kernel (compiled on its first call): a one-time cost, not overhead
    warm_probe = Probe(model, folder / "warm-up", every=1, spectra_every=1)
    retrace(warm_probe, 100)
    timed_steps(warm_probe, range(100, 100 + args.steps))
    warm_probe.close()
    timed = timed_step_numbers(args.rounds, args.steps)
    for round_index in range(args.rounds):
        first = timed[round_index * args.steps]
        for name, every in CONFIG_EVERY.items():
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

    config = {**{k: v for k, v in vars(args).items() if k not in ("json", "benchmark", "report")},
              "model_name": "fla ParallaxForCausalLM" if args.model == "fla" else f"preset {args.preset}",
              "parameters": sum(p.numel() for p in model.parameters())}
    print("\n" + header(config, f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"))
    records = report(results, timed, args.steps, args.spectra_every)
    write_result(args, records, config=config)


def header(config: dict, where: str) -> str:
    """The first line of the report: model, setting, and where it ran."""
    return (f"probe overhead: {config['model_name']} ({config['parameters'] / 1e6:.0f}M parameters), "
            f"compile {config.get('compile') or 'off'}, batch {config['batch_size']} x {config['seq_len']}, "
            f"{config['rounds']} rounds x {config['steps']} steps, {where}\n")


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan for fewer than two values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, scipy_stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def report(results: dict[str, list[float]], timed: list[int], steps: int, spectra_every: int) -> list[dict]:
    """Print the table and the two drift-resistant estimates; return the result's rows.
    results: step times in seconds per configuration, round after round of `steps` steps,
    at the step numbers `timed`."""
    # The mean, not the median: at every=50 the cost sits in one step of fifty.
    base = statistics.fmean(results["no probe"])
    # Steps at which the probe also took the W_R spectra, told apart: a spectra step is a cost of
    # its own, paid once per --spectra-every steps.
    spectra = [i for i, step in enumerate(timed) if step % spectra_every == 0]
    plain = [i for i, step in enumerate(timed) if step % spectra_every != 0]
    base_plain = statistics.fmean(results["no probe"][i] for i in plain)
    print("| configuration | median step (ms) | mean step (ms) | overhead of the mean vs no probe | "
          "same, spectra steps left out | spectra steps (ms, each) |")
    print("|---|---|---|---|---|---|")
    records = {}
    for name, times in results.items():
        median = statistics.median(times)
        without = statistics.fmean(times[i] for i in plain)
        at_spectra = ", ".join(f"{times[i] * 1e3:.0f}" for i in spectra)
        print(f"| {name} | {median * 1e3:.2f} | {statistics.fmean(times) * 1e3:.2f} | {100 * (statistics.fmean(times) / base - 1):+.1f}% | "
              f"{100 * (without / base_plain - 1):+.1f}% | {at_spectra} |")
        records[name] = {"configuration": name, "median_step_ms": median * 1e3, "mean_step_ms": statistics.fmean(times) * 1e3,
                         "overhead_pct": 100 * (statistics.fmean(times) / base - 1),
                         "overhead_without_spectra_pct": 100 * (without / base_plain - 1),
                         "spectra_step_ms": [times[i] * 1e3 for i in spectra], "step_ms": [t * 1e3 for t in times]}

    rounds = len(timed) // steps
    in_round = [range(r * steps, (r + 1) * steps) for r in range(rounds)]
    print(f"\nDrift-resistant estimates (95% intervals; {rounds} rounds; % of no probe's mean step, {base * 1e3:.2f} ms):\n")
    print("| configuration | paired by round | excess of a logging step (ms) | that excess per step |")
    print("|---|---|---|---|")
    for name, times in results.items():
        if name == "no probe":
            continue
        paired = [statistics.fmean(times[i] for i in idx) - statistics.fmean(results["no probe"][i] for i in idx)
                  for idx in in_round]
        mean, half = mean_interval(paired)
        cells = [f"{100 * mean / base:+.2f}% ± {100 * half / base:.2f}"]
        every = CONFIG_EVERY.get(name)
        if every and every > 1:
            excess = []
            for idx in in_round:
                logging = [i for i in idx if timed[i] % every == 0 and timed[i] % spectra_every != 0]
                others = statistics.median(times[i] for i in idx if timed[i] % every != 0)
                excess += [times[i] - others for i in logging]
            mean_x, half_x = mean_interval(excess)
            cells += [f"{mean_x * 1e3:+.2f} ± {half_x * 1e3:.2f} (n={len(excess)})",
                      f"{100 * mean_x / every / base:+.2f}% ± {100 * half_x / every / base:.2f}"]
            records[name]["logging_step_excess_ms"] = [mean_x * 1e3, half_x * 1e3]
        else:
            cells += ["every step logs", ""]
        records[name]["paired_overhead_pct"] = [100 * mean / base, 100 * half / base]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return list(records.values())


def report_saved(path: str) -> None:
    """The report of a result this script wrote (its JSON: settings and every step's time)."""
    saved = read_result(path, "probe_overhead", frozenset({"configuration", "step_ms"}))
    config = saved["config"]
    results = {row["configuration"]: [t / 1e3 for t in row["step_ms"]] for row in saved["rows"]}
    timed = timed_step_numbers(config["rounds"], config["steps"])
    print(header(config, f"device {saved.get('device')}, torch {saved.get('torch')}; measured {saved['date']}, "
                         f"commit {saved.get('commit')}"))
    report(results, timed, config["steps"], config["spectra_every"])


if __name__ == "__main__":
    main()
