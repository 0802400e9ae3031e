# Sourced by the device session scripts, from the repo root: Triton's and Helion's autotuning
# results persist from one session to the next. On a bare machine the first calls of fla's and
# the official kernel's autotuned kernels time every candidate config (the benchmark's first
# fwd+bwd shape did not finish in 270 s of a session), and the official package's Helion kernels
# autotune too; with the results kept, each kernel compiles its chosen config only. Our own
# kernels take fixed tiles and are not autotuned.
#   in:  benchmarks/tools/autotune/triton-h200.tar.gz (kept in git: the peers' results on the H200
#        at the benchmark's shapes, 2026-12-05) and helion-h200.tar.gz (kept in git: the Helion
#        kernels' configs chosen so far on the H200), then .triton-autotune.tar.gz and
#        .helion-autotune.tar.gz at the repo root where an earlier call left newer ones (git ignores
#        them; name them in the device call's carry)
#   out: autotune_cache_save writes $OUT/triton-autotune.tar.gz and, where Helion tuned anything,
#        $OUT/helion-autotune.tar.gz; copy them to the repo root with a leading dot
# The results are keyed by the compiler's version, the GPU and each kernel's source (and shapes),
# so a stale archive is ignored, not misused.
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache} HELION_CACHE_DIR=${HELION_CACHE_DIR:-/tmp/helion-cache}
export TRITON_CACHE_AUTOTUNING=1
mkdir -p "$TRITON_CACHE_DIR" "$HELION_CACHE_DIR"
autotune_restore() {  # DIR PATTERN WHAT ARCHIVE...: unpack each archive there is into DIR, counting its PATTERN files
  local dir=$1 pattern=$2 what=$3 archive; shift 3
  for archive in "$@"; do
    if [ -f "$archive" ]; then
      tar xzf "$archive" -C "$dir" && echo "$what restored from $archive: $(tar tzf "$archive" | grep -c "$pattern")"
    fi
  done
}
autotune_restore "$TRITON_CACHE_DIR" autotune.json "autotune results" benchmarks/tools/autotune/triton-h200.tar.gz .triton-autotune.tar.gz
autotune_restore "$HELION_CACHE_DIR" best_config "Helion configs" benchmarks/tools/autotune/helion-h200.tar.gz .helion-autotune.tar.gz
autotune_cache_save() {  # only the results (small JSON files), not the compiled kernels
  (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' -print0 | tar czf "$OUT/triton-autotune.tar.gz" --null -T -)
  echo "autotune results saved: $(tar tzf "$OUT/triton-autotune.tar.gz" | grep -c autotune.json) -> \$OUT/triton-autotune.tar.gz"
  if compgen -G "$HELION_CACHE_DIR/*.best_config" >/dev/null; then  # Helion's chosen configs, one file per kernel and shape
    (cd "$HELION_CACHE_DIR" && find . -maxdepth 1 -name '*.best_config' -print0 | tar czf "$OUT/helion-autotune.tar.gz" --null -T -)
    echo "Helion configs saved: $(tar tzf "$OUT/helion-autotune.tar.gz" | grep -c best_config) -> \$OUT/helion-autotune.tar.gz"
  fi
}
