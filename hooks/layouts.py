"""Layouts: how the probe finds one kind of Parallax attention layer and reads its attention call.

A `Layout` says which modules are Parallax attention layers, where their weights are (W_R,
W_K, the probe norm's gain), their head shape, and which attention ops they call. An `Op`
names one such callable by where the layer looks it up (a module global such as
`fla.layers.parallax.parallel_parallax`) and says how to read q, r, k, v, scale, window and
sequence boundaries from its arguments. While a probe is attached it replaces that name
with a wrapper; at a logging step the wrapper hands the call's exact inputs to the probe.

Built in: parallax-probe's own model (its attention passes the kernel's statistics through
an explicit capture point, `stats_site`), fla's `fla.layers.Parallax` (so `ParallaxModel`
and `ParallaxForCausalLM`), and modules calling the official `parallax-kernel` functions.
Anything else passes `layouts=[Layout(...)]` to the probe (docs/adapters.md, with a tested
nanochat-style example).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from .calls import AttentionCall

ADAPTERS_DOC = "docs/adapters.md"


@dataclass(frozen=True, kw_only=True)
class Op:
    """An attention op a layer calls, found as `getattr(namespace, attribute)` at call time.

    read: called with the op's own arguments; returns the `AttentionCall` they describe.
    write: turns our kernel's output [B, T, HQ, D] into what the op returns, so that a logging
    step's call can be served by our kernel in one pass; None for ops our kernel must not
    replace (decode kernels, references): their statistics are computed beside them.
    """

    namespace: Any
    attribute: str
    read: Callable[..., AttentionCall]
    write: Callable[[torch.Tensor, AttentionCall], Any] | None = None


def heads_from_attributes(module: nn.Module) -> tuple[int, int, int]:
    """(HQ, HK, D) from `num_heads`/`n_heads`, `num_kv_heads`/`n_kv_heads`, `head_dim` (fla, ours, Llama)."""
    head_dim = getattr(module, "head_dim", None)
    n_heads = getattr(module, "num_heads", None) or getattr(module, "n_heads", None) or getattr(module, "n_head", None)
    n_kv = getattr(module, "num_kv_heads", None) or getattr(module, "n_kv_heads", None) or getattr(module, "n_kv_head", None)
    if not (head_dim and n_heads):
        raise ValueError(
            f"{type(module).__name__}: cannot tell its head count and head dim; give it `num_heads` and `head_dim` "
            f"attributes, or pass a Layout with `heads=` ({ADAPTERS_DOC})"
        )
    return int(n_heads), int(n_kv or n_heads), int(head_dim)


@dataclass(frozen=True, kw_only=True)
class Layout:
    """How the probe finds and reads one kind of Parallax attention layer.

    is_layer: True for the modules that are attention layers of this kind.
    ops: the attention ops such a layer calls (a list, or a function of the layer module).
    capture_point: instead of ops, the name of a submodule the layer passes the kernel's
    `AttentionStats` through at logging steps (parallax-probe's own model).
    heads: (HQ, HK, D) of a layer. w_r, w_k, r_gain: dotted paths from the layer to W_R
    (HQ*D, C), W_K (HK*D, C) and the probe norm's gain (None: the layer has none).
    """

    name: str
    is_layer: Callable[[nn.Module], bool]
    ops: Sequence[Op] | Callable[[nn.Module], Sequence[Op]] = ()
    capture_point: str | None = None
    heads: Callable[[nn.Module], tuple[int, int, int]] = heads_from_attributes
    w_r: str = "r_proj.weight"
    w_k: str = "k_proj.weight"
    r_gain: str | None = "r_norm.weight"

    def ops_of(self, layer: nn.Module) -> list[Op]:
        return list(self.ops(layer) if callable(self.ops) else self.ops)


def attribute_path(root: Any, path: str | None) -> Any:
    """`root.a.b` for path "a.b"; None when path is None or any part is missing."""
    if path is None:
        return None
    value = root
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


# ---- parallax-probe's own model ------------------------------------------------------------

NATIVE = Layout(
    name="parallax-probe",
    is_layer=lambda module: isinstance(getattr(module, "stats_site", None), nn.Module) and hasattr(module, "r_proj"),
    capture_point="stats_site",
)


# ---- fla (flash-linear-attention) ----------------------------------------------------------

def _window(window_size: int | None) -> int | None:
    return None if window_size is None else int(window_size)


def read_fla_parallel(q, r, k, v, scale=None, window_size=None, cu_seqlens=None) -> AttentionCall:
    """`fla.ops.parallax.parallel_parallax`: [B, T, H, D]; window keeps keys [i - W + 1, i], as ours."""
    return AttentionCall(q, r, k, v, scale=scale, window=_window(window_size), cu_seqlens=cu_seqlens)


def read_fla_decode(q, r, k, v, scale=None, window_size=None, cache_start=None) -> AttentionCall:
    """fla's `parallax_decode` / `parallax_decode_one_step`: Tq new queries over a cache of Tk keys.

    fla pads on the left (cache_start = first real key); a query before it is padding itself
    and is not counted."""
    return AttentionCall(q, r, k, v, scale=scale, window=_window(window_size), key_start=cache_start)


def _same_output(o: torch.Tensor, call: AttentionCall) -> torch.Tensor:
    return o


def _is_fla_parallax(module: nn.Module) -> bool:
    fla_layer = sys.modules.get("fla.layers.parallax")  # never imports fla: a model of it already has
    return fla_layer is not None and isinstance(module, fla_layer.Parallax)


def _fla_ops(layer: nn.Module) -> list[Op]:
    namespace = sys.modules["fla.layers.parallax"]
    return [
        Op(namespace=namespace, attribute="parallel_parallax", read=read_fla_parallel, write=_same_output),
        Op(namespace=namespace, attribute="parallax_decode", read=read_fla_decode),
        Op(namespace=namespace, attribute="parallax_decode_one_step", read=read_fla_decode),
    ]


FLA = Layout(name="fla", is_layer=_is_fla_parallax, ops=_fla_ops)


# ---- the official parallax-kernel package (imports as `parallax`) -------------------------

def _official_window(window_size_left: int) -> int | None:
    """FA2's window_size_left: -1 for none; W >= 1 keeps keys [i - W + 1, i] (W keys), as ours."""
    if window_size_left is None or window_size_left < 0:
        return None
    if window_size_left == 0:
        raise ValueError("parallax-probe: window_size_left=0 leaves a query no key; use -1 (no window) or W >= 1")
    return int(window_size_left)


def read_official_func(q, r, k, v, qk_scale=None, window_size_left=-1) -> AttentionCall:
    """`parallax.parallax_func`: layout [B, H, T, D]."""
    return AttentionCall.from_heads_first(q, r, k, v, scale=qk_scale, window=_official_window(window_size_left))


def write_official_func(o: torch.Tensor, call: AttentionCall) -> torch.Tensor:
    return o.transpose(1, 2).contiguous()  # back to [B, H, T, D], contiguous as the op returns it


def read_official_varlen(q, r, k, v, qk_scale=None, window_size_left=-1, cu_seqlens=None) -> AttentionCall:
    """`parallax.parallax_varlen_func`: layout [B, T, H, D], packed with cu_seqlens."""
    return AttentionCall(q, r, k, v, scale=qk_scale, window=_official_window(window_size_left), cu_seqlens=cu_seqlens)


def read_official_reference(q, r, k, v, qk_scale, *, causal=True, window_size_left=-1) -> AttentionCall:
    """`parallax.parallax_reference`: [B, T, H, D]; with fewer queries than keys, queries are the last positions."""
    return AttentionCall(q, r, k, v, scale=qk_scale, window=_official_window(window_size_left), causal=causal)


def read_official_decode(q, r, k, v, qk_scale=None, *, window_size_left=-1, cache_start=None) -> AttentionCall:
    """`parallax.triton.parallax_decode`: one query per row over a cache, left padding from cache_start."""
    return AttentionCall(q, r, k, v, scale=qk_scale, window=_official_window(window_size_left), key_start=cache_start)


def _official_readers() -> dict[str, dict]:
    """Each official function by name: how to read it and whether our kernel may serve it."""
    return {
        "parallax_func": dict(read=read_official_func, write=write_official_func),
        "parallax_varlen_func": dict(read=read_official_varlen, write=_same_output),
        "parallax_reference": dict(read=read_official_reference),
        "parallax_decode": dict(read=read_official_decode),
    }


def _official_functions() -> dict[int, str]:
    """id(function) -> name, for the official functions a loaded `parallax` package exposes."""
    found = {}
    for module_name in ("parallax", "parallax.triton"):
        package = sys.modules.get(module_name)
        for name in _official_readers():
            function = getattr(package, name, None)
            if callable(function):
                found[id(function)] = name
    return found


def official_kernel_ops(layer: nn.Module) -> list[Op]:
    """The official functions the layer's own Python module can call: names bound to them in its
    globals (`from parallax import parallax_func`), and the package's attributes where the module
    holds the package itself (`import parallax; parallax.parallax_func(...)`)."""
    readers, functions = _official_readers(), _official_functions()
    home = sys.modules.get(type(layer).__module__)
    ops = []
    for global_name, value in vars(home).items() if home is not None else ():
        if id(value) in functions:
            ops.append(Op(namespace=home, attribute=global_name, **readers[functions[id(value)]]))
        elif isinstance(value, ModuleType) and value.__name__ in ("parallax", "parallax.triton"):
            ops.extend(Op(namespace=value, attribute=name, **readers[name]) for name in readers if callable(getattr(value, name, None)))
    return ops


def _calls_official_kernel(module: nn.Module) -> bool:
    return "parallax" in sys.modules and hasattr(module, "r_proj") and bool(official_kernel_ops(module))


OFFICIAL = Layout(name="parallax-kernel", is_layer=_calls_official_kernel, ops=official_kernel_ops)

BUILT_IN: tuple[Layout, ...] = (NATIVE, FLA, OFFICIAL)


def looks_like_parallax(module: nn.Module) -> bool:
    """A module with a probe projection: Parallax-like, whether or not a layout knows it."""
    return any(isinstance(getattr(module, name, None), nn.Linear) for name in ("r_proj", "c_r", "w_r", "wr"))
