"""The Triton Parallax kernels against the reference evaluated in float64.

Tolerance rule (flash-attention's, from first principles): the kernel's relative error
against float64 may be at most twice that of the reference run on the same low-precision
inputs, plus a tiny floor for quantities both compute exactly in float32; NaN never passes.
The reference runs twice: computing in float32 and rounding its output once, and rounding as
well the score-sized operands a tensor-core kernel must round before its products (P, dS:
the reference's `operand_dtype`); the larger of the two errors is the yardstick. Against
the output's rounding alone, dq's error on short packed rows reached 2.07x in 400 draws
(median 1.6x): the dS rounding, not a fault. The second run's error is about 1.4x the
first's, and the kernel's about 1.0-1.1x the second's (1.3x at most in 150 draws). The
statistics are quadratic in the branch outputs, so they may carry twice the output's
allowed error: 4x the output-only reference's error.

On a machine without a Hopper GPU the small cases run on the CPU through Triton's
interpreter; the `gpu` cases run real shapes on compute capability 9.0 only.
"""

from __future__ import annotations

import math

import pytest
import torch
from triton_device import DEVICE, ON_HOPPER

from parallax_probe.kernels import parallax_attention
from parallax_probe.kernels.reference import parallax_attention_reference

requires_hopper = pytest.mark.skipif(not ON_HOPPER, reason="needs a GPU of compute capability 9.0")

FLOOR = 1e-6  # float32-exact quantities (r_sq) agree to rounding of float32 itself


@pytest.fixture
def nan_poisoned_empty(monkeypatch):
    """torch.empty and torch.empty_like hand out NaN-filled floating tensors, so an output
    element the kernel never writes shows up as NaN instead of as leftover memory."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poisoned(allocate):
        def allocate_nan(*args, **kwargs):
            t = allocate(*args, **kwargs)
            if t.is_floating_point():
                t.fill_(math.nan)
            return t

        return allocate_nan

    monkeypatch.setattr(torch, "empty", poisoned(real_empty))
    monkeypatch.setattr(torch, "empty_like", poisoned(real_empty_like))


def make_inputs(B, T, HQ, HK, D, dtype, r_norm, device, generator_seed):
    """Fresh random q, r, k, v, dO; every row of r has norm r_norm (the correction dominates)."""
    g = torch.Generator().manual_seed(generator_seed)
    q = torch.randn(B, T, HQ, D, generator=g)
    r = torch.randn(B, T, HQ, D, generator=g)
    r = r / r.norm(dim=-1, keepdim=True) * r_norm
    k = torch.randn(B, T, HK, D, generator=g)
    v = torch.randn(B, T, HK, D, generator=g)
    do = torch.randn(B, T, HQ, D, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (q, r, k, v, do)]


def relative_error(x: torch.Tensor, exact: torch.Tensor) -> float:
    return ((x.double() - exact).norm() / exact.norm()).item()


def assert_within_rule(name, got, lows, exact, seed=None):
    """lows: the same quantity from each low-precision reference run (the module's rule)."""
    assert not got.isnan().any(), f"{name}: NaN (an element not written?), seed {seed}"
    err, err_low = relative_error(got, exact), max(relative_error(low, exact) for low in lows)
    assert err <= 2 * err_low + FLOOR, (
        f"{name}: kernel error {err:.3e} > 2 x reference's {err_low:.3e} in {got.dtype}, seed {seed}"
    )


def run(q, r, k, v, do, *, window, backend, **packing):
    """Output, stats and the four input gradients of one backend (packing: cu_seqlens, max_seqlen)."""
    inputs = [t.detach().clone().requires_grad_() for t in (q, r, k, v)]
    o, stats = parallax_attention(*inputs, window=window, return_stats=True, backend=backend, **packing)
    o.backward(do.to(o.dtype))
    return o.detach(), stats, [t.grad for t in inputs]


def run_reference_rounding_operands(q, r, k, v, do, *, window, cu_seqlens=None, max_seqlen=None):
    """`run` of the reference that rounds P and dS to the inputs' dtype as well (max_seqlen:
    the kernel's launch hint, which the reference does not need)."""
    inputs = [t.detach().clone().requires_grad_() for t in (q, r, k, v)]
    o = parallax_attention_reference(
        *inputs, scale=q.shape[-1] ** -0.5, window=window, cu_seqlens=cu_seqlens, operand_dtype=q.dtype
    )
    o.backward(do.to(o.dtype))
    return o.detach(), [t.grad for t in inputs]


def low_precision_references(q, r, k, v, do, window, **packing):
    """Output and gradients of each low-precision reference run, named as `run` returns them:
    (o, grads) pairs, the output-only rounding first."""
    o_low, _, grads_low = run(q, r, k, v, do, window=window, backend="reference", **packing)
    return [(o_low, grads_low), run_reference_rounding_operands(q, r, k, v, do, window=window, **packing)]


def check_against_float64(q, r, k, v, do, window, seed=None, **packing):
    """The kernel's output, gradients and statistics against the reference in float64, by the
    module docstring's rule; seed (the inputs' generator seed) goes into every failure message."""
    o, stats, grads = run(q, r, k, v, do, window=window, backend="triton", **packing)
    lows = low_precision_references(q, r, k, v, do, window, **packing)
    o_64, stats_64, grads_64 = run(
        *(t.double() for t in (q, r, k, v, do)), window=window, backend="reference", **packing
    )
    assert_within_rule("o", o, [o_low for o_low, _ in lows], o_64, seed)
    for i, name in enumerate(("dq", "dr", "dk", "dv")):
        assert_within_rule(name, grads[i], [grads_low[i] for _, grads_low in lows], grads_64[i], seed)
    err_o_low = relative_error(lows[0][0], o_64)
    for name in stats._fields:
        got, exact = getattr(stats, name), getattr(stats_64, name)
        assert got.dtype == torch.float32 and got.shape == exact.shape, name
        assert not got.isnan().any(), f"stats.{name}: NaN (a row not written?), seed {seed}"
        err = relative_error(got, exact)
        assert err <= 4 * err_o_low + FLOOR, (
            f"stats.{name}: error {err:.3e} > 4 x the reference output's {err_o_low:.3e}, seed {seed}"
        )
    return o, stats, grads


# (B, T, HQ, HK, D, window, dtype, ||r||). On the interpreter the tiles are 32x16 (forward),
# 16x32 (backward kv kernel) and 32x16 (dQ kernel): no T here is a multiple of a block, and
# the windows are smaller than a block (7), exactly one (16), larger and no multiple of one
# (40), and longer than the sequence (200).
SMALL_CASES = [
    (1, 77, 2, 1, 64, None, torch.bfloat16, 10.0),
    (2, 50, 2, 2, 128, 7, torch.bfloat16, 10.0),
    (1, 100, 4, 2, 64, 40, torch.bfloat16, 30.0),
    (1, 45, 2, 1, 128, 200, torch.float16, 10.0),
    (2, 17, 4, 2, 64, None, torch.bfloat16, 10.0),
    (1, 61, 3, 1, 64, 16, torch.float16, 1.0),
]


def case_id(case):
    B, T, HQ, HK, D, W, dtype, r_norm = case
    return f"B{B}-T{T}-H{HQ}-HK{HK}-D{D}-W{W}-{str(dtype)[6:]}-r{r_norm:g}"


@pytest.mark.parametrize("case", SMALL_CASES, ids=case_id)
def test_small_shapes_match_float64(case, seed, nan_poisoned_empty):
    B, T, HQ, HK, D, window, dtype, r_norm = case
    inputs = make_inputs(B, T, HQ, HK, D, dtype, r_norm, DEVICE, seed)
    check_against_float64(*inputs, window, seed)


GPU_CASES = [
    (2, 1041, 8, 2, 128, None, torch.bfloat16, 10.0),
    # rows <= SHORT_ROWS: the forward's 64x64 tiles at D = 128
    (3, 333, 4, 2, 128, None, torch.bfloat16, 10.0),
    (2, 500, 4, 4, 128, 100, torch.float16, 30.0),
    (1, 2047, 4, 4, 64, None, torch.bfloat16, 30.0),
    (2, 1500, 4, 1, 128, 300, torch.bfloat16, 10.0),
    (1, 999, 4, 2, 64, 37, torch.float16, 10.0),
    (1, 4096, 2, 2, 128, None, torch.float16, 1.0),
]


@pytest.mark.gpu
@requires_hopper
@pytest.mark.parametrize("case", GPU_CASES, ids=case_id)
def test_real_shapes_match_float64(case, seed, nan_poisoned_empty):
    B, T, HQ, HK, D, window, dtype, r_norm = case
    inputs = make_inputs(B, T, HQ, HK, D, dtype, r_norm, DEVICE, seed)
    check_against_float64(*inputs, window, seed)


# Packed sequences: (lengths, HQ, HK, D, window, dtype, ||r||). On the interpreter a forward
# tile holds 32 rows and 16 keys, a kv-kernel program 32 keys and 16 rows per step: lengths of
# 1, odd lengths, an empty sequence, sequences longer than every tile, and sequences that start
# in the middle of the packed row's 8-row blocks (the stacked q, r) and of its 16-row blocks
# (the kv kernel's query steps). Windows below a tile (7), of one (16) and beyond every sequence.
SMALL_PACKS = [
    ([1, 45, 7, 0, 20], 2, 1, 64, None, torch.bfloat16, 10.0),
    ([33, 1, 17], 4, 2, 128, 7, torch.bfloat16, 10.0),
    ([50, 3], 2, 2, 64, 16, torch.float16, 30.0),
    ([9, 40], 3, 1, 64, 100, torch.bfloat16, 1.0),
]
GPU_PACKS = [
    # D = 128 with every length above SHORT_ROWS, or D = 64: the packed call and each sequence
    # alone take the same forward tiles (forward_config picks them by the longest sequence)
    ([700, 1500, 2049, 513, 999], 8, 2, 128, None, torch.bfloat16, 10.0),
    ([1, 333, 0, 1024, 77, 901], 4, 4, 64, 300, torch.float16, 30.0),
    ([4096, 3000, 1], 4, 1, 64, None, torch.bfloat16, 10.0),
]


def pack_id(pack):
    lengths, HQ, HK, D, W, dtype, r_norm = pack
    return f"lens{'-'.join(map(str, lengths))}-H{HQ}-HK{HK}-D{D}-W{W}-{str(dtype)[6:]}-r{r_norm:g}"


def check_packed(pack, max_seqlen_extra, seed, offsets_dtype=torch.int32):
    """Packed sequences against the float64 reference, which runs each sequence alone (the
    module's rule), and against each sequence run alone through the kernel: the forward and the
    dQ/dR kernel see the same rows in the same tiles, so o, the statistics, dq and dr are bitwise
    those of the sequence alone. (The kv kernel steps through the packed row's query blocks,
    which start elsewhere, so dk and dv agree only within the rule, checked against float64.)
    On the GPU this needs the packed and batched builds to round alike: kernels/NOTES.md,
    "Packed sequences and eager host time", on the lse that once differed in its last bit."""
    lengths, HQ, HK, D, window, dtype, r_norm = pack
    q, r, k, v, do = make_inputs(1, sum(lengths), HQ, HK, D, dtype, r_norm, DEVICE, seed)
    offsets = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cu_seqlens = torch.tensor(offsets, dtype=offsets_dtype, device=DEVICE)
    # a larger max_seqlen only adds programs that find nothing to do
    max_seqlen = max(lengths) + max_seqlen_extra if max_seqlen_extra is not None else None
    o, stats, grads = check_against_float64(q, r, k, v, do, window, seed, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
    for a, b in zip(offsets[:-1], offsets[1:]):
        if a == b:
            continue
        alone = [t[:, a:b] for t in (q, r, k, v, do)]
        o_a, stats_a, grads_a = run(*alone, window=window, backend="triton")
        where = f"sequence [{a}, {b}), seed {seed}"
        assert torch.equal(o[:, a:b], o_a), f"o differs from the sequence alone: {where}"
        for name, got, want in zip(stats._fields, stats, stats_a):
            assert torch.equal(got[:, a:b], want), f"stats.{name} differs from the sequence alone: {where}"
        for name, got, want in zip("qr", grads[:2], grads_a[:2]):
            assert torch.equal(got[:, a:b], want), f"d{name} differs from the sequence alone: {where}"


# max_seqlen: derived from cu_seqlens (None) for every pack; given exactly (with int64 offsets,
# which the public function also takes), and larger than needed, for the first
PACKED_CALLS = [pytest.param(pack, None, torch.int32, id=pack_id(pack)) for pack in SMALL_PACKS] + [
    pytest.param(SMALL_PACKS[0], 0, torch.int64, id=f"{pack_id(SMALL_PACKS[0])}-max_seqlen+0-int64"),
    pytest.param(SMALL_PACKS[0], 17, torch.int32, id=f"{pack_id(SMALL_PACKS[0])}-max_seqlen+17"),
]


@pytest.mark.parametrize("pack, max_seqlen_extra, offsets_dtype", PACKED_CALLS)
def test_packed_sequences_match_float64_and_each_sequence_alone(pack, max_seqlen_extra, offsets_dtype, seed, nan_poisoned_empty):
    check_packed(pack, max_seqlen_extra, seed, offsets_dtype)


@pytest.mark.gpu
@requires_hopper
@pytest.mark.parametrize("pack", GPU_PACKS, ids=pack_id)
def test_packed_real_shapes_match_float64_and_each_sequence_alone(pack, seed, nan_poisoned_empty):
    check_packed(pack, 0, seed)


def test_single_position_is_its_value(nan_poisoned_empty):
    """T = 1: one key, so o = v, c = 0, dv = dO, and dq = dr = dk = 0 up to float32 rounding
    (no relative error exists for them)."""
    q, r, k, v, do = make_inputs(2, 1, 4, 2, 128, torch.bfloat16, 10.0, DEVICE, 0)
    o, stats, (dq, dr, dk, dv) = run(q, r, k, v, do, window=None, backend="triton")
    torch.testing.assert_close(o, v.repeat_interleave(2, dim=2), rtol=0, atol=0)
    assert torch.equal(stats.c_sq, torch.zeros_like(stats.c_sq))
    for grad in (dq, dr, dk):
        assert grad.abs().max() <= 1e-5
    torch.testing.assert_close(dv, do.view(2, 1, 2, 2, 128).sum(3).to(dv.dtype))


# B=3, T=77, HQ=2, HK=1, D=64 in bf16: a forward / dQ head reads 2*77*64*2 = 19,712 bytes of
# K and V, a kv-kernel head 3*77*64*2*2 = 59,136 of q, r and dO. These L2 shares group the 6
# query heads in fours (4 + 2) or the 3 key heads in twos (2 + 1), or every head alone.
@pytest.mark.parametrize("l2_share", [4 * 19_712, 2 * 59_136, 1])
def test_the_launch_order_changes_no_result(l2_share, monkeypatch, seed, nan_poisoned_empty):
    """Programs start longest first in groups of heads (`_longest_first`); any grouping,
    including a short last group, covers every block once and computes the same bits."""
    from parallax_probe.kernels import parallel

    q, r, k, v, do = make_inputs(3, 77, 2, 1, 64, torch.bfloat16, 10.0, DEVICE, seed)
    one_group = run(q, r, k, v, do, window=None, backend="triton")
    monkeypatch.setattr(parallel, "L2_SHARE_BYTES", l2_share)
    grouped = run(q, r, k, v, do, window=None, backend="triton")
    (o, stats, grads), (o_g, stats_g, grads_g) = one_group, grouped
    assert torch.equal(o, o_g) and not o_g.isnan().any()
    assert all(torch.equal(a, b) for a, b in zip(stats, stats_g))
    assert all(torch.equal(a, b) and not b.isnan().any() for a, b in zip(grads, grads_g))


@pytest.mark.parametrize("packed", [False, True], ids=["batched", "packed"])
@pytest.mark.parametrize("variant", ["fused", "split"])
def test_both_backward_variants_match_float64(variant, packed, seed, nan_poisoned_empty):
    """The default picks one backward per head dim; the other must stay correct too. Packed,
    the fused kernel's atomics also add (zeros) into rows of the neighbouring sequences that
    share its first and last query blocks."""
    from parallax_probe.kernels import parallel
    from parallax_probe.kernels.parallel import BackwardConfig, TileConfig

    if DEVICE == "cpu":
        kv, q_tiles = TileConfig(16, 32, 4, 1), TileConfig(32, 16, 4, 1)
        B, T, HQ, HK, window = 1, 70, 4, 2, 23
        lengths = [30, 1, 39]
    else:
        kv, q_tiles = TileConfig(32, 128, 8, 2), TileConfig(128, 64, 8, 2)
        B, T, HQ, HK, window = 2, 1100, 4, 2, 300
        lengths = [500, 1, 1099, 600]
    if packed:
        B, T = 1, sum(lengths)
        cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
        packing = {"cu_seqlens": cu_seqlens, "max_seqlen": max(lengths)}
    else:
        packing = {}
    config = BackwardConfig(kv=kv, q=q_tiles if variant == "split" else None)
    q, r, k, v, do = make_inputs(B, T, HQ, HK, 64, torch.bfloat16, 10.0, DEVICE, seed)
    scale = 64**-0.5
    o, o_sm, o_lo, lse, tbar, _ = parallel.parallax_forward(q, r, k, v, scale, window, False, True, **packing)
    grads = parallel.parallax_backward(do, q, r, k, v, o, o_sm, o_lo, lse, tbar, scale, window, config, **packing)
    lows = low_precision_references(q, r, k, v, do, window, **packing)
    _, _, grads_64 = run(*(t.double() for t in (q, r, k, v, do)), window=window, backend="reference", **packing)
    for i, name in enumerate(("dq", "dr", "dk", "dv")):
        assert_within_rule(name, grads[i], [grads_low[i] for _, grads_low in lows], grads_64[i], seed)


@pytest.mark.parametrize("T", [16, 21])
def test_stacked_operand_alternates_eight_rows_of_q_and_r(T, seed, nan_poisoned_empty):
    """The kv kernel's stacked operand: per head, eight rows of q then the same eight rows of
    r; a length that is no multiple of 8 ends in zero rows, never in leftover memory."""
    from parallax_probe.kernels.parallel import stack_queries_and_probes

    B, HQ, D = 2, 3, 4
    q = torch.randn(B, T, HQ, D, device=DEVICE)
    r = torch.randn(B, T, HQ, D, device=DEVICE)
    qr = stack_queries_and_probes(q, r)
    T8 = -(-T // 8) * 8
    assert qr.shape == (B * HQ, 2 * T8, D)
    blocks = qr.view(B, HQ, T8 // 8, 2, 8, D)
    for b in range(B):
        for h in range(HQ):
            for i in range(T8):
                for half, x in enumerate((q, r)):
                    want = x[b, i, h] if i < T else torch.zeros(D, device=DEVICE)
                    assert torch.equal(blocks[b, h, i // 8, half, i % 8], want), (b, h, i, half)


@pytest.mark.parametrize("T", [16, 45])
def test_backward_preprocess_writes_the_stacked_operand(T, nan_poisoned_empty):
    """The kernel that writes the stacked q, r for the backward agrees with the layout's
    plain-PyTorch statement, the zero tail rows included."""
    from parallax_probe.kernels import parallel

    q, r, k, v, do = make_inputs(2, T, 4, 2, 64, torch.bfloat16, 10.0, DEVICE, 0)
    o, o_sm, o_lo, lse, tbar, _ = parallel.parallax_forward(q, r, k, v, 0.125, 0, False, True)
    _, qr = parallel.backward_preprocess(o, o_lo, o_sm, do, lse, tbar, q, r)
    assert torch.equal(qr, parallel.stack_queries_and_probes(q, r))


def test_backward_tiles_that_cannot_hold_the_stacked_rows_are_refused():
    from parallax_probe.kernels import parallel
    from parallax_probe.kernels.parallel import BackwardConfig, TileConfig

    q, r, k, v, do = make_inputs(1, 20, 2, 1, 64, torch.bfloat16, 1.0, DEVICE, 0)
    o, o_sm, o_lo, lse, tbar, _ = parallel.parallax_forward(q, r, k, v, 0.125, 0, False, True)
    config = BackwardConfig(kv=TileConfig(12, 32, 4, 1), q=TileConfig(32, 16, 4, 1))
    with pytest.raises(ValueError, match="BM = 12 must be a multiple of 8"):
        parallel.parallax_backward(do, q, r, k, v, o, o_sm, o_lo, lse, tbar, 0.125, 0, config)


def test_statistics_in_the_loss_change_no_gradient(nan_poisoned_empty):
    """The statistics and the backward's residuals carry no gradient: the backward gets None
    for them (nothing is allocated and zero-filled), and a loss that also sums a statistic
    gives the gradients of o's loss alone, bit for bit."""
    q, r, k, v, do = make_inputs(1, 40, 2, 1, 64, torch.bfloat16, 10.0, DEVICE, 0)
    grads = []
    for with_stats in (False, True):
        inputs = [t.clone().requires_grad_() for t in (q, r, k, v)]
        o, stats = parallax_attention(*inputs, return_stats=True, backend="triton")
        loss = (o.float() * do.float()).sum() + (stats.c_sq.sum() if with_stats else 0.0)
        loss.backward()
        grads.append([t.grad for t in inputs])
    for plain, with_stats in zip(*grads):
        assert not plain.isnan().any() and torch.equal(plain, with_stats)


def test_forward_without_grad_matches_with_grad():
    """The inference path (no residuals saved) computes the same output."""
    q, r, k, v, _ = make_inputs(1, 40, 2, 1, 64, torch.bfloat16, 10.0, DEVICE, 0)
    with torch.no_grad():
        o_inference = parallax_attention(q, r, k, v, backend="triton")
    o_training = parallax_attention(*(t.requires_grad_() for t in (q, r, k, v)), backend="triton")
    assert torch.equal(o_inference, o_training.detach())


@pytest.mark.parametrize(
    "D, dtype, causal, queries",
    [(96, torch.bfloat16, True, 20), (64, torch.float32, True, 20), (64, torch.bfloat16, False, 20),
     (64, torch.bfloat16, True, 3)],
    ids=["D96", "float32", "non-causal", "decode"],
)
def test_uncovered_calls_take_the_reference(D, dtype, causal, queries):
    q, r, k, v, _ = make_inputs(1, 20, 2, 2, D, dtype, 1.0, DEVICE, 0)
    q, r = q[:, -queries:], r[:, -queries:]  # decode: fewer queries than cached keys
    out = parallax_attention(q, r, k, v, causal=causal, backend="triton")
    ref = parallax_attention(q, r, k, v, causal=causal, backend="reference")
    assert torch.equal(out, ref)


def assert_compiled_matches_eager(compiled, eager, qrkv, do):
    """`compiled` and `eager` map (q, r, k, v) to (o, a statistic); both outputs and all four
    gradients must be bit-identical, and every gradient finite."""
    inputs = [t.clone().requires_grad_() for t in qrkv]
    o, stat = compiled(*inputs)
    o.backward(do)
    eager_inputs = [t.clone().requires_grad_() for t in qrkv]
    o_eager, stat_eager = eager(*eager_inputs)
    o_eager.backward(do)
    torch.testing.assert_close(o, o_eager, rtol=0, atol=0)
    torch.testing.assert_close(stat, stat_eager, rtol=0, atol=0)
    for got, want in zip(inputs, eager_inputs):
        assert got.grad is not None and got.grad.isfinite().all()
        torch.testing.assert_close(got.grad, want.grad, rtol=0, atol=0)


@pytest.mark.parametrize("packed", [False, True], ids=["batched", "packed"])
def test_torch_compile_fullgraph_traces_the_custom_op(packed):
    """The compiled graph runs the custom op, eager calls an autograd.Function over the same
    launches: both give the same bits. (A statistic comes out as the op returns it: a sum of it
    taken inside the graph is inductor's reduction, whose order differs from torch.sum's.)
    Packed, max_seqlen is given (reading it from cu_seqlens would be a host sync, a graph break)."""
    q, r, k, v, do = make_inputs(1, 40, 2, 1, 64, torch.bfloat16, 10.0, DEVICE, 0)
    packing = {}
    if packed:
        packing = {"cu_seqlens": torch.tensor([0, 1, 23, 40], dtype=torch.int32, device=DEVICE), "max_seqlen": 22}

    def layer(q, r, k, v):
        o, stats = parallax_attention(q, r, k, v, window=24, return_stats=True, backend="triton", **packing)
        return o * 2.0, stats.c_sq

    # aot_eager traces forward and backward through the op's fake implementations without
    # needing a C++ compiler on the CPU; the GPU check script runs inductor.
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager" if DEVICE == "cpu" else "inductor")
    assert_compiled_matches_eager(compiled, layer, (q, r, k, v), do)


@pytest.mark.gpu
@requires_hopper
def test_torch_compile_fullgraph_with_auto_backend():
    """backend='auto' asks the cached capability query inside the compiled region: Dynamo
    must trace it without a graph break, take the kernel, and give eager's output and
    gradients."""
    from parallax_probe.kernels import resolve_backend

    class Attention(torch.nn.Module):
        def forward(self, q, r, k, v):
            o, stats = parallax_attention(q, r, k, v, return_stats=True, backend="auto")
            return o, stats.c_sq

    q, r, k, v, do = make_inputs(2, 300, 4, 2, 128, torch.bfloat16, 10.0, DEVICE, 0)
    assert resolve_backend(q, "auto") == "triton"
    module = Attention()
    assert_compiled_matches_eager(torch.compile(module, fullgraph=True), module, (q, r, k, v), do)
