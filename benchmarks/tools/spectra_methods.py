"""Which way of computing W_R singular values is fast enough on the GPU (qwen3-1.7b shapes)?

    python benchmarks/tools/spectra_methods.py

Times each method for all 28 layers' W_R (2048x2048) and reports its largest relative
error on stable and effective rank against numpy float64 SVD; also times the per-head and
W_RK circuit parts of the probe's spectra separately.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from parallax_probe.hooks.spectra import circuit_singular_values, effective_rank, singular_values, stable_rank


def best_time(fn, repeats=3):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    L, H, G, D, C = 28, 16, 8, 128, 2048
    torch.manual_seed(0)
    # a decaying spectrum, as trained weights have
    w = (torch.randn(L, H * D, C, device="cuda") * torch.logspace(0, -2, H * D, device="cuda")[None, :, None]).contiguous()
    w_k = torch.randn(L, G * D, C, device="cuda") * 0.02
    ref = np.stack([np.linalg.svd(w[i].double().cpu().numpy(), compute_uv=False) for i in range(L)])
    ref_stable = (ref**2).sum(-1) / ref[:, 0] ** 2
    ref_p = ref / ref.sum(-1, keepdims=True)
    ref_eff = np.exp(-(ref_p * np.log(ref_p)).sum(-1))
    methods = {
        "probe: hooks/spectra.singular_values (float64 gesvda)": lambda: singular_values(w),
        "gram float64 eigvalsh": lambda: torch.linalg.eigvalsh(w.double() @ w.double().mT).clamp_min(0).flip(-1).sqrt(),
        "gram float32 eigvalsh": lambda: torch.linalg.eigvalsh(w @ w.mT).clamp_min(0).flip(-1).sqrt(),
        "svdvals float32 (default driver)": lambda: torch.linalg.svdvals(w),
        "svdvals float32 gesvda": lambda: torch.linalg.svdvals(w, driver="gesvda"),
        "svdvals float64 gesvda": lambda: torch.linalg.svdvals(w.double(), driver="gesvda"),
        "svdvals float32 gesvdj": lambda: torch.linalg.svdvals(w, driver="gesvdj"),
    }
    print("| method | seconds, 28 layers | max rel. error stable rank | max rel. error effective rank |")
    print("|---|---|---|---|")
    for name, fn in methods.items():
        try:
            seconds, s = best_time(fn)
        except RuntimeError as error:
            print(f"| {name} | failed: {str(error)[:60]} | | |")
            continue
        s = s.double()
        e_stable = (stable_rank(s).cpu().numpy() / ref_stable - 1).__abs__().max()
        e_eff = (effective_rank(s).cpu().numpy() / ref_eff - 1).__abs__().max()
        print(f"| {name} | {seconds:.3f} | {e_stable:.1e} | {e_eff:.1e} |")
    heads, _ = best_time(lambda: singular_values(w.unflatten(1, (H, D))))
    circuit, _ = best_time(lambda: [circuit_singular_values(w[i].unflatten(0, (H, D)), w_k[i].unflatten(0, (G, D))) for i in range(L)])
    print(f"| per-head blocks, probe (float64 gesvda) | {heads:.3f} | | |")
    print(f"| W_RK circuit, probe (Cholesky or QR + float64 svdvals) | {circuit:.3f} | | |")


if __name__ == "__main__":
    main()
