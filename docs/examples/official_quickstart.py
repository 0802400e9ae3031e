"""Instrument a model built on the official parallax-kernel (needs a CUDA GPU; pip install parallax-kernel)."""

import torch
import torch.nn as nn
from parallax import parallax_func

from parallax_probe import Probe


class Attention(nn.Module):
    """q_proj, r_proj, k_proj, v_proj, o_proj and the head counts: what the built-in layout reads."""

    def __init__(self, hidden=512, num_heads=8, num_kv_heads=4):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, hidden // num_heads
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.r_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x):  # (B, T, C)
        B, T, _ = x.shape

        def heads_first(t, h):  # (B, H, T, D)
            return t.view(B, T, h, self.head_dim).transpose(1, 2)

        q, r = heads_first(self.q_proj(x), self.num_heads), heads_first(self.r_proj(x), self.num_heads)
        k, v = heads_first(self.k_proj(x), self.num_kv_heads), heads_first(self.v_proj(x), self.num_kv_heads)
        return self.o_proj(parallax_func(q, r, k, v).transpose(1, 2).reshape(B, T, -1))


model = nn.Sequential(*(Attention() for _ in range(4))).cuda().to(torch.bfloat16)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
probe = Probe(model, "runs/official-adamw", every=10, spectra_every=50, meta={"optimizer": "adamw"})
for step in range(100):
    x = torch.randn(4, 1024, 512, device="cuda", dtype=torch.bfloat16)
    with probe.step(step):
        loss = model(x).float().square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    probe.log_scalars(step, loss=loss.detach())
probe.close()
