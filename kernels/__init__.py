"""Parallax attention kernels. Imports nothing else of parallax_probe.

`parallax_attention` is the one public entry point; `reference.py` holds the plain-PyTorch
definition every fast path is checked against.
"""

from .attention import parallax_attention, resolve_backend
from .reference import allowed_keys_mask, parallax_attention_reference
from .stats import AttentionStats

__all__ = ["AttentionStats", "allowed_keys_mask", "parallax_attention", "parallax_attention_reference", "resolve_backend"]
