"""Optimisers and learning-rate schedules.

`muon`: torch.optim.Muon on the 2-D hidden weights (attention projections, W_R included,
and the MLP), AdamW on the embedding, the LM head and every 1-D parameter. The choice is
by name (a hidden projection is a hidden projection whatever its shape); `ndim == 2` is
then checked, because Newton-Schulz is only defined for matrices.
`adamw`: AdamW on everything.

Learning rates. torch's Muon defaults to lr=1e-3 with Keller Jordan's shape adjustment
(`adjust_lr_fn="original"`, update scaled by sqrt(max(1, rows/cols))); the reference
recipes (modded-nanogpt, Keller's Muon) use lr=0.02 with that same adjustment, about 20x
more. We default to 0.02 for the Muon group, and to 3e-3 for AdamW (a common value for
models this small; it is the lr of the whole model under `adamw` and of the
embedding/head/norms under `muon`). Both are overridable (`--lr` sets the main group's).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import OptimizerConfig, OptimizerName

# Names of the hidden matrices Muon orthogonalises: attention projections (q, r, k, v, o)
# and the SwiGLU projections. Embedding and LM head are excluded by design: they are
# lookup tables / classifiers, not hidden linear maps (Keller Jordan's Muon note).
MUON_PARAMETER_PATTERN = re.compile(r"(^|\.)(q_proj|r_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$")


@dataclass(frozen=True, slots=True)
class ParameterGroups:
    """Which parameter goes to which optimiser: printed at start and stored with the run."""

    muon: tuple[str, ...]
    adamw_decay: tuple[str, ...]
    adamw_no_decay: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"muon": list(self.muon), "adamw_decay": list(self.adamw_decay), "adamw_no_decay": list(self.adamw_no_decay)}

    def describe(self) -> str:
        lines = []
        for group, names in self.to_dict().items():
            lines.append(f"  {group} ({len(names)} tensors): {', '.join(names) if len(names) <= 6 else ', '.join(names[:6]) + ', ...'}")
        return "\n".join(lines)


def assign_parameter_groups(model: nn.Module, optimizer: OptimizerName) -> ParameterGroups:
    """Every trainable parameter in exactly one group (tied weights counted once)."""
    muon, decay, no_decay = [], [], []
    for name, p in model.named_parameters():  # named_parameters yields a tied weight once
        if not p.requires_grad:
            continue
        is_hidden_matrix = MUON_PARAMETER_PATTERN.search(name) is not None
        if is_hidden_matrix and p.ndim != 2:
            raise ValueError(f"parameter {name} matches a hidden projection name but has shape {tuple(p.shape)}")
        if optimizer == "muon" and is_hidden_matrix:
            muon.append(name)
        elif is_hidden_matrix:
            decay.append(name)
        else:
            no_decay.append(name)  # embeddings, LM head, norms: no decay, the usual LLM practice
    return ParameterGroups(tuple(muon), tuple(decay), tuple(no_decay))


def build_optimizers(model: nn.Module, config: OptimizerConfig) -> tuple[list[torch.optim.Optimizer], ParameterGroups]:
    """One or two torch optimisers; each group carries 'initial_lr' for the schedule."""
    groups = assign_parameter_groups(model, config.name)
    params = dict(model.named_parameters())
    optimizers: list[torch.optim.Optimizer] = []
    if groups.muon:
        optimizers.append(
            torch.optim.Muon(
                [params[n] for n in groups.muon],
                lr=config.muon_lr,
                weight_decay=config.weight_decay,
                momentum=config.momentum,
                nesterov=True,
                adjust_lr_fn="original",
            )
        )
    adamw_groups = [
        {"params": [params[n] for n in groups.adamw_decay], "weight_decay": config.weight_decay},
        {"params": [params[n] for n in groups.adamw_no_decay], "weight_decay": 0.0},
    ]
    adamw_groups = [g for g in adamw_groups if g["params"]]
    if adamw_groups:
        optimizers.append(torch.optim.AdamW(adamw_groups, lr=config.adamw_lr, betas=config.betas, eps=1e-8))
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers, groups


def lr_multiplier(step: int, total_steps: int, config: OptimizerConfig) -> float:
    """The schedule's factor on each group's initial lr at `step` (0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "wsd":
        decay_start = int(total_steps * (1 - config.decay_fraction))
        if step < decay_start:
            return 1.0
        progress = (step + 1 - decay_start) / max(1, total_steps - decay_start)
        return 1.0 - (1.0 - config.min_lr_ratio) * min(1.0, progress)
    progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def set_learning_rates(optimizers: list[torch.optim.Optimizer], multiplier: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * multiplier
