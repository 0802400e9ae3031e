"""The attention backends, named once. No torch here: the model config and the CLI import
this module to validate and offer `attention_backend` without loading the kernels."""

from typing import Literal, get_args

Backend = Literal["auto", "triton", "reference"]
"""'auto': the Triton kernel on compute capability 9.0, the reference elsewhere; 'triton' or
'reference' force one (a call the kernel does not cover takes the reference either way)."""
BACKENDS: tuple[str, ...] = get_args(Backend)
