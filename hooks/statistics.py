"""Reduce every layer's per-row attention statistics to per-head numbers, on the device, at once.

Input: an `AttentionStats` whose four tensors are (L, N, HQ): each layer's rows (N = B*T
tokens) stacked. Output: an (L, N_STATS, HQ) float64 tensor whose rows are named by
`parallax_probe.store.probe_schema.ATTN_STAT_NAMES`. Nothing here syncs with the host.

One call for all layers, not one per layer: a logging step then launches a few dozen
kernels instead of a few dozen per layer, which is what a logging step costs when the
GPU is fast and the Python loop is not (every=1 on the H200 measured 14 ms per logging
step with per-layer reductions).

COR per token is ||c|| / ||o_sm|| (docs/definitions.md section 2). A token with a
non-finite statistic is counted in `nonfinite` and makes that head's statistics NaN: we
store what happened, we do not filter it away.
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


def _mean_quantiles_max(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean, p50, p90 and max over `dim`, stacked in that order at `dim`."""
    return torch.stack([values.mean(dim), *quantiles_along(values, dim=dim), values.amax(dim)], dim=dim)


def reduce_attention_stats(stats: AttentionStats) -> torch.Tensor:
    """(L, len(ATTN_STAT_NAMES), HQ) float64 summary of each layer's rows, over all N tokens.

    Sums are accumulated in float64 and kept so; counts are exact in float64. The four
    statistics go through as one tensor and COR and the probe norm as another, so that the
    whole summary is about twenty-five kernel launches: on a GPU that outruns Python, a logging
    step's cost is mostly launches (RESULTS.md, probe overhead).
    """
    rows = torch.stack([s.float() for s in stats], dim=1)  # (L, 4, N, HQ): osm_sq, c_sq, osm_c, r_sq
    L, _, N, HQ = rows.shape
    cor = correction_to_output_ratio(AttentionStats(*rows.unbind(1)))
    per_token = torch.stack([cor, rows[:, 3].sqrt()], dim=1)  # (L, 2, N, HQ): COR and ||r||
    summary = _mean_quantiles_max(per_token, dim=2).double()  # (L, 2, 4, HQ)
    sums = rows[:, :3].sum(2, dtype=torch.float64)  # (L, 3, HQ)
    tokens = torch.full((L, 1, HQ), float(N), device=rows.device, dtype=torch.float64)
    nonfinite = torch.isfinite(rows).all(1).logical_not().sum(1, keepdim=True).double()  # (L, 1, HQ)
    # ATTN_STAT_NAMES' order: COR's four, the three sums, tokens, the norm's four, nonfinite
    return torch.cat([summary[:, 0], sums, tokens, summary[:, 1], nonfinite], dim=1)


def stack_layers(per_layer: list[AttentionStats]) -> AttentionStats:
    """Each layer's (B, T, HQ) rows -> one AttentionStats of (L, B*T, HQ) tensors.

    One stack of every layer's four statistics, flattened afterwards: the Triton kernel's rows
    are strided views ([B, HQ, T, 4] underneath), and flattening each layer's view first would
    copy it, one more kernel launch per layer and statistic on every logging step."""
    with torch.no_grad():  # the rows are data, not part of any graph (and 4 L detach calls cost host time)
        stacked = torch.stack([s for layer in per_layer for s in layer])  # (L * 4, B, T, HQ)
    return AttentionStats(*stacked.unflatten(0, (len(per_layer), 4)).flatten(2, 3).unbind(1))
