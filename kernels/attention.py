"""The public Parallax attention function: validates once, then picks a backend."""

from __future__ import annotations

import math
import os
from typing import Literal

import torch

from .capability import triton_runs_on
from .reference import parallax_attention_reference

Backend = Literal["auto", "triton", "reference"]


def _validate(q, r, k, v, scale, causal, window, backend) -> None:
    tensors = {"q": q, "r": r, "k": k, "v": v}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"parallax_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"parallax_attention: {name} has shape {tuple(t.shape)}; expected 4 dims in the layout "
                "[B, T, H, D] (batch, time, heads, head_dim)"
            )
        if not t.is_floating_point():
            raise ValueError(f"parallax_attention: {name} has dtype {t.dtype}; expected a floating-point dtype")
    shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in tensors.items())
    if r.shape != q.shape:
        raise ValueError(f"parallax_attention: r must have q's shape [B, T, HQ, D]; got {shapes}")
    if v.shape != k.shape:
        raise ValueError(f"parallax_attention: v must have k's shape [B, T, HK, D]; got {shapes}")
    B, T, HQ, D = q.shape
    if k.shape[0] != B or k.shape[1] != T or k.shape[3] != D:
        raise ValueError(
            f"parallax_attention: q and k must agree on batch, length and head_dim; got {shapes}"
        )
    HK = k.shape[2]
    if HK == 0 or HQ % HK != 0:
        raise ValueError(
            f"parallax_attention: query heads ({HQ}) must be a multiple of key/value heads ({HK}) for GQA; got {shapes}"
        )
    dtypes = {n: t.dtype for n, t in tensors.items()}
    if len(set(dtypes.values())) != 1:
        raise ValueError(f"parallax_attention: q, r, k, v must share one dtype; got {dtypes}")
    devices = {n: str(t.device) for n, t in tensors.items()}
    if len(set(devices.values())) != 1:
        raise ValueError(f"parallax_attention: q, r, k, v must be on one device; got {devices}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"parallax_attention: scale must be a positive finite number or None, got {scale!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"parallax_attention: window must be a positive int (keys i-W < j <= i) or None, got {window!r}")
        if not causal:
            raise ValueError("parallax_attention: window is only defined for causal attention; pass causal=True")
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"parallax_attention: backend must be 'auto', 'triton' or 'reference', got {backend!r}")


def _triton_kernel_covers(q: torch.Tensor, causal: bool) -> bool:
    """Whether the Triton kernel computes this call; everything else takes the reference."""
    # Each tile holds a whole head in registers; the tiles are sized and measured for D = 64
    # and 128 only (other sizes would need padded tiles that nobody has checked or timed).
    if q.shape[-1] not in (64, 128):
        return False
    # The kernel's products take bf16/fp16 operands. float32 inputs would run as tf32
    # (about 3e-4 relative error, hundreds of times the float32 reference's) or as exact
    # float32 dots without the tensor cores' speed, so they stay on the reference.
    if q.dtype not in (torch.bfloat16, torch.float16):
        return False
    # The kernel's masks and its block ranges assume causal attention.
    return causal


def resolve_backend(q: torch.Tensor, backend: Backend, causal: bool = True) -> Literal["triton", "reference"]:
    """The one place that decides which implementation runs for this call.

    'auto' asks for Triton on compute capability 9.0; either way a call the kernel does not
    cover (`_triton_kernel_covers`) runs on the reference.
    """
    wanted = ("triton" if triton_runs_on(q.device) else "reference") if backend == "auto" else backend
    return "triton" if wanted == "triton" and _triton_kernel_covers(q, causal) else "reference"


def parallax_attention(
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    return_stats: bool = False,
    backend: Backend = "auto",
):
    """Parallax attention, o = o_sm - r^T Cov_p(k, v), in the layout [B, T, H, D].

    q, r: [B, T, HQ, D]; k, v: [B, T, HK, D] with HQ a multiple of HK (GQA).
    scale: softmax scale for q.k (default 1/sqrt(D)); the probe scores r.k are not scaled.
    window: keep keys j with i - W < j <= i (W keys, the diagonal included).
    return_stats: also return an `AttentionStats` of per-(B, T, HQ) row quantities.
    backend: 'auto' takes the Triton kernel on compute capability 9.0 and the reference
    elsewhere; 'triton' or 'reference' force one. Calls the kernel does not cover (head dim
    other than 64 or 128, float32, non-causal) take the reference either way.
    Returns o in the input dtype, or (o, stats).
    """
    _validate(q, r, k, v, scale, causal, window, backend)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if resolve_backend(q, backend, causal) == "triton":
        if q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "parallax_attention: backend='triton' with CPU tensors runs only in Triton's "
                "interpreter; set TRITON_INTERPRET=1 before the first call, or use backend='reference'"
            )
        # Imported here, not at module scope: Triton decides at kernel definition time
        # whether the kernels compile or run in the interpreter (TRITON_INTERPRET).
        from .parallel import parallax_attention_triton

        return parallax_attention_triton(
            q, r, k, v, scale=scale, window=window, return_stats=return_stats
        )
    return parallax_attention_reference(
        q, r, k, v, scale=scale, causal=causal, window=window, return_stats=return_stats
    )
