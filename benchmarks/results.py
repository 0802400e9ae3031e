"""The machine-readable result every benchmark of the suite writes, beside the table it prints.

    parser = argparse.ArgumentParser(...)
    add_result_args(parser, "attention")            # --json PATH (default benchmarks/results/attention.json)
    ...
    write_result(args, rows, config={"shapes": ...})
    result = read_result(path, "attention")         # a saved result, checked (bad input: exit 2)

A result is one JSON object: the benchmark's name, the UTC date, the device, the versions of
Python, torch and triton where importable, the git commit, the command as typed, the
benchmark's own settings and its rows (a list of flat dicts: one per line of its table).
RESULTS.md's tables are made from these files; the files are the record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_result_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.set_defaults(benchmark=name)
    parser.add_argument("--json", default=str(RESULTS_DIR / f"{name}.json"), metavar="PATH",
                        help="where to write the machine-readable result (default: %(default)s)")


def environment() -> dict[str, Any]:
    """Where the numbers come from: device, versions, commit."""
    found: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                             "cpus": _cpu_count()}
    try:
        import torch

        found["torch"] = torch.__version__
        found["device"] = (
            torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
        )
    except ImportError:
        found["device"] = f"CPU ({platform.processor() or platform.machine()})"
    try:
        import triton

        found["triton"] = triton.__version__
    except ImportError:
        pass
    found["commit"] = _git_commit()
    return found


def write_result(args: argparse.Namespace, rows: list[dict[str, Any]], config: dict[str, Any] | None = None) -> Path:
    """Write the result of one benchmark run to args.json and say where."""
    result = {
        "benchmark": args.benchmark,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        **environment(),
        "config": config if config is not None else {k: v for k, v in vars(args).items() if k not in ("json", "benchmark")},
        "rows": rows,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"result: {path}", file=sys.stderr)
    return path


def read_result(path: str | Path, name: str, row_keys: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A result `write_result` wrote for benchmark `name`, each row holding `row_keys`; any other
    file: one line on stderr and exit status 2 (a report reads every file before printing)."""

    def refuse(why: str):
        print(f"{name}: {path}: {why}", file=sys.stderr)
        sys.exit(2)

    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        refuse(f"cannot read a result ({type(exc).__name__}: {exc})")
    if not (isinstance(result, dict) and result.get("benchmark") == name
            and {"date", "command", "config", "rows"} <= result.keys() and isinstance(result["config"], dict)
            and isinstance(result["rows"], list)
            and all(isinstance(row, dict) and row_keys <= row.keys() for row in result["rows"])):
        refuse(f"not a result of benchmarks/{name}.py")
    return result


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None
