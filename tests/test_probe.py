"""The probe records what docs/definitions.md section 2 defines, from our model and from an fla-layout module."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
from probe_expectations import CapturedCalls, assert_recorded, float64_rows, head_stats
from triton_device import DEVICE

from parallax_probe import Probe, build_model, open_run
from parallax_probe.hooks import AttentionCall, Layout, NoParallaxModulesError, Op
from parallax_probe.kernels import parallax_attention
from parallax_probe.model import apply_rope
from parallax_probe.store.probe_schema import HEAD_MEAN_STATS, head_means


def capture_qrkv(model):
    """Record each layer's q, r, k, v as the attention sees them, with hooks of the test's own."""
    captured, handles = {}, []
    for index, block in enumerate(model.layers):
        attn = block.self_attn

        def grab(name, index=index):
            def hook(module, args, out):
                captured.setdefault(index, {})[name] = out.detach()
            return hook

        for name in ("q_norm", "r_norm", "k_norm", "v_proj"):
            handles.append(getattr(attn, name).register_forward_hook(grab(name)))
    return captured, handles


def test_recorded_statistics_match_a_float64_recomputation(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=30, n_layers=3)
    x = torch.randint(0, 30, (3, 37))
    captured, handles = capture_qrkv(model)
    with Probe(model, tmp_path / "run", every=1, spectra_every=1) as probe:
        with probe.step(0):
            model(x)
    for h in handles:
        h.remove()
    run = open_run(tmp_path / "run")
    assert {n for n in run.names() if n.startswith("attn/layer_")} == {f"attn/layer_{n}" for n in HEAD_MEAN_STATS}
    cos, sin = model.rope_cos[:37], model.rope_sin[:37]
    for layer in range(3):
        c = captured[layer]
        q, r, k = (apply_rope(c[n], cos, sin) for n in ("q_norm", "r_norm", "k_norm"))
        v = c["v_proj"].view(3, 37, 2, 16)
        expected = head_stats(float64_rows(q, r, k, v))
        for name, want in expected.items():
            got = run[f"attn/{name}"][0, layer]
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5, err_msg=f"layer {layer} {name}")
            if name in HEAD_MEAN_STATS:  # its per-layer companion: the mean over heads
                np.testing.assert_allclose(run[f"attn/layer_{name}"][0, layer], want.mean(), rtol=2e-4, err_msg=f"layer_{name}")
        assert (run["attn/nonfinite"][0, layer] == 0).all()
        assert run["attn/sum_c_sq"].dtype == np.float64 and run["attn/tokens"].dtype == np.int64
        np.testing.assert_allclose(
            run["attn/probe_gain_norm"][0, layer], model.layers[layer].self_attn.r_norm.weight.norm().item(), rtol=1e-6
        )


def test_layer_head_means_leave_out_nan_heads():
    row = {name: np.array([[1.0, 2.0, np.nan], [np.nan, np.nan, np.nan], [4.0, 4.0, 7.0]], np.float32) for name in HEAD_MEAN_STATS}
    means = head_means(row)
    assert set(means) == {f"layer_{name}" for name in HEAD_MEAN_STATS}
    np.testing.assert_array_equal(means["layer_cor_p90"], np.array([1.5, np.nan, 5.0], np.float32))


def test_the_probe_reads_the_triton_kernels_statistics_as_it_reads_the_references(tmp_path):
    """Through the model and the hooks: the statistics the Triton kernel returns from its
    epilogue (strided rows, interpreted on a CPU) are recorded as the reference's are, up to
    the bf16 inputs' rounding."""
    device = DEVICE
    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=30, n_layers=2, head_dim=64).to(device, torch.bfloat16)
    x = torch.randint(0, 30, (2, 37), device=device)
    runs = {}
    for backend in ("triton", "reference"):
        for block in model.layers:
            block.self_attn.backend = backend
        with torch.no_grad(), Probe(model, tmp_path / backend, every=1, spectra_every=100) as probe:
            with probe.step(0):
                model(x)
        runs[backend] = open_run(tmp_path / backend)
    for name in ("cor_mean", "cor_p50", "cor_p90", "cor_max", "sum_osm_sq", "sum_c_sq", "sum_osm_c", "probe_norm_mean"):
        got, want = runs["triton"][f"attn/{name}"], runs["reference"][f"attn/{name}"]
        assert got.shape == want.shape == (1, 2, 4), name
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * np.abs(want).max(), err_msg=name)
    assert (runs["triton"]["attn/tokens"] == 2 * 37).all()


def test_layers_stack_alike_from_the_kernels_strided_rows_and_from_contiguous_rows():
    """The Triton kernel hands out each layer's rows as strided views of one [B, HQ, T, 4]
    buffer; stacking them must give what contiguous (B, T, HQ) rows give."""
    from parallax_probe.hooks.statistics import stack_layers
    from parallax_probe.kernels import AttentionStats

    L, B, HQ, T = 3, 2, 4, 5
    buffers = [torch.randn(B, HQ, T, 4) for _ in range(L)]
    strided = [AttentionStats(*b.permute(3, 0, 2, 1).unbind(0)) for b in buffers]
    contiguous = [AttentionStats(*(x.contiguous() for x in rows)) for rows in strided]
    got, want = stack_layers(strided), stack_layers(contiguous)
    for name, g, w in zip(AttentionStats._fields, got, want):
        assert g.shape == (L, B * T, HQ), name
        assert torch.equal(g, w), name
    # row n = (b, t) of layer l, head h is buffer l's [b, h, t, field]
    assert got.c_sq[2, 1 * T + 3, 1] == buffers[2][1, 1, 3, 1]


def test_wr_statistics_match_numpy_svd(tmp_path):
    torch.manual_seed(1)
    model = build_model("tiny", vocab_size=30, n_layers=2)
    with torch.no_grad():  # a spread-out spectrum, so the ranks are not trivially full
        model.layers[1].self_attn.r_proj.weight.mul_(torch.logspace(0, -3, 64)[:, None])
    with Probe(model, tmp_path / "run", every=1, spectra_every=1) as probe:
        with probe.step(0):
            model(torch.randint(0, 30, (1, 8)))
    run = open_run(tmp_path / "run")
    for layer in range(2):
        w = model.layers[layer].self_attn.r_proj.weight.detach().double().numpy()  # (H*D, C)
        s = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(run["wr/singular_values"][0, layer], s, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(run["wr/stable_rank"][0, layer], (s**2).sum() / s[0] ** 2, rtol=1e-4)
        p = s / s.sum()
        np.testing.assert_allclose(run["wr/effective_rank"][0, layer], np.exp(-(p * np.log(p)).sum()), rtol=1e-4)
        for head in range(4):
            s_head = np.linalg.svd(w[head * 16 : (head + 1) * 16], compute_uv=False)
            np.testing.assert_allclose(run["wr/head_singular_values"][0, layer, head], s_head, rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(run["wr/head_stable_rank"][0, layer, head], (s_head**2).sum() / s_head[0] ** 2, rtol=1e-4)
            w_k = model.layers[layer].self_attn.k_proj.weight.detach().double().numpy()[(head // 2) * 16 : (head // 2 + 1) * 16]
            s_circuit = np.linalg.svd(w[head * 16 : (head + 1) * 16].T @ w_k, compute_uv=False)[:16]
            np.testing.assert_allclose(run["wrk/singular_values"][0, layer, head], s_circuit, rtol=1e-4, atol=1e-9)


def test_zero_wr_gives_zero_cor_and_zero_probe_norm(tmp_path):
    model = build_model("tiny", vocab_size=30, wr_init="zero")
    with Probe(model, tmp_path / "run", every=1, spectra_every=1) as probe:
        with probe.step(0):
            model(torch.randint(0, 30, (2, 16)))
    run = open_run(tmp_path / "run")
    assert (run["attn/cor_mean"] == 0).all() and (run["attn/cor_max"] == 0).all()
    assert (run["attn/probe_norm_max"] == 0).all() and (run["attn/sum_c_sq"] == 0).all()
    assert (run["wr/stable_rank"] == 0).all()


def test_only_logging_steps_are_recorded_and_hooks_detach_on_close(tmp_path):
    model = build_model("tiny", vocab_size=30)
    x = torch.randint(0, 30, (1, 9))
    probe = Probe(model, tmp_path / "run", every=3, spectra_every=4)
    for step in range(10):
        with probe.step(step):
            model(x)
        probe.log_scalars(step, loss=float(step) / 10)
    probe.close()
    run = open_run(tmp_path / "run")
    assert run["step"].tolist() == [0, 3, 6, 9]
    assert run["wr/step"].tolist() == [0, 4, 8]
    np.testing.assert_allclose(run["scalars/loss"], np.arange(10) / 10)
    assert run.status == "closed"
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert not any(getattr(m, "wanted", False) for m in model.modules())


def test_rows_reach_readers_after_flush_and_within_the_commit_interval(tmp_path):
    from parallax_probe.store.sink import COMMIT_INTERVAL_S

    model = build_model("tiny", vocab_size=30, n_layers=2)
    x = torch.randint(0, 30, (1, 9))
    with Probe(model, tmp_path / "run", every=1, spectra_every=100) as probe:
        for step in range(12):  # rows arrive faster than the commit interval: committed in batches
            with probe.step(step):
                model(x)
        probe.flush()
        assert open_run(tmp_path / "run")["step"].tolist() == list(range(12))
        with probe.step(12):
            model(x)
        # No flush, nothing else logged: the writer commits the waiting row once the interval ends.
        deadline = time.monotonic() + COMMIT_INTERVAL_S + 10
        while open_run(tmp_path / "run").last_step != 12:
            assert time.monotonic() < deadline, "a row logged last was never committed"
            time.sleep(0.05)
        assert open_run(tmp_path / "run").status == "live"


class OwnLayoutParallax(nn.Module):
    """A layer of someone else's design: its own names, no RoPE, our public function as its op."""

    def __init__(self, hidden_size=32, heads=4, kv_heads=2):
        super().__init__()
        self.heads, self.kv_heads, self.dim = heads, kv_heads, hidden_size // heads
        self.wq, self.wr = nn.Linear(hidden_size, hidden_size, bias=False), nn.Linear(hidden_size, hidden_size, bias=False)
        self.wk = nn.Linear(hidden_size, kv_heads * self.dim, bias=False)
        self.wv = nn.Linear(hidden_size, kv_heads * self.dim, bias=False)
        self.wo = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q, r = self.wq(x).view(B, T, self.heads, self.dim), self.wr(x).view(B, T, self.heads, self.dim)
        k, v = self.wk(x).view(B, T, self.kv_heads, self.dim), self.wv(x).view(B, T, self.kv_heads, self.dim)
        return self.wo(parallax_attention(q, r, k, v, window=6).flatten(2))


class TwoLayerForeignModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(OwnLayoutParallax() for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


def own_layout():
    """The few lines a user writes for a layout the probe does not know (docs/adapters.md)."""
    return Layout(
        name="own",
        is_layer=lambda module: isinstance(module, OwnLayoutParallax),
        ops=[Op(namespace=sys.modules[__name__], attribute="parallax_attention",
                read=lambda q, r, k, v, window=None, **_: AttentionCall(q, r, k, v, window=window))],
        heads=lambda module: (module.heads, module.kv_heads, module.dim),
        w_r="wr.weight", w_k="wk.weight", r_gain=None,
    )


def test_a_user_layout_reads_its_own_op_exactly(tmp_path):
    torch.manual_seed(2)
    model = TwoLayerForeignModel()
    x = torch.randn(2, 21, 32)
    with Probe(model, tmp_path / "run", every=1, spectra_every=1, layouts=[own_layout()]) as probe:
        assert [s.layout.name for s in probe.sites] == ["own", "own"]
        captured = CapturedCalls(sys.modules[__name__], ["parallax_attention"])
        try:
            with probe.step(0):
                model(x)
        finally:
            captured.restore()
    run = open_run(tmp_path / "run")
    assert run.meta["layers"] == 2 and run.meta["heads"] == 4
    for layer, (_, args, kwargs) in enumerate(captured.calls):
        assert kwargs == {"window": 6}
        assert_recorded(run, 0, layer, head_stats(float64_rows(*args, window=6)), rtol=2e-4)


def test_an_unknown_layout_is_refused_not_guessed(tmp_path):
    with pytest.raises(NoParallaxModulesError, match=r"blocks\.0 .*OwnLayoutParallax.*docs/adapters\.md"):
        Probe(TwoLayerForeignModel(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_model_without_parallax_modules_gets_an_error_listing_what_was_searched(tmp_path):
    with pytest.raises(NoParallaxModulesError, match="r_proj"):
        Probe(build_model("tiny", vocab_size=30, attention="softmax"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_selector_picks_named_modules_only(tmp_path):
    model = build_model("tiny", vocab_size=30, n_layers=3)
    with Probe(model, tmp_path / "run", selector=["layers.1.self_attn"], every=1) as probe:
        assert [s.name for s in probe.sites] == ["layers.1.self_attn"]
        with probe.step(0):
            model(torch.randint(0, 30, (1, 5)))
    assert open_run(tmp_path / "run")["attn/cor_mean"].shape == (1, 1, 4)


def test_non_finite_activations_are_stored_as_nan_and_counted(tmp_path):
    model = build_model("tiny", vocab_size=30)
    with torch.no_grad():
        model.layers[0].self_attn.v_proj.weight[0, 0] = float("nan")
    with Probe(model, tmp_path / "run", every=1) as probe:
        with probe.step(0):
            model(torch.randint(0, 30, (2, 6)))
    run = open_run(tmp_path / "run")
    assert (run["attn/nonfinite"][0, 0] > 0).any()
    assert np.isnan(run["attn/cor_mean"][0, 0]).any()


def test_a_probe_refuses_an_existing_run_unless_told_to_resume_or_overwrite(tmp_path):
    model = build_model("tiny", vocab_size=30)
    x = torch.randint(0, 30, (1, 5))
    with Probe(model, tmp_path / "run", every=1) as probe:
        with probe.step(0):
            model(x)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(FileExistsError):
        Probe(model, tmp_path / "run", every=1)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    with Probe(model, tmp_path / "run", every=1, mode="resume", start_step=1) as probe:
        with probe.step(1):
            model(x)
    assert open_run(tmp_path / "run")["step"].tolist() == [0, 1]



def test_the_probe_writes_through_a_sink_it_is_given(tmp_path):
    """Probe(model, RunSink(...)) writes what Probe(model, folder) writes; the writer's options
    belong to the sink, so giving them to the probe as well is refused."""
    from parallax_probe.store import RunSink

    model = build_model("tiny", vocab_size=30)
    x = torch.randint(0, 30, (1, 5))
    with Probe(model, tmp_path / "run", every=1) as probe:
        with probe.step(0):
            model(x)
    with pytest.raises(ValueError, match="belong to the sink"):
        Probe(model, RunSink(tmp_path / "run", mode="resume", start_step=1), every=1, mode="resume")
    sink = RunSink(tmp_path / "run", mode="resume", start_step=1, fsync_every_s=None)
    with Probe(model, sink, every=1) as probe:
        with probe.step(1):
            model(x)
        probe.log_scalars(1, loss=torch.tensor(2.5))
    run = open_run(tmp_path / "run")
    assert run["step"].tolist() == [0, 1]
    assert run["scalars/loss"].tolist() == [2.5]

def test_a_compiled_model_records_what_the_eager_model_records(tmp_path):
    """The hooks trace under torch.compile: no graph break, one graph for logging steps and one
    for the others (the stats flag is the only difference), and the same numbers as eager."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=30, n_layers=2)
    x = torch.randint(0, 30, (2, 17))
    with Probe(model, tmp_path / "eager", every=2, spectra_every=100) as probe:
        for step in range(6):
            with probe.step(step):
                model(x)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager")  # Dynamo's tracing without Inductor's C++ build
    with Probe(model, tmp_path / "compiled", every=2, spectra_every=100) as probe:
        for step in range(6):
            with probe.step(step):
                compiled(x)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 2
    eager, traced = open_run(tmp_path / "eager"), open_run(tmp_path / "compiled")
    assert traced["step"].tolist() == eager["step"].tolist() == [0, 2, 4]
    for name in ("attn/cor_mean", "attn/cor_p90", "attn/sum_c_sq", "attn/probe_norm_max", "attn/layer_cor_mean"):
        np.testing.assert_allclose(traced[name], eager[name], rtol=1e-6, err_msg=name)


def test_an_error_in_the_forward_passes_through_and_records_nothing(tmp_path):
    model = build_model("tiny", vocab_size=30)
    with Probe(model, tmp_path / "run", every=1, spectra_every=100) as probe:
        with pytest.raises(IndexError):
            with probe.step(0):
                model(torch.tensor([[31]]))  # a token outside the vocabulary
        with probe.step(1):
            model(torch.randint(0, 30, (1, 5)))
    assert open_run(tmp_path / "run")["step"].tolist() == [1]
