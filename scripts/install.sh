#!/usr/bin/env bash
# Create .venv (if missing) and install parallax-probe into it, with the CPU build of torch
# on machines without an NVIDIA GPU. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "parallax-probe needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)

if ! .venv/bin/python -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 9))' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[install] NVIDIA GPU found: installing the CUDA build of torch"
    "${PIP[@]}" "torch>=2.9"
  else
    # No GPU: the CPU build. A local wheel (pip's find-links) first, then PyTorch's CPU index;
    # plain PyPI would bring the multi-GB CUDA build.
    echo "[install] no GPU: installing the CPU build of torch"
    "${PIP[@]}" --no-index --no-deps "torch>=2.9" 2>/dev/null \
      || "${PIP[@]}" --no-deps "torch>=2.9" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# The project and the rest of torch's own dependencies; torch itself is already satisfied.
"${PIP[@]}" -e ".[test]"
# parallax-kernel declares Python >= 3.12, but its Python code runs on 3.11 (tests/test_probe_official.py):
# on older Pythons the [official] extra is empty, so install it here without the version check.
if ! .venv/bin/python -c 'import parallax' 2>/dev/null; then
  "${PIP[@]}" --no-deps --ignore-requires-python "parallax-kernel>=0.1.1"
fi
.venv/bin/python -c 'import parallax_probe.kernels, parallax_probe.hooks, torch; print(f"[install] parallax-probe ready (torch {torch.__version__})")'
