"""Same-run A/B of the working tree's Triton kernels against an earlier kernels/parallel.py:
backward alone and the forward plain / in statistics mode, medians of CUDA-graph replays.

    git show REV:kernels/parallel.py > experiments/baseline_parallel.py   # any untracked path
    python benchmarks/kernel_ab.py --baseline experiments/baseline_parallel.py

Both versions run on the same inputs in one process, so the comparison holds on a machine
whose speed drifts between calls. The baseline's module-level custom-op registration is cut
off (the working tree registers the same op names); only its launch functions are used.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch
import triton
from triton.testing import do_bench_cudagraph

from parallax_probe.kernels import parallel as current

SHAPES = [(4, 16, 4096, 128), (8, 16, 1024, 128), (4, 16, 4096, 64)]


def load_baseline(path: Path):
    """Import an earlier parallel.py as a standalone module (relative imports made absolute)."""
    src = path.read_text().replace("from .stats import", "from parallax_probe.kernels.stats import")
    cut = src.find("@torch.library.custom_op(")
    if cut < 0:
        sys.exit(f"{path}: no custom-op registration found; is this a kernels/parallel.py?")
    # triton.jit reads the kernels' source from their file, so the module must live in one
    folder = Path(tempfile.mkdtemp(prefix="kernel-ab-"))
    (folder / "baseline_parallel.py").write_text(src[:cut])
    spec = importlib.util.spec_from_file_location("baseline_parallel", folder / "baseline_parallel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inputs(B, H, T, D):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, r, k, v, do = (torch.randn(B, T, H, D, device="cuda", generator=g).bfloat16() for _ in range(5))
    r = (r.float() / r.float().norm(dim=-1, keepdim=True) * 10).bfloat16()  # ||r|| = 10
    return q, r, k, v, do


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="an earlier kernels/parallel.py")
    args = parser.parse_args()
    baseline = load_baseline(args.baseline)
    versions = {"baseline": baseline, "current": current}
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}\n")
    print("| shape (B,H,T,D) | pass | baseline ms | current ms | change |")
    print("|---|---|---|---|---|")
    for B, H, T, D in SHAPES:
        q, r, k, v, do = inputs(B, H, T, D)
        scale = D**-0.5
        times = {}
        for name, mod in versions.items():
            o, o_sm, o_lo, lse, tbar, _ = mod.parallax_forward(q, r, k, v, scale, 0, False, True)
            times[name, "backward"] = do_bench_cudagraph(
                lambda: mod.parallax_backward(do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, 0), rep=200)
            for stats in (False, True):
                times[name, "forward" + (" + stats" if stats else "")] = do_bench_cudagraph(
                    lambda: mod.parallax_forward(q, r, k, v, scale, 0, stats, False), rep=200)
        for what in ("backward", "forward", "forward + stats"):
            old, new = times["baseline", what], times["current", what]
            print(f"| {B},{H},{T},{D} | {what} | {old:.3f} | {new:.3f} | {100 * (new / old - 1):+.1f}% |")


if __name__ == "__main__":
    main()
