"""The probe on fla's real ParallaxForCausalLM: statistics of exactly what fla's layer hands its op.

The model is the installed flash-linear-attention package's, with only its Triton-only
pieces swapped for fla's own references (tests/fla_on_cpu.py). The test captures the q, r,
k, v, window and sequence boundaries each layer passes to its attention op and computes the
statistics of docs/definitions.md section 2 from them in float64; the probe's recorded
numbers must equal them to float32 rounding, whatever the layer does first (qk_norm, RoPE on q, k and r, GQA, unpadding
of an attention_mask, packed documents, the decode path of a cache).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("fla", reason="flash-linear-attention is a test dependency (pip install parallax-probe[fla])")

from fla_on_cpu import fla_kernels_on_cpu, tiny_fla_model
from probe_expectations import CapturedCalls, assert_recorded, float64_rows, head_stats

from parallax_probe import Probe, open_run
from parallax_probe.kernels import AttentionStats, parallax_attention_reference

VOCAB = 50
FLA_OPS = ("parallel_parallax", "parallax_decode", "parallax_decode_one_step")


def float64_rows_of_parallel_call(args, kwargs) -> AttentionStats:
    """Rows of `parallel_parallax(q, r, k, v, window_size=, cu_seqlens=)`."""
    return float64_rows(*args[:4], window=kwargs.get("window_size"), cu_seqlens=kwargs.get("cu_seqlens"))


def float64_rows_of_decode_call(args, kwargs, real_queries) -> AttentionStats:
    """Rows of a decode call: Tq queries at the end of each row's cache, keys from cache_start, real queries only."""
    q, r, k, v = (t.double() for t in args[:4])
    Tq, Tk = q.shape[1], k.shape[1]
    starts = kwargs.get("cache_start")
    starts = [0] * q.shape[0] if starts is None else starts.tolist()
    rows = []
    for b, start in enumerate(starts):
        keys = Tk - start
        for i in range(Tq):
            position = Tk - Tq + i  # the query's position in the cache
            if position < start or not real_queries[b, i]:
                continue
            lo = start if kwargs.get("window_size") is None else max(start, position - kwargs["window_size"] + 1)
            _, stats = parallax_attention_reference(
                q[b : b + 1, i : i + 1], r[b : b + 1, i : i + 1], k[b : b + 1, lo : position + 1], v[b : b + 1, lo : position + 1],
                scale=1 / math.sqrt(q.shape[-1]), window=None, return_stats=True,
            )
            rows.append(stats)
        assert keys >= 1
    return AttentionStats(*(torch.cat(parts, dim=1) for parts in zip(*rows)))


def probe_one_forward(tmp_path, model, forward):
    """One logging step of `forward()` under the probe; the op calls the layers made, and the run."""
    import fla.layers.parallax as fla_layer

    with fla_kernels_on_cpu(), Probe(model, tmp_path / "run", every=1, spectra_every=1) as probe:
        captured = CapturedCalls(fla_layer, FLA_OPS)
        try:
            with probe.step(0):
                forward()
        finally:
            captured.restore()
    return captured.calls, open_run(tmp_path / "run")


CASES = [
    pytest.param(dict(qk_norm=True), id="qk_norm-MHA"),
    pytest.param(dict(qk_norm=False, num_kv_heads=2), id="no_norm-GQA"),
    pytest.param(dict(qk_norm=True, num_kv_heads=2, window_size=5), id="qk_norm-GQA-window5"),
]


@pytest.mark.parametrize("config", CASES)
def test_statistics_equal_float64_of_what_fla_passes_its_kernel(tmp_path, config):
    model = tiny_fla_model(**config, layers=3, seed=1)
    x = torch.randint(0, VOCAB, (2, 19), generator=torch.Generator().manual_seed(2))
    calls, run = probe_one_forward(tmp_path, model, lambda: model(x, use_cache=False))
    assert [name for name, _, _ in calls] == ["parallel_parallax"] * 3
    assert run.meta["layer_layouts"] == ["fla"] * 3 and run.meta["heads"] == 4
    for layer, (_, args, kwargs) in enumerate(calls):
        assert kwargs.get("window_size") == config.get("window_size")
        assert_recorded(run, 0, layer, head_stats(float64_rows_of_parallel_call(args, kwargs)))


def test_rope_on_r_is_in_the_recorded_numbers(tmp_path):
    """fla rotates r with q's angles; statistics of an unrotated r (the old re-derivation) differ."""
    model = tiny_fla_model(qk_norm=True, layers=1, seed=3)
    x = torch.randint(0, VOCAB, (1, 23), generator=torch.Generator().manual_seed(4))
    calls, run = probe_one_forward(tmp_path, model, lambda: model(x, use_cache=False))
    _, args, kwargs = calls[0]
    attn = model.model.layers[0].attn
    with torch.no_grad():
        hidden = model.model.layers[0].attn_norm(model.model.embeddings(x))
        r_unrotated = attn.r_norm(attn.r_proj(hidden).unflatten(-1, (4, 16)))
    wrong = head_stats(float64_rows_of_parallel_call((args[0], r_unrotated, *args[2:4]), kwargs))
    right = head_stats(float64_rows_of_parallel_call(args, kwargs))
    np.testing.assert_allclose(run["attn/cor_mean"][0, 0], right["cor_mean"], rtol=2e-5)
    assert np.abs(run["attn/cor_mean"][0, 0] - wrong["cor_mean"]).max() > 1e-3


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_is_never_counted(tmp_path, side):
    model = tiny_fla_model(qk_norm=True, num_kv_heads=2, layers=2, seed=5)
    x = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(6))
    mask = torch.ones(3, 17, dtype=torch.long)
    pads = {0: 4, 2: 9}  # row 1 has no padding
    for row, n in pads.items():
        if side == "left":
            mask[row, :n] = 0
        else:
            mask[row, -n:] = 0
    calls, run = probe_one_forward(tmp_path, model, lambda: model(x, attention_mask=mask, use_cache=False))
    real = int(mask.sum())
    for layer, (_, args, kwargs) in enumerate(calls):
        assert kwargs["cu_seqlens"].tolist() == [0, 13, 30, 38]  # fla unpadded the batch into packed sequences
        expected = head_stats(float64_rows_of_parallel_call(args, kwargs))
        assert (expected["tokens"] == real).all()
        assert_recorded(run, 0, layer, expected)


def test_packed_documents_never_mix(tmp_path):
    """cu_seqlens given to the model: each document's statistics are its own."""
    model = tiny_fla_model(qk_norm=False, layers=2, seed=7)
    x = torch.randint(0, VOCAB, (1, 30), generator=torch.Generator().manual_seed(8))
    cu_seqlens = torch.tensor([0, 1, 12, 30], dtype=torch.int32)
    calls, run = probe_one_forward(tmp_path, model, lambda: model(x, cu_seqlens=cu_seqlens, use_cache=False))
    for layer, (_, args, kwargs) in enumerate(calls):
        assert kwargs["cu_seqlens"].tolist() == [0, 1, 12, 30]
        assert_recorded(run, 0, layer, head_stats(float64_rows_of_parallel_call(args, kwargs)))
    # the same documents concatenated without boundaries give other numbers
    mixed = head_stats(float64_rows_of_parallel_call(calls[1][1], {}))
    assert np.abs(run["attn/cor_mean"][0, 1] - mixed["cor_mean"]).max() > 1e-3


def test_the_cached_path_is_covered_and_counts_real_queries_only(tmp_path):
    """eval with a cache sends prefill and decode steps through fla's decode kernels (left padding)."""
    model = tiny_fla_model(qk_norm=True, num_kv_heads=2, layers=2, seed=9)
    x = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(10))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :3] = 0
    import fla.layers.parallax as fla_layer

    with fla_kernels_on_cpu(), Probe(model, tmp_path / "run", every=1, spectra_every=100) as probe:
        captured = CapturedCalls(fla_layer, FLA_OPS)
        try:
            with probe.step(0):  # the prefill, through parallax_decode
                out = model(x, attention_mask=mask, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            mask2 = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
            with probe.step(1):  # one decode step, through parallax_decode_one_step
                model(token, attention_mask=mask2, past_key_values=out.past_key_values, use_cache=True)
        finally:
            captured.restore()
    run = open_run(tmp_path / "run")
    names = [name for name, _, _ in captured.calls]
    assert names == ["parallax_decode"] * 2 + ["parallax_decode_one_step"] * 2
    for step, layer_mask in ((0, mask), (1, mask2)):
        for layer in range(2):
            _, args, kwargs = captured.calls[2 * step + layer]
            real_queries = layer_mask[:, -args[0].shape[1] :].bool()
            expected = head_stats(float64_rows_of_decode_call(args, kwargs, real_queries))
            assert (expected["tokens"] == (19 if step == 0 else 2)).all()
            assert_recorded(run, step, layer, expected)


def test_a_non_logging_step_runs_fla_untouched(tmp_path):
    model = tiny_fla_model(qk_norm=True, num_kv_heads=2, layers=2, seed=11)
    x = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(12))
    with fla_kernels_on_cpu():
        reference = model(x, use_cache=False).logits
        with Probe(model, tmp_path / "run", every=2, spectra_every=100) as probe:
            with probe.step(1):
                skipped = model(x, use_cache=False).logits
            with probe.step(2):
                logged = model(x, use_cache=False).logits
    assert torch.equal(skipped, reference)
    assert torch.equal(logged, reference)  # on a CPU a logging step runs fla's own op too (statistics beside it)
    import fla.layers.parallax as fla_layer

    assert fla_layer.parallel_parallax.__module__ != "parallax_probe.hooks.probe"  # wrappers removed on close


def test_spectra_read_fla_weights(tmp_path):
    model = tiny_fla_model(qk_norm=True, num_kv_heads=2, layers=2, seed=13)
    x = torch.randint(0, VOCAB, (1, 5))
    _, run = probe_one_forward(tmp_path, model, lambda: model(x, use_cache=False))
    for layer in range(2):
        attn = model.model.layers[layer].attn
        s = np.linalg.svd(attn.r_proj.weight.detach().double().numpy(), compute_uv=False)
        np.testing.assert_allclose(run["wr/singular_values"][0, layer], s, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(run["attn/probe_gain_norm"][0, layer], attn.r_norm.weight.norm().item(), rtol=1e-6)
