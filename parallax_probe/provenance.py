"""What produced a run: code version, package versions, hardware. Stored with every run."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "triton", "numpy", "scipy", "h5py", "plotly", "streamlit", "parallax-probe")


def code_version() -> str:
    """`git describe` of the source tree (with -dirty), else the installed package version."""
    source = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return f"parallax-probe {package_version('parallax-probe')}"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    versions = {name: package_version(name) for name in PACKAGES}
    versions["python"] = platform.python_version()
    return versions


def device_description(device) -> str:
    """'cpu (x86_64, 2 threads)' or 'cuda:0 NVIDIA H200 (sm_90)'."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"cuda:{index} {torch.cuda.get_device_name(index)} (sm_{major}{minor})"
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} threads)"
