"""Set-up that must come before any test module is imported.

Triton decides when a function is defined whether it compiles or runs in the interpreter,
and `triton.language`'s own helpers (`tl.cdiv`, ...) are defined when triton is first
imported. fla, transformers and lightning import triton themselves, so on a machine without
a Hopper GPU TRITON_INTERPRET must be set before the first test module imports any of them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import triton_device  # noqa: E402, F401  (sets TRITON_INTERPRET where the kernel cannot compile)
