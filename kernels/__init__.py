"""Parallax attention kernels. Imports nothing else of parallax_probe.

`parallax_attention` is the one public entry point; `reference.py` holds the plain-PyTorch
definition every fast path is checked against. The torch-backed names load on first use,
so `parallax_probe.kernels.backends` (the backend names) imports without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .backends import BACKENDS, Backend

if TYPE_CHECKING:
    from .attention import parallax_attention, resolve_backend
    from .reference import allowed_keys_mask, parallax_attention_reference
    from .stats import AttentionStats

_LAZY = {
    "parallax_attention": ".attention",
    "resolve_backend": ".attention",
    "allowed_keys_mask": ".reference",
    "parallax_attention_reference": ".reference",
    "AttentionStats": ".stats",
}

__all__ = ["BACKENDS", "AttentionStats", "Backend", "allowed_keys_mask", "parallax_attention", "parallax_attention_reference",
           "resolve_backend"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
