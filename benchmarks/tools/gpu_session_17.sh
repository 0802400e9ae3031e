#!/usr/bin/env bash
# One device-tool call for issue 17 (packed sequences, eager host time, the official kernel as a
# peer), on one H200 from the repo root, with fla-core and parallax-kernel importable through
# PYTHONPATH (optional: the benchmark leaves out a peer it cannot import). Writes under $OUT:
#   env.txt             GPU, versions of torch, triton, fla, parallax-kernel
#   tests_packed.txt    the packed and real-shape GPU tests of tests/test_kernel_triton.py
#   tests_rest.txt      the rest of that file (the interpreter's small cases, compiled)
#   host_*.txt          eager host time per fwd+bwd (benchmarks/tools/host_overhead.py) and its profile
#   bench*.md / .log    benchmarks/attention.py: graph-replayed and eager times, peers, a packed row
# The steps run in order of importance under one deadline (510 s after the start; each step also
# has its own limit), so the run stays under 9 minutes and a slow step (first-call compilation,
# a peer's autotuning) costs only the steps after it. A cut step says so in its log.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-session-17}; mkdir -p "$OUT"
DEADLINE=${DEADLINE:-510}  # seconds; lower it when less device time is left
limit() {  # the smaller of the step's own limit and what is left before the deadline
  local left=$((DEADLINE - SECONDS))
  echo $(( left < $1 ? left : $1 ))
}
step() {  # step NAME LIMIT LOG COMMAND...: run COMMAND under the limit, output to LOG and stdout
  local name=$1 seconds log=$3; seconds=$(limit "$2"); shift 3
  if (( DEADLINE - SECONDS < 15 )); then echo "$name: skipped, deadline reached" | tee "$log"; return; fi
  echo "== $name (limit ${seconds}s, at ${SECONDS}s)"
  timeout "$seconds" "$@" >"$log" 2>&1
  local rc=$?
  tail -25 "$log"
  echo "$name: exit $rc$([ $rc = 124 ] && echo ' (time limit)')" | tee -a "$log"
}

# The image has torch and triton but not this package: install it offline, without dependencies.
python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
{
  nvidia-smi -L
  python3 - <<'EOF'
import importlib.metadata as md, torch, triton
print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())
for dist in ("fla-core", "flash-linear-attention", "parallax-kernel"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "not installed")
EOF
} 2>&1 | tee "$OUT/env.txt"

PYTEST=(python3 -m pytest tests/test_kernel_triton.py -q -rA --durations=10 -p no:cacheprovider)
# first the GPU cases of what this issue adds (torch.compile's inductor build waits for later)
FIRST='(packed or real_shapes) and not compile'
step "packed and real-shape kernel tests" 170 "$OUT/tests_packed.txt" "${PYTEST[@]}" -k "$FIRST"
step "benchmark: issue shapes and the packed row" 150 "$OUT/bench.log" \
  python3 benchmarks/attention.py --shapes 8,16,1024,128 4,16,4096,128 --markdown "$OUT/bench.md" --json "$OUT/attention.json"
# a host-bound shape (its time per call is the host's) with a profile, and the issue's shape
step "host time, small shape" 40 "$OUT/host_small.txt" \
  python3 benchmarks/tools/host_overhead.py --device cuda --profile-out "$OUT/host_profile.txt"
step "host time, (8,16,1024,128)" 40 "$OUT/host_8x16x1024.txt" \
  python3 benchmarks/tools/host_overhead.py --device cuda --shape 8,16,1024,128
step "other kernel tests" 120 "$OUT/tests_rest.txt" "${PYTEST[@]}" -k "not ($FIRST)"
step "benchmark: more shapes" 90 "$OUT/bench_more.log" \
  python3 benchmarks/attention.py --shapes 2,16,8192,128 4,16,4096,64 --packed '' --markdown "$OUT/bench_more.md" --json "$OUT/attention_more.json"
for name in bench bench_more; do
  [ -f "$OUT/$name.md" ] && cat "$OUT/$name.md"
done
echo "total: ${SECONDS}s"
