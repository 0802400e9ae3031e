"""Host time of one eager call of the Triton path: validation, autograd, allocations, launches.

    python benchmarks/tools/host_overhead.py                      # CPU: the Python and dispatch part
    python benchmarks/tools/host_overhead.py --device cuda --profile-out FILE   # GPU: everything

On a machine without a GPU the kernels' launches are replaced by no-ops, so what is timed is
the Python and PyTorch work around them (the part a GPU host pays on top of Triton's own launch
cost); tiny tensors keep the allocations' page faults out of it. On a GPU the launches are real:
the time per call is the host's, measured while the GPU runs behind it (for shapes whose kernels
take longer than their enqueueing it is the GPU's time instead; the shape here is small so that
the host is the bound), and --profile-out writes torch.profiler's table of host time per op.
Times are process CPU time (CPU) or wall time (GPU), the best of several rounds.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


class _NoLaunch:
    """Stands in for a Triton kernel: kernel[grid](...) does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def stub_launches():
    from parallax_probe.kernels import parallel

    for name in ("_parallax_fwd_kernel", "_parallax_bwd_preprocess_kernel", "_parallax_bwd_kernel",
                 "_parallax_bwd_dq_kernel"):
        setattr(parallel, name, _NoLaunch())
    # backend='triton' takes CPU tensors only in the interpreter's mode; nothing is interpreted here
    os.environ["TRITON_INTERPRET"] = "1"


def best_of(fn, rounds: int, calls: int, clock, sync) -> float:
    """Microseconds per call, the best of `rounds` rounds of `calls` calls."""
    best = float("inf")
    for _ in range(rounds):
        sync()
        start = clock()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (clock() - start) / calls * 1e6)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="1,2,64,128", help="B,H,T,D (the GPU default is host-bound)")
    parser.add_argument("--packed", action="store_true", help="pass cu_seqlens (two sequences) and max_seqlen")
    parser.add_argument("--stats", action="store_true", help="statistics mode (return_stats=True), as the probe calls it")
    parser.add_argument("--profile-out", default=None, help="write torch.profiler's host-time table here")
    args = parser.parse_args()
    if args.device == "cpu":
        stub_launches()
    from parallax_probe.kernels import parallax_attention

    B, H, T, D = (int(x) for x in args.shape.split(","))
    device = torch.device(args.device)
    q, r, k, v = (torch.randn(B, T, H, D, device=device, dtype=torch.bfloat16).requires_grad_() for _ in range(4))
    do = torch.randn(B, T, H, D, device=device, dtype=torch.bfloat16)
    packing = {}
    if args.packed:
        packing = {"cu_seqlens": torch.tensor([0, T // 3, B * T], dtype=torch.int32, device=device),
                   "max_seqlen": T - T // 3}
        q, r, k, v = (t.detach().view(1, B * T, H, D).requires_grad_() for t in (q, r, k, v))
        do = do.view(1, B * T, H, D)

    def fwd_bwd():
        o = parallax_attention(q, r, k, v, backend="triton", return_stats=args.stats, **packing)
        (o[0] if args.stats else o).backward(do)
        for t in (q, r, k, v):  # as optimizer.zero_grad(set_to_none=True) leaves them
            t.grad = None

    def fwd():
        with torch.no_grad():
            parallax_attention(q, r, k, v, backend="triton", return_stats=args.stats, **packing)

    if args.device == "cpu":
        clock, sync, calls = time.process_time, lambda: None, 500
    else:
        clock, sync, calls = time.perf_counter, torch.cuda.synchronize, 200
    for _ in range(20):  # compile the kernels, warm the allocator
        fwd_bwd()
    mode = (" packed" if args.packed else "") + (" stats" if args.stats else "")
    print(f"{args.device} B,H,T,D={args.shape}{mode}, torch {torch.__version__}")
    print(f"fwd+bwd: {best_of(fwd_bwd, 7, calls, clock, sync):.1f} us per call")
    print(f"fwd (no grad): {best_of(fwd, 7, calls, clock, sync):.1f} us per call")
    if args.profile_out:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(50):
                fwd_bwd()
            sync()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        with open(args.profile_out, "w") as f:
            f.write(f"50 eager fwd+bwd calls, B,H,T,D={args.shape}\n{table}\n")
        print(f"profile of 50 calls: {args.profile_out}")


if __name__ == "__main__":
    main()
