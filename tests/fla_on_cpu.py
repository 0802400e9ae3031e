"""Run fla's real Parallax model on a CPU: its Triton-only pieces swapped for fla's own references.

Everything else is the installed package's code (the layer, its unpadding and cache logic,
the model, the HF plumbing). The swaps, as the standards allow, are only for what cannot run
without a GPU:
- `parallel_parallax` -> `fla.ops.parallax.naive_parallax`, once per packed sequence (the
  naive function takes no cu_seqlens);
- fla's Triton rotary kernel -> `fla.modules.rotary.ops.rotary_embedding_ref`, with the
  positions the kernel would use (per-row offsets, restarted per packed sequence);
- the decode kernels -> the official `parallax.parallax_reference` (end-aligned causal),
  one row at a time from its first real cached key;
- fla's Triton RMSNorm (qk_norm) -> `torch.nn.RMSNorm` with the same weight and eps, and
  its Triton `swiglu` -> silu(gate) * up (the config's fuse_norm / fuse_swiglu off).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F


def _rotary(x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None, chunk_indices=None):
    from fla.modules.rotary.ops import rotary_embedding_ref

    def rotate(x_BTHD, offsets):
        positions = torch.arange(x_BTHD.shape[1])[None, :] + torch.as_tensor(offsets).reshape(-1, 1)  # (B or 1, T)
        return rotary_embedding_ref(x_BTHD, cos[positions], sin[positions], interleaved=interleaved)

    if cu_seqlens is None:
        return rotate(x, seqlen_offsets)
    bounds = cu_seqlens.tolist()
    offsets = (
        torch.as_tensor(seqlen_offsets).expand(len(bounds) - 1)
        if not isinstance(seqlen_offsets, int)
        else [seqlen_offsets] * (len(bounds) - 1)
    )
    return torch.cat([rotate(x[:, a:b], int(o)) for a, b, o in zip(bounds[:-1], bounds[1:], offsets)], dim=1)


def _parallel(q, r, k, v, scale=None, window_size=None, cu_seqlens=None):
    from fla.ops.parallax import naive_parallax

    if cu_seqlens is None:
        return naive_parallax(q, r, k, v, scale=scale, window_size=window_size)
    bounds = cu_seqlens.tolist()
    return torch.cat(
        [
            naive_parallax(q[:, a:b], r[:, a:b], k[:, a:b], v[:, a:b], scale=scale, window_size=window_size)
            for a, b in zip(bounds[:-1], bounds[1:])
            if b > a
        ],
        dim=1,
    )


def _decode(q, r, k, v, scale=None, window_size=None, cache_start=None):
    from parallax import parallax_reference

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    window = -1 if window_size is None else window_size
    starts = [0] * q.shape[0] if cache_start is None else cache_start.tolist()
    out = torch.zeros_like(q)
    for b, start in enumerate(starts):
        first_query = max(0, q.shape[1] - (k.shape[1] - start))  # queries before the first real key are padding
        if first_query < q.shape[1]:
            out[b : b + 1, first_query:] = parallax_reference(
                q[b : b + 1, first_query:],
                r[b : b + 1, first_query:],
                k[b : b + 1, start:],
                v[b : b + 1, start:],
                scale,
                window_size_left=window,
            ).to(q.dtype)
    return out


def torch_rms_norms(model: nn.Module) -> None:
    """fla's Triton RMSNorm modules -> torch.nn.RMSNorm with the same weight and eps, in place."""
    from fla.modules import RMSNorm as FlaRMSNorm

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FlaRMSNorm):
                norm = nn.RMSNorm(child.hidden_size, eps=child.eps, elementwise_affine=child.weight is not None, dtype=child.weight.dtype)
                if child.weight is not None:
                    norm.weight.data.copy_(child.weight.data)
                setattr(parent, name, norm)


@contextlib.contextmanager
def fla_kernels_on_cpu():
    """Swap fla's Triton-only functions for their references while the block runs."""
    import fla.layers.parallax as fla_layer
    import fla.modules.mlp as fla_mlp
    import fla.modules.rotary.ops as fla_rotary

    swaps = [
        (fla_layer, "parallel_parallax", _parallel),
        (fla_layer, "parallax_decode", _decode),
        (fla_layer, "parallax_decode_one_step", _decode),
        (fla_rotary, "rotary_embedding", _rotary),
        (fla_mlp, "swiglu", lambda gate, up: F.silu(gate) * up),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
    for owner, name, replacement in swaps:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def tiny_fla_model(*, qk_norm=False, num_kv_heads=None, window_size=None, layers=2, hidden=64, heads=4, vocab=50, seed=0):
    """fla's ParallaxForCausalLM, small, on the CPU in float32, with W_R large enough to matter."""
    from fla.models import ParallaxConfig, ParallaxForCausalLM

    torch.manual_seed(seed)
    config = ParallaxConfig(
        hidden_size=hidden, num_heads=heads, num_kv_heads=num_kv_heads, num_hidden_layers=layers, vocab_size=vocab,
        qk_norm=qk_norm, window_size=window_size, fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False,
    )
    model = ParallaxForCausalLM(config)
    torch_rms_norms(model)
    with torch.no_grad():  # fla's init draws W_R at std 0.02; a larger probe makes the correction visible
        for layer in model.model.layers:
            layer.attn.r_proj.weight.normal_(0.0, 0.3)
    return model.eval()
