"""One call of a model's Parallax attention op, as the op received it, and its statistics.

The probe never re-derives a layer's q, r, k, v: it takes them from the call the layer makes
to its attention op (fla's `parallel_parallax`, the official kernel's `parallax_func`, ...),
after everything the layer does first (per-head norms, RoPE on q, k and r, GQA layout,
unpadding). An `AttentionCall` is that call in this package's vocabulary: layout
[B, T, H, D], the softmax scale, the window (keys i - W < j <= i), packed-sequence offsets,
and where each row's real keys start in a left-padded cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from parallax_probe.kernels import AttentionStats, parallax_attention, resolve_backend


@dataclass(frozen=True)
class AttentionCall:
    """What one attention op call received, in the layout [B, T, H, D].

    q, r: [B, Tq, HQ, D]; k, v: [B, Tk, HK, D]. With Tk > Tq (a decode step against a cache)
    query i sits at position Tk - Tq + i.
    scale: the softmax scale of q.k (None: 1/sqrt(D)); r.k is never scaled.
    window: keys i - W < j <= i (W keys, the diagonal included); None for full causal.
    cu_seqlens: packed sequences ([1, total, H, D]); attention stays inside each.
    key_start: (B,) index of each row's first real key (left padding in a cache), or None;
    a query before its row's first real key is padding itself.
    """

    q: torch.Tensor
    r: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float | None = None
    window: int | None = None
    causal: bool = True
    cu_seqlens: torch.Tensor | None = None
    key_start: torch.Tensor | None = None

    @classmethod
    def from_heads_first(cls, q, r, k, v, **options) -> AttentionCall:
        """From the layout [B, H, T, D] (SDPA's, the official kernel's `parallax_func`)."""
        return cls(*(t.transpose(1, 2) for t in (q, r, k, v)), **options)

    @property
    def is_plain(self) -> bool:
        """Every key and query real and Tq = Tk: the training call our kernel can serve."""
        return self.key_start is None and self.q.shape[1] == self.k.shape[1]


def kernel_serves(call: AttentionCall) -> bool:
    """Whether our Triton kernel computes this call itself (output, gradients and statistics in one pass)."""
    one_dtype = len({t.dtype for t in (call.q, call.r, call.k, call.v)}) == 1
    return (
        one_dtype
        and call.is_plain
        and call.causal
        and resolve_backend(call.q, "auto", call.causal, k=call.k) == "triton"
    )


def serve(call: AttentionCall) -> tuple[torch.Tensor, AttentionStats]:
    """Our kernel's output [B, T, HQ, D] (with autograd) and its row statistics, in one pass."""
    return parallax_attention(
        call.q, call.r, call.k, call.v, scale=call.scale, window=call.window, cu_seqlens=call.cu_seqlens, return_stats=True
    )


def statistics_beside(call: AttentionCall) -> AttentionStats:
    """The call's row statistics, computed next to the model's own op (no autograd).

    Rows: (B, Tq, HQ) without key_start; otherwise (1, N, HQ) for the N real query tokens,
    in batch-then-time order. Padding keys are left out as the op leaves them out.
    """
    # one dtype for our function (under autocast a layer may hand its op a float32 q beside a bf16 v)
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in (call.q, call.r, call.k, call.v)))
    q, r, k, v = (t.detach().to(dtype) for t in (call.q, call.r, call.k, call.v))
    options = dict(scale=call.scale, window=call.window, causal=call.causal, return_stats=True)
    if call.key_start is None:
        if call.cu_seqlens is not None:
            _, stats = parallax_attention(q, r, k, v, cu_seqlens=call.cu_seqlens, **options)
        else:
            stats = _dense_in_batch_chunks(q, r, k, v, options)
        return stats
    # Left padding in a cache: each row has its own first key. The rows' real queries are the
    # last ones (a query before the first real key is padding itself), so each row runs alone.
    Tq, Tk = q.shape[1], k.shape[1]
    rows = []
    for b, start in enumerate(call.key_start.tolist()):  # a host sync, on logging steps of a cached call
        first_query = max(0, Tq - (Tk - start))
        if first_query >= Tq:
            continue
        _, stats = parallax_attention(
            q[b : b + 1, first_query:], r[b : b + 1, first_query:], k[b : b + 1, start:], v[b : b + 1, start:], **options
        )
        rows.append(stats)
    heads = q.shape[2]
    if not rows:
        return AttentionStats(*(q.new_zeros((1, 0, heads), dtype=torch.float32) for _ in AttentionStats._fields))
    return AttentionStats(*(torch.cat(parts, dim=1) for parts in zip(*rows)))


# Where the reference computes the statistics, it holds a few [B, HQ, Tq, Tk] float32 score
# matrices: batch rows go in chunks of at most this many score elements (1 GiB each).
REFERENCE_SCORE_ELEMENTS = 2**28


def _dense_in_batch_chunks(q, r, k, v, options) -> AttentionStats:
    B, Tq, HQ, _ = q.shape
    if resolve_backend(q, "auto", options["causal"], k=k) == "triton":
        return parallax_attention(q, r, k, v, **options)[1]  # the kernel holds no score matrix
    rows_per_chunk = max(1, REFERENCE_SCORE_ELEMENTS // (HQ * Tq * k.shape[1]))
    if rows_per_chunk >= B:
        return parallax_attention(q, r, k, v, **options)[1]
    chunks = [
        parallax_attention(
            q[i : i + rows_per_chunk], r[i : i + rows_per_chunk], k[i : i + rows_per_chunk], v[i : i + rows_per_chunk], **options
        )[1]
        for i in range(0, B, rows_per_chunk)
    ]
    return AttentionStats(*(torch.cat(parts, dim=0) for parts in zip(*chunks)))
