"""Training tokens per second of one model shape with each attention path.

    python benchmarks/throughput.py --preset small --batch-size 16 --seq-len 1024 [--compile] [--json FILE]

Rows: Parallax with the Triton kernel, Parallax with the plain-PyTorch reference, and the
softmax model through SDPA (same shapes, no r_proj). Same optimiser (Muon + AdamW, as
`parallax-probe train --optimizer muon`), bf16 autocast, median of timed steps after warm-up.
With --compile, the Triton and SDPA rows again through torch.compile (as `parallax-probe
train --compile`: the model's forward and backward; the optimiser step stays eager).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from results import add_result_args, write_result
from training_setup import add_training_args

from parallax_probe.model import build_model
from parallax_probe.optim import OptimizerConfig, build_optimizers


def tokens_per_second(attention: str, backend: str, compile_backend: str | None, args) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(args.preset, vocab_size=args.vocab_size, attention=attention, attention_backend=backend,
                        max_seq_len=args.seq_len).to(args.device)
    optimizers, _ = build_optimizers(model, OptimizerConfig(name="muon"))
    step_model = torch.compile(model, backend=compile_backend) if compile_backend else model
    x = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), device=args.device)
    times = []
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_model(x)
        F.cross_entropy(logits.float().flatten(0, 1), x.flatten()).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return args.batch_size * args.seq_len / median, median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --compile (BACKEND, default inductor): the Triton and SDPA rows again, compiled
    add_training_args(parser, preset="small", device="cuda", batch_size=16, seq_len=1024, vocab_size=50304)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (with --compile: the compilation)")
    add_result_args(parser, "throughput")
    args = parser.parse_args()
    if not args.device.startswith("cuda"):
        parser.error("throughput.py times CUDA devices only (--device cuda or cuda:N)")
    rows = [("parallax", "triton", None), ("parallax", "reference", None), ("softmax", "auto", None)]
    if args.compile:
        rows += [("parallax", "triton", args.compile), ("softmax", "auto", args.compile)]
    results = {}
    for attention, backend, compile_backend in rows:
        results[(attention, backend, compile_backend)] = tokens_per_second(attention, backend, compile_backend, args)
    base = results[("parallax", "triton", None)][0]
    print(f"\ntraining throughput: preset {args.preset}, batch {args.batch_size} x {args.seq_len}, bf16 autocast, Muon, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| model | attention path | torch.compile | step (ms) | tokens/s | vs Parallax Triton, eager |")
    print("|---|---|---|---|---|---|")
    names = {"triton": "Triton kernel", "reference": "PyTorch reference", "auto": "SDPA (softmax)"}
    records = []
    for (attention, backend, compile_backend), (tps, median) in results.items():
        print(f"| {attention} | {names[backend]} | {compile_backend or 'off'} | {median * 1e3:.1f} | {tps:,.0f} | {tps / base:.2f}x |")
        records.append({"model": attention, "attention_path": backend, "compile": compile_backend,
                        "step_ms": median * 1e3, "tokens_per_s": tps, "vs_triton_eager": tps / base})
    write_result(args, records)


if __name__ == "__main__":
    main()
