#!/usr/bin/env bash
# One device-tool call of the reproduction (docs/reproduction.md), from the repo root on one GPU,
# for one set of arms (benchmarks/reproduction.py, SETS), each a session of its own:
#   bash benchmarks/tools/gpu_session_reproduction.sh seeds       # Parallax, 3 seeds per optimizer
#   bash benchmarks/tools/gpu_session_reproduction.sh baselines   # softmax baselines, then the retrofits
#   bash benchmarks/tools/gpu_session_reproduction.sh scale       # the 16-layer arms
#   bash benchmarks/tools/gpu_session_reproduction.sh scale muon  # half a set: one optimizer's arms
# A set needs about 16 minutes of training on an H200 (scale) and a session's first calls may
# get no machine: one optimizer's arms then fit a session of their own (muon, then adamw).
# Call it again, at once, until its status line says every arm of the set is done: runs/ is
# ignored by git, so it stays on the machine between calls while the machine is held
# (checkpoints cannot leave it: docs/reproduction.md, "Rerunning it"). Every call ends by packing
# what exists into $OUT/repro-SET[-OPTIMIZER].tar.gz (no checkpoints), so a machine taken back mid-session
# loses only the rest.
# DEADLINE (seconds, default 560) bounds the training part; setup and packing take seconds, inside a
# call's 600. Lower it to what the session has left, less a minute.
set -uo pipefail
export PYTHONUNBUFFERED=1
SET=${1:?"which set of arms: seeds, baselines or scale"}
OPTIMIZER=${2:-}  # muon or adamw: only that optimizer's arms of the set
PART=$SET${OPTIMIZER:+-$OPTIMIZER}
OUT=${OUT:-/tmp/gpu-session-repro}; mkdir -p "$OUT"
source benchmarks/tools/device_setup.sh
nvidia-smi -L
python3 benchmarks/reproduction.py train --out runs/repro --sets "$SET" ${OPTIMIZER:+--optimizers "$OPTIMIZER"} \
  --deadline "${DEADLINE:-560}" 2>&1 | tee -a "$OUT/train-$PART.log"
python3 benchmarks/reproduction.py pack --out runs/repro --to "$OUT/repro-$PART.tar.gz"
