"""Instrument fla's ParallaxForCausalLM (needs a CUDA GPU for fla's kernels; pip install 'parallax-probe[fla]')."""

import torch
from fla.models import ParallaxConfig, ParallaxForCausalLM

from parallax_probe import Probe

config = ParallaxConfig(hidden_size=512, num_heads=8, num_kv_heads=4, num_hidden_layers=4, qk_norm=True, vocab_size=256)
model = ParallaxForCausalLM(config).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

probe = Probe(model, "runs/fla-adamw", every=10, spectra_every=50, meta={"optimizer": "adamw"})
for step in range(100):
    input_ids = torch.randint(0, 256, (4, 1024), device="cuda")
    with probe.step(step), torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    probe.log_scalars(step, loss=loss.detach())
probe.close()
