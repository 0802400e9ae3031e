"""The Qwen3-style Parallax model: shapes for every preset, and softmax as the W_R = 0 limit."""

from __future__ import annotations

import pytest
import torch

from parallax_probe.config import PRESETS, resolve_model_config
from parallax_probe.model import ParallaxLM, build_model


@pytest.mark.parametrize("preset", ["qwen3-0.6b", "qwen3-1.7b"])
def test_large_presets_build_on_meta_with_published_shapes(preset):
    with torch.device("meta"):
        model = build_model(preset)
        logits = model(torch.zeros(2, 16, dtype=torch.long))
    config = model.config
    assert (config.n_layers, config.head_dim, config.n_heads, config.n_kv_heads) == (28, 128, 16, 8)
    assert (config.d_model, config.mlp_hidden) == {"qwen3-0.6b": (1024, 3072), "qwen3-1.7b": (2048, 6144)}[preset]
    assert config.rope_theta == 1e6 and config.tie_embeddings
    assert model.lm_head.weight is model.embed_tokens.weight
    assert logits.shape == (2, 16, config.vocab_size)
    attn = model.layers[0].self_attn
    assert attn.r_proj.weight.shape == (16 * 128, config.d_model)
    assert attn.k_proj.weight.shape == (8 * 128, config.d_model)


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("attention", ["parallax", "softmax"])
def test_small_presets_run_forward_and_backward(preset, attention):
    overrides = {"vocab_size": 97, "n_layers": 2} if preset == "small" else {"vocab_size": 97}
    model = build_model(preset, attention=attention, **overrides)
    x = torch.randint(0, 97, (2, 13))
    logits = model(x)
    assert logits.shape == (2, 13, 97)
    logits.float().square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert hasattr(model.layers[0].self_attn, "r_proj") == (attention == "parallax")


def test_small_preset_has_tens_of_millions_of_parameters():
    with torch.device("meta"):
        model = build_model("small")
    assert 10e6 < sum(p.numel() for p in model.parameters()) < 100e6


def test_zero_wr_gives_the_logits_of_the_softmax_model_with_shared_weights():
    torch.manual_seed(0)
    parallax = build_model("tiny", vocab_size=50, wr_init="zero", n_layers=3)
    softmax = build_model("tiny", vocab_size=50, attention="softmax", n_layers=3)
    shared = {k: v for k, v in parallax.state_dict().items() if ".r_proj." not in k and ".r_norm." not in k}
    softmax.load_state_dict(shared, strict=True)
    x = torch.randint(0, 50, (3, 41))
    torch.testing.assert_close(parallax(x), softmax(x), rtol=1e-5, atol=1e-5)


def test_normal_wr_changes_the_logits():
    torch.manual_seed(0)
    parallax = build_model("tiny", vocab_size=50)
    softmax = build_model("tiny", vocab_size=50, attention="softmax")
    softmax.load_state_dict({k: v for k, v in parallax.state_dict().items() if ".r_" not in k})
    x = torch.randint(0, 50, (2, 30))
    assert not torch.allclose(parallax(x), softmax(x), atol=1e-3)


def test_sequences_longer_than_the_rope_table_still_run():
    model = build_model("tiny", vocab_size=11, max_seq_len=16)
    assert model(torch.randint(0, 11, (1, 40))).shape == (1, 40, 11)


def test_windowed_model_ignores_tokens_outside_the_window():
    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=20, n_layers=1, window=4)
    x = torch.randint(0, 20, (1, 12))
    y = x.clone()
    y[0, :8] = (y[0, :8] + 1) % 20  # one layer of window 4: position 11 sees 8..11 only
    torch.testing.assert_close(model(x)[0, 11], model(y)[0, 11])


@pytest.mark.parametrize(
    "overrides, message",
    [({"n_heads": 3}, "multiple of n_kv_heads"), ({"head_dim": 15}, "even"), ({"attention": "linear"}, "parallax"),
     ({"wr_init": "ones"}, "wr_init"), ({"not_a_field": 1}, "unknown ModelConfig field")],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model("tiny", **overrides)


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_model_config("huge")
    assert set(PRESETS) == {"tiny", "small", "qwen3-0.6b", "qwen3-1.7b"}
    assert isinstance(build_model(PRESETS["tiny"]), ParallaxLM)


@pytest.mark.parametrize("input_dtype, weight_dtype", [
    (torch.bfloat16, torch.float32),  # a projection's output under bf16 autocast
    (torch.bfloat16, torch.bfloat16),  # a model cast to bf16
    (torch.float32, torch.float32),
])
def test_rms_norm_takes_the_fused_kernel_in_the_promoted_dtype(input_dtype, weight_dtype):
    """Mixed dtypes made nn.RMSNorm fall back (with a warning) from PyTorch's fused kernel to
    elementwise ops; the model's norm computes in the promoted dtype instead, with the result
    those ops gave."""
    import warnings

    from parallax_probe.model import RMSNorm

    norm = RMSNorm(64, eps=1e-6).to(weight_dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 64).to(input_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = norm(x)
    dtype = torch.promote_types(input_dtype, weight_dtype)
    assert got.dtype == dtype
    x64 = x.double()
    expected = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=tolerance)
