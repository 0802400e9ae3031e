"""Run the official parallax-kernel's training functions on a CPU: their Triton autograd
Functions swapped for the package's own `parallax_reference`.

`parallax_func` and `parallax_varlen_func` themselves run as shipped (their argument checks,
head folding and defaults); only the autograd Functions they hand the folded tensors to are
replaced, since those launch Triton kernels: by objects whose `apply` computes the reference
in plain PyTorch, which autograd differentiates.
"""

from __future__ import annotations

import contextlib

import torch


class _FoldedReference:
    """`ParallaxFunction.apply(q, r, k, v, qk_scale, n_rep, window_size_left)` on heads folded into
    the batch ((B*HQ, L, D) and (B*HK, L, D)), computed by `parallax_reference` (plain PyTorch,
    so autograd differentiates it: a backward runs too)."""

    @staticmethod
    def apply(q, r, k, v, qk_scale, n_rep, window_size_left):
        from parallax import parallax_reference

        BHK, L, D = k.shape
        # q's folded index is b*HQ + h with h = g*n_rep + j: viewed as (B*HK, n_rep, L, D)
        q_, r_ = (t.reshape(BHK, n_rep, L, D).transpose(1, 2) for t in (q, r))  # (B*HK, L, n_rep, D)
        k_, v_ = (t[:, :, None] for t in (k, v))  # (B*HK, L, 1, D)
        o = parallax_reference(q_, r_, k_, v_, qk_scale, window_size_left=window_size_left)
        return o.transpose(1, 2).reshape(q.shape).to(q.dtype)


class _VarlenReference:
    """`ParallaxVarlenFunction.apply(q, r, k, v, qk_scale, window_size_left, cu_seqlens)`: the
    reference once per packed sequence."""

    @staticmethod
    def apply(q, r, k, v, qk_scale, window_size_left, cu_seqlens):
        from parallax import parallax_reference

        if cu_seqlens is None:
            return parallax_reference(q, r, k, v, qk_scale, window_size_left=window_size_left).to(q.dtype)
        bounds = cu_seqlens.tolist()
        return torch.cat(
            [
                parallax_reference(q[:, a:b], r[:, a:b], k[:, a:b], v[:, a:b], qk_scale, window_size_left=window_size_left)
                for a, b in zip(bounds[:-1], bounds[1:])
                if b > a
            ],
            dim=1,
        ).to(q.dtype)


@contextlib.contextmanager
def official_kernels_on_cpu():
    import parallax.triton.parallax_train as train
    import parallax.triton.parallax_varlen as varlen

    saved = [(train, "ParallaxFunction", train.ParallaxFunction), (varlen, "ParallaxVarlenFunction", varlen.ParallaxVarlenFunction)]
    train.ParallaxFunction, varlen.ParallaxVarlenFunction = _FoldedReference, _VarlenReference
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
