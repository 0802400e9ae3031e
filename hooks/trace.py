"""Token-level traces: what each layer's attention did to every token of one prompt.

    calls = capture_attention_calls(model, input_ids)      # [(layer name, AttentionCall)], one per layer
    layer = trace_layer(call, map_heads=[0, 3])            # a LayerTrace of float64 numbers

The q, r, k, v come from the call each layer makes to its attention op, exactly as the probe
takes them (docs/adapters.md): after the layer's norms, RoPE on q, k and r, and the GQA layout.
For parallax-probe's own model the op is `parallax_attention` as `parallax_probe.model` looks it
up; fla's and the official kernel's layers use their built-in layouts.

Per query i, key j <= i (window W: i - W < j <= i), docs/definitions.md sections 1 and 4:

    p_ij = softmax_j(s1_ij)                     the softmax weights
    w_ij = p_ij (1 + tbar_i - s2_ij)            the effective weights: o_i = sum_j w_ij v_j
    o_sm_i = sum_j p_ij v_j,  c_i = sum_j (w_ij - p_ij) v_j

Everything is computed in float64 from the call's tensors, one head at a time, in blocks of
query rows: a causal block needs only the keys up to its last row (about half the work of
whole (T, T) matrices), and no float64 matrix is larger than (QUERY_BLOCK, T).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .calls import AttentionCall
from .discovery import find_attention_sites
from .layouts import NATIVE, Layout, Op


def _read_native(q, r, k, v, *, scale=None, causal=True, window=None, cu_seqlens=None, max_seqlen=None,
                 return_stats=False, backend="auto") -> AttentionCall:
    """`parallax_probe.kernels.parallax_attention`'s arguments, already [B, T, H, D]."""
    return AttentionCall(q, r, k, v, scale=scale, window=window, causal=causal, cu_seqlens=cu_seqlens)


def _native_ops(layer: nn.Module) -> list[Op]:
    return [Op(namespace=sys.modules[type(layer).__module__], attribute="parallax_attention", read=_read_native)]


# The probe reads our model through its kernel's statistics (a capture point); a trace needs the
# q, r, k, v themselves, so it intercepts the op the attention module calls instead.
NATIVE_CALLS = Layout(name=NATIVE.name, is_layer=NATIVE.is_layer, ops=_native_ops)


class _EveryCallRead(Exception):
    """Ends a traced forward once the last layer's attention call has been read."""


@contextlib.contextmanager
def _recording_calls(model: nn.Module) -> Iterator[tuple[list[AttentionCall | None], list[str]]]:
    """While the block runs, the first attention call of each Parallax layer lands in the list."""
    sites = find_attention_sites(model, layouts=[NATIVE_CALLS])
    recorded: list[AttentionCall | None] = [None] * len(sites)
    inside: list[int] = []  # the watched layers whose forward is running, innermost last
    handles, patches = [], []

    def enter(index):
        return lambda module, args: inside.append(index)

    def leave(module, args, output):
        if inside:
            inside.pop()

    def wrap(op: Op):
        original = getattr(op.namespace, op.attribute)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if inside and recorded[inside[-1]] is None:
                recorded[inside[-1]] = op.read(*args, **kwargs)
                if all(call is not None for call in recorded):
                    raise _EveryCallRead  # the rest of the forward (the LM head above all) is not needed
            return original(*args, **kwargs)

        setattr(op.namespace, op.attribute, wrapper)
        patches.append((op.namespace, op.attribute, original))

    try:
        wrapped = set()
        for index, site in enumerate(sites):
            handles.append(site.module.register_forward_pre_hook(enter(index)))
            handles.append(site.module.register_forward_hook(leave, always_call=True))
            for op in site.layout.ops_of(site.module):
                if (id(op.namespace), op.attribute) not in wrapped:
                    wrapped.add((id(op.namespace), op.attribute))
                    wrap(op)
        yield recorded, [s.name for s in sites]
    finally:
        for handle in handles:
            handle.remove()
        for namespace, attribute, original in reversed(patches):
            setattr(namespace, attribute, original)


@torch.no_grad()
def capture_attention_calls(model: nn.Module, input_ids: torch.Tensor) -> list[tuple[str, AttentionCall]]:
    """Run `model` on `input_ids` (1, T) and return each Parallax layer's attention call, in layer order."""
    with _recording_calls(model) as (recorded, names), contextlib.suppress(_EveryCallRead):
        if hasattr(model, "attention_modules"):  # parallax-probe's ParallaxLM
            model(input_ids)
        else:  # a Hugging Face model: no cache, so the prefill runs the training op over every token
            model(input_ids=input_ids, use_cache=False)
    missing = [name for name, call in zip(names, recorded) if call is None]
    if missing:
        raise RuntimeError(f"trace: these layers ran no attention op their layout intercepts: {missing}")
    return list(zip(names, recorded))


@dataclass(frozen=True, slots=True)
class LayerTrace:
    """One layer's trace. H query heads, T tokens, M = len(map_heads); float64 numpy arrays.

    Per head and token (H, T): cor, osm_norm, c_norm, r_norm, tbar, negative_mass (sum_j of
    max(-w_ij, 0)), sink_p (p_i0), sink_w (w_i0).
    Per head (H,): negative_fraction (share of the attended (i, j) pairs with w_ij < 0).
    p, w: (M, T, T) float32 for the heads in map_heads (0 above the diagonal and outside the window).
    """

    cor: np.ndarray
    osm_norm: np.ndarray
    c_norm: np.ndarray
    r_norm: np.ndarray
    tbar: np.ndarray
    negative_mass: np.ndarray
    sink_p: np.ndarray
    sink_w: np.ndarray
    negative_fraction: np.ndarray
    map_heads: tuple[int, ...]
    p: np.ndarray
    w: np.ndarray


QUERY_BLOCK = 256  # query rows per block: a causal block needs only the keys up to its last row


def trace_layer(call: AttentionCall, map_heads: Sequence[int] = ()) -> LayerTrace:
    """The trace of one attention call of one sequence (B = 1, Tq = Tk, no packing, no cache padding)."""
    if call.q.shape[0] != 1 or call.q.shape[1] != call.k.shape[1] or call.cu_seqlens is not None or call.key_start is not None:
        raise ValueError("trace: expected one unpadded sequence (batch 1, as many queries as keys, no packing)")
    q, r, k, v = (t[0].detach().to("cpu", torch.float64) for t in (call.q, call.r, call.k, call.v))  # (T, H, D)
    T, HQ, D = q.shape
    group = HQ // k.shape[1]
    scale = D**-0.5 if call.scale is None else float(call.scale)
    per_token = {name: torch.zeros(HQ, T, dtype=torch.float64) for name in
                 ("cor", "osm_norm", "c_norm", "r_norm", "tbar", "negative_mass", "sink_p", "sink_w")}
    per_token["r_norm"] = r.norm(dim=-1).T.contiguous()
    negative = torch.zeros(HQ, dtype=torch.float64)
    attended = 0
    heads = [h for h in range(HQ) if h in map_heads]
    p_maps = torch.zeros(len(heads), T, T)  # float32, as stored: the maps are the largest thing a trace keeps
    w_maps = torch.zeros(len(heads), T, T)
    for a in range(0, T, QUERY_BLOCK):
        b = min(T, a + QUERY_BLOCK)
        # keys [lo, hi) hold every key a query of rows [a, b) may attend to
        hi = b if call.causal else T
        lo = 0 if call.window is None else max(0, a - call.window + 1)
        i, j = torch.arange(a, b)[:, None], torch.arange(lo, hi)[None, :]
        allowed = (j <= i) if call.causal else torch.ones(b - a, hi - lo, dtype=torch.bool)
        if call.window is not None:
            allowed = allowed & (j > i - call.window)
        attended += int(allowed.sum())
        for h in range(HQ):
            k_h, v_h = k[lo:hi, h // group], v[lo:hi, h // group]  # (K, D)
            s1 = (q[a:b, h] @ k_h.T * scale).masked_fill(~allowed, float("-inf"))  # (BQ, K)
            p = torch.softmax(s1, dim=-1)
            s2 = (r[a:b, h] @ k_h.T).masked_fill(~allowed, 0.0)
            tbar = (p * s2).sum(-1)  # (BQ,)
            w = p * (1 + tbar[:, None] - s2)  # 0 wherever p is
            o_sm = p @ v_h
            c = (w - p) @ v_h  # = -sum_j p_ij (s2_ij - tbar_i) v_j
            osm_norm, c_norm = o_sm.norm(dim=-1), c.norm(dim=-1)
            values = {"cor": c_norm / osm_norm, "osm_norm": osm_norm, "c_norm": c_norm, "tbar": tbar,
                      "negative_mass": (-w).clamp(min=0).sum(-1)}
            if lo == 0:
                values.update(sink_p=p[:, 0], sink_w=w[:, 0])  # else the first token is outside every window here
            for name, value in values.items():
                per_token[name][h, a:b] = value
            negative[h] += (w < 0).sum()
            if h in heads:
                p_maps[heads.index(h), a:b, lo:hi] = p.float()
                w_maps[heads.index(h), a:b, lo:hi] = w.float()
    return LayerTrace(
        **{name: value.numpy() for name, value in per_token.items()},
        negative_fraction=(negative / attended).numpy(),
        map_heads=tuple(heads),
        p=p_maps.numpy(),
        w=w_maps.numpy(),
    )
