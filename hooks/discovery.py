"""Find the Parallax attention layers of a model and the layout each one follows.

Every module is matched against the layouts the caller passes, then the built-in ones
(parallax-probe's model, fla's `fla.layers.Parallax`, modules calling the official
`parallax-kernel`). A module that looks like Parallax (it has a probe projection such as
`r_proj`) but matches no layout is an error naming it: the probe does not guess a layout,
because a guess that misses a RoPE or an unpadding records wrong numbers without a sign.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .layouts import ADAPTERS_DOC, BUILT_IN, Layout, attribute_path, looks_like_parallax

Selector = Callable[[str, nn.Module], bool] | Sequence[str] | None


@dataclass(frozen=True)
class AttentionSite:
    """One Parallax attention layer the probe watches."""

    name: str
    module: nn.Module
    layout: Layout
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def w_r(self) -> torch.Tensor:
        """W_R, (HQ*D, C)."""
        return attribute_path(self.module, self.layout.w_r)

    @property
    def w_k(self) -> torch.Tensor:
        """W_K, (HK*D, C)."""
        return attribute_path(self.module, self.layout.w_k)

    @property
    def r_gain(self) -> torch.Tensor | None:
        """The probe norm's gain vector, or None."""
        return attribute_path(self.module, self.layout.r_gain)


class NoParallaxModulesError(ValueError):
    pass


def layout_of(module: nn.Module, layouts: Sequence[Layout]) -> Layout | None:
    return next((layout for layout in (*layouts, *BUILT_IN) if layout.is_layer(module)), None)


def _site(name: str, module: nn.Module, layout: Layout) -> AttentionSite:
    n_heads, n_kv, head_dim = layout.heads(module)
    site = AttentionSite(name, module, layout, n_heads, n_kv, head_dim)
    for what, path, rows in (("W_R", layout.w_r, n_heads * head_dim), ("W_K", layout.w_k, n_kv * head_dim)):
        weight = attribute_path(module, path)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] != rows:
            shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else None
            raise NoParallaxModulesError(
                f"{name} ({type(module).__name__}, layout {layout.name!r}): {what} at `{path}` should be a "
                f"({rows}, d_model) weight for {n_heads if what == 'W_R' else n_kv} heads of dim {head_dim}; got {shape}"
            )
    if layout.capture_point is None and not layout.ops_of(module):
        raise NoParallaxModulesError(
            f"{name} ({type(module).__name__}, layout {layout.name!r}): the layout names no attention op to intercept"
        )
    return site


def _unknown(name: str, module: nn.Module) -> NoParallaxModulesError:
    return NoParallaxModulesError(
        f"{name} ({type(module).__module__}.{type(module).__name__}) looks like Parallax attention but no layout "
        "knows it (built in: parallax-probe's model, fla.layers.Parallax, modules calling parallax-kernel's "
        f"functions). Tell the probe how its layer calls attention: Probe(..., layouts=[Layout(...)]), see {ADAPTERS_DOC}"
    )


def find_attention_sites(model: nn.Module, selector: Selector = None, layouts: Sequence[Layout] = ()) -> list[AttentionSite]:
    """Sites in `named_modules()` order (= layer order for a sequential decoder)."""
    names = set(selector) if selector is not None and not callable(selector) else None
    sites = []
    for name, module in model.named_modules():
        if names is not None:
            chosen = name in names
        elif callable(selector):
            chosen = bool(selector(name, module))
        else:
            chosen = layout_of(module, layouts) is not None or looks_like_parallax(module)
        if not chosen:
            continue
        layout = layout_of(module, layouts)
        if layout is None:
            raise _unknown(name, module)
        sites.append(_site(name, module, layout))
    if names is not None and len(sites) != len(names):
        missing = sorted(names - {s.name for s in sites})
        raise NoParallaxModulesError(f"selector names modules that are not in the model: {missing}")
    if not sites:
        raise NoParallaxModulesError(
            "found no Parallax attention module: looked for parallax-probe's ParallaxAttention, fla.layers.Parallax, "
            "modules calling parallax-kernel's functions, and any module with a probe projection (r_proj). A softmax "
            f"model has no W_R to probe; for another layout pass layouts=[Layout(...)] ({ADAPTERS_DOC})"
        )
    return sites
