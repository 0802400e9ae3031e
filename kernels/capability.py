"""Device capability, decided in one place."""

from __future__ import annotations

from functools import cache

import torch


@cache
def triton_is_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def is_hopper(device_index: int) -> bool:
    """Compute capability 9.0 (H100, H200): the only devices the Triton kernel is tuned for."""
    return torch.cuda.get_device_capability(device_index) == (9, 0)


def triton_runs_on(device: torch.device) -> bool:
    """Whether backend='auto' takes the Triton path for tensors on `device`."""
    if device.type != "cuda" or not triton_is_available():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return is_hopper(index)
