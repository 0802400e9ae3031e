"""The per-row branch statistics an attention pass can return (docs/definitions.md section 2)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class AttentionStats(NamedTuple):
    """Per (B, T, HQ) row, float32, as the attention computed them.

    osm_sq: ||o_sm||^2, the softmax output's squared norm
    c_sq:   ||c||^2, the correction branch's squared norm
    osm_c:  <o_sm, c>
    r_sq:   ||r||^2, the probe's squared norm as the kernel saw it
    Any other ratio (COR = sqrt(c_sq / osm_sq), ||o||^2 = osm_sq + 2 osm_c + c_sq) is
    derived from these.
    """

    osm_sq: torch.Tensor
    c_sq: torch.Tensor
    osm_c: torch.Tensor
    r_sq: torch.Tensor
