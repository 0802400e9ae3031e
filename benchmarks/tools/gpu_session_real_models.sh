#!/usr/bin/env bash
# The device-tool calls behind the real-models checks and overhead (an H200, from the repo root,
# with the wheels of flash-linear-attention, fla-core and parallax-kernel in .whl/, and
# .triton-autotune.tar.gz carried where an earlier session left one: fla's kernels autotune on
# their first calls for minutes, see triton_autotune_cache.sh):
#   bash benchmarks/tools/gpu_session_real_models.sh checks       # exactness on fla and parallax-kernel, training check (~6 min)
#   bash benchmarks/tools/gpu_session_real_models.sh quickstarts  # the README's two snippets (Triton compiles: minutes)
#   bash benchmarks/tools/gpu_session_real_models.sh overhead   # probe overhead, fla ~100M and our small preset, T=2048
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-session}; mkdir -p "$OUT"
source benchmarks/tools/device_setup.sh
source benchmarks/tools/triton_autotune_cache.sh
nvidia-smi -L
for part in "${@:-checks}"; do
case "$part" in
  checks)
    timeout 540 python3 benchmarks/tools/real_models_gpu.py 2>&1 | tee "$OUT/real_models.md"
    ;;
  quickstarts)
    (cd /tmp && timeout 240 python3 - < "$OLDPWD/docs/examples/fla_quickstart.py") 2>&1 | tail -3 | tee "$OUT/fla_quickstart.log"
    (cd /tmp && timeout 240 python3 - < "$OLDPWD/docs/examples/official_quickstart.py") 2>&1 | tail -3 | tee "$OUT/official_quickstart.log"
    python3 -c "from parallax_probe import open_run; r = open_run('/tmp/runs/fla-adamw'); print('fla quickstart rows', r['step'].tolist()[:3], '...', r['attn/layer_cor_mean'][-1])" | tee -a "$OUT/fla_quickstart.log"
    python3 -c "from parallax_probe import open_run; r = open_run('/tmp/runs/official-adamw'); print('official quickstart rows', r['step'].tolist()[:3], '...', r['attn/layer_cor_mean'][-1])" | tee -a "$OUT/official_quickstart.log"
    ;;
  overhead)
    # many short rounds, interleaved: drift in the GPU's clocks hits every configuration alike
    for model in fla small; do
      flag=$([ $model = fla ] && echo "--model fla" || echo "--preset small")
      timeout 250 python3 benchmarks/probe_overhead.py $flag --device cuda --batch-size 8 --seq-len 2048 --vocab-size 8192 \
          --steps 50 --rounds 8 --json "$OUT/probe_overhead_$model.json" 2>&1 | tail -8 | tee -a "$OUT/probe_overhead.md"
    done
    ;;
esac
autotune_cache_save  # after each part: a call cut at its limit keeps what the parts before it tuned
done
