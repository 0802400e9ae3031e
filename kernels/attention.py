"""The public Parallax attention function: validates once, then picks a backend."""

from __future__ import annotations

import math
import os
from typing import Literal

import torch

from .backends import BACKENDS, Backend
from .capability import triton_runs_on
from .reference import parallax_attention_reference


def _validate(q, r, k, v, scale, causal, window, backend, cu_seqlens, max_seqlen) -> None:
    # Every call of a training step passes through here: the checks compare values and build
    # a message only once one fails (formatting the shapes on every call cost more host time
    # than all the checks together).
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

    def shapes() -> str:
        return ", ".join(f"{n}={tuple(t.shape)}" for n, t in tensors.items())

    if r.shape != q.shape:
        raise ValueError(f"parallax_attention: r must have q's shape [B, T, HQ, D]; got {shapes()}")
    if v.shape != k.shape:
        raise ValueError(f"parallax_attention: v must have k's shape [B, T, HK, D]; got {shapes()}")
    B, T, HQ, D = q.shape
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"parallax_attention: q and k must agree on batch and head_dim; got {shapes()}")
    if causal and k.shape[1] < T:
        raise ValueError(
            f"parallax_attention: causal attention needs at least as many keys as queries (the queries are the "
            f"last Tq positions); got {shapes()}"
        )
    HK = k.shape[2]
    if HK == 0 or HQ % HK != 0:
        raise ValueError(
            f"parallax_attention: query heads ({HQ}) must be a multiple of key/value heads ({HK}) for GQA; got {shapes()}"
        )
    if not q.dtype == r.dtype == k.dtype == v.dtype:
        dtypes = {n: t.dtype for n, t in tensors.items()}
        raise ValueError(f"parallax_attention: q, r, k, v must share one dtype; got {dtypes}")
    if not q.device == r.device == k.device == v.device:
        devices = {n: str(t.device) for n, t in tensors.items()}
        raise ValueError(f"parallax_attention: q, r, k, v must be on one device; got {devices}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"parallax_attention: scale must be a positive finite number or None, got {scale!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"parallax_attention: window must be a positive int (keys i-W < j <= i) or None, got {window!r}")
        if not causal:
            raise ValueError("parallax_attention: window is only defined for causal attention; pass causal=True")
    if cu_seqlens is not None:
        _validate_cu_seqlens(cu_seqlens, q, k, max_seqlen)
    elif max_seqlen is not None:
        raise ValueError("parallax_attention: max_seqlen goes with cu_seqlens; pass both or neither")
    if backend not in BACKENDS:
        raise ValueError(f"parallax_attention: backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")


def _validate_cu_seqlens(cu_seqlens, q, k, max_seqlen) -> None:
    """Packed sequences in flash-attention's convention: [1, total, H, D] and int offsets [n + 1]."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            "parallax_attention: cu_seqlens must be a 1-D int32 or int64 tensor of sequence offsets [0, ..., total]; "
            f"got {cu_seqlens!r:.80}"
        )
    if q.shape[0] != 1 or k.shape[1] != q.shape[1]:
        raise ValueError(
            "parallax_attention: with cu_seqlens, pack the sequences into one row: q, r, k, v of shape "
            f"[1, total_tokens, H, D]; got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if cu_seqlens.numel() < 2 or cu_seqlens.device != q.device:
        raise ValueError(
            f"parallax_attention: cu_seqlens needs at least 2 entries, on q's device ({q.device}); "
            f"got {cu_seqlens.numel()} on {cu_seqlens.device}"
        )
    if max_seqlen is not None and (isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 1):
        raise ValueError(f"parallax_attention: max_seqlen must be a positive int or None, got {max_seqlen!r}")
    # The offsets' values are checked only on the CPU (on a GPU that would cost a host sync per
    # call), and only eagerly: a compiled graph has no values to read while it is traced.
    if cu_seqlens.device.type == "cpu" and not torch.compiler.is_compiling():
        offsets = cu_seqlens.tolist()
        if offsets[0] != 0 or offsets[-1] != q.shape[1] or any(b < a for a, b in zip(offsets, offsets[1:])):
            raise ValueError(
                f"parallax_attention: cu_seqlens must rise from 0 to the packed length {q.shape[1]} without "
                f"decreasing; got {offsets[:8]}{' ...' if len(offsets) > 8 else ''}"
            )
        longest = max(b - a for a, b in zip(offsets, offsets[1:]))
        if max_seqlen is not None and max_seqlen < longest:
            raise ValueError(
                f"parallax_attention: max_seqlen ({max_seqlen}) is shorter than the longest packed sequence "
                f"({longest}); pass at least that, or None"
            )


def _triton_kernel_covers(q: torch.Tensor, k: torch.Tensor, causal: bool) -> bool:
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
    # Queries offset against a longer cache (a decode step) are not in the kernel.
    if k.shape[1] != q.shape[1]:
        return False
    # The kernel's masks and its block ranges assume causal attention.
    return causal


def resolve_backend(
    q: torch.Tensor,
    backend: Backend,
    causal: bool = True,
    *,
    k: torch.Tensor | None = None,
) -> Literal["triton", "reference"]:
    """The one place that decides which implementation runs for this call.

    'auto' asks for Triton on compute capability 9.0; either way a call the kernel does not
    cover (`_triton_kernel_covers`) runs on the reference.
    """
    wanted = ("triton" if triton_runs_on(q.device) else "reference") if backend == "auto" else backend
    covered = _triton_kernel_covers(q, q if k is None else k, causal)
    return "triton" if wanted == "triton" and covered else "reference"


def parallax_attention(
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    return_stats: bool = False,
    backend: Backend = "auto",
):
    """Parallax attention, o = o_sm - r^T Cov_p(k, v), in the layout [B, T, H, D].

    q, r: [B, Tq, HQ, D]; k, v: [B, Tk, HK, D] with HQ a multiple of HK (GQA). Usually
    Tk = Tq; with Tk > Tq (a decode step against a cache) query i sits at position Tk - Tq + i.
    scale: softmax scale for q.k (default 1/sqrt(D)); the probe scores r.k are not scaled.
    window: keep keys j with i - W < j <= i (W keys, the diagonal included).
    cu_seqlens: packed sequences (flash-attention's layout): q, r, k, v of shape
    [1, total_tokens, H, D] and int offsets [0, len_0, len_0 + len_1, ..., total] of length
    n + 1; attention (and the window) stays inside each sequence. max_seqlen: the longest
    sequence, optional (saves a host sync where a backend needs it).
    return_stats: also return an `AttentionStats` of per-(B, T, HQ) row quantities.
    backend: 'auto' takes the Triton kernel on compute capability 9.0 and the reference
    elsewhere; 'triton' or 'reference' force one. Calls the kernel does not cover (head dim
    other than 64 or 128, float32, non-causal, Tk != Tq) take the reference either way.
    Returns o in the input dtype, or (o, stats).
    """
    _validate(q, r, k, v, scale, causal, window, backend, cu_seqlens, max_seqlen)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if resolve_backend(q, backend, causal, k=k) == "triton":
        if q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "parallax_attention: backend='triton' with CPU tensors runs only in Triton's "
                "interpreter; set TRITON_INTERPRET=1 before the first call, or use backend='reference'"
            )
        # Imported here, not at module scope: Triton decides at kernel definition time
        # whether the kernels compile or run in the interpreter (TRITON_INTERPRET).
        from .parallel import parallax_attention_triton

        return parallax_attention_triton(
            q, r, k, v, scale=scale, window=window, return_stats=return_stats,
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
        )
    return parallax_attention_reference(
        q, r, k, v, scale=scale, causal=causal, window=window, cu_seqlens=cu_seqlens, return_stats=return_stats
    )
