"""What both callbacks share: the probe's logging step held open across framework hooks,
the data-parallel context the framework set up, and metadata made storable."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from parallax_probe.distributed import DistributedContext
from parallax_probe.hooks import Probe
from parallax_probe.provenance import code_version, device_description, package_versions


class OpenStep:
    """`with probe.step(step)` split over two framework hooks: `open` before the forward of the
    step's first micro-batch, `close` right after that forward (before backward and the optimizer
    step, as in the hand-written loop, so the spectra see the weights the forward used)."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self._context = None
        self.step: int | None = None

    @property
    def is_open(self) -> bool:
        return self._context is not None

    def open(self, step: int) -> None:
        self._context = self.probe.step(step)
        self._context.__enter__()
        self.step = step

    def close(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(None, None, None)


def framework_distributed(device: torch.device) -> DistributedContext | None:
    """The process group the framework (accelerate, Lightning's strategy) initialised, as the
    probe's `distributed=` reads it: every rank gathers each logging step's rows, rank 0 writes."""
    import torch.distributed as torch_dist

    if not (torch_dist.is_available() and torch_dist.is_initialized()) or torch_dist.get_world_size() == 1:
        return None
    rank = torch_dist.get_rank()
    local_rank = device.index if device.type == "cuda" and device.index is not None else 0
    return DistributedContext(True, rank, torch_dist.get_world_size(), local_rank, device, torch_dist.get_backend())


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def storable(value: Any) -> Any:
    """A JSON-friendly copy of framework settings (HDF5 attributes take no None, enums, paths, tensors)."""
    if isinstance(value, Mapping):
        return {str(k): storable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple, set)):
        return [storable(v) for v in value]
    if isinstance(value, enum.Enum):
        return storable(value.value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return storable(dataclasses.asdict(value))
    return str(value)


def optimizer_meta(optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """`optimizer` (lower-case class name, what `analyze --group-by optimizer` groups on) and its
    hyperparameters per parameter group."""
    if optimizer is None:
        return {}
    groups = [{k: v for k, v in group.items() if k != "params"} | {"parameters": sum(p.numel() for p in group["params"])}
              for group in optimizer.param_groups]
    return {
        "optimizer": type(optimizer).__name__.lower(),
        "optimizer_class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "optimizer_param_groups": storable(groups),
    }


def provenance(device: torch.device, framework_packages: tuple[str, ...]) -> dict[str, Any]:
    from parallax_probe.provenance import package_version

    versions = package_versions() | {name: package_version(name) for name in framework_packages}
    return {"code_version": code_version(), "package_versions": versions, "device": device_description(device)}
