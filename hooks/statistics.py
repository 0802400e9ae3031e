"""Reduce one attention pass's per-row statistics to per-head numbers, on the device.

Input: an `AttentionStats` of (B, T, HQ) rows. Output: a (N_STATS, HQ) float32 tensor whose
rows are named by `parallax_probe.probe_schema.ATTN_STAT_NAMES`. Nothing here syncs with the host; the probe stacks
every layer's tensor and moves them to the host once per logging step.

COR per token is ||c|| / ||o_sm|| (SPEC section 2). A token with a non-finite statistic
is counted in `nonfinite` and makes that head's statistics NaN: we store what happened,
we do not filter it away.
"""

from __future__ import annotations

import torch

from parallax_probe.kernels import AttentionStats


def correction_to_output_ratio(stats: AttentionStats) -> torch.Tensor:
    """Per-row ||c|| / ||o_sm||, same shape as the rows."""
    return (stats.c_sq / stats.osm_sq).sqrt()


def _mean_p50_p90_max(values_NH: torch.Tensor) -> list[torch.Tensor]:
    quantiles = torch.quantile(values_NH, torch.tensor([0.5, 0.9], device=values_NH.device), dim=0)
    return [values_NH.mean(0), quantiles[0], quantiles[1], values_NH.amax(0)]


def reduce_attention_stats(stats: AttentionStats) -> torch.Tensor:
    """(len(ATTN_STAT_NAMES), HQ) float64 summary of one layer's rows, over all B*T tokens.

    Sums are accumulated in float64 and kept so; counts are exact in float64.
    """
    HQ = stats.osm_sq.shape[-1]
    osm_sq, c_sq, osm_c, r_sq = (s.reshape(-1, HQ).float() for s in stats)  # (N, HQ) each
    cor = correction_to_output_ratio(AttentionStats(osm_sq, c_sq, osm_c, r_sq))
    probe_norm = r_sq.sqrt()
    finite = torch.isfinite(osm_sq) & torch.isfinite(c_sq) & torch.isfinite(osm_c) & torch.isfinite(r_sq)
    rows = [
        *(r.double() for r in _mean_p50_p90_max(cor)),
        osm_sq.double().sum(0),
        c_sq.double().sum(0),
        osm_c.double().sum(0),
        torch.full((HQ,), float(osm_sq.shape[0]), device=osm_sq.device, dtype=torch.float64),
        *(r.double() for r in _mean_p50_p90_max(probe_norm)),
        (~finite).sum(0).double(),
    ]
    return torch.stack(rows)
