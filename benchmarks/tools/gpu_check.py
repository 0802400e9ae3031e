"""One device call's worth of kernel work: correctness of each candidate tile config at a
real shape, then its time at the benchmark's shapes, and the fastest correct config per kernel.

    python benchmarks/tools/gpu_check.py [--out DIR]

Correctness uses the tests' rule: relative error against float64 at most twice the
reference's at the same precision. Timing: medians of CUDA-graph replays
(triton.testing.do_bench_cudagraph), as benchmarks/attention.py times. A config that
fails to compile or to run is reported, not fatal (this is a sweep, not a test).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import time
import traceback

import torch
import triton
from triton.testing import do_bench_cudagraph

from parallax_probe.kernels import parallel
from parallax_probe.kernels.parallel import BackwardConfig, TileConfig
from parallax_probe.kernels.reference import parallax_attention_reference

# Candidates that compile for sm_90 without spilling in their loops (cuobjdump -res-usage
# and the loop SASS of an ahead-of-time build; see kernels/NOTES.md). The defaults the sweeps
# chose are in kernels/parallel.py (forward_config, backward_config). Configs of 4 warps
# whose registers (<= 255 x 128 threads) and shared memory (<= ~113 KB) fit two programs
# on one SM let the scheduler run one program's softmax while the other's products run.
T_ = TileConfig
FORWARD_CANDIDATES = {
    128: [T_(128, 64, 8, 3), T_(64, 64, 4, 2)],
    64: [T_(64, 64, 4, 3)],
}
# split: a dK/dV kernel (kv) and a dQ/dR kernel (q); the fused kernel measured slower at both
# head dims (NOTES.md, version 2) and is left to the tests. Each kernel's candidates are
# varied with the other kernel at its default.
_KV128, _Q128 = T_(32, 64, 4, 3), T_(128, 64, 8, 3)
BACKWARD_CANDIDATES = {
    128: [BackwardConfig(_KV128, _Q128), BackwardConfig(T_(32, 128, 8, 3), _Q128)],
    64: [BackwardConfig(T_(64, 64, 4, 3), T_(64, 64, 4, 3))],
}
# timed shapes (B, H, T): the forward over sequence lengths (its programs' fixed costs weigh
# more in short rows), the backward at the benchmark's reference and short-row shapes
TIMED_SHAPES = {
    "forward": [(16, 16, 512), (8, 16, 1024), (8, 16, 2048), (4, 16, 4096), (2, 16, 8192)],
    "backward": [(4, 16, 4096), (8, 16, 1024)],
}


def relative_error(x, exact):
    return ((x.double() - exact).norm() / exact.norm()).item()


def inputs(B, T, HQ, HK, D, r_norm=10.0, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, T, HQ, D, device="cuda", generator=g)
    r = torch.randn(B, T, HQ, D, device="cuda", generator=g)
    r = r / r.norm(dim=-1, keepdim=True) * r_norm
    k = torch.randn(B, T, HK, D, device="cuda", generator=g)
    v = torch.randn(B, T, HK, D, device="cuda", generator=g)
    do = torch.randn(B, T, HQ, D, device="cuda", generator=g)
    return [t.bfloat16() for t in (q, r, k, v, do)]


def reference_with_grads(q, r, k, v, do, scale, window, dtype):
    ins = [t.to(dtype).detach().requires_grad_() for t in (q, r, k, v)]
    o = parallax_attention_reference(*ins, scale=scale, window=window)
    o.backward(do.to(o.dtype))
    return o.detach(), [t.grad for t in ins]


def check_config(kind, config, D, log):
    """Ratios (kernel error / reference error vs float64) for o or for the four grads."""
    B, T, HQ, HK, W = 1, 1500, 4, 2, None
    q, r, k, v, do = inputs(B, T, HQ, HK, D, seed=D + len(log))
    scale = D**-0.5
    o64, g64 = reference_with_grads(q, r, k, v, do, scale, W, torch.float64)
    o_lo, g_lo = reference_with_grads(q, r, k, v, do, scale, W, torch.bfloat16)
    fwd_cfg = config if kind == "forward" else None
    o, o_sm, o_lo_res, lse, tbar, _ = parallel.parallax_forward(q, r, k, v, scale, 0, False, True, fwd_cfg)
    ratios = {"o": relative_error(o, o64) / relative_error(o_lo, o64)}
    if kind == "backward":
        grads = parallel.parallax_backward(do, q, r, k, v, o, o_sm, o_lo_res, lse, tbar, scale, 0, config)
        for name, g, gl, ge in zip(("dq", "dr", "dk", "dv"), grads, g_lo, g64):
            ratios[name] = relative_error(g, ge) / relative_error(gl, ge)
    finite = all(math.isfinite(x) for x in ratios.values())
    return ratios, finite and max(ratios.values()) <= 2.0


def time_config(kind, config, D):
    """Medians of CUDA-graph replays (host launch time left out) at each of the kind's
    TIMED_SHAPES: {label: ms}; the forward plain, in statistics mode and saving the
    backward's residuals (a training step's forward)."""
    times = {}
    for B, H, T in TIMED_SHAPES[kind]:
        q, r, k, v, do = inputs(B, T, H, H, D, seed=1)
        scale = D**-0.5
        if kind == "forward":
            for mode, stats, residuals in (("", False, False), (" stats", True, False), (" train", False, True)):
                fn = functools.partial(parallel.parallax_forward, q, r, k, v, scale, 0, stats, residuals, config)
                times[f"T={T}{mode}"] = do_bench_cudagraph(fn, rep=100)
        else:
            o, o_sm, o_lo, lse, tbar, _ = parallel.parallax_forward(q, r, k, v, scale, 0, False, True)
            fn = functools.partial(parallel.parallax_backward, do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, 0, config)
            times[f"T={T}"] = do_bench_cudagraph(fn, rep=100)
        del q, r, k, v, do
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  "
          f"python {platform.python_version()}")
    results = []
    for kind, candidates in (("forward", FORWARD_CANDIDATES), ("backward", BACKWARD_CANDIDATES)):
        for D, configs in candidates.items():
            for config in configs:
                row = {"kind": kind, "D": D, "config": repr(config)}
                t0 = time.time()
                try:
                    row["ratios"], row["correct"] = check_config(kind, config, D, results)
                    row["times"] = time_config(kind, config, D)
                    row["ms"] = row["times"]["T=4096"]
                except Exception as exc:  # a sweep reports a config that does not build or run
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    traceback.print_exc()
                row["wall_s"] = round(time.time() - t0, 1)
                results.append(row)
                ratios = " ".join(f"{n}={x:.2f}" for n, x in row.get("ratios", {}).items())
                times = " ".join(f"{n}: {x:.3f}" for n, x in row.get("times", {}).items())
                print(f"{kind:8s} D={D:3d} {config!r}  ms [{times}]  "
                      f"correct={row.get('correct')}  {ratios}  {row.get('error', '')}  ({row['wall_s']} s)", flush=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\nfastest correct config per kernel at (4, 16, 4096, D):")
    for kind in ("forward", "backward"):
        for D in (128, 64):
            ok = [r for r in results if r["kind"] == kind and r["D"] == D and r.get("correct")]
            if ok:
                best = min(ok, key=lambda r: r["ms"])
                print(f"  {kind:8s} D={D:3d}  {best['config']}  {best['ms']:.3f} ms")
            else:
                print(f"  {kind:8s} D={D:3d}  none correct")


if __name__ == "__main__":
    main()
