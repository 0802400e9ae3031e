"""What the probe benchmarks share: one model, optimiser and batch to train on, from the same flags.

    parser = argparse.ArgumentParser(...)
    add_training_args(parser, preset="small", device="cuda", batch_size=16, seq_len=1024, vocab_size=50304)
    setup = training_setup(parser.parse_args())
"""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from parallax_probe import build_model


def add_training_args(parser: argparse.ArgumentParser, *, preset: str, device: str, batch_size: int, seq_len: int, vocab_size: int) -> None:
    parser.add_argument("--model", choices=("parallax-probe", "fla"), default="parallax-probe",
                        help="parallax-probe's model (--preset), or fla's ParallaxForCausalLM at about 100M parameters "
                             "(12 layers, width 768, 12 heads, qk_norm; needs flash-linear-attention)")
    parser.add_argument("--preset", default=preset)
    parser.add_argument("--device", default=device)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--seq-len", type=int, default=seq_len)
    parser.add_argument("--vocab-size", type=int, default=vocab_size)
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="through torch.compile (default backend: inductor)")


@dataclass
class TrainingSetup:
    """The model (AdamW: a cheap step, so the probe's share is not hidden), what to call for a
    step (the model, or with --compile the compiled model), one fixed batch x, bf16 autocast on
    CUDA, and a device sync for timing."""

    device: torch.device
    model: torch.nn.Module
    step_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor

    def autocast(self) -> AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def training_setup(args: argparse.Namespace) -> TrainingSetup:
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.model == "fla":
        model = fla_100m(args.vocab_size).to(device)
        logits_model = FlaLogits(model)
    else:
        model = logits_model = build_model(args.preset, vocab_size=args.vocab_size, max_seq_len=args.seq_len).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), device=device)
    step_model = torch.compile(logits_model, backend=args.compile) if args.compile else logits_model
    return TrainingSetup(device, model, step_model, optimizer, x)


def fla_100m(vocab_size: int) -> torch.nn.Module:
    """fla's ParallaxForCausalLM: 12 layers, width 768, 12 heads of 64, qk_norm (about 85M + 2 x 768 x vocab)."""
    from fla.models import ParallaxConfig, ParallaxForCausalLM

    config = ParallaxConfig(hidden_size=768, num_heads=12, num_hidden_layers=12, qk_norm=True, vocab_size=vocab_size,
                            fuse_cross_entropy=False, use_cache=False)
    return ParallaxForCausalLM(config)


class FlaLogits(torch.nn.Module):
    """Token ids -> logits, as our model's forward, for fla's model (which returns an output object)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, use_cache=False).logits
