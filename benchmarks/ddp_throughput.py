"""Data-parallel training throughput through torchrun: 1 and 2 GPUs, Muon and AdamW, probe on/off.

    python benchmarks/ddp_throughput.py --steps 300 --out /tmp/ddp

Each row is a real `torchrun --nproc_per_node N -m parallax_probe train` run of the `small`
preset on byte-level text (this repository's own sources, so no download is needed).
Tokens/s is the mean over the logged windows after the first (which holds start-up): the mean,
because at probe-every 50 only every other 25-step window holds a logging step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from results import add_result_args, write_result

from parallax_probe.checkpoint import load_training_checkpoint

ROWS = [  # (processes, optimizer, probe_every)
    (1, "muon", 0), (1, "muon", 50), (2, "muon", 0), (2, "muon", 50),
    (1, "adamw", 50), (2, "adamw", 50),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--out", default="/tmp/ddp-throughput")
    parser.add_argument("--corpus", default=str(Path(__file__).resolve().parent.parent / "parallax_probe"))
    add_result_args(parser, "ddp_throughput")
    args = parser.parse_args()
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    results = []
    for nproc, optimizer, probe_every in ROWS:
        out = Path(args.out) / f"n{nproc}-{optimizer}-p{probe_every}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "parallax_probe", "train", "--preset", "small", "--task", f"text:{args.corpus}",
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--optimizer", optimizer, "--probe-every", str(probe_every), "--spectra-every", "100",
               "--log-every", "25", "--eval-every", str(args.steps), "--checkpoint-every", str(args.steps),
               "--no-progress", "--overwrite", "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"FAILED {nproc} {optimizer} {probe_every}:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        history = load_training_checkpoint(out / "checkpoint.pt")["history"]
        windows = [h["tokens_per_second"] for h in history[1:]]
        results.append((nproc, optimizer, probe_every, statistics.fmean(windows), history[-1]["loss"], history[-1].get("eval_accuracy")))
        print(done.stdout.strip(), flush=True)
    print(f"\nDDP throughput, small preset, byte-level text, global batch {args.batch_size} x {args.seq_len}, {args.steps} steps, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}\n")
    print("| GPUs | optimizer | probe every | tokens/s | final loss | vs same GPUs without probe |")
    print("|---|---|---|---|---|---|")
    base = {(n, o): tps for n, o, p, tps, *_ in results if p == 0}
    records = []
    for n, o, p, tps, loss, accuracy in results:
        ref = base.get((n, o))
        rel = f"{100 * (ref / tps - 1):+.1f}% time" if ref and p else ""
        print(f"| {n} | {o} | {p or 'off'} | {tps:,.0f} | {loss:.3f} | {rel} |")
        records.append({"gpus": n, "optimizer": o, "probe_every": p, "tokens_per_s": tps, "final_loss": loss,
                        "eval_accuracy": accuracy})
    write_result(args, records)


if __name__ == "__main__":
    main()
