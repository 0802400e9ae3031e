"""Time causal bf16 attention kernels: ours (plain and statistics mode), SDPA's flash and
cuDNN backends (softmax attention, the kernels users already have) and fla-core's
`parallel_parallax`, forward and forward+backward, in one run.

    python benchmarks/attention.py [--shapes 8,16,1024,128 4,16,4096,128 ...] [--markdown FILE]

FLOPs as SPEC section 1 counts them, halved for causal attention with Lq = Lk:
Parallax forward 8*B*H*T*T*D, backward 16*B*H*T*T*D; softmax attention forward
4*B*H*T*T*D, backward 2.5x that. Each kernel's TFLOP/s uses its own count; the time ratios
("ours / peer", below 1 means ours is faster) compare like with like. Times are medians of
triton.testing.do_bench_cudagraph: each call is captured many times over in one CUDA graph and
replayed, so the numbers are device time. Plain do_bench launches each call from Python after
an L2-flushing memset, and whatever host time a call takes beyond that memset showed up in the
measurement: the short shapes (a 0.2 ms forward) then measured host overhead, not kernels.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench_cudagraph

from parallax_probe.kernels import parallax_attention

SHAPES = [(8, 16, 1024, 128), (4, 16, 4096, 128), (2, 16, 8192, 128), (4, 16, 4096, 64)]


def parallax_flops(B, H, T, D, mode):
    forward = 8 * B * H * T * T * D / 2  # causal: half the score matrix
    return forward if mode == "fwd" else 3 * forward  # backward = 2x forward


def softmax_flops(B, H, T, D, mode):
    forward = 4 * B * H * T * T * D / 2
    return forward if mode == "fwd" else 3.5 * forward  # backward = 2.5x forward


def load_fla():
    try:
        from fla.ops.parallax import parallel_parallax
    except Exception as exc:  # fla pulls in more than einops; any failure only drops its rows
        print(f"fla-core not importable ({exc}); its rows are left out", file=sys.stderr)
        return None
    return parallel_parallax


def candidates(B, H, T, D, parallel_parallax):
    """name -> (make_fn(requires_grad) returning a callable that runs one forward, flop fn)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, r, k, v = (torch.randn(B, T, H, D, device="cuda", generator=g).bfloat16() for _ in range(4))
    r = (r.float() / r.float().norm(dim=-1, keepdim=True) * 10).bfloat16()  # ||r|| = 10
    scale = D**-0.5

    def ours(stats):
        def run(q, r, k, v):
            out = parallax_attention(q, r, k, v, scale=scale, return_stats=stats, backend="triton")
            return out[0] if stats else out

        return run, (q, r, k, v), parallax_flops

    def sdpa(backend):
        def run(q, k, v):
            with sdpa_kernel(backend):
                # [B, T, H, D] viewed as [B, H, T, D], as a model calls it
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale
                )
            return out.transpose(1, 2)

        return run, (q, k, v), softmax_flops

    table = {
        "ours": ours(False),
        "ours+stats": ours(True),
        "sdpa-flash": sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa-cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
    }
    if parallel_parallax is not None:
        table["fla"] = (lambda q, r, k, v: parallel_parallax(q, r, k, v, scale=scale), (q, r, k, v), parallax_flops)
    return table


def time_one(run, tensors, mode):
    if mode == "fwd":
        with torch.no_grad():
            return do_bench_cudagraph(lambda: run(*tensors), rep=100, return_mode="median")
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    do = torch.randn_like(run(*leaves))

    def step():
        run(*leaves).backward(do)

    return do_bench_cudagraph(step, rep=100, grad_to_none=leaves, return_mode="median")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="*", default=[",".join(map(str, s)) for s in SHAPES],
                        help="B,H,T,D entries")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    args = parser.parse_args()
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes]
    parallel_parallax = load_fla()

    header = (f"{datetime.date.today()}  {torch.cuda.get_device_name()}  torch {torch.__version__}  "
              f"triton {triton.__version__}  command: python {' '.join(sys.argv)}")
    lines = [header, "",
             "| shape (B,H,T,D) | pass | kernel | ms | TFLOP/s | ours/flash | ours/cudnn | ours/fla |",
             "|---|---|---|---|---|---|---|---|"]
    overhead = []
    for B, H, T, D in shapes:
        table = candidates(B, H, T, D, parallel_parallax)
        for mode in ("fwd", "fwd+bwd"):
            times = {}
            for name, (run, tensors, flops) in table.items():
                try:
                    times[name] = time_one(run, tensors, mode)
                except Exception as exc:  # a peer that does not run here is reported, not fatal
                    print(f"{name} {mode} at {(B, H, T, D)} failed: {type(exc).__name__}: {str(exc)[:200]}",
                          file=sys.stderr)
                torch.cuda.empty_cache()
            for name, ms in times.items():
                flops = table[name][2](B, H, T, D, mode)
                ratios = []
                for peer in ("sdpa-flash", "sdpa-cudnn", "fla"):
                    if name.startswith("ours") and peer in times:
                        ratios.append(f"{ms / times[peer]:.2f}x")
                    else:
                        ratios.append("")
                lines.append(f"| {B},{H},{T},{D} | {mode} | {name} | {ms:.3f} | {flops / ms / 1e9:.0f} | "
                             + " | ".join(ratios) + " |")
            print("\n".join(lines[-len(times):]), flush=True)
            if "ours" in times and "ours+stats" in times:
                overhead.append(f"{B},{H},{T},{D} {mode}: statistics mode costs "
                                f"{100 * (times['ours+stats'] / times['ours'] - 1):+.1f}% over plain")
    text = "\n".join(lines + [""] + [f"- {line}" for line in overhead])
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
