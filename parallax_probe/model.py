"""A Qwen3-style decoder whose attention is Parallax (or plain softmax, the baseline).

Read top to bottom: RoPE, the attention block (where r = W_R x is made), the SwiGLU MLP,
the decoder block, the model, and `build_model`. Shapes use B (batch), T (time),
HQ/HK (query/key heads), D (head dim), C (d_model).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from parallax_probe.kernels import AttentionStats, allowed_keys_mask, parallax_attention

from .config import ModelConfig, resolve_model_config


def rope_angles(T: int, D: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, D/2) in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, device=device, dtype=torch.float32) / D))
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x_BTHD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., i], x[..., i + D/2]) as Qwen3 / Llama ('rotate_half') do."""
    x1, x2 = x_BTHD.float().chunk(2, dim=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.type_as(x_BTHD)


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm that computes in its output's dtype, the promotion of the input's and the
    weight's. Under bf16 autocast the per-head norms receive the projections' bf16 while their
    weights stay float32, and nn.RMSNorm then leaves PyTorch's fused kernel for a chain of
    elementwise ones (with a warning): the same float32 result, several launches each."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return super().forward(x)
        dtype = torch.promote_types(x.dtype, self.weight.dtype)
        return F.rms_norm(x.to(dtype), self.normalized_shape, self.weight.to(dtype), self.eps)


class AttentionStatsSite(nn.Module):
    """An identity hook point (TransformerLens style) that sees the attention's row statistics.

    The attention asks for statistics only while `wanted` is set (the probe sets it from a
    forward pre-hook at logging steps), and then passes them through this module so that
    forward hooks on it receive them. It holds no state beyond that flag.
    """

    def __init__(self) -> None:
        super().__init__()
        self.wanted = False

    def forward(self, stats: AttentionStats) -> AttentionStats:
        return stats


class ParallaxAttention(nn.Module):
    """Causal attention with the Parallax correction: o = o_sm - r^T Cov_p(k, v).

    The projection layout (q_proj, r_proj, k_proj, v_proj, o_proj, per-head q/r/k norms)
    matches fla's `fla.layers.Parallax`, so tools that find one find the other.
    """

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.window = config.window
        self.backend = config.attention_backend
        self.is_parallax = config.attention == "parallax"
        C, HQD, HKD = config.d_model, config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
        self.q_proj = nn.Linear(C, HQD, bias=False)
        if self.is_parallax:
            self.r_proj = nn.Linear(C, HQD, bias=False)
            self.r_norm = RMSNorm(config.head_dim, eps=config.rms_eps)
        self.k_proj = nn.Linear(C, HKD, bias=False)
        self.v_proj = nn.Linear(C, HKD, bias=False)
        self.o_proj = nn.Linear(HQD, C, bias=False)
        self.q_norm = RMSNorm(config.head_dim, eps=config.rms_eps)
        self.k_norm = RMSNorm(config.head_dim, eps=config.rms_eps)
        self.stats_site = AttentionStatsSite()

    def forward(self, x_BTC: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x_BTC.shape
        q = apply_rope(self.q_norm(self.q_proj(x_BTC).view(B, T, self.n_heads, self.head_dim)), cos, sin)
        k = apply_rope(self.k_norm(self.k_proj(x_BTC).view(B, T, self.n_kv_heads, self.head_dim)), cos, sin)
        v = self.v_proj(x_BTC).view(B, T, self.n_kv_heads, self.head_dim)
        # under autocast the norms may return float32 while v_proj returns bf16: one dtype for the kernel
        q, k = q.to(v.dtype), k.to(v.dtype)
        if self.is_parallax:
            # r is normalised like q and rotated with q's angles, so r.k compares like q.k
            r = apply_rope(self.r_norm(self.r_proj(x_BTC).view(B, T, self.n_heads, self.head_dim)), cos, sin).to(v.dtype)
            if self.stats_site.wanted:
                o, stats = parallax_attention(q, r, k, v, window=self.window, return_stats=True, backend=self.backend)
                self.stats_site(stats)
            else:
                o = parallax_attention(q, r, k, v, window=self.window, backend=self.backend)
        else:
            o = self._softmax_attention(q, k, v)
        return self.o_proj(o.reshape(B, T, self.n_heads * self.head_dim))

    def _softmax_attention(self, q, k, v) -> torch.Tensor:
        T = q.shape[1]
        q_, k_, v_ = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D) for SDPA
        gqa = self.n_heads != self.n_kv_heads
        if self.window is None:
            o = F.scaled_dot_product_attention(q_, k_, v_, is_causal=True, enable_gqa=gqa)
        else:
            allowed = allowed_keys_mask(T, causal=True, window=self.window, device=q.device)
            o = F.scaled_dot_product_attention(q_, k_, v_, attn_mask=allowed, enable_gqa=gqa)
        return o.transpose(1, 2)


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.d_model, bias=False)

    def forward(self, x_BTC: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x_BTC)) * self.up_proj(x_BTC))


class DecoderBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.d_model, eps=config.rms_eps)
        self.self_attn = ParallaxAttention(config, layer_index)
        self.post_attention_norm = RMSNorm(config.d_model, eps=config.rms_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x_BTC, cos, sin):
        x_BTC = x_BTC + self.self_attn(self.input_norm(x_BTC), cos, sin)
        return x_BTC + self.mlp(self.post_attention_norm(x_BTC))


class ParallaxLM(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab_size)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(DecoderBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, eps=config.rms_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_angles(config.max_seq_len, config.head_dim, config.rope_theta, device=None)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if name.endswith(("o_proj", "down_proj")) and isinstance(module, nn.Linear):
                # residual branches shrink with depth so the stream's variance stays O(1) (GPT-2)
                nn.init.normal_(module.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layers))
            if isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)
        if self.config.attention == "parallax" and self.config.wr_init == "zero":
            for block in self.layers:
                nn.init.zeros_(block.self_attn.r_proj.weight)

    def attention_modules(self) -> list[ParallaxAttention]:
        return [block.self_attn for block in self.layers]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        if T > self.rope_cos.shape[0]:
            cos, sin = rope_angles(T, self.config.head_dim, self.config.rope_theta, device=input_ids.device)
        else:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed_tokens(input_ids)  # (B, T, C)
        for block in self.layers:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)


def build_model(preset_or_config: str | ModelConfig, **overrides) -> ParallaxLM:
    """The public constructor: `build_model("tiny", vocab_size=32, attention="softmax")`."""
    return ParallaxLM(resolve_model_config(preset_or_config, **overrides))
