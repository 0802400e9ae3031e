"""Instrumentation: forward hooks that record COR, probe norms and W_R spectra into a run folder."""

from .discovery import AttentionSite, NoParallaxModulesError, find_attention_sites
from .probe import Probe

__all__ = ["AttentionSite", "NoParallaxModulesError", "Probe", "find_attention_sites"]
