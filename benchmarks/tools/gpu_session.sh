#!/usr/bin/env bash
# One device-tool call for the end-to-end GPU numbers (run on nvidia-h200-x2 from the repo root):
# spectra time, training throughput per attention path, probe overhead and its profile on one GPU, DDP on 1 and 2 GPUs.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-session}; mkdir -p "$OUT"
source benchmarks/tools/device_setup.sh
nvidia-smi -L
python3 benchmarks/spectra_time.py --preset qwen3-1.7b --device cuda 2>&1 | tee "$OUT/spectra.md"
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/throughput.py --preset small --batch-size 16 --seq-len 1024 --compile 2>&1 | tee "$OUT/throughput.md"
# 4 rounds x 125 steps: the 500 timed steps of each configuration hold one W_R spectra step (the default cadence).
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/probe_overhead.py --preset small --device cuda --batch-size 16 --seq-len 1024 \
    --vocab-size 50304 --steps 125 --rounds 4 2>&1 | tee "$OUT/probe_overhead.md"
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/tools/probe_step_profile.py --device cuda --steps 30 2>&1 | tee "$OUT/probe_step_profile.md"
python3 benchmarks/ddp_throughput.py --steps 200 --out /tmp/ddp 2>&1 | tail -12 | tee "$OUT/ddp.md"
