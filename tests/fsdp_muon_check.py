"""Run under torchrun with 2 CPU processes (tests/test_fsdp.py does): what torch.optim.Muon does on
FSDP2's Shard(0) DTensor parameters, the trainer's FSDP2 Muon arm against the unsharded model, the
optimiser state round trip of a checkpoint, and what the probe refuses. Rank 0 prints one JSON line."""

from __future__ import annotations

import copy
import json
import math
import tempfile

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Shard, distribute_tensor

from parallax_probe import Probe
from parallax_probe.config import resolve_model_config
from parallax_probe.data import load_task
from parallax_probe.distributed import exit_without_teardown, full_state, load_optimizer_state, setup_distributed, shard_model
from parallax_probe.model import ParallaxLM
from parallax_probe.optim import OptimizerConfig, build_optimizers

SEED = 11
SHAPES = [(64, 32), (32, 64), (33, 20), (48, 48)]  # tall, wide, rows not divisible by 2 ranks, square
MUON_STEPS = 3


def newton_schulz_float64(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz iteration (its coefficients), in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / x.norm().clamp_min(1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def muon_step_float64(weight: torch.Tensor, grad: torch.Tensor, buffer: torch.Tensor, config: OptimizerConfig) -> None:
    """One step of torch.optim.Muon (Nesterov, decoupled decay, Keller's lr scaling), in float64, in place."""
    buffer.lerp_(grad, 1 - config.momentum)
    update = newton_schulz_float64(grad.lerp(buffer, config.momentum))
    weight.mul_(1 - config.muon_lr * config.weight_decay)
    weight.add_(update, alpha=-config.muon_lr * math.sqrt(max(1, weight.shape[0] / weight.shape[1])))


def muon_update(param: torch.nn.Parameter, grad: torch.Tensor) -> torch.Tensor:
    """-(step of Muon) for one gradient, from zero weights, no momentum, decay or lr scaling: NS(grad)."""
    opt = torch.optim.Muon([param], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False, adjust_lr_fn="match_rms_adamw")
    param.grad = grad
    opt.step()
    scale = 0.2 * math.sqrt(max(param.shape))  # match_rms_adamw's lr factor
    return -param.detach() / scale


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx.double() - exact.double()).norm() / exact.double().norm()).item()


def shard_versus_matrix(mesh, rank: int, world: int) -> dict:
    """Per shape: each way's relative (Frobenius) error against float64 Newton-Schulz of the whole matrix."""
    results = {}
    for shape in SHAPES:
        g = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
        exact = newton_schulz_float64(g)
        plain = muon_update(torch.nn.Parameter(torch.zeros(shape)), g.clone())
        dtensor = muon_update(torch.nn.Parameter(distribute_tensor(torch.zeros(shape), mesh, [Shard(0)])),
                              distribute_tensor(g.clone(), mesh, [Shard(0)])).full_tensor()
        # what FSDP2 would give if Muon saw only the local rows: each rank orthogonalises its shard
        rows = torch.tensor_split(g, world)[rank]
        own = muon_update(torch.nn.Parameter(torch.zeros(rows.shape)), rows.clone())
        parts = [None] * world
        torch_dist.all_gather_object(parts, own)
        per_shard = torch.cat(parts)
        results["x".join(map(str, shape))] = {
            name: relative_error(update, exact) for name, update in (("plain", plain), ("dtensor", dtensor), ("per_shard", per_shard))
        } | {"dtensor_vs_plain_max_abs": (dtensor - plain).abs().max().item(), "plain_max_abs_error": (plain - exact).abs().max().item(),
             "dtensor_max_abs_error": (dtensor - exact).abs().max().item()}
    return results


def model_muon_arm(dist) -> dict:
    """The trainer's FSDP2 Muon arm (shard_model + build_optimizers, as --fsdp builds them) against the
    same optimisers on the unsharded model. Both get the same gradients (the unsharded model's, on the
    global batch) for MUON_STEPS steps, so only the optimiser steps differ; so does a float64 Muon.
    Per Muon matrix, each one's error against float64: |W - W_float64|_F / |W_float64 - W_initial|_F."""
    config = resolve_model_config("tiny", vocab_size=16, max_seq_len=32)
    torch.manual_seed(SEED)
    reference = ParallaxLM(config)
    model = copy.deepcopy(reference)
    initial = {n: p.detach().clone() for n, p in reference.named_parameters()}
    shard_model(model, dist.device)
    opt_config = OptimizerConfig(name="muon", schedule="constant", warmup_steps=0)
    sharded_opts, groups = build_optimizers(model, opt_config)
    reference_opts, _ = build_optimizers(reference, opt_config)
    task = load_task("in-context-recall", seq_len=32, seed=SEED)
    exact = {n: initial[n].double() for n in groups.muon}
    buffers = {n: torch.zeros_like(w) for n, w in exact.items()}
    for step in range(MUON_STEPS):
        x, y = task.train_batch(step, 8, SEED)
        F.cross_entropy(reference(x).flatten(0, 1), y.flatten(), ignore_index=-100).backward()
        for name in groups.muon:
            muon_step_float64(exact[name], reference.get_parameter(name).grad.double(), buffers[name], opt_config)
        for name, param in model.named_parameters():
            param.grad = distribute_tensor(reference.get_parameter(name).grad.clone(), param.device_mesh, param.placements)
        for opt in (*reference_opts, *sharded_opts):
            opt.step()
            opt.zero_grad(set_to_none=True)
    sharded = dict(model.named_parameters())
    errors = {}
    for name in groups.muon:
        change = exact[name] - initial[name]
        errors[name] = {
            "plain": relative_error(reference.get_parameter(name).detach() - initial[name], change),
            "fsdp": relative_error(sharded[name].full_tensor() - initial[name], change),
        }
    # The checkpoint path: gather the Muon state whole (rank 0), load it back into fresh shards.
    saved = full_state(sharded_opts[0].state_dict(), dist)
    parts = [None] * dist.world_size
    torch_dist.all_gather_object(parts, saved)
    restored_opts, _ = build_optimizers(model, opt_config)
    load_optimizer_state(restored_opts[0], parts[0])
    buffers_equal = all(
        torch.equal(restored_opts[0].state[p]["momentum_buffer"].to_local(), sharded_opts[0].state[p]["momentum_buffer"].to_local())
        for p in sharded_opts[0].param_groups[0]["params"]
    )
    full_shapes = all(parts[0]["state"][i]["momentum_buffer"].shape == reference.get_parameter(n).shape
                      for i, n in enumerate(groups.muon))
    return {"error_against_float64": errors, "state_round_trip_equal": buffers_equal, "checkpoint_holds_full_matrices": full_shapes}


def refusals(dist) -> dict:
    """What the probe refuses: an FSDP2 model without distributed= on 2 ranks, and a 2-D (HSDP) mesh."""
    messages = {}
    config = resolve_model_config("tiny", vocab_size=16)
    for name, mesh, distributed in (
        ("without_distributed", init_device_mesh("cpu", (dist.world_size,)), None),
        ("hsdp_mesh", init_device_mesh("cpu", (1, dist.world_size), mesh_dim_names=("replicate", "shard")), dist),
    ):
        model = ParallaxLM(config)
        for block in model.layers:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        try:
            Probe(model, tempfile.mkdtemp() + "/run", distributed=distributed)
            messages[name] = None
        except ValueError as error:
            messages[name] = str(error)
    return messages


def main() -> None:
    dist = setup_distributed("cpu")
    mesh = init_device_mesh("cpu", (dist.world_size,))
    results = {
        "shard_versus_matrix": shard_versus_matrix(mesh, dist.rank, dist.world_size),
        "model": model_muon_arm(dist),
        "refusals": refusals(dist),
    }
    if dist.is_main:
        print(json.dumps(results))
    exit_without_teardown(0)  # closes the group; gloo's C++ teardown at exit can abort a finished worker


if __name__ == "__main__":
    main()
