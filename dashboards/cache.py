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

from parallax_probe.analysis import Report

from . import data
from .data import HeadBuckets, LayerSeries, RunEntry, RunSummary, Scalars, Spectra, Spectrum

# A run's status "live" can turn into "crashed" without its files changing (the writer
# died): such a summary is trusted for this long, then the run is opened again (0.1 s for a
# 100,000-step run). A closed run changes only with its files, so its summary is kept.
STATUS_RECHECK_S = 10.0


@st.cache_resource(max_entries=512, show_spinner=False)
def _summary(path: Path, name: str, signature: tuple, time_bucket: int) -> RunSummary:
    return data.load_summary(RunEntry(name, path, signature))


def summary(entry: RunEntry) -> RunSummary:
    first = _summary(entry.path, entry.name, entry.signature, 0)
    if first.status == "closed":
        return first
    return _summary(entry.path, entry.name, entry.signature, int(time.time() // STATUS_RECHECK_S))


@st.cache_resource(max_entries=64, show_spinner=False)
def _layer_series(path: Path, signature: tuple, name: str) -> LayerSeries:
    return data.load_layer_series(path, (name,))


def layer_series(run: RunSummary, name: str) -> LayerSeries:
    """One attn column of the run, as (N, L) means over heads."""
    return _layer_series(run.path, run.signature, name)


@st.cache_resource(max_entries=64, show_spinner=False)
def _head_buckets(path: Path, signature: tuple, name: str, layer: int) -> HeadBuckets:
    return data.load_head_buckets(path, name, layer)


def head_buckets(run: RunSummary, name: str, layer: int) -> HeadBuckets:
    """One layer of an (N, L, H) attn column as bucket means over steps, (B, H)."""
    return _head_buckets(run.path, run.signature, name, layer)


@st.cache_resource(max_entries=32, show_spinner=False)
def _spectra(path: Path, signature: tuple, table: str) -> Spectra | None:
    return data.load_spectra(path, table)


def spectra(run: RunSummary, table: str) -> Spectra | None:
    """The run's "wr" or "wrk" ranks (None without that table)."""
    return _spectra(run.path, run.signature, table)


@st.cache_resource(max_entries=64, show_spinner=False)
def _spectrum(path: Path, signature: tuple, table: str, layer: int) -> Spectrum:
    return data.load_spectrum(path, table, layer)


def spectrum(run: RunSummary, table: str, layer: int) -> Spectrum:
    """One layer's singular values of table "wr" or "wrk" at every spectra step."""
    return _spectrum(run.path, run.signature, table, layer)


@st.cache_resource(max_entries=64, show_spinner=False)
def _scalars(path: Path, signature: tuple) -> Scalars:
    return data.load_scalars(path)


def scalars(run: RunSummary) -> Scalars:
    return _scalars(run.path, run.signature)


@st.cache_resource(max_entries=8, show_spinner="Building the rank-collapse report")
def _collapse_report(members: tuple[tuple[Path, str, str], ...], signatures: tuple, key: str) -> tuple[Report, tuple[str, ...]]:
    return data.collapse_report(members, key)


def collapse_report(groups: dict[str, tuple[RunSummary, ...]], key: str) -> tuple[Report, tuple[str, ...]]:
    """The analysis's report on these groups ({label: runs}), and notes on thinned tables
    (`data.collapse_report`); a run that grew gets a new report."""
    members = tuple((run.path, run.name, label) for label, runs in groups.items() for run in runs)
    return _collapse_report(members, tuple(run.signature for runs in groups.values() for run in runs), key)
