"""`Probe`: per-layer, per-head statistics of the Parallax correction branch, into a run folder.

    probe = Probe(model, "runs/muon", every=50, spectra_every=500, meta={"optimizer": "muon"})
    for step, batch in enumerate(loader):
        with probe.step(step):
            loss = model(batch)
        ...
        probe.log_scalars(step, loss=loss, lr=lr)
    probe.close()

Where the statistics come from: the call each layer makes to its attention op, with exactly
the q, r, k, v, scale, window and sequence boundaries it passes (hooks/calls.py). A layer's
layout (hooks/layouts.py) says which op that is; the probe's own model passes its kernel's
statistics through a capture point instead.

How it costs little:
- Module hooks and op wrappers only, removed on `close()`. At a non-logging step the layer
  hooks return at once and an op wrapper calls the op untouched (same outputs and gradients).
- At a logging step the statistics come out of the attention pass itself where our Triton
  kernel covers the call (`parallax_attention(..., return_stats=True)` serves it: output,
  gradients and statistics in one pass). Where it does not (CPU, decode kernels, packed
  sequences, head dims other than 64 and 128, `serve=False`), the model's own op runs and
  the statistics are computed beside it, without autograd: one more attention forward per
  layer, at logging steps only.
- The hooks only keep each layer's row statistics (four (B, T, H) float32 tensors per
  layer, until the step ends). At the end of a logging step every layer is reduced in one
  batched pass on the device and copied to the host once (asynchronously on CUDA).
- The probe computes rows and hands them to a sink: the store's `RunSink`
  (parallax_probe/store/sink.py), whose background thread waits for the host copy, writes
  the row, commits in bursts, and then hands the row to the trackers (`trackers=[...]`:
  TensorBoard SummaryWriters, W&B runs; hooks/trackers.py). Its queue is bounded: when
  full, the training thread waits; nothing is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn

from parallax_probe.config import PROBE_EVERY, SPECTRA_EVERY
from parallax_probe.kernels import AttentionStats
from parallax_probe.store import ATTN_STAT_NAMES, INTEGER_STATS, SCALARS_TABLE, Column, RunSink, head_means, probe_tables

from .calls import kernel_serves, serve, statistics_beside
from .discovery import AttentionSite, Selector, find_attention_sites
from .layouts import Layout, Op
from .spectra import check_sharded_weights, circuit_singular_values, effective_rank, singular_values, stable_rank, unsharded
from .statistics import reduce_attention_stats, stack_layers
from .trackers import Trackers


class Probe:
    """Attach to `model`, write statistics through `sink_or_run_dir` (see docs/file-format.md).

    sink_or_run_dir: a `RunSink`, or a run folder for which the probe makes one with `mode`,
    `start_step` and `fsync_every_s` (those three are the sink's; given with a sink, they
    must be left at their defaults). Only the writing rank (rank 0) opens the sink.
    """

    def __init__(
        self,
        model: nn.Module,
        sink_or_run_dir: RunSink | str | Path,
        *,
        every: int = PROBE_EVERY,
        spectra_every: int = SPECTRA_EVERY,
        circuit_every: int | None = None,
        meta: Mapping[str, Any] | None = None,
        selector: Selector = None,
        layouts: Sequence[Layout] = (),
        serve: bool = True,
        scalar_names: Sequence[str] = (),
        mode: Literal["new", "resume", "overwrite"] = "new",
        start_step: int = 0,
        fsync_every_s: float | None = 60.0,
        distributed=None,
        trackers: Sequence[Any] = (),
    ) -> None:
        if every < 1 or spectra_every < 1:
            raise ValueError(f"Probe: every ({every}) and spectra_every ({spectra_every}) must be >= 1")
        self.every, self.spectra_every = every, spectra_every
        self.circuit_every = circuit_every or spectra_every
        self.sites: list[AttentionSite] = find_attention_sites(model, selector, layouts)
        self.serve = serve
        check_sharded_weights({f"{s.name}.{s.layout.w_r}": s.w_r for s in self.sites}, distributed)
        heads = {s.n_heads for s in self.sites}
        dims = {s.head_dim for s in self.sites}
        if len(heads) != 1 or len(dims) != 1:
            raise ValueError(f"Probe: all attention modules must share head count and head dim; got heads {heads}, dims {dims}")
        self.n_layers, self.n_heads, self.head_dim = len(self.sites), heads.pop(), dims.pop()
        self._dist = distributed
        self._trackers = Trackers(trackers)  # rank 0's writer thread sends; other ranks write nothing
        self._is_writer = distributed is None or not distributed.enabled or distributed.is_main
        self._logging = False
        self._step: int | None = None
        self._layer_rows: list[AttentionStats | None] = [None] * self.n_layers
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._frames: list[_LayerFrame] = []  # the watched layers whose forward is running, innermost last
        self._patches: list[tuple[Any, str, Any, Any]] = []  # (namespace, attribute, original, wrapper)
        self._closed = False
        self._last_spectra_step: int | None = None
        self._tables = self._schema()
        # Scalars named up front get their columns at the start; a name first seen later makes
        # the store start a new segment (its schema is fixed once readers may be attached).
        self._tables[SCALARS_TABLE] = {n: Column(n, (), (), "f8") for n in scalar_names}
        self._sink = _as_sink(sink_or_run_dir, mode=mode, start_step=start_step, fsync_every_s=fsync_every_s)
        if self._is_writer:
            self._sink.open(self._tables, self._meta(meta), on_row=self._trackers.send)
        self._attach()

    # ---- schema and metadata -------------------------------------------------------------
    def _schema(self) -> dict[str, dict[str, Column]]:
        return probe_tables(self.n_layers, self.n_heads, self.head_dim, self.sites[0].w_r.shape[1])

    def _meta(self, meta: Mapping[str, Any] | None) -> dict[str, Any]:
        """The caller's meta plus what the probe knows of its setup (probe_schema.PROBE_META_KEYS)."""
        info = {k: v for k, v in (meta or {}).items() if v is not None}  # HDF5 attributes have no None
        info.setdefault("optimizer", "unknown")
        info["layers"] = self.n_layers
        info["heads"] = self.n_heads
        info["head_dim"] = self.head_dim
        info["layer_modules"] = [s.name for s in self.sites]
        info["layer_layouts"] = [s.layout.name for s in self.sites]
        info["statistics_from"] = "attention call"  # not re-derived from the projections
        info["serve_logging_steps"] = self.serve
        info["probe_every"] = self.every
        info["spectra_every"] = self.spectra_every
        if self._dist is not None and getattr(self._dist, "enabled", False):
            info.setdefault("world_size", self._dist.world_size)
            info.setdefault("distributed_backend", self._dist.backend)
        return info

    # ---- hooks ---------------------------------------------------------------------------
    def _attach(self) -> None:
        wrappers: dict[tuple[int, str], Any] = {}
        for index, site in enumerate(self.sites):
            capture_point = site.layout.capture_point
            if capture_point is not None:
                point = getattr(site.module, capture_point)
                self._handles.append(site.module.register_forward_pre_hook(self._make_capture_pre_hook(point)))
                self._handles.append(point.register_forward_hook(self._make_capture_hook(index)))
                continue
            self._handles.append(site.module.register_forward_pre_hook(self._make_enter_hook(index)))
            self._handles.append(site.module.register_forward_hook(self._leave_hook, always_call=True))
            for op in site.layout.ops_of(site.module):
                key = (id(op.namespace), op.attribute)
                if key not in wrappers:
                    wrappers[key] = self._install_wrapper(op)

    def _make_capture_pre_hook(self, point: nn.Module):
        def pre_hook(module, args):
            point.wanted = self._logging
        return pre_hook

    def _make_capture_hook(self, index: int):
        def hook(module, args, stats: AttentionStats):
            self._layer_rows[index] = stats
        return hook

    def _make_enter_hook(self, index: int):
        def enter(module, args):
            if self._logging:
                self._frames.append(_LayerFrame(index))
        return enter

    def _leave_hook(self, module, args, output):
        if self._logging and self._frames:
            self._frames.pop()

    def _install_wrapper(self, op: Op):
        original = getattr(op.namespace, op.attribute)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            frame = self._frames[-1] if self._frames else None
            if frame is None or frame.recorded:
                return original(*args, **kwargs)  # not a logging step, or not inside a watched layer
            return self._record_call(frame, op, original, args, kwargs)

        setattr(op.namespace, op.attribute, wrapper)
        self._patches.append((op.namespace, op.attribute, original, wrapper))
        return wrapper

    def _record_call(self, frame: _LayerFrame, op: Op, original, args, kwargs):
        """A watched layer's attention call at a logging step: its statistics, and its output."""
        call = op.read(*args, **kwargs)
        if self.serve and op.write is not None and kernel_serves(call):
            out, stats = serve(call)
            out = op.write(out, call)
        else:
            out = original(*args, **kwargs)
            with torch.no_grad():
                stats = statistics_beside(call)
        # The first call a layer makes in a step is the one recorded: a recomputation of the
        # same forward (activation checkpointing) would only repeat it.
        frame.recorded = True
        self._layer_rows[frame.index] = stats
        return out

    def _remove_wrappers(self) -> None:
        for namespace, attribute, original, wrapper in reversed(self._patches):
            if getattr(namespace, attribute, None) is wrapper:
                setattr(namespace, attribute, original)
        self._patches.clear()

    # ---- the step protocol -----------------------------------------------------------------
    def is_logging_step(self, step: int) -> bool:
        return step % self.every == 0

    @contextlib.contextmanager
    def step(self, step: int):
        """Wrap the forward pass of training step `step`."""
        self._raise_if_failed()
        self._step = step
        self._logging = self.is_logging_step(step)
        self._frames.clear()
        try:
            yield self
        except BaseException:
            # the forward failed: record nothing of this step, and let its own error through
            # (a row check here would replace it with a misleading "layer did not run")
            self._logging = False
            self._stop_wanting_stats()
            self._layer_rows = [None] * self.n_layers
            raise
        logging, self._logging = self._logging, False
        if logging:
            # only a logging step turned the flags on; a non-logging step costs a flag check
            self._stop_wanting_stats()
            self._emit_attention_row(step)
        if step % self.spectra_every == 0:
            self.record_spectra(step)

    def _stop_wanting_stats(self) -> None:
        self._frames.clear()
        for site in self.sites:
            if site.layout.capture_point is not None:
                getattr(site.module, site.layout.capture_point).wanted = False

    def _emit_attention_row(self, step: int) -> None:
        rows = self._layer_rows
        self._layer_rows = [None] * self.n_layers
        if any(r is None for r in rows):
            missing = [self.sites[i].name for i, r in enumerate(rows) if r is None]
            raise RuntimeError(
                f"Probe: step {step} was a logging step but these modules did not run a forward pass inside "
                f"`with probe.step(step)`, or ran one without calling an attention op their layout intercepts: "
                f"{missing}. (A model that torch.compile traced before the probe was attached runs its graph without "
                f"the hooks: attach the probe first, or call torch._dynamo.reset(). A layer calling another op needs "
                f"a Layout naming it: docs/adapters.md.)"
            )
        with torch.no_grad():
            stats = stack_layers(rows)  # (L, N, H) each, still on the device
            if self._dist is not None and getattr(self._dist, "enabled", False):
                stats = gather_rows(stats)  # every rank's tokens: exact sums and quantiles of the global batch
            reduced = reduce_attention_stats(stats)  # (L, N_STATS, H)
            payload = torch.cat([reduced.flatten(), self._gain_norms(reduced.device)])
        self._put("attn", step, functools.partial(self._attn_row, _to_host_async(payload)))

    def _gain_norms(self, device: torch.device) -> torch.Tensor:
        """(L,) float64 ||r_norm.weight|| per layer, NaN for layers without an r-norm gain.

        No indexing with host lists: that would copy an index to the device and wait for it.
        """
        weights = [None if site.r_gain is None else unsharded(site.r_gain) for site in self.sites]
        if all(w is not None for w in weights) and len({w.shape for w in weights}) == 1:
            stacked = torch.stack([w.detach() for w in weights]).float()
            return torch.linalg.vector_norm(stacked, dim=1).to(device, torch.float64)
        nan = torch.full((), math.nan, dtype=torch.float64, device=device)
        return torch.stack([nan if w is None else w.detach().float().norm().to(device, torch.float64) for w in weights])

    def record_spectra(self, step: int) -> None:
        """W_R spectra (and the W_RK circuit's at its cadence) from the current weights.

        Every rank calls this (FSDP2 gathers each whole matrix on every rank); rank 0 computes."""
        if self._last_spectra_step == step:
            return
        self._last_spectra_step = step
        circuit = step % self.circuit_every == 0
        with torch.no_grad():
            w_r_list = [unsharded(s.w_r) for s in self.sites]
            w_k_list = [unsharded(s.w_k) for s in self.sites] if circuit else []
        if not self._is_writer:
            return
        H, D = self.n_heads, self.head_dim
        with torch.no_grad():
            w_r = torch.stack(w_r_list)  # (L, H*D, C)
            s_full = singular_values(w_r)  # (L, k)
            w_r_heads = w_r.unflatten(1, (H, D))  # (L, H, D, C)
            s_heads = singular_values(w_r_heads)  # (L, H, D)
            parts = [s_full, stable_rank(s_full), effective_rank(s_full), s_heads, stable_rank(s_heads), effective_rank(s_heads)]
            self._put("wr", step, self._row_of("wr", torch.cat([p.float().flatten() for p in parts])))
            if circuit:
                s_circuit = torch.stack([
                    circuit_singular_values(w_r_l.unflatten(0, (H, D)), w_k_l.unflatten(0, (s.n_kv_heads, D)))
                    for s, w_r_l, w_k_l in zip(self.sites, w_r_list, w_k_list)
                ])  # (L, H, D)
                parts = [s_circuit, stable_rank(s_circuit), effective_rank(s_circuit)]
                self._put("wrk", step, self._row_of("wrk", torch.cat([p.float().flatten() for p in parts])))

    def log_scalars(self, step: int, **values) -> None:
        """Run-level scalars (loss, lr, ...): numbers or 0-d tensors (converted in the writer thread)."""
        self._raise_if_failed()
        if not self._is_writer or not values:
            return
        handles = {k: _to_host_async(v.detach().reshape(())) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        self._put(SCALARS_TABLE, step, lambda: {k: float(_host(v)) for k, v in handles.items()})

    # ---- rows to the sink ------------------------------------------------------------------
    def _put(self, table: str, step: int, row) -> None:
        """Hand a row to the sink; `row` is called in the sink's thread, which waits for the host copy."""
        if self._is_writer:
            self._sink.put(table, step, row)  # blocks when the queue is full: never drops a row

    def _attn_row(self, payload) -> dict[str, np.ndarray]:
        """The attn row from the flat (L * N_STATS * H + L,) payload of `_emit_attention_row`."""
        L, H, n_stats = self.n_layers, self.n_heads, len(ATTN_STAT_NAMES)
        values = _host(payload).numpy()
        stats = values[: L * n_stats * H].reshape(L, n_stats, H)
        row = {name: stats[:, i, :] for i, name in enumerate(ATTN_STAT_NAMES)}
        for name in INTEGER_STATS:
            row[name] = np.nan_to_num(row[name]).round().astype(np.int64)
        row.update(head_means(row))
        row["probe_gain_norm"] = values[L * n_stats * H :]
        return row

    def _row_of(self, table: str, flat: torch.Tensor):
        """A row of `table` from its columns flattened into one tensor, read once the host copy is done."""
        handle = _to_host_async(flat)
        return lambda: _split_columns(self._tables[table], _host(handle).numpy())

    def _raise_if_failed(self) -> None:
        error = self._sink.error
        if error is not None:
            raise RuntimeError(f"Probe: the background writer failed: {error!r}") from error

    def flush(self) -> None:
        """Wait until everything logged so far is committed to the file."""
        self._sink.flush()
        self._raise_if_failed()

    def close(self) -> None:
        """Drain the queue, close the run file (status 'closed'), remove every hook."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._remove_wrappers()
        self._stop_wanting_stats()
        try:
            self._sink.close()
        finally:
            self._trackers.flush()
        self._raise_if_failed()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass
class _LayerFrame:
    """A watched layer's forward in progress at a logging step."""

    index: int
    recorded: bool = False


def _as_sink(sink_or_run_dir: RunSink | str | Path, **writer_options) -> RunSink:
    if not isinstance(sink_or_run_dir, RunSink):
        return RunSink(sink_or_run_dir, **writer_options)
    defaults = {"mode": "new", "start_step": 0, "fsync_every_s": 60.0}
    given = sorted(name for name, value in writer_options.items() if value != defaults[name])
    if given:
        raise ValueError(f"Probe: {', '.join(given)} belong to the sink; pass them to RunSink(...), not to Probe")
    return sink_or_run_dir


def _to_host_async(t: torch.Tensor):
    """Start the device-to-host copy; the writer thread waits for it (no sync in the training thread)."""
    if t.device.type != "cuda":
        return t.clone()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return (host, event)


def _host(handle) -> torch.Tensor:
    if isinstance(handle, tuple):
        host, event = handle
        event.synchronize()
        return host
    return handle if isinstance(handle, torch.Tensor) else torch.tensor(handle)


def _split_columns(columns: Mapping[str, Column], values: np.ndarray) -> dict[str, np.ndarray]:
    """Cut a flat payload back into the table's columns, in schema order."""
    out, offset = {}, 0
    for name, column in columns.items():
        size = int(np.prod(column.shape))
        out[name] = values[offset : offset + size].reshape(column.shape)
        offset += size
    return out


def gather_rows(stats: AttentionStats) -> AttentionStats:
    """Concatenate every data-parallel rank's (L, N, H) rows along the token axis (same order on every rank)."""
    import torch.distributed as torch_dist

    world = torch_dist.get_world_size()
    gathered = []
    for s in stats:
        parts = [torch.empty_like(s) for _ in range(world)]
        torch_dist.all_gather(parts, s.contiguous())
        gathered.append(torch.cat(parts, dim=1))
    return AttentionStats(*gathered)
