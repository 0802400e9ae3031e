"""Set-up that must come before any test module is imported.

Triton decides when a function is defined whether it compiles or runs in the interpreter,
and `triton.language`'s own helpers (`tl.cdiv`, ...) are defined when triton is first
imported. fla, transformers and lightning import triton themselves, so on a machine without
a Hopper GPU TRITON_INTERPRET must be set before the first test module imports any of them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import os
import random

import pytest
import triton_device  # noqa: F401  (sets TRITON_INTERPRET where the kernel cannot compile)

SEED_VARIABLE = "PARALLAX_TEST_SEED"


@pytest.fixture
def seed(request) -> int:
    """A fresh seed for the test's random inputs, also seeding torch's global generator.

    Every run draws new inputs; a failure's report names the seed, and setting
    PARALLAX_TEST_SEED to it reruns the test on the same inputs.
    """
    import torch

    value = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**31))
    torch.manual_seed(value)
    request.node.stash[_SEED] = value
    return value


_SEED = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    value = item.stash.get(_SEED, None)
    if value is not None and report.failed:
        report.sections.append(("random inputs", f"seed {value}: rerun with {SEED_VARIABLE}={value}"))
    return report
