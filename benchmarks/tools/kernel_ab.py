"""Same-run A/B of the working tree's Triton kernels against an earlier kernels/parallel.py
(and any number of variant files): backward alone and the forward plain / in statistics mode /
saving residuals, medians of CUDA-graph replays.

    git show REV:kernels/parallel.py > /tmp/baseline_parallel.py   # any path outside the package
    python benchmarks/tools/kernel_ab.py --baseline /tmp/baseline_parallel.py [--variant FILE ...]

All versions run on the same inputs in one process, in alternating rounds (the best of two
medians is kept), so the comparison holds on a machine whose speed drifts between calls; each
version's output and gradients are checked against the baseline's first. The files'
module-level custom-op registration is cut off (the working tree registers the same op names);
only their launch functions are used.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch
import triton
from gpu_check import inputs
from triton.testing import do_bench_cudagraph

from parallax_probe.kernels import parallel as current

SHAPES = [(4, 16, 4096, 128), (8, 16, 1024, 128), (4, 16, 4096, 64)]


def load_kernels(path: Path):
    """Import another parallel.py (an earlier one, or a variant) as a standalone module named
    after its file (relative imports made absolute)."""
    src = path.read_text().replace("from .stats import", "from parallax_probe.kernels.stats import")
    cut = src.find("@torch.library.custom_op(")
    if cut < 0:
        sys.exit(f"{path}: no custom-op registration found; is this a kernels/parallel.py?")
    # triton.jit reads the kernels' source from their file, so the module must live in one
    folder = Path(tempfile.mkdtemp(prefix="kernel-ab-"))
    copy = folder / f"{path.stem}.py"
    copy.write_text(src[:cut])
    spec = importlib.util.spec_from_file_location(path.stem, copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PASSES = ("forward", "forward + stats", "forward, residuals", "backward")


def time_versions(versions: dict, shape) -> dict:
    """{(version, pass): ms}, the best of two rounds; asserts every version computes what the
    first does (same math, so only float32 summation order may differ)."""
    B, H, T, D = shape
    q, r, k, v, do = inputs(B, T, H, H, D)  # bf16, ||r|| = 10, as the sweep's
    scale = D**-0.5
    times, reference = {}, None
    for _ in range(2):
        for name, mod in versions.items():
            o, o_sm, o_lo, lse, tbar, _ = mod.parallax_forward(q, r, k, v, scale, 0, False, True)
            grads = mod.parallax_backward(do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, 0)
            outputs = [t.float() for t in (o, *grads)]
            if reference is None:
                reference = outputs
            for got, want in zip(outputs, reference):
                gap = ((got - want).abs().max() / want.abs().max()).item()
                if not gap < 2e-2:
                    sys.exit(f"{name} at {shape}: an output or gradient differs from the baseline's by {gap:.2e}")
            calls = {
                "forward": functools.partial(mod.parallax_forward, q, r, k, v, scale, 0, False, False),
                "forward + stats": functools.partial(mod.parallax_forward, q, r, k, v, scale, 0, True, False),
                "forward, residuals": functools.partial(mod.parallax_forward, q, r, k, v, scale, 0, False, True),
                "backward": functools.partial(mod.parallax_backward, do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, 0),
            }
            for what, fn in calls.items():
                ms = do_bench_cudagraph(fn, rep=150)
                times[name, what] = min(ms, times.get((name, what), float("inf")))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="an earlier kernels/parallel.py")
    parser.add_argument("--variant", type=Path, action="append", default=[],
                        help="another parallel.py to time beside them (repeatable)")
    parser.add_argument("--shape", action="append", default=[], metavar="B,H,T,D",
                        help=f"a shape to time (repeatable; default: {' '.join(','.join(map(str, s)) for s in SHAPES)})")
    args = parser.parse_args()
    shapes = [tuple(map(int, s.split(","))) for s in args.shape] or SHAPES
    versions = {"baseline": load_kernels(args.baseline), "current": current}
    for path in args.variant:
        versions[path.stem] = load_kernels(path)
    others = list(versions)[1:]
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}\n")
    print("| shape (B,H,T,D) | pass | baseline ms | " + " | ".join(f"{n} ms" for n in others) + " |")
    print("|---|---|---|" + "---|" * len(others))
    for shape in shapes:
        times = time_versions(versions, shape)
        for what in PASSES:
            base = times["baseline", what]
            cells = [f"{times[n, what]:.3f} ({100 * (times[n, what] / base - 1):+.1f}%)" for n in others]
            print(f"| {','.join(map(str, shape))} | {what} | {base:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
