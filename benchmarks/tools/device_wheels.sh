#!/usr/bin/env bash
# Fills .whl/ (ignored by git) with the wheels the device sessions carry, from the registry, at
# the versions the benchmarks and kernels/NOTES.md name; device_setup.sh installs them there.
# The device image has torch, triton, numpy and h5py, and reaches no registry. Run it here, from
# the repo root, before a device call that names .whl in its carry (about 6 MB).
#   fla-core, flash-linear-attention   fla's ParallaxForCausalLM and parallel_parallax (peer, real models)
#   parallax-kernel                    the official kernel (peer, real models)
#   helion, filecheck                  the official package's Helion kernels. helion 1.5.1 does not
#                                      import with the image's torch 2.11 (it needs IntelGPUError from
#                                      torch._inductor.runtime.triton_compat); 1.5.0 does not ask for it.
#                                      Its other needs (rich, psutil, scikit-learn, packaging) are in the
#                                      image (the device tool's KINDS.md lists its packages)
set -euo pipefail
mkdir -p .whl
WHEELS=(fla-core==0.6.0 flash-linear-attention==0.6.0 parallax-kernel==0.1.1 helion==1.5.0 filecheck==1.0.6)
# for the device's Python (3.12 on x86_64 Linux: parallax-kernel asks for 3.12), whatever Python
# runs this script
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${WHEELS[@]}"
rm -f .whl/helion-1.5.1-*.whl  # an earlier session's, see above
ls -1 .whl
du -sh .whl
