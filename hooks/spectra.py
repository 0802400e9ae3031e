"""Spectra of W_R (and of the W_RK circuit) computed from the weights.

Singular values come from the eigenvalues of the float64 Gram matrix of the smaller side
(s = sqrt(eig(W W^T))): on a GPU this is about ten times faster than `svdvals` of a
4096-wide matrix, and in float64 it resolves singular values down to ~1e-7 of the largest,
far below anything that moves a stable or effective rank.
"""

from __future__ import annotations

import torch


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Descending singular values (float64) of a 2-D matrix or a batch (..., m, n)."""
    w = matrix.detach().double()
    gram = w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    return eig.flip(-1).sqrt()


def stable_rank(s: torch.Tensor) -> torch.Tensor:
    """sum s_k^2 / s_max^2 along the last axis; 0 for an all-zero spectrum."""
    top = s[..., 0].square()
    return torch.where(top > 0, s.square().sum(-1) / top.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(top))


def effective_rank(s: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli (2007): exp(-sum p_k log p_k), p_k = s_k / sum s; 0 for an all-zero spectrum."""
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(s.dtype).tiny))).sum(-1)
    return torch.where(total[..., 0] > 0, entropy.exp(), torch.zeros_like(entropy))


def circuit_singular_values(w_r_HDC: torch.Tensor, w_k_GDC: torch.Tensor) -> torch.Tensor:
    """Singular values of W_R,h^T W_K,g(h) (C x C, rank <= D) for every query head h: (H, D).

    With W_R,h^T = Q_r R_r and W_K,g^T = Q_k R_k (thin QR), W_R,h^T W_K,g = Q_r (R_r R_k^T) Q_k^T,
    so its singular values are those of the D x D matrix R_r R_k^T.
    """
    H, G = w_r_HDC.shape[0], w_k_GDC.shape[0]
    w_k = w_k_GDC.repeat_interleave(H // G, dim=0)  # pair query head h with its key head (GQA)
    _, r_r = torch.linalg.qr(w_r_HDC.detach().double().mT)  # (H, D, D)
    _, r_k = torch.linalg.qr(w_k.detach().double().mT)
    return torch.linalg.svdvals(r_r @ r_k.mT)
