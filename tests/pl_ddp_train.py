"""One rank of the DDP test (tests/test_integration_lightning.py): `torchrun --nproc_per_node=2 pl_ddp_train.py RUN_DIR ROOT STEPS`."""

import sys
from pathlib import Path

from test_integration_lightning import fit

from parallax_probe.distributed import exit_without_teardown

if __name__ == "__main__":
    steps = int(sys.argv[3])
    fit(Path(sys.argv[1]), Path(sys.argv[2]), max_steps=steps, accumulate=1, steps_per_epoch=steps, processes=2)
    # Lightning's DDP strategy leaves its process group open: exit_without_teardown closes it, then
    # skips the C++ teardown at exit, where a gloo worker can still abort after its work is done.
    exit_without_teardown(0)
