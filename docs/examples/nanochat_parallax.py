"""A nanochat-style GPT with Parallax attention, and the Layout that tells the probe how to read it.

nanochat names its projections `c_q`, `c_k`, `c_v`, `c_proj`; this model adds `c_r` for the
probe r = W_R x. It normalises q, k and r per head (no gain), rotates all three with RoPE
(r with q's angles), and calls the official kernel's `parallax_func` in the heads-first layout
[B, H, T, D], as nanochat calls scaled_dot_product_attention. The probe knows none of these
names by itself; `NANOCHAT_LAYOUT` below is all it needs:

    from parallax_probe import Probe
    probe = Probe(model, "runs/nanochat", every=50, layouts=[NANOCHAT_LAYOUT])

Tested in tests/test_probe_official.py (on a CPU, with the kernel's Triton Function swapped
for the package's own reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from parallax import parallax_func

from parallax_probe.hooks import Layout, official_kernel_ops


@dataclass
class GPTConfig:
    vocab_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int = 2
    n_embd: int = 64
    sequence_len: int = 256


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary_emb(x_BTHD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x_BTHD.chunk(2, dim=-1)
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_r = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, T, C = x.shape
        cos, sin = cos_sin
        q = apply_rotary_emb(norm(self.c_q(x).view(B, T, self.n_head, self.head_dim)), cos, sin)
        r = apply_rotary_emb(norm(self.c_r(x).view(B, T, self.n_head, self.head_dim)), cos, sin)
        k = apply_rotary_emb(norm(self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)), cos, sin)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        y = parallax_func(q.transpose(1, 2), r.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.mlp = MLP(config)

    def forward(self, x, cos_sin):
        x = x + self.attn(norm(x), cos_sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        head_dim = config.n_embd // config.n_head
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(config.sequence_len, dtype=torch.float32), inv_freq)[None, :, None, :]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        cos_sin = self.cos[:, :T].to(self.lm_head.weight.dtype), self.sin[:, :T].to(self.lm_head.weight.dtype)
        x = norm(self.transformer.wte(idx))
        for block in self.transformer.h:
            x = block(x, cos_sin)
        return self.lm_head(norm(x))


NANOCHAT_LAYOUT = Layout(
    name="nanochat",
    is_layer=lambda module: isinstance(module, CausalSelfAttention),
    # the layer calls parallax_func from parallax-kernel: the built-in reader of its arguments
    ops=official_kernel_ops,
    w_r="c_r.weight",
    w_k="c_k.weight",
    r_gain=None,  # F.rms_norm without a weight
)
