"""One rank of the DDP test (tests/test_integration_hf.py): `torchrun --nproc_per_node=2 hf_ddp_train.py RUN_DIR OUT_DIR`."""

import sys

from test_integration_hf import train_with_trainer

if __name__ == "__main__":
    train_with_trainer(sys.argv[1], sys.argv[2], accumulate=1, processes=2)
