"""Streamlit's cache around the loaders of `data.py`, keyed by each run's file signature.

The signature (segment names, sizes, modification times) changes with every commit of a
live writer, so a live run is re-read when it grew and a closed run is read once per
server process. `st.cache_resource` hands out the cached object itself, not a copy: the
arrays are large and read-only (`data._frozen`), and every session shares them.

The cached functions take the signature (and, for summaries, a time bucket) only as part
of their cache key; they do not read it.
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from . import data
from .data import LayerSeries, RunEntry, RunSummary, Scalars, Spectra

# A run's status ("live" or "crashed") can change without its files changing (the writer
# died): a summary is trusted for this long, then the run is opened again (a few ms).
STATUS_RECHECK_S = 10.0


@st.cache_resource(max_entries=512, show_spinner=False)
def _summary(path: Path, name: str, signature: tuple, time_bucket: int) -> RunSummary:
    return data.load_summary(RunEntry(name, path, signature))


def summary(entry: RunEntry) -> RunSummary:
    return _summary(entry.path, entry.name, entry.signature, int(time.time() // STATUS_RECHECK_S))


@st.cache_resource(max_entries=64, show_spinner=False)
def _layer_series(path: Path, signature: tuple, name: str, per_head: bool) -> LayerSeries:
    return data.load_layer_series(path, (name,), per_head=name if per_head else None)


def layer_series(run: RunSummary, name: str, *, per_head: bool = False) -> LayerSeries:
    """One attn column of the run, as (N, L) means over heads (and (B, L, H) bucket means if per_head)."""
    return _layer_series(run.path, run.signature, name, per_head)


@st.cache_resource(max_entries=32, show_spinner=False)
def _spectra(path: Path, signature: tuple, table: str) -> Spectra | None:
    return data.load_spectra(path, table)


def spectra(run: RunSummary, table: str) -> Spectra | None:
    return _spectra(run.path, run.signature, table)


@st.cache_resource(max_entries=64, show_spinner=False)
def _scalars(path: Path, signature: tuple) -> Scalars:
    return data.load_scalars(path)


def scalars(run: RunSummary) -> Scalars:
    return _scalars(run.path, run.signature)
