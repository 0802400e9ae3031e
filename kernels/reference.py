"""Plain-PyTorch Parallax attention: the definition every fast path is checked against.

For query position i, keys j (causal: j <= i; window W: i - W < j <= i), head dim D:

    s1_ij = (q_i . k_j) * scale             softmax logits
    s2_ij =  r_i . k_j                       probe scores (not scaled)
    p_ij  = softmax_j(s1_ij)
    o_sm_i = sum_j p_ij v_j
    tbar_i = sum_j p_ij s2_ij
    c_i    = tbar_i o_sm_i - sum_j p_ij s2_ij v_j  = - sum_j p_ij (s2_ij - tbar_i) v_j
    o_i    = o_sm_i + c_i

The centred form of c (second line) is what we evaluate: it is the same number, but it
never subtracts two large terms when ||r|| is large, so the reference stays accurate in
float32 exactly where the correction dominates.

Layout [B, T, H, D]; GQA by repeating each key/value head over its group of query heads.
Keys may outnumber queries (a decode step against a cache): the Tq queries are then the
last Tq of the Tk positions, so query i sits at position Tk - Tq + i. Packed sequences
(`cu_seqlens`) run each sequence on its own: no query sees a key of another sequence.
Math in float32 (float64 inputs stay float64, for gradcheck); output in the input dtype.
This module trusts its caller: validation lives in the public `parallax_attention`.
"""

from __future__ import annotations

import torch

from .stats import AttentionStats


def allowed_keys_mask(
    T: int, *, causal: bool, window: int | None, device, key_length: int | None = None
) -> torch.Tensor | None:
    """Boolean [T, Tk] mask, True where query i may attend to key j; None when all may.

    Tk = key_length (default T); query i sits at position Tk - T + i (bottom-right aligned).
    """
    if not causal:
        return None
    Tk = T if key_length is None else key_length
    i = torch.arange(Tk - T, Tk, device=device)[:, None]
    j = torch.arange(Tk, device=device)[None, :]
    allowed = j <= i
    if window is not None:
        allowed = allowed & (j > i - window)
    return allowed


def parallax_attention_reference(
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    causal: bool = True,
    window: int | None = None,
    cu_seqlens: torch.Tensor | None = None,
    return_stats: bool = False,
    operand_dtype: torch.dtype | None = None,
):
    """Parallax attention by materialising the [B, HQ, Tq, Tk] score matrices.

    operand_dtype: also round, to this dtype, the score-sized operands that a tensor-core
    kernel rounds before its products (the weights p and p (s2 - tbar) that multiply v, and
    the score gradients dS1, dS2 that multiply k, q and r); None rounds only the output. The
    kernel tests measure the rounding a fast path may add against this, not only the output's.
    """
    if cu_seqlens is not None:
        return _packed(
            q, r, k, v, scale=scale, causal=causal, window=window, cu_seqlens=cu_seqlens,
            return_stats=return_stats, operand_dtype=operand_dtype,
        )
    B, T, HQ, D = q.shape
    HK = k.shape[2]
    compute_dtype = torch.promote_types(q.dtype, torch.float32)
    q_, r_, k_, v_ = (t.to(compute_dtype) for t in (q, r, k, v))
    if HQ != HK:
        group = HQ // HK
        k_ = k_.repeat_interleave(group, dim=2)
        v_ = v_.repeat_interleave(group, dim=2)

    s1 = torch.einsum("bihd,bjhd->bhij", q_, k_) * scale  # (B, HQ, Tq, Tk)
    s2 = torch.einsum("bihd,bjhd->bhij", r_, k_)  # (B, HQ, Tq, Tk)
    if operand_dtype is not None:
        s1, s2 = (_RoundGradient.apply(s, operand_dtype) for s in (s1, s2))
    allowed = allowed_keys_mask(T, causal=causal, window=window, device=q.device, key_length=k.shape[1])
    if allowed is not None:
        s1 = s1.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s1, dim=-1)
    if allowed is not None:
        # keeps 0 * (masked s2) out of the sums below
        s2 = s2.masked_fill(~allowed, 0.0)

    tbar = (p * s2).sum(-1, keepdim=True)  # (B, HQ, T, 1)
    weights_sm, weights_c = p, p * (s2 - tbar)
    if operand_dtype is not None:
        weights_sm, weights_c = (_round_value(w, operand_dtype) for w in (weights_sm, weights_c))
    o_sm = torch.einsum("bhij,bjhd->bihd", weights_sm, v_)  # (B, T, HQ, D)
    c = -torch.einsum("bhij,bjhd->bihd", weights_c, v_)  # (B, T, HQ, D)
    o = (o_sm + c).to(q.dtype)
    if not return_stats:
        return o
    stats = AttentionStats(
        osm_sq=o_sm.square().sum(-1).float(),
        c_sq=c.square().sum(-1).float(),
        osm_c=(o_sm * c).sum(-1).float(),
        r_sq=r_.square().sum(-1).float(),
    )
    return o, stats


def _round_value(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x rounded to dtype and back, with the gradient of x itself (rounding is flat almost everywhere)."""
    return x + (x.to(dtype).to(x.dtype) - x).detach()


class _RoundGradient(torch.autograd.Function):
    """The identity forward; backward, the incoming gradient rounded to `dtype` and back."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = dtype
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype).to(grad.dtype), None


def _packed(q, r, k, v, *, scale, causal, window, cu_seqlens, return_stats, operand_dtype):
    """Packed sequences ([1, total, H, D], boundaries `cu_seqlens`): each sequence alone, concatenated."""
    bounds = cu_seqlens.tolist()  # a host sync: the reference is the definition, not a fast path
    pieces = [
        parallax_attention_reference(
            q[:, a:b], r[:, a:b], k[:, a:b], v[:, a:b], scale=scale, causal=causal, window=window, return_stats=True,
            operand_dtype=operand_dtype,
        )
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    o = torch.cat([o for o, _ in pieces], dim=1)
    if not return_stats:
        return o
    return o, AttentionStats(*(torch.cat(rows, dim=1) for rows in zip(*(stats for _, stats in pieces))))
