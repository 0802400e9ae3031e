"""The configuration: the model (`ModelConfig`, the named presets), the optimiser
(`OptimizerConfig`) and a training run (`TrainConfig`).

Typed dataclasses whose fields say why they have their value; each validates itself once.
The CLI derives its defaults and choices from them. No torch here: the CLI builds its
parser (and `inspect`, `analyze`, `dashboard` run) without loading it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .kernels.backends import BACKENDS, Backend

AttentionKind = Literal["parallax", "softmax"]
WRInit = Literal["normal", "zero"]
AttentionBackend = Backend
ATTENTION_KINDS: tuple[str, ...] = get_args(AttentionKind)
WR_INITS: tuple[str, ...] = get_args(WRInit)

# The probe's cadences, the defaults of `Probe`, the Trainer callbacks and `TrainConfig`.
PROBE_EVERY = 50
"""Probe statistics every this many steps: a logging step costs one more attention pass per layer at most."""
SPECTRA_EVERY = 500
"""W_R spectra every this many steps: an SVD per layer, from the weights; they change slowly."""


def _choices(names: tuple[str, ...]) -> str:
    return ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}"


def default_of(config: type, name: str) -> Any:
    """The default value of field `name` of the dataclass `config` (its factory's value if it has one)."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ValueError(f"{config.__name__}.{name} has no default")
    raise ValueError(f"{config.__name__} has no field {name!r}")


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
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"ModelConfig.attention must be {_choices(ATTENTION_KINDS)}, got {self.attention!r}")
        if self.wr_init not in WR_INITS:
            raise ValueError(f"ModelConfig.wr_init must be {_choices(WR_INITS)}, got {self.wr_init!r}")
        if self.attention_backend not in BACKENDS:
            raise ValueError(f"ModelConfig.attention_backend must be {_choices(BACKENDS)}, got {self.attention_backend!r}")
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


# ModelConfig fields that `train --model FIELD=VALUE` may set: the shape and init, not the fields
# another flag owns (--attention, --wr-init, --window, --backend) nor the vocabulary (the task's).
FLAG_OWNED_MODEL_FIELDS = {"attention": "--attention", "wr_init": "--wr-init", "window": "--window",
                           "attention_backend": "--backend", "vocab_size": "--task (or --vocab-size for bin: tasks)"}
MODEL_FLAG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in FLAG_OWNED_MODEL_FIELDS)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_model_field(text: str) -> tuple[str, int | float | bool]:
    """`FIELD=VALUE` of `train --model`, typed as ModelConfig declares FIELD (n_layers=16, rope_theta=1e4,
    tie_embeddings=false); ValueError naming the field and what it takes otherwise."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip().replace("-", "_"), raw.strip()
    if not sep or not name or not raw:
        raise ValueError(f"--model {text!r}: expected FIELD=VALUE, e.g. --model n_layers=16")
    if name in FLAG_OWNED_MODEL_FIELDS:
        raise ValueError(f"--model {name}: set it with {FLAG_OWNED_MODEL_FIELDS[name]}")
    kinds = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    if name not in MODEL_FLAG_FIELDS:
        raise ValueError(f"--model {name}: not a model field; choose one of {', '.join(MODEL_FLAG_FIELDS)}")
    kind = kinds[name]
    try:
        if kind == "bool":
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError
            return name, raw.lower() in _TRUE
        return name, int(raw) if kind == "int" else float(raw)
    except ValueError:
        wanted = {"bool": "true or false", "int": "an integer", "float": "a number"}[kind]
        raise ValueError(f"--model {name}={raw}: {name} takes {wanted}") from None


OptimizerName = Literal["muon", "adamw"]
ScheduleName = Literal["cosine", "wsd", "constant"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)



@dataclass(kw_only=True, slots=True)
class OptimizerConfig:
    name: OptimizerName = "muon"
    """'muon' (Muon on hidden matrices + AdamW on the rest) or 'adamw' (AdamW on everything)."""
    muon_lr: float = 0.02
    """Muon lr with adjust_lr_fn='original' (Keller's scaling); see parallax_probe/optim.py's docstring."""
    adamw_lr: float = 3e-3
    """AdamW lr: the whole model under 'adamw', embeddings/head/1-D under 'muon'."""
    weight_decay: float = 0.1
    """Decoupled weight decay on the hidden matrices, the same for both optimisers."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas; 0.95 is the usual LLM choice for stability with small batches."""
    momentum: float = 0.95
    """Muon momentum (torch default, Nesterov on)."""
    schedule: ScheduleName = "cosine"
    """Linear warmup then cosine decay to min_lr_ratio, or WSD (warmup-stable-decay), or constant."""
    warmup_steps: int = 50
    """Steps of linear warmup from 0 to the peak lr (the CLI's default: `default_warmup_steps`)."""
    min_lr_ratio: float = 0.1
    """Final lr as a fraction of the peak lr."""
    decay_fraction: float = 0.2
    """WSD: the last fraction of training that decays linearly."""

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer {self.name!r}; choose {_choices(OPTIMIZER_NAMES)}")
        if self.schedule not in SCHEDULE_NAMES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose {_choices(SCHEDULE_NAMES)}")
        for name in ("muon_lr", "adamw_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"OptimizerConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1 or not 0 < self.decay_fraction <= 1:
            raise ValueError("OptimizerConfig: warmup_steps >= 0, 0 <= min_lr_ratio <= 1, 0 < decay_fraction <= 1")


def default_warmup_steps(steps: int) -> int:
    """OptimizerConfig's warmup, but at most a tenth of a short run."""
    return min(default_of(OptimizerConfig, "warmup_steps"), steps // 10)


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """One training run: what `parallax-probe train` runs (its flags override these fields)."""

    preset: str = "tiny"
    """Model preset: tiny, small, qwen3-0.6b, qwen3-1.7b."""
    model_overrides: dict = field(default_factory=dict)
    """ModelConfig fields to replace (attention, wr_init, window, n_layers, ...)."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimiser and learning-rate schedule."""
    task: str = "in-context-recall"
    """A MAD task name, text:PATH or bin:GLOB."""
    seq_len: int | None = None
    """None: the MAD task's baseline length (or 256 for text/bin)."""
    mad_overrides: dict = field(default_factory=dict)
    """MAD knobs (vocab_size, num_train_examples, ...)."""
    vocab_size: int | None = None
    """Model vocabulary for bin: tasks (MAD and text set their own)."""
    steps: int = 2000
    """Optimiser steps; a resumed run continues up to this step."""
    batch_size: int = 32
    """Global batch in sequences; split evenly over data-parallel ranks."""
    seed: int = 0
    device: str | None = None
    """None: cuda when available, else cpu."""
    out: str = "runs/run"
    """The run folder: probe segments, checkpoint, run.json."""
    resume: bool = False
    """Continue the run in `out` from its checkpoint."""
    overwrite: bool = False
    """Replace the run in `out`."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""
    eval_every: int = 200
    """Held-out loss and accuracy every N steps."""
    eval_examples: int = 512
    log_every: int = 10
    """Training scalars every N steps; the loop syncs with the device only here."""
    checkpoint_every: int = 500
    probe_every: int = PROBE_EVERY
    """Probe statistics every N steps (0 turns the probe off)."""
    spectra_every: int = SPECTRA_EVERY
    """W_R spectra every N steps (0: only at the end); cheap, from the weights."""
    progress: bool = True
    trackers: list[str] = field(default_factory=list)
    """Where the probe also sends per-layer summaries: `tensorboard:DIR` (a SummaryWriter on DIR)
    or `wandb:PROJECT` (a new W&B run in PROJECT); the run folder stays the full record."""
    compile: str | None = None
    """A torch.compile backend for the training forward and backward ('inductor' fuses the
    small ops whose launches bound the step); None trains eagerly. Evaluation stays eager."""
    init_from: str | None = None
    """A softmax checkpoint to start from (ours, or a local Hugging Face Qwen3 folder): the model takes
    its shape and weights, with r exactly 0 at step 0 (parallax_probe/retrofit.py says how)."""
    keep_checkpoints: int = 0
    """Also keep the model's weights every N steps in checkpoints/step-N.pt (and step-0.pt), for
    `parallax-probe scan`; step-N.pt holds the weights entering step N. 0 keeps none."""
    fsdp: bool = False
    """Under torchrun: shard parameters, gradients and optimiser states over the ranks with FSDP2
    (`fully_shard`) instead of replicating them with DDP. Muon stays full-matrix Muon:
    torch.optim.Muon on the DTensor shards computes the whole matrix's update (docs/distributed.md)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "eval_examples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("probe_every", "spectra_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 turns it off)")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise ValueError(f"--seed must be an integer from 0 to 2**63 - 1 (torch and numpy seeds are 64-bit), got {self.seed}")
        if not str(self.out).strip():
            raise ValueError("--out is empty; name the run folder, e.g. --out runs/muon")
        if self.seq_len is not None and self.seq_len < 2:
            raise ValueError(f"--seq-len must be at least 2, got {self.seq_len}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pick one")
        shape = sorted(set(self.model_overrides) & set(MODEL_FLAG_FIELDS))
        if self.init_from is None:
            resolve_model_config(self.preset, **self.model_overrides)  # refuse n_heads=6 with n_kv_heads=4 now, not at step 0
        elif shape:
            raise ValueError(f"--init-from takes the model's shape from its checkpoint; drop --model {', '.join(shape)}")
        if self.init_from is not None:
            if self.model_overrides.get("attention", "parallax") != "parallax":
                raise ValueError("--init-from makes a Parallax model from a softmax one; drop --attention softmax")
            if self.model_overrides.get("wr_init") == "zero":
                raise ValueError("--init-from zeroes the r-norm gain; with --wr-init zero as well, r and both of their gradients "
                                 "stay 0 for ever: drop --wr-init zero")
        if self.keep_checkpoints and self.fsdp:
            raise ValueError("--keep-checkpoints with --fsdp is not supported yet (the kept weights would be shards); "
                             "drop one of them")
        if self.compile is not None:
            check_compile_backend(self.compile)
            if self.fsdp:
                raise ValueError("--compile with --fsdp is not supported (untested); drop one of them")
        for spec in self.trackers:
            check_tracker_spec(spec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_compile_backend(backend: str) -> None:
    """Refuse a backend torch.compile does not know when the config is made, before anything
    is written, not at the first step (`check_compiler_for` does the same for Inductor on a
    CPU without a C++ compiler, once the device is known)."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        common = ", ".join(sorted(torch._dynamo.list_backends()))
        raise ValueError(f"--compile {backend}: not a torch.compile backend; choose one of {common}")


TRACKER_KINDS = ("tensorboard", "wandb")  # each the name of its package and of its extra


def check_tracker_spec(spec: str) -> None:
    """`tensorboard:DIR` or `wandb:PROJECT`, with its package installed."""
    import importlib.util

    kind, _, target = spec.partition(":")
    if kind not in TRACKER_KINDS or not target:
        raise ValueError(f"--tracker {spec!r}: expected tensorboard:DIR or wandb:PROJECT")
    if importlib.util.find_spec(kind) is None:
        raise ValueError(f"--tracker {spec}: the {kind} package is not installed; pip install 'parallax-probe[{kind}]'")
