"""The README's two quickstarts (docs/examples/*_quickstart.py) are shown as they are, and run.

They are written for a CUDA GPU. Here each runs on the CPU as fla's and parallax-kernel's own
tests would: their Triton-only pieces swapped for the packages' references (tests/fla_on_cpu.py,
tests/official_on_cpu.py), the device and the sizes changed by the text substitutions in
SHRINK (each must apply exactly as often as listed, so a changed quickstart fails here rather
than run something else). 3 steps of 64 tokens instead of 100 of 1024; logging at step 0.
"""

import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from parallax_probe import open_run

ROOT = Path(__file__).parents[1]
QUICKSTARTS = ("fla_quickstart", "official_quickstart")

# (old, new, how many times old occurs in the quickstart)
SHRINK = {
    "fla_quickstart": [
        (".cuda()", "", 1),
        ('device="cuda"', 'device="cpu"', 1),
        ('torch.autocast("cuda"', 'torch.autocast("cpu"', 1),
        ("range(100)", "range(3)", 1),
        ("(4, 1024)", "(2, 64)", 1),
        # fla's fused Triton norm, SwiGLU and loss off; its RMSNorm modules become torch's
        ("vocab_size=256)", "vocab_size=256, fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False)", 1),
        ("optimizer = torch.optim", "torch_rms_norms(model)\noptimizer = torch.optim", 1),
    ],
    "official_quickstart": [
        (".cuda()", "", 1),
        ('device="cuda"', 'device="cpu"', 1),
        ("range(100)", "range(3)", 1),
        ("randn(4, 1024, 512", "randn(2, 64, 512", 1),
    ],
}


def code_of(name: str) -> str:
    """The quickstart without its docstring line: what the README shows."""
    source = (ROOT / "docs" / "examples" / f"{name}.py").read_text()
    return source.split('"""', 2)[2].lstrip("\n")


@pytest.mark.parametrize("name", QUICKSTARTS)
def test_the_readme_shows_the_quickstart_as_it_is(name):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert code_of(name) in blocks, f"README.md's block for docs/examples/{name}.py differs from the file"


def shrunk(name: str) -> str:
    code = code_of(name)
    for old, new, times in SHRINK[name]:
        assert code.count(old) == times, f"{name}: {old!r} occurs {code.count(old)} times, not {times}"
        code = code.replace(old, new)
    assert "cuda" not in code, f"{name}: a CUDA call is left"
    return code


@pytest.mark.parametrize("name", QUICKSTARTS)
def test_the_quickstart_runs_and_records_every_layer(name, tmp_path, monkeypatch):
    if name == "fla_quickstart":
        from fla_on_cpu import fla_kernels_on_cpu as on_cpu
        from fla_on_cpu import torch_rms_norms
    else:
        from official_on_cpu import official_kernels_on_cpu as on_cpu

        torch_rms_norms = None
    monkeypatch.chdir(tmp_path)  # the quickstart writes runs/<name> where it runs
    torch.manual_seed(0)  # the quickstarts draw their weights and data from torch's global generator
    script = tmp_path / f"{name}.py"
    script.write_text(shrunk(name))
    with on_cpu():
        # run as a module of its own, as `python quickstart.py` would: the probe finds the
        # official functions a layer calls among the globals of the layer's module
        runpy.run_path(str(script), init_globals={"torch_rms_norms": torch_rms_norms}, run_name="quickstart")
    run = open_run(tmp_path / "runs" / ("fla-adamw" if name == "fla_quickstart" else "official-adamw"))
    assert run["step"].tolist() == [0]  # every=10: step 0 of 3
    cor = np.asarray(run["attn/layer_cor_mean"][0])
    assert cor.shape == (4,) and np.isfinite(cor).all() and (cor > 0).all()
    assert run.meta["optimizer"] == "adamw"
    assert run["scalars/step"].tolist() == [0, 1, 2] and np.isfinite(run["scalars/loss"]).all()
