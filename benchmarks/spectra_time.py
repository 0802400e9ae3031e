"""Time of the probe's W_R spectra for every layer of a model shape (default qwen3-1.7b).

    python benchmarks/spectra_time.py --preset qwen3-1.7b --device cuda

The probe computes singular values in float64 (hooks/spectra.py: cuSOLVER's gesvda on CUDA,
LAPACK on the CPU); the table compares it with a default float32 `torch.linalg.svdvals` of the
same matrices.
"""

from __future__ import annotations

import argparse
import time

import torch
from results import add_result_args, write_result

from parallax_probe.config import resolve_model_config
from parallax_probe.hooks.spectra import circuit_singular_values, effective_rank, singular_values, stable_rank


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="qwen3-1.7b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    add_result_args(parser, "spectra_time")
    args = parser.parse_args()
    c = resolve_model_config(args.preset)
    L, H, G, D, C = c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.d_model
    w_r = torch.randn(L, H * D, C, device=args.device) * 0.02
    w_k = torch.randn(L, G * D, C, device=args.device) * 0.02

    def probe_spectra():
        s_full = singular_values(w_r)
        s_heads = singular_values(w_r.unflatten(1, (H, D)))
        s_circuit = torch.stack([circuit_singular_values(w_r[i].unflatten(0, (H, D)), w_k[i].unflatten(0, (G, D))) for i in range(L)])
        return [stable_rank(s_full), effective_rank(s_full), stable_rank(s_heads), stable_rank(s_circuit)]

    def svdvals_baseline():
        return torch.linalg.svdvals(w_r.float())

    rows = []
    for name, fn in (
        ("probe: float64 singular values (+ heads, + W_RK circuit)", probe_spectra),
        ("torch.linalg.svdvals, float32, W_R only", svdvals_baseline),
    ):
        fn()
        sync(args.device)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            sync(args.device)
            times.append(time.perf_counter() - t0)
        rows.append((name, min(times)))
    print(f"\nW_R spectra for every layer: preset {args.preset} ({L} layers, W_R {H * D}x{C}), device {args.device}\n")
    print(f"| method | seconds (best of {args.repeats}) |")
    print("|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    write_result(args, [{"method": name, "seconds": seconds} for name, seconds in rows])


if __name__ == "__main__":
    main()
