#!/usr/bin/env bash
# How often a finished two-process CPU run fails to exit: RUNS times (default 20) the compiled
# DDP run of tests/test_distributed.py under torchrun, each with a 90 s limit, while two busy
# loops keep both cores loaded as the rest of the test suite does. A run that needs the limit
# hung after writing its run folder (parallax_probe/distributed.py, `close_process_group`).
#   bash scripts/torchrun_exit_check.sh [RUNS]
# Prints one line per run, then "N of RUNS hung". Run folders and logs go to a fresh temp dir.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
WORK=$(mktemp -d)
python3 -c "while True: pass" & BUSY1=$!
python3 -c "while True: pass" & BUSY2=$!
trap 'kill $BUSY1 $BUSY2 2>/dev/null' EXIT
hung=0
for i in $(seq 1 "$RUNS"); do
  start=$SECONDS
  OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo timeout 90 .venv/bin/python -m torch.distributed.run --standalone \
    --nproc_per_node=2 -m parallax_probe train --preset tiny --seq-len 32 --batch-size 8 --steps 12 --seed 5 \
    --optimizer adamw --probe-every 3 --spectra-every 6 --log-every 2 --eval-every 6 --device cpu --no-progress \
    --compile aot_eager --out "$WORK/run-$i" >"$WORK/run-$i.log" 2>&1
  rc=$?
  if [ "$rc" = 124 ]; then
    hung=$((hung + 1))
    pkill -f -- "--out $WORK/run-$i\$" 2>/dev/null  # the worker torchrun left behind
  fi
  echo "run $i: exit $rc after $((SECONDS - start)) s"
done
echo "$hung of $RUNS hung (logs: $WORK)"
