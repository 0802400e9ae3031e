"""The retrofit behind `parallax-probe train --init-from CHECKPOINT`: a Parallax model that starts
as a trained softmax model and computes, at step 0, exactly what that model computed.

    source = softmax_source("runs/softmax")          # ours, or a local Hugging Face Qwen3 folder
    model = source.parallax_model(seed=0)            # a ParallaxLM whose r is exactly 0

Every tensor of the softmax model is copied by name (embeddings, per-layer norms, q/k/v/o,
q_norm and k_norm, the MLP, the final norm, the LM head); a tensor whose shape differs from
the model built from the source's configuration is refused with both shapes named. Only the
probe is new: `r_proj` (W_R) and `r_norm` (its gain g).

Where the probe starts, and why. Our attention computes r = g * RMSNorm(W_R x) per head
(then RoPE). RMSNorm scales any non-zero W_R x to unit RMS, so the size of r is set by g,
not by W_R:
- `--wr-init zero` alone (g = 1, W_R = 0) gives r = 0 at step 0 (RMSNorm of 0 is 0), but
  the first update makes W_R x small and non-zero, RMSNorm blows it up to full size, and COR
  jumps in one step instead of growing.
- The retrofit therefore zeroes the gain, g = 0, and draws W_R as `--wr-init normal` does. Then
  r = 0 exactly at step 0; the gradient on g is sum over tokens of dL/dr * RMSNorm(W_R x),
  which is not 0, so ||r|| = ||g * RMSNorm(W_R x)|| grows from 0 as fast as the optimiser
  moves g, and W_R starts learning once g is non-zero (its gradient passes through g).
- `--wr-init zero` together with `--init-from` would zero both, and both gradients with them:
  r would stay 0 for ever. That combination is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, load_model_weights
from .config import ModelConfig, resolve_model_config
from .run_folder import CHECKPOINT_NAME, RUN_INFO_NAME, run_info_of


class RetrofitError(ValueError):
    """A checkpoint that cannot start a Parallax model; the message names it and the fix."""


@dataclass(frozen=True)
class SoftmaxSource:
    """A softmax model's configuration (as ours) and its tensors under our names."""

    path: Path
    config: ModelConfig
    tensors: dict[str, torch.Tensor]

    def parallax_config(self, **overrides) -> ModelConfig:
        """The source's shape with Parallax attention; `overrides` (window, backend, ...) on top."""
        return resolve_model_config(self.config, **{**overrides, "attention": "parallax"})

    def load_into(self, model: nn.Module) -> None:
        """Copy every source tensor into `model` (a ParallaxLM of this shape) and zero each r-norm gain."""
        own = model.state_dict()
        new = {name for name in own if ".r_proj." in name or ".r_norm." in name}
        missing = sorted(set(own) - new - set(self.tensors))
        extra = sorted(set(self.tensors) - set(own))
        if missing or extra:
            raise RetrofitError(f"--init-from {self.path}: its tensors do not match the model its configuration describes "
                                f"(missing: {missing[:3]}, unexpected: {extra[:3]})")
        for name, tensor in self.tensors.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise RetrofitError(f"--init-from {self.path}: {name} has shape {tuple(tensor.shape)}, but the configuration "
                                    f"makes it {tuple(own[name].shape)}; the checkpoint and its configuration disagree")
        with torch.no_grad():
            for name, tensor in self.tensors.items():
                own[name].copy_(tensor)
            for attention in model.attention_modules():
                nn.init.zeros_(attention.r_norm.weight)  # r = 0 * RMSNorm(W_R x) = 0 exactly (module docstring)

    def parallax_model(self, *, seed: int = 0, **overrides) -> nn.Module:
        """The retrofitted model: W_R drawn under `seed`, g = 0, every other tensor the source's."""
        from .model import ParallaxLM

        torch.manual_seed(seed)
        model = ParallaxLM(self.parallax_config(**overrides))
        self.load_into(model)
        return model


def softmax_source(path: str | Path) -> SoftmaxSource:
    """A parallax-probe softmax run (its folder or checkpoint), or a local Hugging Face Qwen3 folder."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return _qwen3_folder(path)
    checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
    if not checkpoint.is_file():
        raise RetrofitError(f"--init-from {path}: expected a softmax run folder (checkpoint.pt and run.json), its "
                            "checkpoint.pt, or a Hugging Face Qwen3 folder (config.json and *.safetensors)")
    return _our_checkpoint(checkpoint)


def _our_checkpoint(checkpoint: Path) -> SoftmaxSource:
    run_info = run_info_of(checkpoint)
    if run_info is None:
        raise RetrofitError(f"--init-from {checkpoint}: no {RUN_INFO_NAME} beside it (or in the folder above), so the "
                            "model's configuration is unknown")
    try:
        config = ModelConfig(**json.loads(run_info.read_text())["model_config"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise RetrofitError(f"--init-from {checkpoint}: no usable model_config in {run_info} ({error})") from None
    if config.attention != "softmax":
        raise RetrofitError(f"--init-from {checkpoint}: a {config.attention} model; --init-from converts a softmax model "
                            "(to continue a Parallax run, use --resume)")
    try:
        weights = load_model_weights(checkpoint)
    except CheckpointError as error:
        raise RetrofitError(f"--init-from {error}") from None
    return SoftmaxSource(checkpoint, config, weights)


# Hugging Face Qwen3 names -> ours ("{i}" is the layer index)
QWEN3_NAMES = {
    "model.embed_tokens.weight": "embed_tokens.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.input_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.post_attention_norm.weight",
    **{f"model.layers.{{i}}.self_attn.{p}.weight": f"layers.{{i}}.self_attn.{p}.weight"
       for p in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")},
    **{f"model.layers.{{i}}.mlp.{p}.weight": f"layers.{{i}}.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")},
}
_QWEN3_PATTERNS = [(re.compile(re.escape(theirs).replace(r"\{i\}", r"(\d+)") + "$"), ours) for theirs, ours in QWEN3_NAMES.items()]


def _our_name(name: str) -> str | None:
    for pattern, ours in _QWEN3_PATTERNS:
        match = pattern.match(name)
        if match:
            return ours.format(i=match.group(1)) if match.groups() else ours
    return None


def qwen3_config(config: dict, folder: Path) -> ModelConfig:
    """Our ModelConfig of a Hugging Face Qwen3 config.json; features our model lacks are refused."""
    def refuse(what: str) -> RetrofitError:
        return RetrofitError(f"--init-from {folder}: {what}; parallax-probe's model does not have it, so the converted model "
                             "would not compute what this one computes")

    if config.get("model_type") != "qwen3":
        raise RetrofitError(f"--init-from {folder}: model_type {str(config.get('model_type'))!r} is not 'qwen3'; a Hugging Face "
                            "folder must hold a Qwen3 softmax model (Qwen3ForCausalLM)")
    if config.get("attention_bias"):
        raise refuse("attention_bias is true")
    if config.get("use_sliding_window"):
        raise refuse("use_sliding_window is true")
    if config.get("hidden_act", "silu") != "silu":
        raise refuse(f"hidden_act is {config.get('hidden_act')!r}, not silu")
    rope = config.get("rope_parameters") or {}
    if (rope.get("rope_type") or "default") != "default" or config.get("rope_scaling"):
        raise refuse(f"RoPE scaling {rope.get('rope_type') or config.get('rope_scaling')!r}")
    try:
        return ModelConfig(
            vocab_size=config["vocab_size"], d_model=config["hidden_size"], n_layers=config["num_hidden_layers"],
            n_heads=config["num_attention_heads"], n_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            head_dim=config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"],
            mlp_hidden=config["intermediate_size"], rope_theta=float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
            rms_eps=float(config.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention="softmax", max_seq_len=int(config.get("max_position_embeddings") or 4096),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise RetrofitError(f"--init-from {folder / 'config.json'}: not a usable Qwen3 configuration ({error})") from None


def _qwen3_folder(folder: Path) -> SoftmaxSource:
    try:
        config = qwen3_config(json.loads((folder / "config.json").read_text()), folder)
    except json.JSONDecodeError as error:
        raise RetrofitError(f"--init-from {folder / 'config.json'}: not JSON ({error})") from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RetrofitError(f"--init-from {folder}: no *.safetensors weights (pickled .bin weights are not loaded: they can run code)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            loaded = load_file(file)
        except (SafetensorError, OSError) as error:
            raise RetrofitError(f"--init-from {file}: not a readable safetensors file ({error})") from None
        for name, tensor in loaded.items():
            ours = _our_name(name)
            if ours is None:
                raise RetrofitError(f"--init-from {file}: tensor {name} is not part of a Qwen3 decoder as parallax-probe maps it")
            tensors[ours] = tensor.float()
    if config.tie_embeddings:
        tensors.pop("lm_head.weight", None)  # the model ties it to the embedding; state_dict names both
        tensors["lm_head.weight"] = tensors.get("embed_tokens.weight")
    return SoftmaxSource(folder, config, {k: v for k, v in tensors.items() if v is not None})
