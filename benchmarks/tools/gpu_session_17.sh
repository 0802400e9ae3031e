#!/usr/bin/env bash
# One device-tool call for the kernel against its peers, on one H200 from the repo root, with .whl/
# carried (benchmarks/tools/device_wheels.sh fills it: fla-core, parallax-kernel, helion;
# device_setup.sh installs them; the benchmark leaves out a peer it cannot import)
# and .triton-autotune.tar.gz, .helion-autotune.tar.gz where an earlier call left them
# (triton_autotune_cache.sh). What is left to measure, in this order:
#   bash benchmarks/tools/gpu_session_17.sh helion          # the official Helion kernels' fwd+bwd at (4,16,4096,128)
#   bash benchmarks/tools/gpu_session_17.sh helion-packed   # their varlen kernels on the packed row
# The Helion steps autotune each kernel the first time (minutes each; see History) and keep each
# finished kernel's config, so call a step again, carrying what the last call brought back, until
# its row is in attention_STEP.json. Give it a whole call: DEADLINE=585 with the call's 600 s.
# Ask for the H200 with needs_h200 on: Helion keys each config by the card's name, and a call
# for the kind nvidia-h200 without it may come on an H100, which then tunes its own from the start.
#   bash benchmarks/tools/gpu_session_17.sh table [B,H,T,D ...]  # the whole table again, each kernel
#                                                           # heated before its timing; then the kernel tests
# Writes under $OUT: session.log (every step's output), attention_STEP.json (the benchmark's rows,
# written after every shape and pass, so a cut run keeps what it measured), and
# triton-autotune.tar.gz, helion-autotune.tar.gz (the peers' autotuning results, for the next
# call: copy them to the repo root with a leading dot and carry them).
# The steps share one deadline (DEADLINE seconds after the start, default 540; lower it to what
# the session has left, less a minute), and each has its own limit, so a slow step (a peer's
# autotuning) costs only the steps after it. A cut step says so in the log.
# History (benchmarks/RESULTS.md has the numbers): 2026-12-05, three sessions. Every shape's
# fwd+bwd, the packed row and the long shapes' forward against SDPA, fla and the official
# kernel; eager_order.py showed that the kernel timed first looked up to 8% faster eager (so
# the benchmark now heats each kernel first: `table` reruns it). helion 1.5.1 did not import
# with torch 2.11; 1.5.0 did. Its quick autotuning of the training forward took 225 s, of the
# backward's _bwd_rq 438 s (both configs are kept in benchmarks/tools/autotune/helion-h200.tar.gz);
# _bwd_kv's was cut by the call's limit. The varlen kernels (forward, _varlen_dqr, _varlen_dkv)
# have not been tuned yet. A later call came on an H100: it tuned the forward again (182 s, for
# the H100) and was cut 306 s into a backward kernel; nothing for the H200 was added.
set -uo pipefail
export PYTHONUNBUFFERED=1
STEP=${1:?"which step: helion, helion-packed or table"}; shift
case "$STEP" in helion|helion-packed|table) ;; *) echo "unknown step: $STEP (helion, helion-packed or table)" >&2; exit 2 ;; esac
OUT=${OUT:-/tmp/gpu-session-17}; mkdir -p "$OUT"
LOG="$OUT/session.log"
DEADLINE=${DEADLINE:-540}
limit() {  # the smaller of the step's own limit and what is left before the deadline
  local left=$((DEADLINE - SECONDS))
  echo $(( left < $1 ? left : $1 ))
}
step() {  # step NAME LIMIT COMMAND...: run COMMAND under the limit, output to the log and stdout
  local name=$1 seconds; seconds=$(limit "$2"); shift 2
  if (( DEADLINE - SECONDS < 15 )); then echo "$name: skipped, deadline reached" | tee -a "$LOG"; return; fi
  echo "== $name (limit ${seconds}s, at ${SECONDS}s)" | tee -a "$LOG"
  timeout "$seconds" "$@" 2>&1 | tee -a "$LOG" | tail -25
  local rc=${PIPESTATUS[0]}
  echo "$name: exit $rc$([ "$rc" = 124 ] && echo ' (time limit)')" | tee -a "$LOG"
}

source benchmarks/tools/triton_autotune_cache.sh >>"$LOG" 2>&1
source benchmarks/tools/device_setup.sh
{
  nvidia-smi -L
  python3 - <<'PY'
import importlib.metadata as md, torch, triton
print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())
for dist in ("fla-core", "flash-linear-attention", "parallax-kernel", "helion"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "not installed")
PY
} 2>&1 | tee -a "$LOG"

# Helion's kernels beside ours alone (the other peers' rows exist), autotuned with the quick
# effort a device session allows, labelled as such; their chosen configs are saved after the
# step, so a cut step's rerun starts where it stopped
export HELION_AUTOTUNE_EFFORT=quick
case "$STEP" in
  helion)
    step "benchmark: Helion kernels, fwd+bwd" 575 python3 benchmarks/attention.py --helion --kernels ours official-helion \
      --shapes 4,16,4096,128 --passes fwd+bwd --packed '' --json "$OUT/attention_helion.json" ;;
  helion-packed)
    step "benchmark: Helion varlen kernels, packed row" 575 python3 benchmarks/attention.py --helion --kernels ours official-helion \
      --shapes --passes fwd+bwd --json "$OUT/attention_helion-packed.json" ;;
  table)
    step "benchmark: every kernel, heated before timing" 420 python3 benchmarks/attention.py ${1:+--shapes "$@"} \
      --json "$OUT/attention_table.json"
    step "kernel tests" 150 python3 -m pytest tests/test_kernel_triton.py -q -rfEs -p no:cacheprovider ;;
esac
autotune_cache_save | tee -a "$LOG"
python3 benchmarks/attention.py --report "$OUT"/attention_*.json 2>&1 | tee -a "$LOG"
echo "total: ${SECONDS}s" | tee -a "$LOG"
