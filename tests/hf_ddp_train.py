"""One rank of the DDP test (tests/test_integration_hf.py): `torchrun --nproc_per_node=2 hf_ddp_train.py RUN_DIR OUT_DIR`."""

import sys

from test_integration_hf import train_with_trainer

from parallax_probe.distributed import exit_without_teardown

if __name__ == "__main__":
    train_with_trainer(sys.argv[1], sys.argv[2], accumulate=1, processes=2)
    # accelerate leaves its process group open: exit_without_teardown closes it, then skips the
    # C++ teardown at exit, where a gloo worker can still abort after its work is done.
    exit_without_teardown(0)
