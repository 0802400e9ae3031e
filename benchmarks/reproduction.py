"""Muon against AdamW on one GPU, with seeds, softmax baselines and the retrofit: the runs behind
docs/reproduction.md, rerunnable with the project's own commands.

    python benchmarks/reproduction.py train --out runs/repro --deadline 540   # call again until it says done
    python benchmarks/reproduction.py status --out runs/repro
    python benchmarks/reproduction.py pack --out runs/repro --to $OUT/repro.tar.gz     # bring the runs back
    .venv/bin/python benchmarks/reproduction.py report --out runs/repro       # the analysis, on any machine
    .venv/bin/python benchmarks/reproduction.py screenshots --out runs/repro  # docs/reproduction-*.png

Arms, every one `parallax-probe train --preset small` on the same byte-level text, sequence
length 1024, batch 16, --steps steps (default 3,000), all on the one GPU at once, in three sets
(`--sets`, default all; one set fits one session of a lent GPU; `--optimizers` picks half of one):

  seeds      parallax-{muon,adamw}-s{0,1,2}  Parallax, seeds 0-2; probe every 50 steps, W_R spectra every 250
  baselines  softmax-{muon,adamw}            the softmax baseline, seed 0
             retrofit-{muon,adamw}           Parallax started from softmax-{optimizer}'s final checkpoint
                                             (`--init-from`: r exactly 0 at step 0), seed 0, same schedule
  scale      deep-{muon,adamw}-s{0,1}        Parallax with 16 layers instead of 8 (`--model n_layers=16`),
                                             the same batch, sequence length and steps, so the same tokens

The text: the .py files of the running interpreter's standard library (its test suites,
site-packages and caches left out), concatenated in path order into OUT/corpus.txt. It ships
with every Python, so the GPU machine needs no download; it is English prose (docstrings,
comments) and code. OUT/corpus.json records the Python version, the file count, the size and
the SHA-256, so a rerun can tell whether it trained on the same bytes.

`train` starts every arm that is not finished (with --resume where a checkpoint exists) and a
retrofit arm once its softmax baseline has finished. At the deadline it sends SIGTERM: each run
stops at the next step boundary, writes its checkpoint and closes its run folder (status
closed), and the next call resumes it without a lost or repeated step. Each arm's output goes to
OUT/logs/ARM.log. `report` writes OUT/report.md: what `parallax-probe analyze --group-by optimizer
--format markdown` prints for the Parallax arms, the retrofit arms and the deep arms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from parallax_probe.run_folder import CHECKPOINT_NAME, RUN_INFO_NAME

OPTIMIZERS = ("muon", "adamw")
SEEDS = (0, 1, 2)
DEEP_LAYERS, DEEP_SEEDS = 16, (0, 1)
PROBE_EVERY, SPECTRA_EVERY, CHECKPOINT_EVERY = 50, 250, 250
STOP_GRACE_S = 60  # from SIGTERM to the end of a step, the checkpoint and the run folder's close (6-8 s in a CPU try)


@dataclass
class Arm:
    name: str
    optimizer: str
    seed: int
    attention: str = "parallax"
    init_from: str | None = None  # the arm whose final checkpoint this one starts from
    extra: list[str] = field(default_factory=list)


# The sets of arms, each small enough for one session of a lent GPU (docs/reproduction.md, "Rerunning
# it"): a retrofit needs its softmax baseline's checkpoint, which stays on the machine that wrote it,
# so the two are one set.
SETS = {
    "seeds": "Parallax, 3 seeds per optimizer",
    "baselines": "the softmax baselines, then the retrofits from them",
    "scale": f"Parallax with {DEEP_LAYERS} layers, {len(DEEP_SEEDS)} seeds per optimizer",
}


def arms(sets=tuple(SETS), optimizers=OPTIMIZERS) -> list[Arm]:
    """The arms of the named sets (all of them by default) that use one of `optimizers`, in the
    order of SETS."""
    found = []
    if "seeds" in sets:
        found += [Arm(f"parallax-{o}-s{s}", o, s) for o in OPTIMIZERS for s in SEEDS]
    if "baselines" in sets:
        found += [Arm(f"softmax-{o}", o, 0, attention="softmax") for o in OPTIMIZERS]
        found += [Arm(f"retrofit-{o}", o, 0, init_from=f"softmax-{o}") for o in OPTIMIZERS]
    if "scale" in sets:
        found += [Arm(f"deep-{o}-s{s}", o, s, extra=["--model", f"n_layers={DEEP_LAYERS}"])
                  for o in OPTIMIZERS for s in DEEP_SEEDS]
    return [arm for arm in found if arm.optimizer in optimizers]


def write_corpus(out: Path) -> Path:
    """OUT/corpus.txt from the standard library's sources (once), and OUT/corpus.json."""
    corpus = out / "corpus.txt"
    if corpus.exists():
        return corpus
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skipped = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = sorted(p for p in stdlib.rglob("*.py") if not skipped & set(p.relative_to(stdlib).parts))
    data = b"".join(p.read_bytes() for p in files)
    out.mkdir(parents=True, exist_ok=True)
    tmp = corpus.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, corpus)
    info = {"python": sys.version.split()[0], "stdlib": str(stdlib), "files": len(files), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}
    (out / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
    return corpus


def run_info(folder: Path) -> dict:
    """The run folder's run.json ({} before it has one)."""
    try:
        return json.loads((folder / RUN_INFO_NAME).read_text())
    except (OSError, ValueError):
        return {}


def finished(folder: Path, steps: int) -> bool:
    """Whether the run in `folder` trained all its steps (its run.json says so)."""
    info = run_info(folder)
    return info.get("completed_steps", 0) >= steps and not info.get("stopped_by")


def steps_trained(out: Path, chosen: list[Arm]) -> int:
    """The steps the arms have trained so far, summed."""
    return sum(run_info(out / arm.name).get("completed_steps", 0) for arm in chosen)


def call_summary(trained: int, seconds: float, steps_left: int) -> str:
    """What one call trained and, at that rate, what the rest would take: the figure that says
    how many more device calls the arms need."""
    if trained <= 0:
        return f"this call: no step trained in {seconds:.0f} s; {steps_left} steps left"
    rate = trained / seconds
    done = f"this call: {trained} steps over all arms in {seconds:.0f} s, {rate:.1f} steps/s counting the arms' start and stop"
    return f"{done}; {steps_left} steps left, about {steps_left / rate:.0f} s at this rate" if steps_left > 0 else f"{done}; none left"


def command(arm: Arm, out: Path, corpus: Path, args: argparse.Namespace) -> list[str]:
    folder = out / arm.name
    cmd = [sys.executable, "-m", "parallax_probe", "train", "--preset", args.preset, "--attention", arm.attention,
           "--optimizer", arm.optimizer, "--seed", str(arm.seed), "--task", f"text:{corpus}", "--seq-len", str(args.seq_len),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--device", args.device,
           "--probe-every", str(PROBE_EVERY), "--spectra-every", str(SPECTRA_EVERY),
           "--checkpoint-every", str(CHECKPOINT_EVERY), "--eval-every", "250", "--log-every", "50",
           "--no-progress", "--out", str(folder)]
    if arm.init_from:
        cmd += ["--init-from", str(out / arm.init_from)]
    if (folder / CHECKPOINT_NAME).exists():
        cmd.append("--resume")
    elif folder.exists():
        cmd.append("--overwrite")  # stopped before its first checkpoint: nothing to resume
    return cmd + arm.extra


def arm_environment(n_arms: int) -> dict[str, str]:
    """The environment each arm runs in: this one, with the CPU's threads shared among the arms
    that run at once (as torchrun does for its processes), unless OMP_NUM_THREADS is set. Left
    alone, every arm's torch would start a thread per core for its CPU ops, and ten arms' idle
    threads would compete with the one thread per arm that launches its kernels."""
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // max(1, n_arms))))
    return env


def train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    corpus = write_corpus(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    chosen = arms(args.sets, args.optimizers)
    trained_before = steps_trained(out, chosen)
    running: dict[str, subprocess.Popen] = {}
    pending = [arm for arm in chosen if not finished(out / arm.name, args.steps)]
    env = arm_environment(len(pending))
    stopping = False
    while pending or running:
        left = args.deadline - (time.monotonic() - start)
        if not stopping:
            for arm in list(pending):
                ready = arm.init_from is None or finished(out / arm.init_from, args.steps)
                if ready and left > STOP_GRACE_S + 60:
                    argv = command(arm, out, corpus, args)
                    with open(out / "logs" / f"{arm.name}.log", "a") as log:  # the child keeps its own handle
                        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
                        log.flush()
                        running[arm.name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
                    pending.remove(arm)
            if left <= STOP_GRACE_S or (not running and pending):
                stopping = True  # out of time, or the only arms left wait on one that cannot run now
                for proc in running.values():
                    proc.send_signal(signal.SIGTERM)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                print(f"[{time.monotonic() - start:6.0f} s] {name}: exit {proc.returncode}", flush=True)
        if stopping and not running:
            break  # every arm stopped: waiting out the deadline would only hold the machine idle
        if stopping and left <= 0:
            for proc in running.values():
                proc.kill()  # loses what came after its last checkpoint, which the next call redoes
            break
        time.sleep(2)
    trained = steps_trained(out, chosen)
    print(call_summary(trained - trained_before, time.monotonic() - start, len(chosen) * args.steps - trained), flush=True)
    return status(args)


def status(args: argparse.Namespace) -> int:
    """One line per arm: its step, and whether it is done. Exit 0 once every arm is."""
    out = Path(args.out)
    done, chosen = 0, arms(args.sets, args.optimizers)
    for arm in chosen:
        folder = out / arm.name
        info = run_info(folder)
        ok = finished(folder, args.steps)
        done += ok
        state = "done" if ok else (f"stopped at step {info['completed_steps']}" if "completed_steps" in info else "not started")
        print(f"{arm.name:20s} {state}")
    print(f"{done}/{len(chosen)} arms done")
    return 0 if done == len(chosen) else 3


# The paper's claims as secondary sources report them (the paper is not in this repository), and
# the rules that decide, per set of arms, whether they reproduce. The rules were fixed before any
# GPU run existed; docs/reproduction.md states them.
CLAIM_COR_MUON_ABOVE, CLAIM_COR_ADAMW_BELOW = 8.0, 4.0  # COR in deep layers
CLAIM_RANK_MUON, CLAIM_RANK_ADAMW, CLAIM_RANK_MAX = 134.0, 9.3, 1024  # W_R stable rank at 0.6B; min(2048, 1024)


def _interval(diff) -> str:
    if diff.difference is None:
        return "n/a"
    if diff.interval_low is None:
        return f"{diff.difference:+.3g} (no interval)"
    return f"{diff.difference:+.3g} [{diff.interval_low:+.3g}, {diff.interval_high:+.3g}]"


def _below_zero(diffs) -> bool | None:
    """Whether every interval of adamw - muon lies below 0 (None: some layer has no interval)."""
    if any(d.interval_high is None for d in diffs):
        return None
    return all(d.interval_high < 0 for d in diffs)


def claims_markdown(report, max_rank: int) -> str:
    """The claims table of one set of arms (a `build_report` of Muon and AdamW runs), with a verdict
    per claim by the fixed rules: COR holds when every deep layer (the second half) has Muon's
    mean above 8 and AdamW's below 4, and is "in direction only" when Muon is higher in every deep
    layer with every interval of adamw - muon below 0; the rank claim holds in direction when
    Muon's final stable rank is higher in every layer with every interval below 0. `max_rank` is
    min(m, n) of these runs' W_R, to set the ranks beside the paper's on one scale."""
    groups = {g.name: g for g in report.groups}
    if set(groups) != {"adamw", "muon"}:
        return f"No claims table: it needs the groups adamw and muon, and these runs make {sorted(groups) or 'none'}.\n"
    from parallax_probe.analysis.report import COMPARED_STATISTICS

    by_statistic = {c.statistic: c for c in report.comparisons}
    described = dict(COMPARED_STATISTICS)
    cor, rank = by_statistic.get(described["final_cor"]), by_statistic.get(described["final_stable_rank"])
    muon, adamw = groups["muon"].layers, groups["adamw"].layers
    n_layers = len(muon)
    deep = list(range(n_layers // 2, n_layers))
    with_intervals = any(d.interval_low is not None for c in (cor, rank) if c for d in c.layers)
    lines = [f"Groups: muon ({len(groups['muon'].runs)} runs), adamw ({len(groups['adamw'].runs)} runs); "
             f"{n_layers} layers, deep = layers {deep[0]}-{deep[-1]}. Differences are adamw - muon, " +
             (f"with {report.settings.confidence:.0%} percentile bootstrap intervals." if with_intervals
              else "without intervals (fewer than 3 runs per group)."), "",
             "| layer | COR muon | COR adamw | COR adamw - muon | W_R stable rank muon | W_R stable rank adamw | rank adamw - muon |",
             "|---|---|---|---|---|---|---|"]
    for layer in range(n_layers):
        lines.append(
            f"| {layer}{' (deep)' if layer in deep else ''} | {muon[layer].final_cor:.3g} | {adamw[layer].final_cor:.3g} | "
            f"{_interval(cor.layers[layer]) if cor else 'n/a'} | {muon[layer].final_stable_rank:.3g} | "
            f"{adamw[layer].final_stable_rank:.3g} | {_interval(rank.layers[layer]) if rank else 'n/a'} |"
        )
    verdicts = []
    if cor is not None:
        deep_muon = [muon[i].final_cor for i in deep]
        deep_adamw = [adamw[i].final_cor for i in deep]
        thresholds = all(m > CLAIM_COR_MUON_ABOVE for m in deep_muon) and all(a < CLAIM_COR_ADAMW_BELOW for a in deep_adamw)
        higher = all(m > a for m, a in zip(deep_muon, deep_adamw))
        separated = _below_zero([cor.layers[i] for i in deep])
        if thresholds and separated is not False:
            verdict = "holds"
        elif higher and separated:
            verdict = "in direction only (Muon higher in every deep layer, intervals below 0; thresholds not met)"
        elif higher and separated is None:
            verdict = "in direction only, without intervals (fewer than 3 runs per group)"
        else:
            verdict = "does not reproduce"
        verdicts.append(f"- **COR > {CLAIM_COR_MUON_ABOVE:g} in deep layers under Muon, < {CLAIM_COR_ADAMW_BELOW:g} under AdamW**: "
                        f"{verdict}. Deep layers: Muon {min(deep_muon):.3g}-{max(deep_muon):.3g}, "
                        f"AdamW {min(deep_adamw):.3g}-{max(deep_adamw):.3g}.")
    if rank is not None:
        ranks_muon = [layer.final_stable_rank for layer in muon]
        ranks_adamw = [layer.final_stable_rank for layer in adamw]
        higher = all(m > a for m, a in zip(ranks_muon, ranks_adamw))
        separated = _below_zero(rank.layers)
        if higher and separated:
            verdict = "holds in direction (Muon higher in every layer, intervals below 0)"
        elif higher and separated is None:
            verdict = "holds in direction, without intervals (fewer than 3 runs per group)"
        else:
            verdict = "does not reproduce"
        mean_muon, mean_adamw = sum(ranks_muon) / n_layers, sum(ranks_adamw) / n_layers
        verdicts.append(
            f"- **W_R keeps its rank under Muon, loses it under AdamW** (reported: {CLAIM_RANK_MUON:g} against "
            f"{CLAIM_RANK_ADAMW:g} at 0.6B, {CLAIM_RANK_MUON / CLAIM_RANK_MAX:.3g} and {CLAIM_RANK_ADAMW / CLAIM_RANK_MAX:.3g} "
            f"of min(m, n) = {CLAIM_RANK_MAX} if W_R has the query projection's shape; ratio {CLAIM_RANK_MUON / CLAIM_RANK_ADAMW:.1f}): "
            f"{verdict}. Mean over layers: Muon {mean_muon:.3g}, AdamW {mean_adamw:.3g} "
            f"({mean_muon / max_rank:.3g} and {mean_adamw / max_rank:.3g} of min(m, n) = {max_rank}); ratio {mean_muon / mean_adamw:.1f}."
        )
    return "\n".join(lines + [""] + verdicts) + "\n"


def _max_rank(run) -> int:
    """min(m, n) of the run's W_R, (n_heads * head_dim, d_model), from its recorded model config."""
    config = run.meta.get("config") or {}
    model = config.get("model_config") if isinstance(config, dict) else None
    return min(model["n_heads"] * model["head_dim"], model["d_model"]) if model else 1


def held_out_table(out: Path, chosen: list[Arm]) -> str:
    """Per arm: what it starts from (a retrofit continues its baseline's training, so it has seen
    the text more often), the last held-out evaluation (loss, accuracy, at which step), so the
    softmax baselines, the retrofits and the Parallax arms can be set side by side; and the lowest
    held-out loss with its step, which says whether the last one is past it (memorisation)."""
    import numpy as np

    from parallax_probe.store import SCALARS_STEP, open_run

    lines = ["| arm | starts from | evaluated at step | held-out loss | held-out accuracy | lowest held-out loss (step) |",
             "|---|---|---|---|---|---|"]
    for arm in chosen:
        if not (out / arm.name).is_dir():
            continue
        arm_cells = f"{arm.name} | " + (f"{arm.init_from}'s last weights" if arm.init_from else "random weights")
        run = open_run(out / arm.name)
        evaluated = np.array([], dtype=int)
        if "scalars/eval_loss" in run.names():
            steps, loss, accuracy = run[SCALARS_STEP], run["scalars/eval_loss"], run["scalars/eval_accuracy"]
            evaluated = np.flatnonzero(np.isfinite(loss))
        if evaluated.size == 0:
            lines.append(f"| {arm_cells} | not evaluated yet | | | |")
            continue
        last, lowest = evaluated[-1], evaluated[np.argmin(loss[evaluated])]
        lines.append(f"| {arm_cells} | {int(steps[last])} | {loss[last]:.4f} | {accuracy[last]:.4f} | "
                     f"{loss[lowest]:.4f} ({int(steps[lowest])}) |")
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> int:
    """OUT/report.md: every arm's held-out loss, then per set of arms (Parallax, retrofit, deep, where
    run) what `parallax-probe analyze --group-by optimizer --format markdown` prints, after the
    claims table of the Parallax and deep arms. Each set's runs are read and analysed once."""
    from parallax_probe.analysis import build_report, render_markdown
    from parallax_probe.store import open_run

    out = Path(args.out)
    sections = [f"## Held-out loss of every arm\n\n{held_out_table(out, arms())}"]
    # (title, arms, with the claims table): the softmax baselines have no correction branch to analyse
    sections_of = [("Parallax arms, 3 seeds per optimizer", arms(["seeds"]), True),
                   ("Retrofit arms", [a for a in arms(["baselines"]) if a.init_from], False),
                   (f"Scale step: {DEEP_LAYERS} layers, {len(DEEP_SEEDS)} seeds per optimizer", arms(["scale"]), True)]
    for title, chosen, with_claims in sections_of:
        folders = [out / a.name for a in chosen if (out / a.name).exists()]
        if not folders:
            continue
        try:
            runs = [open_run(folder) for folder in folders]
        except Exception as error:  # one unreadable arm: say so, and go on with the other sets
            sections.append(f"## {title}\n\nnot analysed: {' '.join(str(error).split())}\n")
            continue
        analysis = build_report(runs, group_by="optimizer")
        claims = f"### Claims\n\n{claims_markdown(analysis, _max_rank(runs[0]))}\n### analyze\n\n" if with_claims else ""
        sections.append(f"## {title}\n\n{claims}{render_markdown(analysis)}")
    (out / "report.md").write_text("\n".join(sections))
    print(out / "report.md")
    return 0


# The dashboard's views (scripts/dashboard_screenshots.py, VIEW_SETS) for each set's Parallax arms;
# the softmax baselines have no probe to show.
SCREENSHOT_VIEWS = {"seeds": "reproduction", "baselines": "retrofit", "scale": "scale"}


def screenshot_runs(out: Path) -> dict[str, list[str]]:
    """{view set: the runs it shows}: each set's Parallax arms that OUT holds, for the sets that have any."""
    shown = {views: [arm.name for arm in arms([set_name]) if arm.attention == "parallax" and (out / arm.name).is_dir()]
             for set_name, views in SCREENSHOT_VIEWS.items()}
    return {views: names for views, names in shown.items() if names}


def screenshots(args: argparse.Namespace) -> int:
    """docs/reproduction-*.png: the dashboard on OUT, once per set that has run, showing that set's
    Parallax arms alone."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "dashboard_screenshots.py"
    for views, names in screenshot_runs(Path(args.out)).items():
        command = [sys.executable, str(script), "--runs", args.out, "--views", views, *(f"--run={name}" for name in names)]
        if code := subprocess.run(command).returncode:
            return code
    return 0


# What `pack` leaves out: the checkpoints (a `small` arm's weights and optimiser state, hundreds of
# MB each) and the corpus, which `train` rebuilds from the interpreter (corpus.json checks it).
PACK_LEFT_OUT = ("checkpoint*.pt", "corpus.txt", "*.tmp")
PACK_LIMIT_BYTES = 16 * 2**20  # what one file brought back from a device call may hold


def pack(args: argparse.Namespace) -> int:
    """One .tar.gz of the run folders (probe data, scalars, run.json), the logs and corpus.json,
    without checkpoints: what `report` and `screenshots` need, small enough to bring back from a
    device call. Unpack it with `tar xzf FILE -C OUT`."""
    import fnmatch
    import tarfile

    out, target = Path(args.out), Path(args.to)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if any(fnmatch.fnmatch(Path(info.name).name, pattern) for pattern in PACK_LEFT_OUT) else info

    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(out.iterdir()):
            archive.add(path, arcname=path.name, filter=keep)
    size = target.stat().st_size
    print(f"{target}: {size / 2**20:.1f} MiB")
    if size > PACK_LIMIT_BYTES:
        print(f"pack: {target} is over {PACK_LIMIT_BYTES // 2**20} MiB, more than one file from a device call may hold",
              file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("train", "status", "report", "screenshots", "pack"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
        if name == "pack":
            p.add_argument("--to", required=True, help="the .tar.gz to write")
            continue
        p.add_argument("--steps", type=int, default=3000)
        p.add_argument("--sets", nargs="+", choices=tuple(SETS), default=list(SETS), metavar="SET",
                       help="the sets of arms (default: all): " + "; ".join(f"{k}: {v}" for k, v in SETS.items()))
        if name in ("train", "status"):
            p.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS), metavar="OPTIMIZER",
                           help="only the arms of these optimizers (default: both): a set too long for one session "
                                "trains in two, `--optimizers muon` in one and `--optimizers adamw` in the next")
        if name == "train":
            p.add_argument("--deadline", type=float, default=540, help="seconds this call may take")
            p.add_argument("--batch-size", type=int, default=16)
            p.add_argument("--device", default="cuda")
            p.add_argument("--preset", default="small", help="(a smaller one only to try the script out)")
            p.add_argument("--seq-len", type=int, default=1024)
    args = parser.parse_args(argv)
    actions = {"train": train, "status": status, "report": report, "screenshots": screenshots, "pack": pack}
    return actions[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
