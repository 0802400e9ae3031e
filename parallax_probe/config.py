"""Model configuration and the named presets.

A preset is a function-free table of typed configs; `resolve_model_config` applies
overrides and validates once. Fields say why they have their value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

AttentionKind = Literal["parallax", "softmax"]
WRInit = Literal["normal", "zero"]
AttentionBackend = Literal["auto", "triton", "reference"]


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """A Qwen3-style decoder with Parallax (or plain softmax) attention."""

    vocab_size: int
    """Token ids are < vocab_size. Tasks set it from their data (MAD: a few dozen; bytes: 256)."""
    d_model: int
    """Residual stream width (Qwen3 'hidden_size')."""
    n_layers: int
    n_heads: int
    """Query heads (HQ). The probe r has one head per query head."""
    n_kv_heads: int
    """Key/value heads (HK); n_heads must be a multiple (GQA)."""
    head_dim: int
    """D. Qwen3 decouples it from d_model / n_heads (128 at every size)."""
    mlp_hidden: int
    """SwiGLU inner width (Qwen3 'intermediate_size')."""
    rope_theta: float = 1_000_000.0
    """RoPE base; Qwen3 uses 1e6. q, k and r are rotated (r with q's angles)."""
    rms_eps: float = 1e-6
    tie_embeddings: bool = True
    """Share the token embedding with the LM head (Qwen3 0.6B and 1.7B do)."""
    attention: AttentionKind = "parallax"
    """'softmax' builds the same model without r_proj: the baseline every comparison needs."""
    wr_init: WRInit = "normal"
    """'zero' starts W_R at 0 so every layer is exactly softmax attention (a converted checkpoint)."""
    init_std: float = 0.02
    """Std of every Linear/Embedding weight at init (GPT-2/Qwen convention)."""
    window: int | None = None
    """Sliding window W (keys i-W < j <= i); None is full causal attention."""
    attention_backend: AttentionBackend = "auto"
    """'auto': the Triton kernel on compute capability 9.0, the reference elsewhere."""
    max_seq_len: int = 4096
    """Longest sequence the RoPE table is built for up front; longer inputs extend it."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "mlp_hidden", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if self.attention not in ("parallax", "softmax"):
            raise ValueError(f"ModelConfig.attention must be 'parallax' or 'softmax', got {self.attention!r}")
        if self.wr_init not in ("normal", "zero"):
            raise ValueError(f"ModelConfig.wr_init must be 'normal' or 'zero', got {self.wr_init!r}")
        if self.attention_backend not in ("auto", "triton", "reference"):
            raise ValueError(
                f"ModelConfig.attention_backend must be 'auto', 'triton' or 'reference', got {self.attention_backend!r}"
            )
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise ValueError(f"ModelConfig.window must be a positive int or None, got {self.window!r}")
        if self.rope_theta <= 0 or self.rms_eps <= 0 or self.init_std <= 0:
            raise ValueError("ModelConfig: rope_theta, rms_eps and init_std must be positive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, ModelConfig] = {
    # Two layers learn MAD in-context recall in about a minute on 2 CPU cores.
    "tiny": ModelConfig(
        vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_hidden=192, max_seq_len=512
    ),
    # Tens of millions of parameters for one GPU; head_dim 64 is one of the kernel's two fast paths.
    "small": ModelConfig(
        vocab_size=50304, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, head_dim=64, mlp_hidden=1536, max_seq_len=2048
    ),
    # The published Qwen3 shapes (Qwen3 technical report / HF configs), used by the paper at context 4096.
    "qwen3-0.6b": ModelConfig(
        vocab_size=151936, d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8, head_dim=128, mlp_hidden=3072
    ),
    "qwen3-1.7b": ModelConfig(
        vocab_size=151936, d_model=2048, n_layers=28, n_heads=16, n_kv_heads=8, head_dim=128, mlp_hidden=6144
    ),
}


def resolve_model_config(preset_or_config: str | ModelConfig, **overrides) -> ModelConfig:
    """A preset name (or a config) with some fields replaced, validated."""
    if isinstance(preset_or_config, ModelConfig):
        base = preset_or_config
    elif isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(f"unknown preset {preset_or_config!r}; choose one of {', '.join(PRESETS)}")
        base = PRESETS[preset_or_config]
    else:
        raise TypeError(f"expected a preset name or a ModelConfig, got {type(preset_or_config).__name__}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown}; known fields: {sorted(known)}")
    return dataclasses.replace(base, **overrides)
