#!/usr/bin/env bash
# One device-tool call for issue 17 (packed sequences, eager host time, the official kernel as a
# peer), on one H200 from the repo root, with fla-core and parallax-kernel importable through
# PYTHONPATH (optional: the benchmark leaves out a peer it cannot import). Writes under $OUT:
#   env.txt            GPU, versions of torch, triton, fla, parallax-kernel
#   kernel_tests.txt   pytest tests/test_kernel_triton.py (real-shape and packed GPU cases included)
#   host_*.txt         eager host time per fwd+bwd (benchmarks/host_overhead.py) and its profile
#   bench*.md          benchmarks/attention.py: graph-replayed and eager times, peers, a packed row
# Each step has its own time limit (520 s in all at worst; about 5 minutes expected), so a
# stuck step cannot take the others' time.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-session-17}; mkdir -p "$OUT"
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

timeout 180 python3 -m pytest tests/test_kernel_triton.py -q -rA --durations=10 -p no:cacheprovider 2>&1 \
  | tee "$OUT/kernel_tests.txt" | tail -25
echo "kernel tests exit: ${PIPESTATUS[0]}" | tee -a "$OUT/kernel_tests.txt"

# the small shape is host-bound (its time per call is the host's); (8,16,1024,128) is the issue's.
# The limits leave room for compiling the kernels these shapes take.
timeout 60 python3 benchmarks/host_overhead.py --device cuda --profile-out "$OUT/host_profile.txt" 2>&1 \
  | tee "$OUT/host_small.txt"
timeout 60 python3 benchmarks/host_overhead.py --device cuda --shape 8,16,1024,128 2>&1 | tee "$OUT/host_8x16x1024.txt"

# Two benchmark runs, so that the issue's shapes and the packed row come first and within their
# own limit; each prints its rows as it goes (bench*.log keeps them if a limit cuts a run short).
timeout 130 python3 benchmarks/attention.py --shapes 8,16,1024,128 4,16,4096,128 \
  --markdown "$OUT/bench.md" >"$OUT/bench.log" 2>&1
echo "benchmark exit: $?" | tee -a "$OUT/bench.log"
timeout 90 python3 benchmarks/attention.py --shapes 2,16,8192,128 4,16,4096,64 --packed '' \
  --markdown "$OUT/bench_more.md" >"$OUT/bench_more.log" 2>&1
echo "benchmark (more shapes) exit: $?" | tee -a "$OUT/bench_more.log"
for name in bench bench_more; do
  cat "$OUT/$name.md" 2>/dev/null || tail -30 "$OUT/$name.log"
done
