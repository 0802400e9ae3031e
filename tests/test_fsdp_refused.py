"""FSDP2-sharded models are refused with a message that says why (docs/distributed.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, sys, tempfile
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from parallax_probe import Probe, build_model
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
    dist.init_process_group("gloo", rank=0, world_size=1)
    model = build_model("tiny", vocab_size=16)
    for block in model.layers:
        fully_shard(block)
    fully_shard(model)
    try:
        Probe(model, tempfile.mkdtemp() + "/run")
    except ValueError as error:
        print(error)
    finally:
        dist.destroy_process_group()
    """
)


def test_fsdp2_models_are_refused_with_the_reason(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FSDP2" in result.stdout and "Muon" in result.stdout and "DDP" in result.stdout
