"""Spectra of W_R (and of the W_RK circuit) computed from the weights, in float64.

On CUDA, singular values come from cuSOLVER's batched `gesvda` driver: for the 28 W_R
matrices of qwen3-1.7b (2048 x 2048) it took 0.34 s on an H200, against 0.69 s for the
eigenvalues of the float64 Gram matrix and 5.6 s for the default `svdvals` driver, with
stable and effective ranks equal to numpy's float64 SVD to 1e-12 (benchmarks/RESULTS.md).
On the CPU, LAPACK's float64 `svdvals` is exact and fast at the sizes used there.
gesvda can refuse a batch it does not converge on (seen on the H200 for a freshly
initialised fla model's 12 W_R matrices, 768 x 768); such a batch is computed by LAPACK on
the host instead, slower but exact.
"""

from __future__ import annotations

import torch


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Descending singular values (float64) of a 2-D matrix or a batch (..., m, n)."""
    w = matrix.detach().double()
    if w.shape[-2] < w.shape[-1]:
        w = w.mT  # gesvda takes tall matrices; the singular values are the transpose's
    if w.is_cuda:
        try:
            return torch.linalg.svdvals(w.contiguous(), driver="gesvda")
        except torch.linalg.LinAlgError:
            return torch.linalg.svdvals(w.cpu()).to(w.device)
    return torch.linalg.svdvals(w)


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
    so its singular values are those of the D x D matrix R_r R_k^T. R is the transposed
    Cholesky factor of the D x D Gram matrix W W^T, which is much cheaper to get than a
    batched QR of the D x C blocks on a GPU (2.1 s for qwen3-1.7b's 28 layers on an H200);
    heads whose Gram matrix is singular (W_R = 0 at init, say) take the QR route.
    """
    H, G = w_r_HDC.shape[0], w_k_GDC.shape[0]
    w_r = w_r_HDC.detach().double()
    w_k = w_k_GDC.detach().double().repeat_interleave(H // G, dim=0)  # pair query head h with its key head (GQA)
    l_r, info_r = torch.linalg.cholesky_ex(w_r @ w_r.mT)  # (H, D, D), R_r = l_r^T
    l_k, info_k = torch.linalg.cholesky_ex(w_k @ w_k.mT)
    s = singular_values(l_r.mT @ l_k)
    singular = (info_r != 0) | (info_k != 0)
    if singular.any():  # one host sync, only at a spectra step
        _, r_r = torch.linalg.qr(w_r[singular].mT)
        _, r_k = torch.linalg.qr(w_k[singular].mT)
        s[singular] = torch.linalg.svdvals(r_r @ r_k.mT)
    return s
