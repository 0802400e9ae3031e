"""What the probe must record, computed independently in float64 from captured attention calls."""

from __future__ import annotations

import math

import numpy as np
import torch

from parallax_probe.kernels import AttentionStats, parallax_attention_reference


class CapturedCalls:
    """Wraps named attention ops where a layer looks them up and keeps every call's arguments.

    Install it after the probe attaches and restore it before the probe closes: the probe's
    wrapper then receives exactly the arguments recorded here."""

    def __init__(self, namespace, names):
        self.calls: list[tuple[str, tuple, dict]] = []
        self._saved = []
        for name in names:
            original = getattr(namespace, name)

            def capture(*args, _name=name, _original=original, **kwargs):
                self.calls.append((_name, tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args), dict(kwargs)))
                return _original(*args, **kwargs)

            self._saved.append((namespace, name, original))
            setattr(namespace, name, capture)

    def restore(self) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)


def float64_rows(q, r, k, v, *, scale=None, window=None, cu_seqlens=None) -> AttentionStats:
    """(1, N, HQ) float64 rows for inputs in [B, T, H, D], each packed sequence alone."""
    q, r, k, v = (t.double() for t in (q, r, k, v))
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    if cu_seqlens is None:
        _, stats = parallax_attention_reference(q, r, k, v, scale=scale, window=window, return_stats=True)
        return AttentionStats(*(s.reshape(1, -1, s.shape[-1]) for s in stats))
    bounds = cu_seqlens.tolist()
    pieces = [
        parallax_attention_reference(q[:, a:b], r[:, a:b], k[:, a:b], v[:, a:b], scale=scale, window=window, return_stats=True)[1]
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    return AttentionStats(*(torch.cat(parts, dim=1) for parts in zip(*pieces)))


def head_stats(rows: AttentionStats) -> dict[str, np.ndarray]:
    """docs/definitions.md section 2 per head, in float64 with numpy, from rows of any leading shape."""
    osm_sq, c_sq, osm_c, r_sq = (s.reshape(-1, s.shape[-1]).double().cpu().numpy() for s in rows)
    cor, norm = np.sqrt(c_sq / osm_sq), np.sqrt(r_sq)
    return {
        "cor_mean": cor.mean(0), "cor_p50": np.quantile(cor, 0.5, axis=0), "cor_p90": np.quantile(cor, 0.9, axis=0),
        "cor_max": cor.max(0), "sum_osm_sq": osm_sq.sum(0), "sum_c_sq": c_sq.sum(0), "sum_osm_c": osm_c.sum(0),
        "tokens": np.full(osm_sq.shape[1], osm_sq.shape[0]), "probe_norm_mean": norm.mean(0),
        "probe_norm_p50": np.quantile(norm, 0.5, axis=0), "probe_norm_p90": np.quantile(norm, 0.9, axis=0),
        "probe_norm_max": norm.max(0),
    }


def assert_recorded(run, row: int, layer: int, expected: dict[str, np.ndarray], rtol: float = 2e-5) -> None:
    """The run's attention row `row`, layer `layer`, equals `expected` (token counts exactly).

    Float32 rows: each head's value within rtol of the layer's largest (a signed sum such as
    sum <o_sm, c> can cancel to far below its terms, and float32 rounding scales with the terms)."""
    for name, want in expected.items():
        got = run[f"attn/{name}"][row, layer]
        if name == "tokens":
            np.testing.assert_array_equal(got, want, err_msg=f"layer {layer} tokens")
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=f"layer {layer} {name}")
