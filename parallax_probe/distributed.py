"""Data parallelism through PyTorch's own engine: torchrun sets the environment, we read it.

Nothing here runs at import. `setup_distributed` initialises the default process group
only when torchrun's variables are present (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass
class DistributedContext:
    enabled: bool
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around the model when running under torchrun; the model itself otherwise."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def shutdown(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def setup_distributed(requested_device: str | None = None) -> DistributedContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
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
    return DistributedContext(True, rank, world_size, local_rank, device, backend)


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
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    high, low = flat.clone(), flat.clone()
    torch_dist.all_reduce(high, op=torch_dist.ReduceOp.MAX)
    torch_dist.all_reduce(low, op=torch_dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))
