#!/usr/bin/env bash
# One device-tool call for the kernel's packed sequences, eager host time and the official kernel
# as a peer, on one H200 from the repo root, with .whl/ carried (fla-core, parallax-kernel, helion:
# device_setup.sh installs them; the benchmark leaves out a peer it cannot import), and
# .triton-autotune.tar.gz where an earlier session left one (triton_autotune_cache.sh).
# A device call returns at most 8 files, so the steps' logs go into one. Writes under $OUT:
#   session.log           every step's output: versions, tests, host time, the benchmark's progress
#   bench.md, attention.json            benchmarks/attention.py at the two main shapes and a packed row
#   bench_more.md, attention_more.json  the same at two more shapes
#   host_profile.txt      torch.profiler table of 50 eager fwd+bwd calls at a host-bound shape
#   bench_helion.md       the official Helion kernels beside ours (quick autotuning), if time is left
#   triton-autotune.tar.gz  the peers' autotuning results, for the next session
# The steps run in order of importance under one deadline (510 s after the start; each step also
# has its own limit), so the run stays under 9 minutes and a slow step (first-call compilation,
# a peer's autotuning) costs only the steps after it. A cut step says so in the log.
# 2026-12-05 (first run): the tests passed but for two comparisons since corrected; host time
# 751 us per eager fwd+bwd at (8,16,1024,128); the benchmark's fwd+bwd rows did not finish: the
# peers' first calls autotuned for over 270 s. Hence the benchmark first and the autotune archive.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-session-17}; mkdir -p "$OUT"
LOG="$OUT/session.log"
DEADLINE=${DEADLINE:-510}  # seconds; lower it when less device time is left
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
for dist in ("fla-core", "flash-linear-attention", "parallax-kernel"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "not installed")
PY
} 2>&1 | tee -a "$LOG"

step "benchmark: the two main shapes and the packed row" 280 \
  python3 benchmarks/attention.py --shapes 8,16,1024,128 4,16,4096,128 --markdown "$OUT/bench.md" --json "$OUT/attention.json"
autotune_cache_save | tee -a "$LOG"  # now too, in case a later step runs into the call's limit
PYTEST=(python3 -m pytest tests/test_kernel_triton.py -q -rfEs -p no:cacheprovider)
step "packed, real-shape and compile kernel tests" 120 "${PYTEST[@]}" -k "packed or real_shapes or compile"
# a host-bound shape (its time per call is the host's) with a profile, and the issue's shape
step "host time, small shape" 40 python3 benchmarks/tools/host_overhead.py --device cuda --profile-out "$OUT/host_profile.txt"
step "host time, (8,16,1024,128)" 40 python3 benchmarks/tools/host_overhead.py --device cuda --shape 8,16,1024,128
step "benchmark: more shapes" 100 \
  python3 benchmarks/attention.py --shapes 2,16,8192,128 4,16,4096,64 --packed '' --markdown "$OUT/bench_more.md" --json "$OUT/attention_more.json"
step "other kernel tests" 80 "${PYTEST[@]}" -k "not (packed or real_shapes or compile)"
# the official package's Helion kernels (needs helion and filecheck among the carried wheels),
# autotuned with the quick effort a device session allows: labelled as such in the table
HELION_AUTOTUNE_EFFORT=quick step "benchmark: Helion kernels, quick autotune" 150 \
  python3 benchmarks/attention.py --helion --shapes 4,16,4096,128 --passes fwd+bwd --markdown "$OUT/bench_helion.md" --json /tmp/attention_helion.json
for name in bench bench_more bench_helion; do
  [ -f "$OUT/$name.md" ] && cat "$OUT/$name.md"
done
autotune_cache_save | tee -a "$LOG"
echo "total: ${SECONDS}s" | tee -a "$LOG"
