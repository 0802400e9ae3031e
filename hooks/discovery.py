"""Find the Parallax attention modules of a model, ours or foreign.

Ours are `ParallaxAttention` (they carry a `stats_site` the kernel's statistics pass
through). Foreign ones are recognised by fla's projection layout: `q_proj`, `r_proj`,
`k_proj`, `v_proj`, `o_proj` Linear layers, with optional per-head `q_norm`, `r_norm`,
`k_norm`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch.nn as nn

PROJECTIONS = ("q_proj", "r_proj", "k_proj", "v_proj", "o_proj")
Selector = Callable[[str, nn.Module], bool] | Sequence[str] | None


@dataclass(frozen=True)
class AttentionSite:
    """One Parallax attention module the probe watches."""

    name: str
    module: nn.Module
    native: bool  # ours: statistics come out of the attention pass itself
    n_heads: int
    n_kv_heads: int
    head_dim: int


class NoParallaxModulesError(ValueError):
    pass


def has_parallax_layout(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, p, None), nn.Linear) for p in PROJECTIONS)


def _head_shape(module: nn.Module) -> tuple[int, int, int]:
    head_dim = getattr(module, "head_dim", None)
    n_heads = getattr(module, "n_heads", None) or getattr(module, "num_heads", None)
    n_kv = getattr(module, "n_kv_heads", None) or getattr(module, "num_kv_heads", None)
    if head_dim is None and n_heads:
        head_dim = module.q_proj.out_features // n_heads
    if n_heads is None and head_dim:
        n_heads = module.q_proj.out_features // head_dim
    if n_kv is None and head_dim:
        n_kv = module.k_proj.out_features // head_dim
    if not (head_dim and n_heads and n_kv):
        raise NoParallaxModulesError(
            f"{type(module).__name__}: cannot tell its head count and head dim; give it `num_heads` "
            "(or `n_heads`) and `head_dim` attributes"
        )
    return int(n_heads), int(n_kv), int(head_dim)


def find_attention_sites(model: nn.Module, selector: Selector = None) -> list[AttentionSite]:
    """Sites in `named_modules()` order (= layer order for a sequential decoder)."""
    sites = []
    names = set(selector) if selector is not None and not callable(selector) else None
    for name, module in model.named_modules():
        if names is not None:
            chosen = name in names
        elif callable(selector):
            chosen = bool(selector(name, module))
        else:
            chosen = hasattr(module, "stats_site") or has_parallax_layout(module)
        if not chosen:
            continue
        if not has_parallax_layout(module):
            raise NoParallaxModulesError(
                f"selected module {name!r} ({type(module).__name__}) lacks the Parallax projections {', '.join(PROJECTIONS)}"
            )
        sites.append(AttentionSite(name, module, hasattr(module, "stats_site"), *_head_shape(module)))
    if names is not None and len(sites) != len(names):
        missing = sorted(names - {s.name for s in sites})
        raise NoParallaxModulesError(f"selector names modules that are not in the model: {missing}")
    if not sites:
        raise NoParallaxModulesError(
            "found no Parallax attention module: looked for parallax_probe ParallaxAttention modules and for any module "
            f"with nn.Linear {', '.join(PROJECTIONS)} (fla.layers.Parallax layout). A softmax model has no W_R to probe; "
            "for another layout pass selector=[module names] or a callable(name, module)"
        )
    return sites
