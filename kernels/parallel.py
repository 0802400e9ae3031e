"""Triton kernels for causal Parallax attention: a forward (with optional branch statistics)
and a backward, fused or split. The math is `reference.py`'s; docs/definitions.md section 1
gives the flash form. Timings and the reasons behind each choice: kernels/NOTES.md.

Forward, per query row i, streaming key/value tiles with a running max m of the unscaled
logits s_ij = q_i . k_j (scale > 0, so the max commutes with the scale; one FMA per score):

    p_ij  = exp2((s_ij - m_i) * scale * log2(e))
    t_ij  = r_i . k_j - mu_i                    probe score, centred on mu_i
    d1 = sum_j p_ij    O1 = sum_j p_ij v_j    O2 = sum_j p_ij t_ij v_j
    o_sm = O1 / d1,  c = -O2 / d1,  o = o_sm + c,  tbar = mu

mu_i is the running p-mean of the probe scores over every key seen so far, the current tile
included, so sum_j p_ij t_ij stays zero (no d2 accumulator) and c = tbar o_sm - O2/d1 loses
its first term. c does not change when a row's scores all move by one constant, so the
centring is free in exact arithmetic; in bf16 it is what keeps the kernel within 2x of the
reference's error: p t is rounded to bf16 before its dot with v, and that error scales with
|t|, while c scales with the spread of the scores around tbar.

Backward, per tile, with a_ij = dO_i . v_j, Delta_i = dO_i . o_i, Dsm_i = dO_i . o_sm_i and
the centred scores dt_ij = r_i . k_j - tbar_i:

    P_ij   = exp2(s_ij * scale * log2(e) - lse_i)    (lse saved by the forward, log2 units)
    dV_j  += sum_i P_ij (1 - dt_ij) dO_i
    dS2_ij = P_ij (Dsm_i - a_ij)                     gradient of the probe score r_i . k_j
    dS1_ij = P_ij (a_ij - Delta_i) + dt_ij dS2_ij    gradient of the logit (before scale)
           = P_ij (Dsm_i - Delta_i) - dS2_ij (1 - dt_ij)      (the form the kernels use)
    dQ_i  += scale sum_j dS1_ij k_j     dR_i += sum_j dS2_ij k_j
    dK_j  += scale sum_i dS1_ij q_i + sum_i dS2_ij r_i

A preprocess kernel packs the four per-row terms lse, 1 + tbar, Dsm and Dsm - Delta into one
[B, HQ, T, 4] float32 tensor, one 16-byte load per row and query step.

The kv kernel: one program owns a key/value block of one key head and walks every query block
of every query head in its GQA group, so dK and dV stay in registers and are written once.
Fused, it also adds dQ and dR with float32 atomics (eight tile products per tile). Split (the
default on the H200, where it measured faster), a second, query-block kernel recomputes s1,
s2 and a and sums dQ, dR in registers (eleven products, no atomics).

Layout [B, T, H, D], contiguous. Saved per row: lse and tbar as [B, HQ, T] float32.

Packed sequences (cu_seqlens, B = 1): the grids hold cdiv(max_seqlen, block) programs per
(sequence, head), and each program reads its sequence's offsets from cu_seqlens on the device,
so no block table is built on the host; a sequence with fewer blocks leaves its surplus
programs idle. The forward and the dQ/dR kernel count rows and keys from each sequence's first
token, exactly as for a batch of one; the kv kernel keeps the packed row's query blocks (the
layout of the stacked q, r) and masks the rows of the neighbouring sequences. The per-row
tensors (residuals, statistics) keep one row per packed token.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .stats import AttentionStats

LOG2E = 1.4426950408889634  # 1/ln(2): exp(x) == exp2(x * LOG2E)


class TileConfig(NamedTuple):
    """Tile shape and launch parameters of one kernel.

    forward: BM query rows per program, BN keys per inner step.
    backward: BN keys per program, BM query rows per inner step.
    """

    BM: int
    BN: int
    num_warps: int
    num_stages: int


# What the heads whose programs run interleaved may read between them (`_longest_first`): a
# third of the H200's 50 MB L2, so that their K and V stay there while their programs reuse them.
L2_SHARE_BYTES = 16 << 20


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host's grid sizes: triton.cdiv is a constexpr function whose call
    from Python costs more host time than the launch arithmetic around it."""
    return -(-a // b)


def heads_per_group(bytes_per_head: int) -> int:
    """How many heads to interleave when each head's programs read bytes_per_head between them."""
    return max(1, L2_SHARE_BYTES // max(bytes_per_head, 1))


def query_block_group(k: torch.Tensor, rows: int) -> int:
    """heads_per_group for the query-block kernels (forward, dQ/dR): a head's programs read
    rows of its key head's K and V, k [B, T, HK, D] and v alike (rows: T, or the longest
    packed sequence, whose (sequence, head) pairs are the grid's heads)."""
    return heads_per_group(2 * rows * k.shape[3] * k.element_size())


# Rows up to this length take the forward's two-programs-per-SM tiles at D = 128 (forward_config).
SHORT_ROWS = 512


def forward_config(head_dim: int, device: torch.device, seq_len: int) -> TileConfig:
    if device.type != "cuda":
        # Triton's interpreter (CPU tests): small tiles so short sequences span several
        # blocks and every masking path runs.
        return TileConfig(BM=32, BN=16, num_warps=4, num_stages=1)
    # sm_90 resource reports and H200 timings in kernels/NOTES.md. At D = 128, 128x64 with 8
    # warps keeps the two float32 accumulators O1, O2 (2 x 128 x D) in registers without
    # spilling in the loop; 4 warps spill them (1.5 KB of stack); 4 stages measured 5% slower.
    # At D = 64, 64x64 with 4 warps measured 8% faster than 128x64 with 8.
    if head_dim <= 64:
        return TileConfig(BM=64, BN=64, num_warps=4, num_stages=3)
    # Short rows: 64x64 with 4 warps and 2 stages (255 registers x 128 threads, 96 KB of shared
    # memory) fits two programs on one SM, so one's softmax, prologue and epilogue can run
    # beside the other's products; twice the programs also fill the SMs when B x H is small.
    # Measured faster at T <= 512 in every mode (-6 to -16%; statistics mode at T = 512 -1.4%).
    # From T = 1024 on, each program streams every key for half the rows and the L2
    # traffic doubles: mixed at 1024 (statistics mode slower), 1-6% slower at 2048 and 5% at
    # 4096.
    if seq_len <= SHORT_ROWS:
        return TileConfig(BM=64, BN=64, num_warps=4, num_stages=2)
    return TileConfig(BM=128, BN=64, num_warps=8, num_stages=3)


class BackwardConfig(NamedTuple):
    """kv: the key/value-block kernel (dK, dV; BN keys per program, BM query rows per step).
    q: the query-block kernel for dQ, dR (BM rows per program, BN keys per step), or None
    for the fused backward, where the kv kernel adds dQ, dR with float32 atomics."""

    kv: TileConfig
    q: TileConfig | None


def backward_config(head_dim: int, device: torch.device) -> BackwardConfig:
    if device.type != "cuda":
        return BackwardConfig(kv=TileConfig(16, 32, 4, 1), q=TileConfig(32, 16, 4, 1))
    # Split on the H200: 3.41 ms against the fused kernel's 4.51 at (4, 16, 4096, 128)
    # (kernels/NOTES.md). dK and dV (2 x BN x D float32) stay in registers for the whole kv
    # program, so at D = 128 only 32 query rows per step fit beside the score tiles (64 rows
    # spill 570 B). 64 keys per program with 4 warps (255 registers, 106 KB of shared memory)
    # let two programs share an SM, one's softmax work running beside the other's products:
    # the backward 5-7% faster than with 128 keys and 8 warps. At D = 64 the same
    # shape measured 7% faster than 128 keys with 8 warps. The kv kernel's BM
    # must be a multiple of 8 (q and r come stacked in 8-row blocks). The dQ/dR kernel has
    # the forward's shape.
    if head_dim <= 64:
        return BackwardConfig(kv=TileConfig(64, 64, 4, 3), q=TileConfig(64, 64, 4, 3))
    return BackwardConfig(kv=TileConfig(32, 64, 4, 3), q=TileConfig(128, 64, 8, 3))


@triton.jit
def _dot(a, b, acc, INTERPRET: tl.constexpr):
    """a @ b + acc with a float32 accumulator. Triton's interpreter (CPU tensors, triton
    3.9) multiplies bf16 operands as raw 16-bit integers; float32 copies hold the same
    values, so there the result is the GPU's up to summation order."""
    if INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc)


@triton.jit
def _round(x, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """x.to(dtype), rounding float32 to nearest even as the GPU does. Triton's interpreter
    (triton 3.9) truncates float32 -> bf16, which doubles the rounding error the tests
    measure; there the bits are rounded first, so the truncation is exact."""
    if INTERPRET:
        if dtype == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _longest_first(n_blocks, GROUP):
    """(head, rank) of this program in a 1-D grid of n_blocks programs per head, rank 0 being
    a head's longest program (causal work is uneven across a head's blocks).

    The GPU starts programs in grid order as SMs free up, so the order is the schedule. Heads
    go in groups of GROUP, and within a group programs go by rank across the group's heads:
    every head's longest block, then every head's second, ... The short ones come last and
    fill the tail, where head by head (all of head 0, then head 1) left the last head's
    longest blocks to start late. A group's heads share the L2 while their programs run, so
    GROUP is what fits there (heads_per_group)."""
    pid = tl.program_id(0)
    n_heads = tl.num_programs(0) // n_blocks
    per_group = n_blocks * GROUP
    first_head = (pid // per_group) * GROUP
    heads_here = tl.minimum(GROUP, n_heads - first_head)
    within = pid % per_group
    return first_head + within % heads_here, within // heads_here


@triton.jit
def _query_block_program(
    CU_SEQLENS, K, V, T, MAX_T, GROUP,
    HQ: tl.constexpr, HK: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """Where a query-block program (forward, dQ/dR) works: its head's index in a [B, HQ, T]
    tensor of row terms (row_head) and its sequence's first row there (bos), so its rows there
    are row_head * T + bos + offs_m; its sequence's length T_seq; its first row m0 (negative:
    a packed sequence with fewer blocks than this program's rank, nothing to do), rows, row
    mask, the offsets of its rows in a [B, T, HQ, D] tensor, and the bases of its key head in
    K and V. Rows and keys count from the sequence's first token. Causal work grows with the query
    block, so the last block is a head's longest program.

    Packed (IS_VARLEN): B = 1 and the grid has cdiv(MAX_T, BM) programs per (sequence, query
    head), MAX_T the longest sequence; a sequence's rank-r program takes its r-th block from
    the end, so every sequence's longest block comes first and short sequences' surplus
    programs have m0 < 0. The block indices need no table built on the host."""
    if IS_VARLEN:
        pid_sh, rank = _longest_first(tl.cdiv(MAX_T, BM), GROUP)
        i_seq = pid_sh // HQ
        i_hq = pid_sh % HQ
        bos = tl.load(CU_SEQLENS + i_seq).to(tl.int32)
        T_seq = tl.load(CU_SEQLENS + i_seq + 1).to(tl.int32) - bos
        pid_m = tl.cdiv(T_seq, BM) - 1 - rank
        first_row = bos.to(tl.int64)  # the sequence's first token in the packed row
        row_head = i_hq
    else:
        n_blocks = tl.cdiv(T, BM)
        pid_bh, rank = _longest_first(n_blocks, GROUP)
        pid_m = n_blocks - 1 - rank
        i_b = pid_bh // HQ
        i_hq = pid_bh % HQ
        bos = 0
        T_seq = T
        first_row = i_b.to(tl.int64) * T
        row_head = pid_bh
    i_hk = i_hq // (HQ // HK)
    m0 = pid_m * BM
    offs_m = m0 + tl.arange(0, BM)
    row_ok = offs_m < T_seq
    q_off = (first_row * HQ + i_hq) * D
    q_offs = offs_m[:, None] * (HQ * D) + tl.arange(0, D)[None, :]  # (BM, D)
    k_base = K + (first_row * HK + i_hk) * D
    v_base = V + (first_row * HK + i_hk) * D
    return row_head, bos, T_seq, m0, offs_m, row_ok, q_off, q_offs, k_base, v_base


@triton.jit
def _key_block_ranges(m0, T, W, BM: tl.constexpr, BN: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """The key blocks (units of BN) of the query block starting at row m0:
    [blk_lo, blk_clean_lo) cross the window's left edge (empty without a window),
    [blk_clean_lo, blk_clean_hi) need no mask, [blk_clean_hi, blk_hi) cross the diagonal.
    Keys >= T only ever meet rows >= T outside the diagonal blocks, so T needs no mask."""
    blk_hi = tl.cdiv(tl.minimum(T, m0 + BM), BN)
    blk_clean_hi = tl.minimum((m0 + 1) // BN, blk_hi)
    if HAS_WINDOW:
        blk_lo = tl.maximum(m0 - W + 1, 0) // BN
        blk_clean_lo = tl.cdiv(tl.maximum(m0 + BM - W, 0), BN)
        blk_clean_lo = tl.minimum(tl.maximum(blk_clean_lo, blk_lo), blk_clean_hi)
    else:
        blk_lo = 0
        blk_clean_lo = 0
    return blk_lo, blk_clean_lo, blk_clean_hi, blk_hi


@triton.jit
def _fwd_inner(
    o1, o2, d1, mu, m_i,
    b_q, b_r, k_base, v_base, offs_m,
    blk_lo, blk_hi, T, W, scale_log2,
    stride_kt,
    D: tl.constexpr, BN: tl.constexpr, MASKED: tl.constexpr, HAS_WINDOW: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Accumulate key blocks [blk_lo, blk_hi) into the state (O1, O2, d1, mu, m) of one
    query block. O2 is kept centred on mu, the running p-mean of the probe scores, so the
    sum of p (r.k - mu) over the keys seen so far is zero and needs no accumulator.
    m is the running max of the unscaled logits q.k: the scale goes into one FMA per score."""
    offs_d = tl.arange(0, D)
    for blk in range(blk_lo, blk_hi):
        offs_n = blk * BN + tl.arange(0, BN)
        kv_offs = offs_n[:, None] * stride_kt + offs_d[None, :]
        if MASKED:
            # diagonal tiles may reach past T
            b_k = tl.load(k_base + kv_offs, mask=offs_n[:, None] < T, other=0.0)  # (BN, D)
            b_v = tl.load(v_base + kv_offs, mask=offs_n[:, None] < T, other=0.0)  # (BN, D)
        else:
            b_k = tl.load(k_base + kv_offs)
            b_v = tl.load(v_base + kv_offs)
        s = _dot(b_q, tl.trans(b_k), None, INTERPRET)  # (BM, BN) logits before scale
        s2 = _dot(b_r, tl.trans(b_k), None, INTERPRET)  # (BM, BN) probe scores
        if MASKED:
            allowed = offs_n[None, :] <= offs_m[:, None]
            if HAS_WINDOW:
                allowed = allowed & (offs_n[None, :] > offs_m[:, None] - W)
            s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2((m_i - m_new) * scale_log2)
        o1 = o1 * alpha[:, None]
        o2 = o2 * alpha[:, None]
        m_i = m_new
        p = tl.math.exp2(s * scale_log2 - (m_i * scale_log2)[:, None])  # (BM, BN), 0 where masked
        ps2 = p * s2
        sum_p = tl.sum(p, 1)
        d1 = d1 * alpha + sum_p
        # Move the centre to the p-mean over every key so far, this tile's included, before
        # p t is rounded for its dot: the rounding error then scales with the spread of the
        # scores around tbar, as c does, not with their size. sum(p (s2 - mu)) is formed
        # as sum(p s2) - mu sum(p): float32 cancellation there is far below bf16 rounding.
        if MASKED:
            # a row can have no allowed key yet at a window's left edge
            shift = (tl.sum(ps2, 1) - mu * sum_p) / tl.where(d1 > 0, d1, 1.0)
        else:
            shift = (tl.sum(ps2, 1) - mu * sum_p) / d1
        mu = mu + shift
        pt = ps2 - mu[:, None] * p  # p (s2 - mu), one FMA
        o2 = o2 - shift[:, None] * o1
        o2 = _dot(_round(pt, b_v.dtype, INTERPRET), b_v, o2, INTERPRET)
        o1 = _dot(_round(p, b_v.dtype, INTERPRET), b_v, o1, INTERPRET)
    return o1, o2, d1, mu, m_i


@triton.jit(do_not_specialize=["T", "MAX_T", "W", "GROUP"])
def _parallax_fwd_kernel(
    Q, R, K, V, O, OSM, OLO, LSE, TBAR, STATS, CU_SEQLENS,
    scale_log2, T, MAX_T, W, GROUP,
    HQ: tl.constexpr, HK: tl.constexpr, D: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr,
    HAS_WINDOW: tl.constexpr, SAVE_RESIDUALS: tl.constexpr, WRITE_STATS: tl.constexpr,
    IS_VARLEN: tl.constexpr, INTERPRET: tl.constexpr,
):
    """One query block of one head (of one packed sequence with IS_VARLEN: T is then the packed
    length, every row and key below counts within the sequence, of length T_seq)."""
    row_head, bos, T_seq, m0, offs_m, row_ok, q_off, q_offs, k_base, v_base = _query_block_program(
        CU_SEQLENS, K, V, T, MAX_T, GROUP, HQ, HK, D, BM, IS_VARLEN
    )
    if IS_VARLEN:
        if m0 < 0:
            return
    b_q = tl.load(Q + q_off + q_offs, mask=row_ok[:, None], other=0.0)  # (BM, D)
    b_r = tl.load(R + q_off + q_offs, mask=row_ok[:, None], other=0.0)  # (BM, D)
    if WRITE_STATS:
        # ||r||^2 is summed here, from the r just loaded for the dots, and kept to the
        # epilogue: measured cheaper than a second load of r there (kernels/NOTES.md).
        # The sum goes through a (BM, 2, D / 2) view. Summed straight from (BM, D), Triton
        # moves the whole r tile into the accumulators' layout (a round trip through shared
        # memory) so that r_sq arrives in theirs; through the view it moves only the BM sums:
        # statistics mode 1.5-2.7% faster at D = 128.
        r_f32 = tl.reshape(b_r.to(tl.float32), (BM, 2, D // 2))
        r_sq = tl.sum(tl.sum(r_f32 * r_f32, 2), 1)

    o1 = tl.zeros((BM, D), dtype=tl.float32)
    o2 = tl.zeros((BM, D), dtype=tl.float32)
    d1 = tl.zeros((BM,), dtype=tl.float32)
    mu = tl.zeros((BM,), dtype=tl.float32)
    # A finite start keeps alpha = exp2(m_old - m_new) at 1, not NaN, for a row whose keys
    # in the first window-edge tiles are all masked; any real logit exceeds it.
    m_i = tl.full((BM,), -1.0e30, dtype=tl.float32)

    blk_lo, blk_clean_lo, blk_clean_hi, blk_hi = _key_block_ranges(m0, T_seq, W, BM, BN, HAS_WINDOW)
    if HAS_WINDOW:
        o1, o2, d1, mu, m_i = _fwd_inner(
            o1, o2, d1, mu, m_i, b_q, b_r, k_base, v_base, offs_m,
            blk_lo, blk_clean_lo, T_seq, W, scale_log2, HK * D,
            D, BN, True, HAS_WINDOW, INTERPRET,
        )
    o1, o2, d1, mu, m_i = _fwd_inner(
        o1, o2, d1, mu, m_i, b_q, b_r, k_base, v_base, offs_m,
        blk_clean_lo, blk_clean_hi, T_seq, W, scale_log2, HK * D,
        D, BN, False, HAS_WINDOW, INTERPRET,
    )
    o1, o2, d1, mu, m_i = _fwd_inner(
        o1, o2, d1, mu, m_i, b_q, b_r, k_base, v_base, offs_m,
        blk_clean_hi, blk_hi, T_seq, W, scale_log2, HK * D,
        D, BN, True, HAS_WINDOW, INTERPRET,
    )

    # Epilogue. Every row sees its diagonal key, so d1 >= 1 for rows < T_seq; mu is now tbar,
    # so c = tbar o_sm - sum_j p_j s2_j v_j reduces to -O2 / d1, and o = (O1 - O2) / d1.
    inv_d1 = 1.0 / d1
    if WRITE_STATS:
        # Sums over the accumulators themselves, scaled once: no o_sm or c tile stays live.
        inv_d1_sq = inv_d1 * inv_d1
        osm_sq = tl.sum(o1 * o1, 1) * inv_d1_sq
        c_sq = tl.sum(o2 * o2, 1) * inv_d1_sq
        osm_c = -tl.sum(o1 * o2, 1) * inv_d1_sq
        # STATS is [B, HQ, T, 4]: per row osm_sq, c_sq, osm_c, r_sq (AttentionStats' order),
        # one 16-byte store per row (three 4-byte plane stores measured 1.6 points slower).
        row_stats = tl.reshape(tl.join(tl.join(osm_sq, osm_c), tl.join(c_sq, r_sq)), (BM, 4))
        p_stats = STATS + (row_head.to(tl.int64) * T + bos + offs_m)[:, None] * 4 + tl.arange(0, 4)[None, :]
        tl.store(p_stats, row_stats, mask=row_ok[:, None])
    if SAVE_RESIDUALS:
        # The backward's row sums dO . o and dO . o_sm must be exact to float32, not to the
        # output's bf16: dQ and dR are sums of terms that cancel to zero along each row, and
        # an error there survives the cancellation. So o_sm is kept in float32 and o's
        # rounding residual beside o (o = o_lp + o_lo to about 16 bits).
        tl.store(OSM + q_off + q_offs, o1 * inv_d1[:, None], mask=row_ok[:, None])
        row_base = row_head.to(tl.int64) * T + bos
        # One fused multiply-add, spelled out: left to the compiler, the batched build contracted
        # m * scale + log2(d) into an FMA and the packed build did not (the product is hoisted
        # into another block there), so a sequence's lse differed packed and alone in the last bit.
        tl.store(LSE + row_base + offs_m, tl.fma(m_i, scale_log2, tl.math.log2(d1)), mask=row_ok)
        tl.store(TBAR + row_base + offs_m, mu, mask=row_ok)
    o = (o1 - o2) * inv_d1[:, None]  # (BM, D) o_sm + c
    o_lp = _round(o, O.dtype.element_ty, INTERPRET)
    tl.store(O + q_off + q_offs, o_lp, mask=row_ok[:, None])
    if SAVE_RESIDUALS:
        o_lo = _round(o - o_lp.to(tl.float32), OLO.dtype.element_ty, INTERPRET)
        tl.store(OLO + q_off + q_offs, o_lo, mask=row_ok[:, None])


@triton.jit(do_not_specialize=["T"])
def _parallax_bwd_preprocess_kernel(
    O, OLO, OSM, DO, LSE, TBAR, Q, R, ROWS, QR, T,
    HQ: tl.constexpr, D: tl.constexpr, BM: tl.constexpr,
):
    """Per row block of one head, what the backward's kernels read in a better order:

    ROWS [B, HQ, T, 4] float32, the four per-row terms, so that each query step loads them
    with one 16-byte access per row: lse, 1 + tbar, Dsm and Dsm - Delta, with Delta = dO . o,
    Dsm = dO . o_sm and o = O + OLO;
    QR [B * HQ, 2 T', D], q and r stacked for the kv kernel (`stack_queries_and_probes`, whose
    layout this writes; T' = T rounded up to a multiple of 8, BM a multiple of 8, so the last
    program also writes the zero rows from T to T')."""
    n_blocks = tl.cdiv(T, BM)
    pid_bh = tl.program_id(0) // n_blocks
    pid_m = tl.program_id(0) % n_blocks
    i_b = pid_bh // HQ
    i_hq = pid_bh % HQ
    m0 = pid_m * BM
    offs_m = m0 + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    row_ok = offs_m < T
    offs = (i_b.to(tl.int64) * T * HQ + i_hq) * D + offs_m[:, None] * (HQ * D) + offs_d[None, :]
    b_do = tl.load(DO + offs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    b_o = tl.load(O + offs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    b_o += tl.load(OLO + offs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    b_osm = tl.load(OSM + offs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    row_base = pid_bh.to(tl.int64) * T
    delta = tl.sum(b_do * b_o, 1)
    delta_sm = tl.sum(b_do * b_osm, 1)
    lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
    tbar = tl.load(TBAR + row_base + offs_m, mask=row_ok, other=0.0)
    p_rows = ROWS + (row_base + offs_m) * 4
    tl.store(p_rows, lse, mask=row_ok)
    tl.store(p_rows + 1, 1.0 + tbar, mask=row_ok)
    tl.store(p_rows + 2, delta_sm, mask=row_ok)
    tl.store(p_rows + 3, delta_sm - delta, mask=row_ok)

    T8 = tl.cdiv(T, 8) * 8
    qr_rows = pid_bh.to(tl.int64) * 2 * T8 + (offs_m // 8) * 16 + offs_m % 8  # q_i's row
    p_qr = QR + qr_rows[:, None] * D + offs_d[None, :]
    in_qr = (offs_m < T8)[:, None]
    tl.store(p_qr, tl.load(Q + offs, mask=row_ok[:, None], other=0.0), mask=in_qr)
    tl.store(p_qr + 8 * D, tl.load(R + offs, mask=row_ok[:, None], other=0.0), mask=in_qr)


@triton.jit
def _load_rows(ROWS, row_base, offs_m, T, MASKED: tl.constexpr):
    """lse, 1 + tbar, Dsm, Dsm - Delta of rows offs_m from the packed [.., T, 4] terms."""
    p_rows = ROWS + (row_base + offs_m)[:, None] * 4 + tl.arange(0, 4)[None, :]
    if MASKED:
        rows = tl.load(p_rows, mask=(offs_m < T)[:, None], other=0.0)  # (BM, 4)
    else:
        rows = tl.load(p_rows)
    # (BM, 4) -> (BM, 2, 2): split takes the last axis, columns (0, 2) and (1, 3)
    even, odd = tl.split(tl.reshape(rows, (rows.shape[0], 2, 2)))
    lse, delta_sm = tl.split(even)
    tbar1, c_row = tl.split(odd)
    return lse, tbar1, delta_sm, c_row


@triton.jit
def _split_blocks_of_8(x):
    """(N, 2 M) with eight-column blocks alternating a, b -> a, b, each (N, M)."""
    N: tl.constexpr = x.shape[0]
    M: tl.constexpr = x.shape[1] // 2
    x = tl.reshape(x, (N, M // 8, 2, 8))
    x = tl.reshape(tl.permute(x, (0, 1, 3, 2)), (N, M, 2))
    return tl.split(x)


@triton.jit
def _join_blocks_of_8(a, b):
    """a, b (N, M) -> (N, 2 M) with eight-column blocks alternating a, b."""
    N: tl.constexpr = a.shape[0]
    M: tl.constexpr = a.shape[1]
    x = tl.reshape(tl.join(a, b), (N, M // 8, 8, 2))
    return tl.reshape(tl.permute(x, (0, 1, 3, 2)), (N, 2 * M))


def stack_queries_and_probes(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """q, r [B, T, HQ, D] -> [B * HQ, 2 T', D], T' = T rounded up to a multiple of 8: per head,
    eight rows of q, then the same eight rows of r (the kv kernel's stacked operand). Rows
    from T to T' are zero (they meet only masked scores, but 0 x NaN would still be NaN).
    The layout's plain-PyTorch statement; the backward's preprocess kernel writes it (one
    pass instead of these copies, which took 0.2 ms at (4, 16, 4096, 128) on the H200)."""
    B, T, HQ, D = q.shape
    T8 = triton.cdiv(T, 8) * 8
    qr = torch.empty((B, HQ, T8 // 8, 2, 8, D), device=q.device, dtype=q.dtype)
    if T8 != T:
        qr[:, :, -1].zero_()
    for half, x in enumerate((q, r)):
        blocks = x[:, : T8 - 8] if T8 != T else x
        qr[:, :, : blocks.shape[1] // 8, half] = blocks.unflatten(1, (-1, 8)).permute(0, 3, 1, 2, 4)
        if T8 != T:
            qr[:, :, -1, half, : T - (T8 - 8)] = x[:, T8 - 8 :].transpose(1, 2)
    return qr.view(B * HQ, 2 * T8, D)


@triton.jit
def _bwd_inner(
    dk, dv, b_k, b_v, offs_n,
    qr_desc, do_desc, dq_desc, dr_desc, i_b, i_bh, col, row_base,
    ROWS,
    blk_lo, blk_hi, T, W, scale, scale_log2,
    D: tl.constexpr, BM: tl.constexpr, ACCUMULATE_DQ: tl.constexpr,
    MASKED: tl.constexpr, HAS_WINDOW: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Accumulate query blocks [blk_lo, blk_hi) of one query head into dK, dV of one key block;
    with ACCUMULATE_DQ, add their dQ, dR contributions to float32 buffers with atomics.

    q and r come stacked (`stack_queries_and_probes`): eight rows of q, then the same eight
    rows of r, so that the two score products are one (BN, 2 BM) product and the two dK
    products one of depth 2 BM: wgmmas twice as wide, half as many waits (kernels/NOTES.md).
    A wgmma accumulator gives each thread two adjacent columns of every eight, so with
    eight-column blocks of q.k and r.k alternating, splitting the tile into its q and r
    halves (and joining the two dS tiles back) moves no data between threads. dO's
    [B, T, HQ * D] descriptor loads (1, BM, D) boxes at (batch, row, head * D). The copy
    engine zero-fills rows past the end and drops their atomic adds, so only the scores
    need masks."""
    for blk in range(blk_lo, blk_hi):
        m0 = blk * BM
        offs_m = m0 + tl.arange(0, BM)
        b_qr = qr_desc.load([i_bh, 2 * m0, 0]).reshape(2 * BM, D)
        b_do = do_desc.load([i_b, m0, col]).reshape(BM, D)
        lse, tbar1, delta_sm, c_row = _load_rows(ROWS, row_base, offs_m, T, MASKED)

        # s1T: logits before scale, s2T: probe scores, both (BN, BM)
        s1T, s2T = _split_blocks_of_8(_dot(b_k, tl.trans(b_qr), None, INTERPRET))
        pT = tl.math.exp2(s1T * scale_log2 - lse[None, :])
        if MASKED:
            allowed = (offs_n[:, None] <= offs_m[None, :]) & (offs_m[None, :] < T)
            if HAS_WINDOW:
                allowed = allowed & (offs_n[:, None] > offs_m[None, :] - W)
            pT = tl.where(allowed, pT, 0.0)
        # wsT = scale (1 - dt), dt the centred probe score: dV's operand is pT wsT (dV is
        # divided by scale once at the end) and dS1 = pT cs - dS2 wsT, with
        # cs = scale (Dsm - Delta): the module docstring's dS1 times scale, in two ops.
        wsT = (tbar1 * scale)[None, :] - s2T * scale
        dv = _dot(_round(pT * wsT, b_do.dtype, INTERPRET), b_do, dv, INTERPRET)
        aT = _dot(b_v, tl.trans(b_do), None, INTERPRET)  # (BN, BM) dO_i . v_j
        ds2T = pT * (delta_sm[None, :] - aT)
        ds1T = pT * (c_row * scale)[None, :] - ds2T * wsT
        ds1T_lp = _round(ds1T, b_qr.dtype, INTERPRET)
        ds2T_lp = _round(ds2T, b_qr.dtype, INTERPRET)
        # dS1 and dS2 columns in the row order of b_qr: both dK products in one
        dk = _dot(_join_blocks_of_8(ds1T_lp, ds2T_lp), b_qr, dk, INTERPRET)
        if ACCUMULATE_DQ:
            dq = _dot(tl.trans(ds1T_lp), b_k, None, INTERPRET).reshape(1, BM, D)
            dr = _dot(tl.trans(ds2T_lp), b_k, None, INTERPRET).reshape(1, BM, D)
            if INTERPRET:
                # the interpreter runs programs one at a time and has no descriptor atomics
                dq_desc.store([i_b, m0, col], dq_desc.load([i_b, m0, col]) + dq)
                dr_desc.store([i_b, m0, col], dr_desc.load([i_b, m0, col]) + dr)
            else:
                dq_desc.atomic_add([i_b, m0, col], dq)
                dr_desc.atomic_add([i_b, m0, col], dr)
    return dk, dv


@triton.jit(do_not_specialize=["T", "MAX_T", "W", "GROUP"])
def _parallax_bwd_kernel(
    qr_desc, do_desc, dq_desc, dr_desc, K, V, ROWS, DK, DV, CU_SEQLENS,
    scale, scale_log2, T, MAX_T, W, GROUP,
    HQ: tl.constexpr, HK: tl.constexpr, D: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, ACCUMULATE_DQ: tl.constexpr,
    HAS_WINDOW: tl.constexpr, IS_VARLEN: tl.constexpr, INTERPRET: tl.constexpr,
):
    """dK and dV of one key block: one program walks every query block of every query head
    in its key head's GQA group. Keys and query rows are rows of batch i_b, and eos ends
    the rows this program's keys may meet."""
    G: tl.constexpr = HQ // HK
    # Causal work shrinks with the key block: block 0 meets every query, so it is rank 0.
    if IS_VARLEN:
        # Packed (B = 1): cdiv(MAX_T, BN) programs per (sequence, key head), MAX_T the longest
        # sequence; the rank-r program takes its sequence's r-th key block, if it has one.
        # Its key block starts at the sequence's first token (bos), but its query blocks stay
        # the packed row's blocks of BM rows, the layout of the stacked q, r. The first of them
        # may begin in the previous sequence: those rows precede every key here, so the
        # causal mask hides them, and eos hides the rows of the next sequence.
        pid_sh, pid_n = _longest_first(tl.cdiv(MAX_T, BN), GROUP)
        i_seq = pid_sh // HK
        i_hk = pid_sh % HK
        i_b = 0
        bos = tl.load(CU_SEQLENS + i_seq).to(tl.int32)
        eos = tl.load(CU_SEQLENS + i_seq + 1).to(tl.int32)
        n0 = bos + pid_n * BN
        if n0 >= eos:
            return
    else:
        pid_bh, pid_n = _longest_first(tl.cdiv(T, BN), GROUP)
        i_b = pid_bh // HK
        i_hk = pid_bh % HK
        eos = T
        n0 = pid_n * BN
    offs_n = n0 + tl.arange(0, BN)

    offs_d = tl.arange(0, D)
    key_ok = offs_n[:, None] < eos
    if IS_VARLEN:
        # the block's base in 64 bits: a packed row is one sequence of every token, and its
        # T * HK * D elements may pass 2^31 where a batch's rows do not
        kv_offs = (n0.to(tl.int64) * HK + i_hk) * D + tl.arange(0, BN)[:, None] * (HK * D) + offs_d[None, :]
    else:
        kv_offs = (i_b.to(tl.int64) * T * HK + i_hk) * D + offs_n[:, None] * (HK * D) + offs_d[None, :]
    b_k = tl.load(K + kv_offs, mask=key_ok, other=0.0)  # (BN, D)
    b_v = tl.load(V + kv_offs, mask=key_ok, other=0.0)  # (BN, D)
    dk = tl.zeros((BN, D), dtype=tl.float32)
    dv = tl.zeros((BN, D), dtype=tl.float32)

    # Query blocks in units of BM: [blk_lo, blk_clean_lo) cross the diagonal,
    # [blk_clean_lo, blk_clean_hi) need no mask, [blk_clean_hi, blk_hi) cross the window's
    # edge or hold rows >= eos.
    blk_lo = n0 // BM
    if HAS_WINDOW:
        blk_hi = tl.cdiv(tl.minimum(eos, n0 + BN - 1 + W), BM)
        blk_clean_hi = tl.cdiv(tl.maximum(n0 + W - BM + 1, 0), BM)
    else:
        blk_hi = tl.cdiv(eos, BM)
        blk_clean_hi = blk_hi
    blk_clean_hi = tl.minimum(blk_clean_hi, eos // BM)
    blk_clean_lo = tl.minimum(tl.cdiv(n0 + BN - 1, BM), blk_hi)
    blk_clean_hi = tl.maximum(blk_clean_hi, blk_clean_lo)

    for g in range(G):
        i_hq = i_hk * G + g
        col = i_hq * D
        i_bh = i_b * HQ + i_hq
        row_base = i_bh.to(tl.int64) * T
        dk, dv = _bwd_inner(
            dk, dv, b_k, b_v, offs_n,
            qr_desc, do_desc, dq_desc, dr_desc, i_b, i_bh, col, row_base,
            ROWS,
            blk_lo, blk_clean_lo, eos, W, scale, scale_log2,
            D, BM, ACCUMULATE_DQ, True, HAS_WINDOW, INTERPRET,
        )
        dk, dv = _bwd_inner(
            dk, dv, b_k, b_v, offs_n,
            qr_desc, do_desc, dq_desc, dr_desc, i_b, i_bh, col, row_base,
            ROWS,
            blk_clean_lo, blk_clean_hi, eos, W, scale, scale_log2,
            D, BM, ACCUMULATE_DQ, False, HAS_WINDOW, INTERPRET,
        )
        dk, dv = _bwd_inner(
            dk, dv, b_k, b_v, offs_n,
            qr_desc, do_desc, dq_desc, dr_desc, i_b, i_bh, col, row_base,
            ROWS,
            blk_clean_hi, blk_hi, eos, W, scale, scale_log2,
            D, BM, ACCUMULATE_DQ, True, HAS_WINDOW, INTERPRET,
        )

    tl.store(DK + kv_offs, _round(dk, DK.dtype.element_ty, INTERPRET), mask=key_ok)
    # dV was summed with the operand pT scale (1 - dt)
    tl.store(DV + kv_offs, _round(dv * (1.0 / scale), DV.dtype.element_ty, INTERPRET), mask=key_ok)


@triton.jit
def _bwd_dq_inner(
    dq, dr, b_q, b_r, b_do, lse, tbar1, delta_sm, c_row, k_base, v_base, offs_m,
    blk_lo, blk_hi, T, W, scale_log2,
    stride_kt,
    D: tl.constexpr, BN: tl.constexpr, MASKED: tl.constexpr, HAS_WINDOW: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Accumulate key blocks [blk_lo, blk_hi) into dQ, dR of one query block."""
    offs_d = tl.arange(0, D)
    for blk in range(blk_lo, blk_hi):
        offs_n = blk * BN + tl.arange(0, BN)
        kv_offs = offs_n[:, None] * stride_kt + offs_d[None, :]
        if MASKED:
            b_k = tl.load(k_base + kv_offs, mask=offs_n[:, None] < T, other=0.0)  # (BN, D)
            b_v = tl.load(v_base + kv_offs, mask=offs_n[:, None] < T, other=0.0)  # (BN, D)
        else:
            b_k = tl.load(k_base + kv_offs)
            b_v = tl.load(v_base + kv_offs)
        s1 = _dot(b_q, tl.trans(b_k), None, INTERPRET)  # (BM, BN) logits before scale
        s2 = _dot(b_r, tl.trans(b_k), None, INTERPRET)  # (BM, BN) probe scores
        a = _dot(b_do, tl.trans(b_v), None, INTERPRET)  # (BM, BN) dO_i . v_j
        p = tl.math.exp2(s1 * scale_log2 - lse[:, None])
        if MASKED:
            allowed = offs_n[None, :] <= offs_m[:, None]
            if HAS_WINDOW:
                allowed = allowed & (offs_n[None, :] > offs_m[:, None] - W)
            p = tl.where(allowed, p, 0.0)
        # dS1 / scale = p (Dsm - Delta) - dS2 (1 - dt), the module docstring's form in two
        # ops; the scale goes onto dQ once at the end.
        ds2 = p * (delta_sm[:, None] - a)
        ds1 = p * c_row[:, None] - ds2 * (tbar1[:, None] - s2)
        dq = _dot(_round(ds1, b_k.dtype, INTERPRET), b_k, dq, INTERPRET)
        dr = _dot(_round(ds2, b_k.dtype, INTERPRET), b_k, dr, INTERPRET)
    return dq, dr


@triton.jit(do_not_specialize=["T", "MAX_T", "W", "GROUP"])
def _parallax_bwd_dq_kernel(
    Q, R, K, V, DO, ROWS, DQ, DR, CU_SEQLENS,
    scale, scale_log2, T, MAX_T, W, GROUP,
    HQ: tl.constexpr, HK: tl.constexpr, D: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, HAS_WINDOW: tl.constexpr, IS_VARLEN: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """dQ and dR of one query block, walking its key blocks as the forward does: the split
    backward's second kernel (it recomputes s1, s2, a instead of adding with atomics)."""
    row_head, bos, T_seq, m0, offs_m, row_ok, q_off, q_offs, k_base, v_base = _query_block_program(
        CU_SEQLENS, K, V, T, MAX_T, GROUP, HQ, HK, D, BM, IS_VARLEN
    )
    if IS_VARLEN:
        if m0 < 0:
            return
    b_q = tl.load(Q + q_off + q_offs, mask=row_ok[:, None], other=0.0)
    b_r = tl.load(R + q_off + q_offs, mask=row_ok[:, None], other=0.0)
    b_do = tl.load(DO + q_off + q_offs, mask=row_ok[:, None], other=0.0)
    row_base = row_head.to(tl.int64) * T + bos
    lse, tbar1, delta_sm, c_row = _load_rows(ROWS, row_base, offs_m, T_seq, True)
    dq = tl.zeros((BM, D), dtype=tl.float32)
    dr = tl.zeros((BM, D), dtype=tl.float32)

    blk_lo, blk_clean_lo, blk_clean_hi, blk_hi = _key_block_ranges(m0, T_seq, W, BM, BN, HAS_WINDOW)
    if HAS_WINDOW:
        dq, dr = _bwd_dq_inner(
            dq, dr, b_q, b_r, b_do, lse, tbar1, delta_sm, c_row, k_base, v_base, offs_m,
            blk_lo, blk_clean_lo, T_seq, W, scale_log2, HK * D,
            D, BN, True, HAS_WINDOW, INTERPRET,
        )
    dq, dr = _bwd_dq_inner(
        dq, dr, b_q, b_r, b_do, lse, tbar1, delta_sm, c_row, k_base, v_base, offs_m,
        blk_clean_lo, blk_clean_hi, T_seq, W, scale_log2, HK * D,
        D, BN, False, HAS_WINDOW, INTERPRET,
    )
    dq, dr = _bwd_dq_inner(
        dq, dr, b_q, b_r, b_do, lse, tbar1, delta_sm, c_row, k_base, v_base, offs_m,
        blk_clean_hi, blk_hi, T_seq, W, scale_log2, HK * D,
        D, BN, True, HAS_WINDOW, INTERPRET,
    )
    tl.store(DQ + q_off + q_offs, _round(dq * scale, DQ.dtype.element_ty, INTERPRET), mask=row_ok[:, None])
    tl.store(DR + q_off + q_offs, _round(dr, DR.dtype.element_ty, INTERPRET), mask=row_ok[:, None])


def parallax_forward(
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    window: int,
    return_stats: bool,
    save_residuals: bool,
    config: TileConfig | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int = 0,
):
    """Launch the forward. window <= 0 means none. cu_seqlens: packed sequences (B = 1,
    offsets [n + 1] on q's device), max_seqlen their longest length (it sizes the grid).

    Returns (o, o_sm, o_lo, lse, tbar, stats). Residuals for the backward, empty unless
    save_residuals: o_sm [B, T, HQ, D] float32; o_lo, o's rounding residual, like o;
    lse and tbar [B, HQ, T] float32. stats [B, HQ, T, 4] float32, empty unless return_stats.
    """
    q, r, k, v = (t.contiguous() for t in (q, r, k, v))
    if cu_seqlens is not None:
        cu_seqlens = cu_seqlens.contiguous()  # the kernels index it as a plain array
    B, T, HQ, D = q.shape
    HK = k.shape[2]
    # heads of the grid: (batch, head) pairs, or (sequence, head) pairs of at most max_seqlen rows
    heads, longest = (B * HQ, T) if cu_seqlens is None else ((cu_seqlens.shape[0] - 1) * HQ, max_seqlen)
    config = config or forward_config(D, q.device, longest)
    o = torch.empty_like(q)
    if save_residuals:
        o_sm = torch.empty(q.shape, device=q.device, dtype=torch.float32)
        o_lo = torch.empty_like(q)
        lse = torch.empty((B, HQ, T), device=q.device, dtype=torch.float32)
        tbar = torch.empty((B, HQ, T), device=q.device, dtype=torch.float32)
    else:
        # distinct empty tensors: a custom op's outputs may not alias each other
        o_sm, lse, tbar = (q.new_empty((0,), dtype=torch.float32) for _ in range(3))
        o_lo = q.new_empty((0,))
    if return_stats:
        stats = torch.empty((B, HQ, T, 4), device=q.device, dtype=torch.float32)
    else:
        stats = q.new_empty((0,), dtype=torch.float32)
    _parallax_fwd_kernel[(cdiv(longest, config.BM) * heads,)](
        q, r, k, v, o, o_sm, o_lo, lse, tbar, stats, cu_seqlens,
        scale * LOG2E, T, longest, max(window, 0), query_block_group(k, longest),
        HQ=HQ, HK=HK, D=D, BM=config.BM, BN=config.BN,
        HAS_WINDOW=window > 0, SAVE_RESIDUALS=save_residuals, WRITE_STATS=return_stats,
        IS_VARLEN=cu_seqlens is not None, INTERPRET=q.device.type == "cpu",
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return o, o_sm, o_lo, lse, tbar, stats


def backward_preprocess(o, o_lo, o_sm, do, lse, tbar, q, r):
    """(rows, qr): the packed per-row terms [B, HQ, T, 4] and the stacked q, r (see
    `_parallax_bwd_preprocess_kernel`), from contiguous inputs."""
    B, T, HQ, D = q.shape
    rows = torch.empty((B, HQ, T, 4), device=q.device, dtype=torch.float32)
    T8 = cdiv(T, 8) * 8
    qr = torch.empty((B * HQ, 2 * T8, D), device=q.device, dtype=q.dtype)
    BM = 32  # a multiple of 8: see the kernel
    _parallax_bwd_preprocess_kernel[(cdiv(T, BM) * B * HQ,)](
        o, o_lo, o_sm, do, lse, tbar, q, r, rows, qr, T, HQ=HQ, D=D, BM=BM, num_warps=4,
    )
    return rows, qr


def parallax_backward(
    do: torch.Tensor,
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    o_sm: torch.Tensor,
    o_lo: torch.Tensor,
    lse: torch.Tensor,
    tbar: torch.Tensor,
    scale: float,
    window: int,
    config: BackwardConfig | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int = 0,
):
    """Launch the backward; returns (dq, dr, dk, dv) in the input dtype. cu_seqlens and
    max_seqlen as in `parallax_forward`."""
    do, q, r, k, v, o, o_lo = (t.contiguous() for t in (do, q, r, k, v, o, o_lo))
    if cu_seqlens is not None:
        cu_seqlens = cu_seqlens.contiguous()
    # the copy engine needs 16-byte aligned bases; a contiguous view can start anywhere
    if do.data_ptr() % 16:
        do = do.clone()
    B, T, HQ, D = q.shape
    HK = k.shape[2]
    n_seqs, longest = (B, T) if cu_seqlens is None else (cu_seqlens.shape[0] - 1, max_seqlen)
    config = config or backward_config(D, q.device)
    if config.kv.BM % 8:
        raise ValueError(
            f"backward kv tiles: BM = {config.kv.BM} must be a multiple of 8 (q and r come stacked in 8-row blocks)"
        )
    interpret = q.device.type == "cpu"
    rows, qr = backward_preprocess(o, o_lo, o_sm, do, lse, tbar, q, r)
    kv = config.kv
    fused = config.q is None
    if fused:
        # float32 sums for the atomics; they must start at zero
        dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
        dr = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    else:
        dq = torch.empty_like(q)
        dr = torch.empty_like(r)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)

    def rows_of_heads(t):  # [B, T, HQ, D] as the [B, T, HQ * D] the descriptors index
        return TensorDescriptor.from_tensor(t.view(B, T, HQ * D), [1, kv.BM, D])

    qr_desc = TensorDescriptor.from_tensor(qr, [1, 2 * kv.BM, D])
    do_desc = rows_of_heads(do)
    # a key head's programs read q, r and dO of every query head in its GQA group
    kv_group = heads_per_group(3 * longest * D * q.element_size() * (HQ // HK))
    _parallax_bwd_kernel[(cdiv(longest, kv.BN) * n_seqs * HK,)](
        qr_desc, do_desc,
        # None when dQ, dR come from the second kernel: the launcher encodes every descriptor
        # argument into a TMA descriptor on the host, at each launch
        rows_of_heads(dq) if fused else None, rows_of_heads(dr) if fused else None,
        k, v, rows, dk, dv, cu_seqlens,
        scale, scale * LOG2E, T, longest, max(window, 0), kv_group,
        HQ=HQ, HK=HK, D=D, BM=kv.BM, BN=kv.BN, ACCUMULATE_DQ=fused, HAS_WINDOW=window > 0,
        IS_VARLEN=cu_seqlens is not None, INTERPRET=interpret,
        num_warps=kv.num_warps, num_stages=kv.num_stages,
    )
    if fused:
        return dq.to(q.dtype), dr.to(q.dtype), dk, dv
    qc = config.q
    _parallax_bwd_dq_kernel[(cdiv(longest, qc.BM) * n_seqs * HQ,)](
        q, r, k, v, do, rows, dq, dr, cu_seqlens,
        scale, scale * LOG2E, T, longest, max(window, 0), query_block_group(k, longest),
        HQ=HQ, HK=HK, D=D, BM=qc.BM, BN=qc.BN, HAS_WINDOW=window > 0,
        IS_VARLEN=cu_seqlens is not None, INTERPRET=interpret,
        num_warps=qc.num_warps, num_stages=qc.num_stages,
    )
    return dq, dr, dk, dv


@torch.library.custom_op("parallax_probe::parallax_attention_fwd", mutates_args=())
def _forward_op(
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    window: int,
    return_stats: bool,
    save_residuals: bool,
    cu_seqlens: torch.Tensor | None,
    max_seqlen: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return parallax_forward(
        q, r, k, v, scale, window, return_stats, save_residuals, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen
    )


@_forward_op.register_fake
def _forward_fake(q, r, k, v, scale, window, return_stats, save_residuals, cu_seqlens, max_seqlen):
    B, T, HQ, D = q.shape
    empty = q.new_empty((0,), dtype=torch.float32)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    if save_residuals:
        o_sm = torch.empty_like(o, dtype=torch.float32)
        o_lo = torch.empty_like(o)
        lse = q.new_empty((B, HQ, T), dtype=torch.float32)
        tbar = q.new_empty((B, HQ, T), dtype=torch.float32)
    else:
        o_sm, lse, tbar = empty, empty.clone(), empty.clone()
        o_lo = q.new_empty((0,))
    stats = q.new_empty((B, HQ, T, 4), dtype=torch.float32) if return_stats else empty.clone()
    return o, o_sm, o_lo, lse, tbar, stats


@torch.library.custom_op("parallax_probe::parallax_attention_bwd", mutates_args=())
def _backward_op(
    do: torch.Tensor,
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    o_sm: torch.Tensor,
    o_lo: torch.Tensor,
    lse: torch.Tensor,
    tbar: torch.Tensor,
    scale: float,
    window: int,
    cu_seqlens: torch.Tensor | None,
    max_seqlen: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return parallax_backward(
        do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, window, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen
    )


@_backward_op.register_fake
def _backward_fake(do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, window, cu_seqlens, max_seqlen):
    contiguous = torch.contiguous_format
    return (
        torch.empty_like(q, memory_format=contiguous),
        torch.empty_like(r, memory_format=contiguous),
        torch.empty_like(k, memory_format=contiguous),
        torch.empty_like(v, memory_format=contiguous),
    )


def _setup_context(ctx, inputs, output):
    q, r, k, v, scale, window, return_stats, save_residuals, cu_seqlens, max_seqlen = inputs
    o, o_sm, o_lo, lse, tbar, stats = output
    ctx.save_for_backward(q, r, k, v, o, o_sm, o_lo, lse, tbar, cu_seqlens)
    ctx.scale = scale
    ctx.window = window
    ctx.max_seqlen = max_seqlen
    ctx.mark_non_differentiable(o_sm, o_lo, lse, tbar, stats)
    # The five non-differentiable outputs never receive a gradient. Materialised, autograd
    # would allocate and zero-fill each before the backward (o_sm alone is [B, T, HQ, D]
    # float32): five launches and an o-sized float32 memset per call, for nothing.
    ctx.set_materialize_grads(False)


def _gradients(ctx, do, launch_backward):
    """(dq, dr, dk, dv, None x 6) for the forward's ten inputs, the backward run by
    launch_backward (the custom op under torch.compile, parallax_backward in eager mode)."""
    q, r, k, v, o, o_sm, o_lo, lse, tbar, cu_seqlens = ctx.saved_tensors
    if o_sm.numel() == 0:
        raise RuntimeError(
            "parallax_attention (triton): the forward ran without saving residuals "
            "(no input required grad when it ran), so it cannot be differentiated"
        )
    if do is None:  # o took no part in the loss (only the statistics did, which carry no gradient)
        return (None,) * 10
    dq, dr, dk, dv = launch_backward(
        do, q, r, k, v, o, o_sm, o_lo, lse, tbar, ctx.scale, ctx.window, cu_seqlens, ctx.max_seqlen
    )
    return dq, dr, dk, dv, None, None, None, None, None, None


def _backward(ctx, do, _do_sm, _do_lo, _dlse, _dtbar, _dstats):
    return _gradients(ctx, do, _backward_op)


torch.library.register_autograd(
    "parallax_probe::parallax_attention_fwd", _backward, setup_context=_setup_context
)


def _launch_backward(do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, window, cu_seqlens, max_seqlen):
    return parallax_backward(
        do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, window, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen
    )


class _EagerParallaxAttention(torch.autograd.Function):
    """The eager path: the custom op's launches and autograd formula (`_setup_context`,
    `_gradients`) without the dispatcher around them. Per call, the custom op re-enters the
    dispatcher twice (the op, then the registered autograd's redispatch), fills in its schema's
    defaults and dispatches the backward as a second op: on a CPU, with the launches stubbed
    out, about half the Python time of an eager fwd+bwd (benchmarks/tools/host_overhead.py). Under
    torch.compile the custom op stays: it is what the compiler traces."""

    @staticmethod
    def forward(ctx, q, r, k, v, scale, window, return_stats, save_residuals, cu_seqlens, max_seqlen):
        output = parallax_forward(
            q, r, k, v, scale, window, return_stats, save_residuals, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen
        )
        _setup_context(ctx, (q, r, k, v, scale, window, return_stats, save_residuals, cu_seqlens, max_seqlen), output)
        return output

    @staticmethod
    def backward(ctx, do, _do_sm, _do_lo, _dlse, _dtbar, _dstats):
        return _gradients(ctx, do, _launch_backward)


def longest_sequence(cu_seqlens: torch.Tensor) -> int:
    """The longest length in packed offsets. A host sync where cu_seqlens lives on a GPU (the
    value sizes the kernels' grids): callers that know it pass max_seqlen instead."""
    return int((cu_seqlens[1:] - cu_seqlens[:-1]).max())


def parallax_attention_triton(
    q: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    window: int | None,
    return_stats: bool,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
):
    """Causal Parallax attention through the Triton kernels; inputs already validated."""
    save_residuals = torch.is_grad_enabled() and any(t.requires_grad for t in (q, r, k, v))
    if cu_seqlens is None:
        max_seqlen = 0
    elif max_seqlen is None:
        max_seqlen = longest_sequence(cu_seqlens)
    args = (q, r, k, v, float(scale), window or 0, return_stats, save_residuals, cu_seqlens, max_seqlen)
    if torch.compiler.is_compiling():
        o, _o_sm, _o_lo, _lse, _tbar, stats = _forward_op(*args)
    elif save_residuals:
        o, _o_sm, _o_lo, _lse, _tbar, stats = _EagerParallaxAttention.apply(*args)
    else:  # nothing to differentiate: the launch alone
        o, _o_sm, _o_lo, _lse, _tbar, stats = parallax_forward(*args[:8], cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
    if not return_stats:
        return o
    # [B, HQ, T, 4] -> four [B, T, HQ] views; one permute and one unbind, not four index
    # ops: host time a short forward can wait on
    return o, AttentionStats(*stats.permute(3, 0, 2, 1).unbind(0))
