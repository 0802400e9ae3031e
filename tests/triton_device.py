"""Where the tests that run the Triton kernel run: compiled on a GPU of compute capability 9.0,
else on the CPU through Triton's interpreter. Import this before the first Triton call: Triton
picks compiled or interpreted kernels when they are defined, which happens at the first call
(kernels.parallel is imported lazily), so TRITON_INTERPRET must be set by then."""

from __future__ import annotations

import os

import torch

from parallax_probe.kernels.capability import triton_runs_on

ON_HOPPER = torch.cuda.is_available() and triton_runs_on(torch.device("cuda"))
if not ON_HOPPER:
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cuda" if ON_HOPPER else "cpu"
