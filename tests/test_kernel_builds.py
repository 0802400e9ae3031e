"""The packed (cu_seqlens) and batched builds of a kernel compute a sequence's rows with the same
float operations, so a sequence gives the same bits packed or alone (the GPU test of
test_kernel_triton.py checks the bits; this checks the builds on any machine). Built for sm_90
without a GPU, as benchmarks/tools/sass_report.py does, in a subprocess: the tests' own process
may have defined the kernels for Triton's interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# Counts the PTX's float32 arithmetic by opcode, for each build of each case.
BUILD_AND_COUNT = r"""
import collections, json, re, sys
sys.path.insert(0, "benchmarks/tools")
import sass_report
from parallax_probe.kernels.parallel import TileConfig

def float_ops(ptx):
    ops = collections.Counter()
    for line in ptx.splitlines():
        words = line.split()
        if words and re.fullmatch(r"(fma|mul|add|sub|neg|ex2|lg2|rcp|div|sqrt|max|min)\.[a-z.]*f32", words[0]):
            ops[words[0]] += 1
    return ops

kernel, D, BM, BN, warps, stages, stats, residuals, window = json.loads(sys.argv[1])
tiles = TileConfig(BM, BN, warps, stages)
builds = [float_ops(sass_report.build(kernel, D, tiles, stats, residuals, window, varlen=v).asm["ptx"]) for v in (False, True)]
print(json.dumps(builds))
"""

CASES = [
    # kernel, D, BM, BN, warps, stages, stats, residuals, window: the tiles forward_config and
    # backward_config pick, the forward as training runs it (residuals saved)
    pytest.param(["forward", 64, 128, 64, 8, 3, True, True, False], id="forward-D64-stats"),
    pytest.param(["forward", 128, 128, 64, 8, 3, False, True, True], id="forward-D128-window"),
    pytest.param(["dq", 128, 128, 64, 8, 3, False, False, False], id="dq-D128"),
]


@pytest.mark.parametrize("case", CASES)
def test_packed_and_batched_builds_hold_the_same_float_operations(case):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", BUILD_AND_COUNT, json.dumps(case)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    batched, packed = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(batched.values()) > 100  # the count saw the kernel's arithmetic
    assert packed == batched
