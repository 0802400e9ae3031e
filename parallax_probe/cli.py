"""`parallax-probe` (and `python -m parallax_probe`): train, trace, scan, demo, inspect, repair, analyze, dashboard.

Bad input gets one line on stderr and exit code 2, before anything on disk is touched.
Heavy imports (torch) happen inside the subcommands that need them, so `inspect`,
`analyze` and `dashboard` start fast and work without torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A user error: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit 2), as the rest of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(cast, accept, expected: str):
    """An argparse type: `cast` the text, then require `accept(value)`; errors say `expected`."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_tcp_port = _number(int, lambda v: 1 <= v <= 65535, "a TCP port from 1 to 65535")


def _key_value(text: str) -> tuple[str, int | float | str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    for cast in (int, float):
        try:
            return key.replace("-", "_"), cast(raw)
        except ValueError:
            pass
    return key.replace("-", "_"), raw


def _model_field(text: str) -> tuple[str, int | float | bool]:
    from .config import parse_model_field

    try:
        return parse_model_field(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The train flags: defaults and choices come from the config dataclasses (no torch import)."""
    from .config import (
        ATTENTION_KINDS,
        BACKENDS,
        MODEL_FLAG_FIELDS,
        OPTIMIZER_NAMES,
        PRESETS,
        SCHEDULE_NAMES,
        WR_INITS,
        ModelConfig,
        OptimizerConfig,
        TrainConfig,
        default_of,
    )
    from .data.mad import MAD_TASKS

    def train(name: str):
        return default_of(TrainConfig, name)

    model = p.add_argument_group("model")
    model.add_argument("--preset", default=train("preset"), choices=sorted(PRESETS), help=f"model size (default: {train('preset')})")
    model.add_argument("--attention", default=default_of(ModelConfig, "attention"), choices=ATTENTION_KINDS,
                       help="parallax, or the softmax baseline")
    model.add_argument("--wr-init", default=default_of(ModelConfig, "wr_init"), choices=WR_INITS,
                       help="zero: start as exact softmax attention")
    model.add_argument("--window", type=_positive_int, default=None, help="sliding window W (keys i-W < j <= i)")
    model.add_argument("--backend", default=default_of(ModelConfig, "attention_backend"), choices=BACKENDS,
                       help="attention implementation")
    model.add_argument("--model", type=_model_field, action="append", default=[], metavar="FIELD=VALUE",
                       help=f"replace one field of the preset (repeatable), e.g. --model n_layers=16: {', '.join(MODEL_FLAG_FIELDS)}")
    model.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                       help="train through torch.compile (default backend: inductor; aot_eager traces only)")
    model.add_argument("--vocab-size", type=_positive_int, default=None, help="model vocabulary for bin: tasks")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--optimizer", default=default_of(OptimizerConfig, "name"), choices=OPTIMIZER_NAMES,
                     help="muon (hidden matrices) + AdamW, or AdamW alone")
    opt.add_argument("--lr", type=_positive_float, default=None, help="peak lr of the main group (Muon's under muon, AdamW's under adamw)")
    opt.add_argument("--adamw-lr", type=_positive_float, default=None, help="AdamW lr for embeddings/head/norms under muon")
    opt.add_argument("--weight-decay", type=float, default=default_of(OptimizerConfig, "weight_decay"))
    opt.add_argument("--schedule", default=default_of(OptimizerConfig, "schedule"), choices=SCHEDULE_NAMES)
    opt.add_argument("--warmup-steps", type=_non_negative_int, default=None,
                     help=f"default: min({default_of(OptimizerConfig, 'warmup_steps')}, steps/10)")
    data = p.add_argument_group("data")
    data.add_argument("--task", default=train("task"), help=f"a MAD task ({', '.join(MAD_TASKS)}), text:PATH or bin:GLOB")
    data.add_argument("--seq-len", type=_positive_int, default=None, help="sequence length (default: the task's)")
    data.add_argument(
        "--mad", type=_key_value, action="append", default=[], metavar="KNOB=VALUE", help="MAD task knob, e.g. --mad vocab_size=32"
    )
    run = p.add_argument_group("run")
    run.add_argument("--steps", type=_positive_int, default=train("steps"))
    run.add_argument("--batch-size", type=_positive_int, default=train("batch_size"), help="global batch in sequences")
    run.add_argument("--seed", type=int, default=train("seed"))
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    run.add_argument("--out", default=train("out"), help="run folder (probe segments, checkpoint, run.json)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    run.add_argument("--eval-every", type=_positive_int, default=train("eval_every"))
    run.add_argument("--log-every", type=_positive_int, default=train("log_every"))
    run.add_argument("--checkpoint-every", type=_positive_int, default=train("checkpoint_every"))
    run.add_argument("--probe-every", type=_non_negative_int, default=train("probe_every"), help="probe statistics every N steps (0: off)")
    run.add_argument("--spectra-every", type=_non_negative_int, default=train("spectra_every"),
                     help="W_R spectra every N steps (0: only at the end)")
    run.add_argument("--fsdp", action="store_true",
                     help="under torchrun: shard the model over the ranks with FSDP2 instead of DDP (docs/distributed.md)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--tracker", action="append", default=[], metavar="tensorboard:DIR|wandb:PROJECT",
                     help="also send per-layer summaries to TensorBoard or a new W&B run (repeatable)")


def add_trajectory_arguments(p: argparse.ArgumentParser) -> None:
    """train's retrofit and checkpoint-trajectory flags."""
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from a softmax model: a parallax-probe softmax run (its checkpoint.pt, or a kept "
                        "checkpoints/step-N.pt) or a local Hugging Face Qwen3 folder, whose shape replaces --preset; r starts at "
                        "exactly 0 (its norm's gain is zeroed) and grows as the gain learns")
    p.add_argument("--keep-checkpoints", type=_non_negative_int, default=0, metavar="EVERY",
                   help="also keep the weights every EVERY steps in checkpoints/step-N.pt, for `parallax-probe scan` (0: none)")


def train_config_from_args(args: argparse.Namespace):
    from .config import OptimizerConfig, TrainConfig, default_warmup_steps

    optimizer = OptimizerConfig(
        name=args.optimizer,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else default_warmup_steps(args.steps),
        **({"muon_lr": args.lr} if args.lr and args.optimizer == "muon" else {}),
        **({"adamw_lr": args.lr} if args.lr and args.optimizer == "adamw" else {}),
        **({"adamw_lr": args.adamw_lr} if args.adamw_lr else {}),
    )
    model_overrides = {**dict(args.model), "attention": args.attention, "wr_init": args.wr_init, "attention_backend": args.backend}
    if args.window is not None:
        model_overrides["window"] = args.window
    return TrainConfig(
        preset=args.preset, model_overrides=model_overrides, optimizer=optimizer, task=args.task, seq_len=args.seq_len,
        mad_overrides=dict(args.mad), vocab_size=args.vocab_size, steps=args.steps, batch_size=args.batch_size,
        seed=args.seed, device=args.device, out=args.out, resume=args.resume, overwrite=args.overwrite,
        eval_every=args.eval_every, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        probe_every=args.probe_every, spectra_every=args.spectra_every, progress=not args.no_progress,
        compile=args.compile, trackers=list(args.tracker), fsdp=args.fsdp, init_from=args.init_from,
        keep_checkpoints=args.keep_checkpoints,
    )


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from .data import TaskSpecError
    from .distributed import exit_without_teardown, under_torchrun
    from .train import DiskFullError, RunFolderError, train

    try:
        cfg = train_config_from_args(args)
        result = train(cfg)
    except (TaskSpecError, RunFolderError, ValueError) as error:
        raise BadInput(str(error)) from error
    except DiskFullError as error:
        print(f"parallax-probe train: error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Not a normal exit: HDF5 flushes every file still open at exit, and the segment whose
        # flush just failed on the full disk made that crash the interpreter (exit 139).
        os._exit(EXIT_BAD_INPUT)
    code = report_training(result)
    if under_torchrun():
        exit_without_teardown(code)  # the run is closed; gloo's teardown at exit can abort a finished worker
    return code


def report_training(result) -> int:
    """Rank 0's line on how training went; the exit status."""
    import signal

    if result.stopped_by is not None:
        if result.is_main_process:
            print(f"{result.out}: stopped by {result.stopped_by} after step {result.steps - 1}; checkpoint written, run closed; "
                  f"continue with --resume", file=sys.stderr)
        # the shell's convention for a process a signal ended: 128 + the signal's number
        return 128 + signal.Signals[result.stopped_by].value
    if not result.is_main_process:
        return 0
    print(
        f"{result.out}: {result.steps} steps in {result.seconds:.1f} s, final loss {result.final_loss:.4f}, "
        f"held-out accuracy {result.eval_accuracy:.3f} (chance {result.chance_accuracy:.3f}), "
        f"{result.tokens_per_second:,.0f} tokens/s"
    )
    return 0


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", metavar="MODEL", help="a run folder, its checkpoint.pt, or a local Hugging Face folder of an fla Parallax model"
    )
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", metavar="TEXT", help="text, tokenised by the model's own tokenizer (byte-level, or tokenizer.json)")
    given.add_argument(
        "--tokens", metavar="FILE", help="token ids: a .npy integer array, or text with one id per line (or separated by spaces)"
    )
    p.add_argument("--out", default="trace.h5", metavar="TRACE.h5", help="the trace file (default: trace.h5)")
    p.add_argument("--maps", default="auto", metavar="SPEC",
                   help="which (layer, head) T x T maps of p and w to store: auto (all while small, else head 0 of each "
                        "layer), all, none, or a list such as 0:1,3 (layer 0 head 1, every head of layer 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")


def cmd_trace(args: argparse.Namespace) -> int:
    import time

    from .load import ModelLoadError
    from .trace import TraceInputError, run_trace

    started = time.perf_counter()
    try:
        out, trace, tokens = run_trace(args.model, prompt=args.prompt, tokens_file=args.tokens, out=args.out, maps=args.maps,
                                       overwrite=args.overwrite, device=args.device)
    except (TraceInputError, ModelLoadError) as error:
        raise BadInput(str(error)) from error
    L, H, T = trace.per_token["cor"].shape
    print(f"{out}: {T} tokens, {L} layers x {H} heads, p and w maps of {len(trace.maps)} (layer, head) pairs, "
          f"{time.perf_counter() - started:.1f} s")
    return 0


def add_scan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINTS",
                   help="step-N.pt / checkpoint.pt files, run folders with checkpoints/ (train --keep-checkpoints), or Hugging "
                        "Face folders named step-N or checkpoint-N")
    p.add_argument("--eval", required=True, metavar="TASK_OR_FILE",
                   help="the fixed batch: a .npy of ids (B, T), a text file of ids (one sequence per line), or a task "
                        "(MAD name, text:PATH, bin:GLOB) whose first held-out batch is taken")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to write (a second call adds the missing steps)")
    p.add_argument("--eval-batch-size", type=_positive_int, default=8, help="sequences taken from a task (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="the task's data seed (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_scan(args: argparse.Namespace) -> int:
    from .load import ModelLoadError
    from .scan import ScanInputError, scan

    try:
        scanned, skipped = scan(args.checkpoints, eval_spec=args.eval, out=args.out, device=args.device,
                                batch_size=args.eval_batch_size, seed=args.seed, progress=not args.no_progress)
    except (ScanInputError, ModelLoadError) as error:
        raise BadInput(str(error)) from error
    already = f"; {len(skipped)} already in the run, skipped" if skipped else ""
    print(f"{args.out}: scanned {len(scanned)} checkpoint(s)" + (f" (steps {scanned[0]} to {scanned[-1]})" if scanned else "") + already)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import run_demo

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise BadInput(f"--out {args.out} is a file; the demo writes two run folders into a folder, choose another --out")

    return run_demo(out=args.out, steps=args.steps, overwrite=not args.keep)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .run_summary import format_run_summary
    from .store import RunFileError, open_run

    try:
        summary = format_run_summary(open_run(args.run))  # reading the rows can find damage too
    except (RunFileError, FileNotFoundError, OSError) as error:
        raise BadInput(str(error)) from error
    print(summary)
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from .store import RunFileError, repair_run

    try:
        for line in repair_run(args.run):
            print(line)
    except (RunFileError, FileNotFoundError, OSError) as error:
        raise BadInput(str(error)) from error
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis.report import analyze_main

    return analyze_main(
        args.runs, group_by=args.group_by, fmt=args.format, out=sys.stdout, err=sys.stderr,
        merge_configurations=args.merge_configurations,
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    import socket

    from .dashboards.serve import WILDCARD_HOSTS, serve

    if args.host not in WILDCARD_HOSTS:
        try:
            socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise BadInput(f"--host {args.host}: not an address of this machine ({error}); use 127.0.0.1, or a name or "
                           "address this machine has") from None
    return serve(args.runs_dir, port=args.port, host=args.host)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="parallax-probe", description="Measure how Parallax attention's correction branch is used in training.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser(
        "train",
        help="train a model (Muon or AdamW) with the probe attached",
        description="Train a Parallax (or softmax) LM; the probe writes its run folder beside the checkpoint.",
    )
    add_train_arguments(p)
    add_trajectory_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("trace", help="token-level trace of one prompt: COR, p and the effective weights w",
                       description="Per layer, head and token: COR, ||o_sm||, ||c||, ||r||, tbar, negative and sink mass; "
                                   "T x T maps of p and w for the heads asked for; one HDF5 file (docs/file-format.md).")
    add_trace_arguments(p)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("scan", help="probe statistics and W_R spectra of saved checkpoints, into a run folder",
                       description="For each checkpoint, in step order: the probe on a fixed evaluation batch and W_R's "
                                   "spectra, written as an ordinary run (step = the checkpoint's step); resumable.")
    add_scan_arguments(p)
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser(
        "demo",
        help="tiny Muon vs AdamW runs on MAD in-context recall, side by side",
        description="Train the tiny preset twice (Muon, AdamW) on the same data and seed, and compare them.",
    )
    p.add_argument("--out", default="runs/demo", help="folder for the two runs (default: runs/demo)")
    p.add_argument("--steps", type=_positive_int, default=None, help="training steps per run (default: the demo's own)")
    p.add_argument("--keep", action="store_true", help="refuse to replace existing demo runs instead of overwriting them")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "inspect",
        help="summarise a run folder",
        description="Layers, heads, steps logged, status, and per-layer COR and W_R ranks at the last step.",
    )
    p.add_argument("run", help="run folder (or one segment file)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "repair",
        help="write clean, closed copies of a run's crashed segments",
        description="Replace each crashed segment by a clean copy of its committed rows (the original is kept as *.crashed).",
    )
    p.add_argument("run", help="run folder")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser(
        "analyze",
        help="rank-collapse statistics and a Muon-vs-AdamW report",
        description="Per layer: final COR and W_R ranks per group, collapse onsets, group differences with intervals.",
    )
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--group-by", default="optimizer", help="metadata key that splits runs into groups (default: optimizer)")
    p.add_argument(
        "--merge-configurations", action="store_true",
        help="average runs of one group label even when they were trained differently (by default: one group per configuration)",
    )
    p.add_argument("--format", default="text", choices=("text", "json", "markdown"))
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "dashboard",
        help="serve the Streamlit dashboard on a runs folder",
        description="Compare runs layer by layer in the browser (bound to 127.0.0.1 unless --host is given).",
    )
    p.add_argument("runs_dir", nargs="?", default="runs", help="folder holding run folders (default: runs)")
    p.add_argument("--port", type=_tcp_port, default=8501)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback exposes the dashboard")
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BadInput as error:
        print(f"parallax-probe {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
