"""The reference Parallax attention against docs/definitions.md section 1, evaluated independently in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from parallax_probe.kernels import AttentionStats, parallax_attention
from parallax_probe.kernels.reference import parallax_attention_reference


def spec_parallax_float64(q, r, k, v, *, scale, window=None):
    """docs/definitions.md section 1 term by term, per query row, in float64: the uncentred formula
    c_i = tbar_i o_sm_i - sum_j p_ij s2_ij v_j (the reference evaluates the centred one)."""
    q, r, k, v = (t.double() for t in (q, r, k, v))
    B, T, HQ, D = q.shape
    group = HQ // k.shape[2]
    o = torch.empty_like(q)
    osm_sq, c_sq, osm_c = (torch.empty(B, T, HQ, dtype=torch.float64) for _ in range(3))
    for h in range(HQ):
        kh, vh = k[:, :, h // group], v[:, :, h // group]
        for i in range(T):
            lo = 0 if window is None else max(0, i - window + 1)
            keys, values = kh[:, lo : i + 1], vh[:, lo : i + 1]  # (B, n, D)
            s1 = torch.einsum("bd,bnd->bn", q[:, i, h], keys) * scale
            s2 = torch.einsum("bd,bnd->bn", r[:, i, h], keys)
            p = torch.softmax(s1, dim=-1)
            o_sm = torch.einsum("bn,bnd->bd", p, values)
            tbar = (p * s2).sum(-1, keepdim=True)
            c = tbar * o_sm - torch.einsum("bn,bnd->bd", p * s2, values)
            o[:, i, h] = o_sm + c
            osm_sq[:, i, h], c_sq[:, i, h], osm_c[:, i, h] = o_sm.square().sum(-1), c.square().sum(-1), (o_sm * c).sum(-1)
    return o, AttentionStats(osm_sq, c_sq, osm_c, r.square().sum(-1))


def random_inputs(B, T, HQ, HK, D, *, probe_norm, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, HQ, D, generator=g)
    r = torch.randn(B, T, HQ, D, generator=g)
    r = r / r.norm(dim=-1, keepdim=True) * probe_norm  # every row's ||r|| = probe_norm
    k = torch.randn(B, T, HK, D, generator=g)
    v = torch.randn(B, T, HK, D, generator=g)
    return tuple(t.to(dtype) for t in (q, r, k, v))


def relative_error(out, ref):
    """||out - ref|| / ||ref||; the absolute error where ref is exactly zero (c at T = 1)."""
    diff, size = (out.double() - ref.double()).norm(), ref.double().norm()
    return (diff / size).item() if size > 0 else diff.item()


SHAPES = [  # (B, T, HQ, HK, D): odd lengths, GQA, head dims 16..128
    pytest.param(1, 1, 1, 1, 16, id="B1-T1-H1-D16"),
    pytest.param(2, 7, 4, 2, 32, id="B2-T7-H4-HK2-D32"),
    pytest.param(1, 63, 2, 2, 64, id="B1-T63-H2-D64"),
    pytest.param(1, 111, 4, 1, 128, id="B1-T111-H4-HK1-D128"),
]


@pytest.mark.parametrize("B, T, HQ, HK, D", SHAPES)
@pytest.mark.parametrize("probe_norm", [0.5, 10.0, 30.0])
@pytest.mark.parametrize("window", [None, 5])
def test_output_and_stats_match_spec_in_float64(B, T, HQ, HK, D, probe_norm, window, seed):
    q, r, k, v = random_inputs(B, T, HQ, HK, D, probe_norm=probe_norm, seed=seed)
    scale = 1 / math.sqrt(D)
    ref_o, ref_stats = spec_parallax_float64(q, r, k, v, scale=scale, window=window)
    o, stats = parallax_attention(q, r, k, v, window=window, return_stats=True, backend="reference")
    assert o.dtype == torch.float32 and o.shape == q.shape
    assert torch.isfinite(o).all()
    assert relative_error(o, ref_o) < 1e-4
    for name, got, want in zip(AttentionStats._fields, stats, ref_stats):
        assert got.shape == (B, T, HQ), name
        assert relative_error(got, want) < 1e-4, name


def test_large_probe_norm_makes_the_correction_dominate(seed):
    q, r, k, v = random_inputs(2, 33, 2, 2, 32, probe_norm=20.0, seed=seed)
    _, stats = parallax_attention(q, r, k, v, return_stats=True)
    cor = (stats.c_sq / stats.osm_sq).sqrt()
    assert cor[:, 1:].median() > 1.0  # position 0 has one key: covariance 0, c = 0
    assert torch.allclose(stats.c_sq[:, 0], torch.zeros(()), atol=1e-10)


def test_zero_probe_is_exactly_softmax_attention(seed):
    q, r, k, v = random_inputs(2, 37, 4, 2, 32, probe_norm=1.0, seed=seed)
    o = parallax_attention(q, torch.zeros_like(r), k, v)
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True)
    torch.testing.assert_close(o, sdpa.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_window_keeps_exactly_W_keys(seed):
    q, r, k, v = random_inputs(1, 20, 1, 1, 16, probe_norm=3.0, seed=seed)
    o_full = parallax_attention(q, r, k, v, window=8)
    k2, v2 = k.clone(), v.clone()
    k2[:, :12], v2[:, :12] = torch.randn_like(k2[:, :12]), torch.randn_like(v2[:, :12])  # keys no query >= 19 sees
    o_changed = parallax_attention(q, r, k2, v2, window=8)
    torch.testing.assert_close(o_full[:, 19], o_changed[:, 19])  # row 19 sees keys 12..19
    assert not torch.allclose(o_full[:, 18], o_changed[:, 18])  # row 18 sees key 11


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_float32_and_return_input_dtype(dtype, seed):
    q, r, k, v = random_inputs(2, 29, 2, 1, 64, probe_norm=10.0, dtype=dtype, seed=seed)
    o = parallax_attention(q, r, k, v)
    assert o.dtype == dtype
    ref_o, _ = spec_parallax_float64(q, r, k, v, scale=1 / 8)
    assert relative_error(o, ref_o) < 1e-2


def test_operand_rounding_is_exact_in_the_compute_dtype_and_a_rounding_below_it(seed):
    """operand_dtype (the kernel tests' second yardstick) rounds P and dS: to float32 inside a
    float32 computation it changes no bit of o or a gradient; to bf16 it moves o, which
    stays within bf16's reach of the float64 definition."""

    def output_and_grads(inputs, operand_dtype):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        o = parallax_attention_reference(*leaves, scale=1 / 8, window=9, operand_dtype=operand_dtype)
        o.backward(torch.ones_like(o))
        return [o.detach()] + [t.grad for t in leaves]

    inputs = random_inputs(2, 29, 2, 1, 64, probe_norm=10.0, seed=seed)
    for plain, rounded in zip(output_and_grads(inputs, None), output_and_grads(inputs, torch.float32)):
        assert torch.equal(plain, rounded)
    low = [t.bfloat16() for t in inputs]
    o_plain, o_rounded = output_and_grads(low, None)[0], output_and_grads(low, torch.bfloat16)[0]
    assert not torch.equal(o_plain, o_rounded)
    assert relative_error(o_rounded, spec_parallax_float64(*low, scale=1 / 8, window=9)[0]) < 1e-2


def test_gradcheck_in_float64(seed):
    q, r, k, v = (t.double().requires_grad_() for t in random_inputs(1, 6, 2, 1, 4, probe_norm=2.0, seed=seed))
    assert torch.autograd.gradcheck(lambda *xs: parallax_attention(*xs, window=4), (q, r, k, v))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, r, k, v: (q[0], r, k, v), "4 dims"),
        (lambda q, r, k, v: (q, r[:, :, :1], k, v), "r must have q's shape"),
        (lambda q, r, k, v: (q, r, k, v[..., :8]), "v must have k's shape"),
        (lambda q, r, k, v: (q, r, k[:1, :, :, :8], v[:1, :, :, :8]), "agree on batch and head_dim"),
        (lambda q, r, k, v: (q, r, k[:, :5], v[:, :5]), "at least as many keys as queries"),
        (lambda q, r, k, v: (q[:, :, :3], r[:, :, :3], k, v), "multiple of key/value heads"),
        (lambda q, r, k, v: (q, r.double(), k, v), "share one dtype"),
        (lambda q, r, k, v: (q.long(), r.long(), k.long(), v.long()), "floating-point"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_shapes(change, message, seed):
    q, r, k, v = random_inputs(1, 9, 4, 2, 16, probe_norm=1.0, seed=seed)
    with pytest.raises(ValueError, match=message):
        parallax_attention(*change(q, r, k, v))


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"window": 3, "causal": False}, {"scale": -1.0}, {"backend": "cuda"}])
def test_bad_options_raise_value_errors(kwargs, seed):
    q, r, k, v = random_inputs(1, 9, 2, 2, 16, probe_norm=1.0, seed=seed)
    with pytest.raises(ValueError):
        parallax_attention(q, r, k, v, **kwargs)


PACKS = [  # sequence lengths packed into one row: length 1, odd lengths, one empty sequence
    pytest.param([1, 7, 12], id="lens-1-7-12"),
    pytest.param([5, 0, 9, 1], id="lens-5-0-9-1"),
    pytest.param([23], id="lens-23"),
]


@pytest.mark.parametrize("lengths", PACKS)
@pytest.mark.parametrize("window", [None, 4])
def test_packed_sequences_equal_each_sequence_alone(lengths, window):
    seed = 1000 + sum(lengths)
    q, r, k, v = random_inputs(1, sum(lengths), 4, 2, 16, probe_norm=5.0, seed=seed)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    o, stats = parallax_attention(q, r, k, v, window=window, cu_seqlens=cu_seqlens, return_stats=True)
    for a, b in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        if a == b:
            continue
        alone_o, alone_stats = spec_parallax_float64(q[:, a:b], r[:, a:b], k[:, a:b], v[:, a:b], scale=0.25, window=window)
        assert relative_error(o[:, a:b], alone_o) < 1e-5, (a, b)
        for name, got, want in zip(AttentionStats._fields, stats, alone_stats):
            assert relative_error(got[:, a:b], want) < 1e-5, (name, a, b)


def test_packed_sequences_do_not_see_each_other():
    q, r, k, v = random_inputs(1, 10, 2, 2, 8, probe_norm=3.0, seed=7)
    cu_seqlens = torch.tensor([0, 4, 10])
    o = parallax_attention(q, r, k, v, cu_seqlens=cu_seqlens)
    k2, v2 = k.clone(), v.clone()
    k2[:, :4], v2[:, :4] = -k2[:, :4], 2 * v2[:, :4]
    o2 = parallax_attention(q, r, k2, v2, cu_seqlens=cu_seqlens)
    assert torch.equal(o[:, 4:], o2[:, 4:])
    assert not torch.allclose(o[:, :4], o2[:, :4])


@pytest.mark.parametrize("window", [None, 3])
def test_queries_against_a_longer_cache_are_its_last_positions(window):
    """A decode step: Tq new queries over Tk cached keys equal the last Tq rows of the full pass."""
    q, r, k, v = random_inputs(2, 11, 4, 2, 16, probe_norm=4.0, seed=11)
    full_o, full_stats = parallax_attention(q, r, k, v, window=window, return_stats=True)
    for Tq in (1, 3):
        o, stats = parallax_attention(q[:, -Tq:], r[:, -Tq:], k, v, window=window, return_stats=True)
        torch.testing.assert_close(o, full_o[:, -Tq:], rtol=1e-5, atol=1e-6)
        for got, want in zip(stats, full_stats):
            torch.testing.assert_close(got, want[:, -Tq:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cu_seqlens": [0, 9]}, "1-D int32 or int64 tensor"),
        ({"cu_seqlens": torch.tensor([0.0, 9.0])}, "1-D int32 or int64 tensor"),
        ({"cu_seqlens": torch.tensor([0, 4, 8])}, "rise from 0 to the packed length 9"),
        ({"cu_seqlens": torch.tensor([0, 6, 4, 9])}, "without decreasing"),
        ({"cu_seqlens": torch.tensor([9])}, "at least 2 entries"),
        ({"cu_seqlens": torch.tensor([0, 9]), "max_seqlen": 0}, "max_seqlen must be a positive int"),
        ({"cu_seqlens": torch.tensor([0, 4, 9]), "max_seqlen": 4}, "shorter than the longest packed sequence"),
        ({"max_seqlen": 9}, "max_seqlen goes with cu_seqlens"),
    ],
)
def test_bad_packing_raises_value_errors(kwargs, message):
    q, r, k, v = random_inputs(1, 9, 2, 2, 16, probe_norm=1.0, seed=3)
    with pytest.raises(ValueError, match=message):
        parallax_attention(q, r, k, v, **kwargs)


def test_packing_needs_one_row():
    q, r, k, v = random_inputs(2, 9, 2, 2, 16, probe_norm=1.0, seed=4)
    with pytest.raises(ValueError, match="pack the sequences into one row"):
        parallax_attention(q, r, k, v, cu_seqlens=torch.tensor([0, 9]))
