"""Data parallelism through PyTorch's own engine: torchrun sets the environment, we read it.

Nothing here runs at import. `setup_distributed` initialises the default process group
only when torchrun's variables are present (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU.
The model is then replicated (DistributedDataParallel) or, with `fsdp=True`, sharded with
FSDP2 (`fully_shard`): each parameter, gradient and optimiser state is a DTensor whose rows
are split over the ranks. Checkpoints hold full (unsharded) state dicts in both cases, the
same file a one-process run writes: `full_state` gathers them (rank 0 keeps them) and
`load_optimizer_state` shards them again.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as torch_dist

# Process groups closed by `close_process_group`, kept until the process ends. A gloo group's
# destructor joins its worker threads while the calling thread holds the GIL, and a worker may
# still be releasing the tensors of the last collective, which needs the GIL: the two then wait
# on each other for ever. The group's last reference goes wherever Python frees DDP's reducer,
# at the end of `train`, often a millisecond after the last all_reduce: on two busy cores, 3 in
# 20 compiled two-process runs hung there after writing their run folder, 0 in 40 with the group
# kept (scripts/torchrun_exit_check.sh).
_CLOSED_GROUPS: list[Any] = []


def close_process_group() -> None:
    """`destroy_process_group()`, keeping the group object alive until the process exits, so
    its destructor never runs in the middle of a Python function (see `_CLOSED_GROUPS`)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        _CLOSED_GROUPS.append(torch_dist.group.WORLD)
        torch_dist.destroy_process_group()


@dataclass
class DistributedContext:
    enabled: bool
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    fsdp: bool = False
    """Shard the model with FSDP2 (`fully_shard`) instead of replicating it with DDP."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Under torchrun: the model sharded in place (FSDP2, with `fsdp`) or DistributedDataParallel
        around it; the model itself otherwise."""
        if not self.enabled:
            return model
        if self.fsdp:
            return shard_model(model, self.device)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def shutdown(self) -> None:
        if self.enabled:
            close_process_group()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_without_teardown(code: int) -> NoReturn:
    """End a torchrun worker whose work is done: close the process group if it is still open
    (accelerate and Lightning leave theirs open), flush Python's streams and logging, then
    `os._exit(code)`, skipping the interpreter's teardown of PyTorch's C++ objects.

    With gloo, a worker can abort in that teardown (SIGABRT, "terminate called without an
    active exception") after its last line of Python has run, even after
    `destroy_process_group()`: Python's faulthandler shows such an abort with no Python frame
    left. torchrun then reports a finished job as failed. Call it only once every file is
    closed: nothing registered with `atexit` runs after it.
    """
    close_process_group()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code)


def setup_distributed(requested_device: str | None = None, *, fsdp: bool = False) -> DistributedContext:
    """The process group torchrun asks for (initialised here unless it already is)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        if fsdp:
            raise ValueError("--fsdp shards the model over torchrun's processes; run it under "
                             "torchrun --nproc_per_node N (N >= 2), or drop --fsdp for one process")
        return DistributedContext(False, 0, 1, 0, torch.device("cpu"), None)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    wants_cpu = requested_device is not None and torch.device(requested_device).type == "cpu"
    if torch.cuda.is_available() and not wants_cpu:
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    return DistributedContext(True, rank, world_size, local_rank, device, backend, fsdp)


def shard_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """FSDP2 over every rank, as torchtitan does it: each decoder block (`model.layers`) is one
    unit, gathered for its own forward and backward; the root unit takes the embedding, the
    final norm and the LM head. The model is changed in place (its parameters become DTensors)
    and returned, so `model` and the returned module are one object."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch_dist.get_world_size(),))
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state(state: Any, dist: DistributedContext) -> Any:
    """`state` (a model's or an optimiser's state dict, nested) with every DTensor gathered whole
    and kept on rank 0's host; other ranks get None for those leaves. Each leaf is an all-gather
    (every rank holds one whole tensor at a time on its device), in dict order, so every rank
    must call it with the same structure. Without FSDP2 the state holds no DTensor and comes
    back unchanged."""
    from torch.distributed.tensor import DTensor

    if isinstance(state, DTensor):
        whole = state.full_tensor()  # one matrix at a time on the device
        return whole.cpu() if dist.is_main else None
    if isinstance(state, dict):
        return {key: full_state(value, dist) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(full_state(value, dist) for value in state)
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimiser state dict (one-process layout) into an optimiser over FSDP2's DTensor
    parameters: each state tensor shaped like its parameter is cut into this rank's shard with the
    parameter's own mesh and placements; scalars (Adam's step) stay as they are."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]  # state_dict's numbering
    sharded = {}
    for index, values in state["state"].items():
        param = params[int(index)]
        sharded[index] = {
            key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
            if isinstance(param, DTensor) and isinstance(value, torch.Tensor) and value.shape == param.shape else value
            for key, value in values.items()
        }
    optimizer.load_state_dict({**state, "state": sharded})


def all_reduce_mean(tensor: torch.Tensor, dist: DistributedContext) -> torch.Tensor:
    if not dist.enabled:
        return tensor
    tensor = tensor.clone()
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor / dist.world_size


def replicas_identical(model: torch.nn.Module, dist: DistributedContext) -> bool:
    """Whether every rank holds bit-identical parameters (what DDP promises and the probe's
    rank-0 spectra rely on): the elementwise max and min over ranks must agree everywhere."""
    if not dist.enabled:
        return True
    if dist.fsdp:
        raise ValueError("replicas_identical: under FSDP2 each rank holds a shard, not a replica; nothing to compare")
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    high, low = flat.clone(), flat.clone()
    torch_dist.all_reduce(high, op=torch_dist.ReduceOp.MAX)
    torch_dist.all_reduce(low, op=torch_dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))
