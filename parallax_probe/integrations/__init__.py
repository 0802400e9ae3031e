"""Training-framework callbacks that run a `Probe` for you.

    from parallax_probe.integrations import ProbeCallback           # transformers.Trainer (extra [hf])
    from parallax_probe.integrations import ProbeLightningCallback  # lightning.pytorch.Trainer (extra [lightning])

Each name loads its framework only when asked for, so importing this package needs neither.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ProbeCallback": "parallax_probe.integrations.huggingface",
    "ProbeLightningCallback": "parallax_probe.integrations.lightning",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'parallax_probe.integrations' has no attribute {name!r}")
