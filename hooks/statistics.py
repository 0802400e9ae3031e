"""Reduce every layer's per-row attention statistics to per-head numbers, on the device, at once.

Input: an `AttentionStats` whose four tensors are (L, N, HQ): each layer's rows (N = B*T
tokens) stacked. Output: an (L, N_STATS, HQ) float64 tensor whose rows are named by
`parallax_probe.probe_schema.ATTN_STAT_NAMES`. Nothing here syncs with the host.

One call for all layers, not one per layer: a logging step then launches a few dozen
kernels instead of a few dozen per layer, which is what a logging step costs when the
GPU is fast and the Python loop is not (every=1 on the H200 measured 14 ms per logging
step with per-layer reductions).

COR per token is ||c|| / ||o_sm|| (SPEC section 2). A token with a non-finite statistic
is counted in `nonfinite` and makes that head's statistics NaN: we store what happened,
we do not filter it away.
"""

from __future__ import annotations

import torch

from parallax_probe.kernels import AttentionStats

QUANTILES = (0.5, 0.9)


def correction_to_output_ratio(stats: AttentionStats) -> torch.Tensor:
    """Per-row ||c|| / ||o_sm||, same shape as the rows."""
    return (stats.c_sq / stats.osm_sq).sqrt()


def quantiles_along(values: torch.Tensor, dim: int, qs: tuple[float, ...] = QUANTILES) -> list[torch.Tensor]:
    """numpy's default ("linear") quantiles along `dim`, NaN wherever the slice holds a NaN.

    One sort for all quantiles and all other axes. `torch.quantile` does the same per call
    but refuses inputs over 2**24 elements, which every layer of a large batch stacked exceeds.
    """
    n = values.shape[dim]
    ordered = values.sort(dim=dim).values  # NaN sorts last; such slices are set to NaN below
    has_nan = values.isnan().any(dim=dim)
    out = []
    for q in qs:
        position = q * (n - 1)
        lower = int(position)
        upper = min(lower + 1, n - 1)
        low, high = ordered.select(dim, lower), ordered.select(dim, upper)
        value = torch.lerp(low, high, position - lower)
        out.append(value.masked_fill(has_nan, float("nan")))
    return out


def _mean_quantiles_max(values: torch.Tensor) -> list[torch.Tensor]:
    """(L, N, HQ) -> mean, p50, p90, max over the N tokens, each (L, HQ)."""
    return [values.mean(1), *quantiles_along(values, dim=1), values.amax(1)]


def reduce_attention_stats(stats: AttentionStats) -> torch.Tensor:
    """(L, len(ATTN_STAT_NAMES), HQ) float64 summary of each layer's rows, over all N tokens.

    Sums are accumulated in float64 and kept so; counts are exact in float64.
    """
    osm_sq, c_sq, osm_c, r_sq = (s.float() for s in stats)  # (L, N, HQ) each
    L, N, HQ = osm_sq.shape
    cor = correction_to_output_ratio(AttentionStats(osm_sq, c_sq, osm_c, r_sq))
    probe_norm = r_sq.sqrt()
    finite = torch.isfinite(osm_sq) & torch.isfinite(c_sq) & torch.isfinite(osm_c) & torch.isfinite(r_sq)
    rows = [
        *_mean_quantiles_max(cor),
        osm_sq.sum(1, dtype=torch.float64),
        c_sq.sum(1, dtype=torch.float64),
        osm_c.sum(1, dtype=torch.float64),
        torch.full((L, HQ), float(N), device=osm_sq.device, dtype=torch.float64),
        *_mean_quantiles_max(probe_norm),
        (~finite).sum(1).double(),
    ]
    return torch.stack([r.double() for r in rows], dim=1)


def stack_layers(per_layer: list[AttentionStats]) -> AttentionStats:
    """Each layer's (B, T, HQ) rows -> one AttentionStats of (L, B*T, HQ) tensors.

    One stack per statistic, flattened afterwards: the Triton kernel's rows are strided
    views ([B, HQ, T, 4] underneath), and flattening each layer's view first would copy
    it, one more kernel launch per layer and statistic on every logging step."""
    return AttentionStats(*(torch.stack([s[i].detach() for s in per_layer]).flatten(1, 2) for i in range(4)))
