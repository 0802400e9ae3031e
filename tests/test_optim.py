"""Parameter groups and schedules."""

from __future__ import annotations

import pytest
import torch

from parallax_probe.model import build_model
from parallax_probe.optim import OptimizerConfig, assign_parameter_groups, build_optimizers, lr_multiplier


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
@pytest.mark.parametrize("tie", [True, False])
def test_every_parameter_is_in_exactly_one_group(optimizer, tie):
    model = build_model("tiny", vocab_size=40, tie_embeddings=tie)
    groups = assign_parameter_groups(model, optimizer)
    names = [*groups.muon, *groups.adamw_decay, *groups.adamw_no_decay]
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())
    assert len(names) == len(set(names))
    optimizers, _ = build_optimizers(model, OptimizerConfig(name=optimizer))
    in_optimizers = [id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]]
    assert sorted(in_optimizers) == sorted(id(p) for p in model.parameters())


def test_muon_takes_hidden_matrices_only_and_never_embeddings_head_or_vectors():
    model = build_model("tiny", vocab_size=40, tie_embeddings=False)
    groups = assign_parameter_groups(model, "muon")
    params = dict(model.named_parameters())
    assert groups.muon and all(params[n].ndim == 2 for n in groups.muon)
    assert not any("embed" in n or "lm_head" in n for n in groups.muon)
    assert all(params[n].ndim == 1 for n in groups.adamw_no_decay if "embed" not in n and "lm_head" not in n)
    assert any(n.endswith("r_proj.weight") for n in groups.muon)
    assert {"embed_tokens.weight", "lm_head.weight"} <= set(groups.adamw_no_decay)
    optimizers, _ = build_optimizers(model, OptimizerConfig(name="muon"))
    assert isinstance(optimizers[0], torch.optim.Muon) and isinstance(optimizers[1], torch.optim.AdamW)


def test_adamw_takes_everything():
    model = build_model("tiny", vocab_size=40)
    optimizers, groups = build_optimizers(model, OptimizerConfig(name="adamw"))
    assert not groups.muon and len(optimizers) == 1 and isinstance(optimizers[0], torch.optim.AdamW)


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules_warm_up_then_decay_to_the_floor(schedule):
    cfg = OptimizerConfig(schedule=schedule, warmup_steps=10, min_lr_ratio=0.1)
    values = [lr_multiplier(s, 100, cfg) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(0 < v <= 1 for v in values)
    assert values[-1] == pytest.approx(1.0 if schedule == "constant" else 0.1, abs=0.02)


def test_bad_optimizer_config_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        OptimizerConfig(name="sgd")
