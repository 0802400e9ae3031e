#!/usr/bin/env bash
# One device-tool call of the reproduction (docs/reproduction.md), from the repo root on one GPU,
# for one set of arms (benchmarks/reproduction.py, SETS), each a session of its own:
#   bash benchmarks/tools/gpu_session_reproduction.sh seeds       # Parallax, 3 seeds per optimizer
#   bash benchmarks/tools/gpu_session_reproduction.sh baselines   # softmax baselines, then the retrofits
#   bash benchmarks/tools/gpu_session_reproduction.sh scale       # the 16-layer arms
# Call it again, at once, until its status line says every arm of the set is done: runs/ is
# ignored by git, so it stays on the machine between calls while the machine is held
# (checkpoints cannot leave it: docs/reproduction.md, "Rerunning it"). Every call ends by packing
# what exists into $OUT/repro-SET.tar.gz (no checkpoints), so a machine taken back mid-session
# loses only the rest.
# DEADLINE (seconds, default 560) bounds the training part; setup and packing take seconds, inside a
# call's 600. Lower it to what the session has left, less a minute.
set -uo pipefail
export PYTHONUNBUFFERED=1
SET=${1:?"which set of arms: seeds, baselines or scale"}
OUT=${OUT:-/tmp/gpu-session-repro}; mkdir -p "$OUT"
source benchmarks/tools/device_setup.sh
nvidia-smi -L
python3 benchmarks/reproduction.py train --out runs/repro --sets "$SET" --deadline "${DEADLINE:-560}" 2>&1 | tee -a "$OUT/train-$SET.log"
python3 benchmarks/reproduction.py pack --out runs/repro --to "$OUT/repro-$SET.tar.gz"
