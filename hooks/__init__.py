"""Instrumentation: hooks that record COR, probe norms and W_R spectra into a run folder."""

from .calls import AttentionCall
from .discovery import AttentionSite, NoParallaxModulesError, find_attention_sites
from .layouts import Layout, Op, official_kernel_ops
from .probe import Probe

__all__ = [
    "AttentionCall",
    "AttentionSite",
    "Layout",
    "NoParallaxModulesError",
    "Op",
    "Probe",
    "find_attention_sites",
    "official_kernel_ops",
]
