"""Spectra of W_R (and of the W_RK circuit) computed from the weights, in float64.

On CUDA, singular values come from cuSOLVER's batched `gesvda` driver: for the 28 W_R
matrices of qwen3-1.7b (2048 x 2048) it took 0.34 s on an H200, against 0.69 s for the
eigenvalues of the float64 Gram matrix and 5.6 s for the default `svdvals` driver, with
stable and effective ranks equal to numpy's float64 SVD to 1e-12 (benchmarks/RESULTS.md).
On the CPU, LAPACK's float64 `svdvals` is exact and fast at the sizes used there.
gesvda can refuse a batch it does not converge on (seen on the H200 for a freshly
initialised fla model's 12 W_R matrices, 768 x 768); such a batch is computed by LAPACK on
the host instead, slower but exact.

Under FSDP2 (`fully_shard`) a weight is a DTensor holding one shard per rank, and a shard's
singular values are not the matrix's: `unsharded` all-gathers the whole matrix first (every
rank calls it, in the same order, since it is a collective), and only rank 0 computes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

FSDP_DOC = "docs/distributed.md"


def unsharded(weight: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind `weight`: an FSDP2 DTensor is all-gathered (a collective every
    rank must call); a plain tensor, the weight itself or FSDP2's unsharded copy during a
    forward pass, is returned as it is."""
    from torch.distributed.tensor import DTensor

    return weight.full_tensor() if isinstance(weight, DTensor) else weight


def check_sharded_weights(weights: Mapping[str, torch.Tensor], distributed) -> None:
    """Accept FSDP2's data-parallel sharding, refuse any other DTensor layout.

    Supported: DTensor weights on a 1-D mesh of every rank in the default process group (what
    `fully_shard` makes), with the probe told the process group (`distributed=`), so every rank
    takes part in the gathers and rank 0 alone writes. Refused: a 2-D mesh (HSDP, or FSDP with
    tensor parallelism, where ranks share data or split heads, so gathering rows over every
    rank would count tokens twice or miss heads), a mesh over a subset of the ranks, and a
    sharded model on several ranks without `distributed=` (every rank would write the run).
    """
    import torch.distributed as torch_dist
    from torch.distributed.tensor import DTensor

    world = torch_dist.get_world_size() if torch_dist.is_available() and torch_dist.is_initialized() else 1
    told = distributed is not None and getattr(distributed, "enabled", False)
    for name, weight in weights.items():
        if not isinstance(weight, DTensor):
            continue
        mesh = weight.device_mesh
        problem = None
        if mesh.ndim != 1 or mesh.size() != world:
            problem = (f"it is a DTensor on a device mesh of shape {tuple(mesh.shape)} (placements {list(weight.placements)}) "
                       f"in a process group of {world} ranks")
        elif world > 1 and not told:
            problem = f"it is an FSDP2 shard on {world} ranks and the probe was not given the process group"
        if problem is not None:
            raise ValueError(
                f"Probe: {name}: {problem}. The probe supports FSDP2 (`fully_shard` over a 1-D mesh of every rank) "
                "with Probe(..., distributed=...) so that every rank gathers and rank 0 writes, and DDP; not HSDP, "
                f"tensor or context parallelism ({FSDP_DOC})"
            )


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
