# Sourced by the device session scripts, from the repo root: Triton's autotuning results persist
# from one session to the next. On a bare machine the first calls of fla's and the official
# kernel's autotuned kernels time every candidate config (the benchmark's first fwd+bwd shape did
# not finish in 270 s of a session); with the results kept, each kernel compiles its chosen config
# only. Our own kernels take fixed tiles and are not autotuned.
#   in:  .triton-autotune.tar.gz at the repo root, from an earlier session (git ignores it; name
#        it in the device call's carry)
#   out: autotune_cache_save writes $OUT/triton-autotune.tar.gz; copy it to the repo root
# The results are keyed by Triton's version, the GPU and each kernel's source, so a stale archive
# is ignored, not misused.
export TRITON_CACHE_DIR=/tmp/triton-cache TRITON_CACHE_AUTOTUNING=1
mkdir -p "$TRITON_CACHE_DIR"
if [ -f .triton-autotune.tar.gz ]; then
  tar xzf .triton-autotune.tar.gz -C "$TRITON_CACHE_DIR" && echo "autotune results restored: $(tar tzf .triton-autotune.tar.gz | grep -c autotune.json)"
fi
autotune_cache_save() {  # only the results (small JSON files), not the compiled kernels
  (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' -print0 | tar czf "$OUT/triton-autotune.tar.gz" --null -T -)
  echo "autotune results saved: $(tar tzf "$OUT/triton-autotune.tar.gz" | grep -c autotune.json) -> \$OUT/triton-autotune.tar.gz"
}
