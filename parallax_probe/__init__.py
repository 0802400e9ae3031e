"""parallax-probe: measure how Parallax attention's correction branch is used in training.

The heavy names (torch-backed model, probe) load lazily, so `parallax_probe.analysis` and
`parallax_probe.dashboards` import without torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "build_model": "parallax_probe.model",
    "ModelConfig": "parallax_probe.config",
    "Probe": "parallax_probe.hooks",
    "open_run": "parallax_probe.store",
    "parallax_attention": "parallax_probe.kernels",
    "load_model": "parallax_probe.load",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'parallax_probe' has no attribute {name!r}")
