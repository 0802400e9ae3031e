"""The probe on models calling the official parallax-kernel, and on the documented nanochat example.

The layers here call the installed `parallax` package's own functions (`parallax_func`,
`parallax_varlen_func`, `parallax_reference`); on a CPU the Triton autograd Functions behind
the first two are swapped for the package's `parallax_reference` (tests/official_on_cpu.py).
The statistics must equal float64 values computed from what each layer passed to the op.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

pytest.importorskip("parallax", reason="parallax-kernel is a test dependency (pip install parallax-probe[official])")

import parallax
from official_on_cpu import official_kernels_on_cpu
from parallax import parallax_func, parallax_varlen_func
from probe_expectations import CapturedCalls, assert_recorded, float64_rows, head_stats

from parallax_probe import Probe, open_run
from parallax_probe.hooks import NoParallaxModulesError
from parallax_probe.kernels import parallax_attention

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "nanochat_parallax.py"


def rope(x_BTHD: torch.Tensor) -> torch.Tensor:
    T, D = x_BTHD.shape[1], x_BTHD.shape[-1]
    angles = torch.outer(torch.arange(T, dtype=torch.float32), 1.0 / 10000 ** (torch.arange(0, D, 2) / D))[None, :, None]
    x1, x2 = x_BTHD.float().chunk(2, dim=-1)
    return torch.cat((x1 * angles.cos() - x2 * angles.sin(), x2 * angles.cos() + x1 * angles.sin()), dim=-1).type_as(x_BTHD)


class OfficialKernelAttention(nn.Module):
    """A layer built on parallax-kernel: projections, per-head norms on q, r, k, RoPE on all three."""

    def __init__(self, call: str, hidden=64, num_heads=4, num_kv_heads=2, window=-1):
        super().__init__()
        self.call, self.window = call, window
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, hidden // num_heads
        D = self.head_dim
        self.q_proj, self.r_proj = nn.Linear(hidden, num_heads * D, bias=False), nn.Linear(hidden, num_heads * D, bias=False)
        self.k_proj, self.v_proj = nn.Linear(hidden, num_kv_heads * D, bias=False), nn.Linear(hidden, num_kv_heads * D, bias=False)
        self.o_proj = nn.Linear(num_heads * D, hidden, bias=False)
        self.q_norm, self.r_norm, self.k_norm = (nn.RMSNorm(D) for _ in range(3))
        self.cu_seqlens = None

    def forward(self, x):
        B, T, _ = x.shape
        q = rope(self.q_norm(self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))))
        r = rope(self.r_norm(self.r_proj(x).unflatten(-1, (self.num_heads, self.head_dim))))
        k = rope(self.k_norm(self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))))
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        if self.call == "func":
            o = parallax_func(*(t.transpose(1, 2) for t in (q, r, k, v)), window_size_left=self.window).transpose(1, 2)
        elif self.call == "varlen":
            o = parallax_varlen_func(q, r, k, v, window_size_left=self.window, cu_seqlens=self.cu_seqlens)
        else:  # through the package attribute, as `import parallax` users write it
            o = parallax.parallax_reference(q, r, k, v, 1 / math.sqrt(self.head_dim), window_size_left=self.window).to(q.dtype)
        return self.o_proj(o.flatten(2))


class TinyModel(nn.Module):
    def __init__(self, call: str, layers=2, seed=0, **options):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(OfficialKernelAttention(call, **options) for _ in range(layers))
        with torch.no_grad():
            for layer in self.layers:
                layer.r_proj.weight.mul_(8.0)  # a probe large enough that the correction matters

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def probe_one_forward(tmp_path, model, x, name, **probe_options):
    """One logging step; the op calls the layers made (captured where the layers look the op up)."""
    namespace = parallax if name == "parallax_reference" else sys.modules[__name__]
    with official_kernels_on_cpu(), Probe(model, tmp_path / "run", every=1, spectra_every=1, **probe_options) as probe:
        captured = CapturedCalls(namespace, [name])
        try:
            with probe.step(0):
                out = model(x)
        finally:
            captured.restore()
    return captured.calls, open_run(tmp_path / "run"), out


@pytest.mark.parametrize("window", [-1, 5])
def test_parallax_func_calls_are_recorded_exactly(tmp_path, window):
    model = TinyModel("func", window=window, seed=1).to(torch.bfloat16)  # parallax_func takes bf16/fp16 only
    x = torch.randn(2, 21, 64, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    calls, run, _ = probe_one_forward(tmp_path, model, x, "parallax_func")
    assert run.meta["layer_layouts"] == ["parallax-kernel"] * 2
    assert len(calls) == 2
    for layer, (_, args, _kwargs) in enumerate(calls):
        q, r, k, v = (t.transpose(1, 2) for t in args[:4])  # the call's layout is [B, H, T, D]
        expected = head_stats(float64_rows(q, r, k, v, window=None if window < 0 else window))
        assert_recorded(run, 0, layer, expected)


def test_parallax_varlen_func_keeps_documents_apart(tmp_path):
    model = TinyModel("varlen", seed=3).to(torch.bfloat16)
    cu_seqlens = torch.tensor([0, 1, 9, 26], dtype=torch.int32)
    for layer in model.layers:
        layer.cu_seqlens = cu_seqlens
    x = torch.randn(1, 26, 64, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    calls, run, _ = probe_one_forward(tmp_path, model, x, "parallax_varlen_func")
    for layer, (_, args, kwargs) in enumerate(calls):
        expected = head_stats(float64_rows(*args[:4], cu_seqlens=kwargs["cu_seqlens"]))
        assert (expected["tokens"] == 26).all()
        assert_recorded(run, 0, layer, expected)


def test_parallax_reference_through_the_package_attribute(tmp_path):
    model = TinyModel("reference", window=4, seed=5)
    x = torch.randn(2, 15, 64, generator=torch.Generator().manual_seed(6))
    calls, run, out = probe_one_forward(tmp_path, model, x, "parallax_reference")
    for layer, (_, args, kwargs) in enumerate(calls):
        expected = head_stats(float64_rows(*args[:4], scale=args[4], window=kwargs["window_size_left"]))
        assert_recorded(run, 0, layer, expected)
    assert torch.equal(out, model(x))  # a logging step on a CPU runs the package's own function


@pytest.mark.parametrize("window", [1, 3, 8])
def test_both_official_functions_keep_W_keys_as_ours_does(window):
    """parallax_func's docstring says keys [i - W + 1, i]; parallax_reference's says "at most W + 1
    positions behind". Run both: each keeps W keys, the convention of our `window`."""
    g = torch.Generator().manual_seed(window)
    q, r, k, v = (torch.randn(1, 13, 2, 16, generator=g) for _ in range(4))
    ours = parallax_attention(q.double(), r.double(), k.double(), v.double(), window=window)
    reference = parallax.parallax_reference(q, r, k, v, 0.25, window_size_left=window)
    torch.testing.assert_close(reference.double(), ours, rtol=1e-4, atol=1e-5)
    with official_kernels_on_cpu():
        heads_first = [t.transpose(1, 2).to(torch.bfloat16) for t in (q, r, k, v)]
        func = parallax_func(*heads_first, qk_scale=0.25, window_size_left=window).transpose(1, 2)
    torch.testing.assert_close(func.double(), ours, rtol=3e-2, atol=3e-2)
    # W - 1 would differ
    if window > 1:
        assert (parallax.parallax_reference(q, r, k, v, 0.25, window_size_left=window - 1).double() - ours).abs().max() > 1e-3


def load_example():
    spec = importlib.util.spec_from_file_location("nanochat_parallax", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the probe finds a layer's op through its module's globals
    spec.loader.exec_module(module)
    return module


def test_the_documented_nanochat_example_is_recorded_exactly(tmp_path):
    example = load_example()
    torch.manual_seed(7)
    model = example.GPT(example.GPTConfig()).to(torch.bfloat16)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_r.weight.mul_(10.0)
    idx = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(8))
    with official_kernels_on_cpu(), Probe(model, tmp_path / "run", every=1, spectra_every=1, layouts=[example.NANOCHAT_LAYOUT]) as probe:
        captured = CapturedCalls(example, ["parallax_func"])
        try:
            with probe.step(0):
                model(idx)
        finally:
            captured.restore()
    run = open_run(tmp_path / "run")
    assert run.meta["layer_layouts"] == ["nanochat", "nanochat"]
    assert run.meta["layer_modules"] == ["transformer.h.0.attn", "transformer.h.1.attn"]
    for layer, (_, args, _) in enumerate(captured.calls):
        assert_recorded(run, 0, layer, head_stats(float64_rows(*(t.transpose(1, 2) for t in args[:4]))))
        w_r = model.transformer.h[layer].attn.c_r.weight.detach().double()
        s = torch.linalg.svdvals(w_r)
        torch.testing.assert_close(torch.from_numpy(run["wr/singular_values"][0, layer]).double(), s, rtol=1e-4, atol=1e-6)
    assert (torch.from_numpy(run["attn/probe_gain_norm"]).isnan()).all()  # no gain to report


def test_an_unknown_parallax_layout_is_named_and_nothing_is_written(tmp_path):
    example = load_example()
    model = example.GPT(example.GPTConfig())
    with pytest.raises(NoParallaxModulesError, match=r"transformer\.h\.0\.attn .*CausalSelfAttention.*docs/adapters\.md"):
        Probe(model, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_layer_that_skips_its_op_at_a_logging_step_is_an_error(tmp_path):
    model = TinyModel("reference", seed=9)
    model.layers[1].forward = lambda x: x  # a layer that returned without calling attention
    with official_kernels_on_cpu(), Probe(model, tmp_path / "run", every=1, spectra_every=100) as probe:
        with pytest.raises(RuntimeError, match=r"layers\.1.*docs/adapters\.md"):
            with probe.step(0):
                model(torch.randn(1, 5, 64))


@pytest.mark.parametrize("call", ["func", "varlen"])
def test_a_served_logging_step_returns_the_ops_layout_and_gradients(tmp_path, monkeypatch, call):
    """Where our kernel covers a call (a Hopper GPU), it serves the logging step in the op's own
    return layout, packed sequences included. The branch is forced here so that a CPU runs it,
    through the reference."""
    import parallax_probe.hooks.probe as probe_module

    monkeypatch.setattr(probe_module, "kernel_serves", lambda call: call.is_plain)
    model = TinyModel(call, window=6, seed=11).to(torch.bfloat16)
    x = torch.randn(2, 19, 64, generator=torch.Generator().manual_seed(12)).to(torch.bfloat16)
    if call == "varlen":  # three documents packed into one row
        x = x.reshape(1, 38, 64)
        for layer in model.layers:
            layer.cu_seqlens = torch.tensor([0, 5, 6, 38], dtype=torch.int32)
    name = {"func": "parallax_func", "varlen": "parallax_varlen_func"}[call]
    with official_kernels_on_cpu():
        expected = model(x)
        calls, run, served = probe_one_forward(tmp_path, model, x, name)
    assert served.shape == expected.shape and served.dtype == expected.dtype
    assert ((served.float() - expected.float()).norm() / expected.float().norm()).item() < 1e-2  # bf16 rounding of two paths
    for layer, (_, args, kwargs) in enumerate(calls):
        q, r, k, v = args[:4] if call == "varlen" else (t.transpose(1, 2) for t in args[:4])
        assert_recorded(run, 0, layer, head_stats(float64_rows(q, r, k, v, window=6, cu_seqlens=kwargs.get("cu_seqlens"))))
    grads = torch.autograd.grad(served.float().sum(), list(model.parameters()))  # the served output carries gradients
    assert all(torch.isfinite(g).all() for g in grads)
