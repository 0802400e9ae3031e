"""`load_model(path)`: a Parallax model from a file or folder, without running code from it.

Two kinds of path:
- parallax-probe's own: a run folder (`checkpoint.pt` beside `run.json`, as `parallax-probe
  train` writes them) or its `checkpoint.pt`. The model is rebuilt from run.json's
  model_config and the weights are read by `checkpoint.load_model_weights`, which refuses any
  pickle that would construct other objects. The weights `train --keep-checkpoints` keeps
  (`checkpoints/step-N.pt`) load too: their run.json is one folder up.
- a local Hugging Face folder of an fla Parallax model (`config.json` with model_type
  "parallax", weights in `*.safetensors`): `AutoModelForCausalLM.from_pretrained` with fla
  imported, safetensors only, local files only, never `trust_remote_code`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, load_model_weights
from .run_folder import CHECKPOINT_NAME, RUN_INFO_NAME, run_info_of


class ModelLoadError(ValueError):
    """A path that does not hold a model this function can load safely; the message says why."""


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """The model stored at `path`, in eval mode on `device`."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        model = _load_hugging_face_folder(path)
    elif path.is_dir() and (path / CHECKPOINT_NAME).is_file():
        model = _load_our_checkpoint(path / CHECKPOINT_NAME)
    elif path.is_file() and path.suffix == ".pt":
        model = _load_our_checkpoint(path)
    else:
        raise ModelLoadError(
            f"{path}: not a model parallax-probe can load: expected a run folder (checkpoint.pt and run.json), "
            "a checkpoint.pt, or a Hugging Face folder (config.json and *.safetensors)"
        )
    return model.to(device).eval()


def _load_our_checkpoint(checkpoint: Path) -> nn.Module:
    from .config import ModelConfig
    from .model import ParallaxLM

    run_info = run_info_of(checkpoint)
    if run_info is None:
        raise ModelLoadError(f"{checkpoint}: no {RUN_INFO_NAME} beside it (or in the folder above), so the model's "
                             "configuration is unknown")
    try:
        model_config = json.loads(run_info.read_text())["model_config"]
        config = ModelConfig(**model_config)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"{run_info}: no usable model_config ({error})") from None
    try:
        weights = load_model_weights(checkpoint)
    except CheckpointError as error:
        raise ModelLoadError(str(error)) from None
    model = ParallaxLM(config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ModelLoadError(f"{checkpoint}: its weights do not fit the model in {RUN_INFO_NAME}: {str(error).splitlines()[0]}") from None
    return model


def _load_hugging_face_folder(folder: Path) -> nn.Module:
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{folder / 'config.json'}: not JSON ({error})") from None
    if config.get("model_type") != "parallax":
        raise ModelLoadError(
            f"{folder}: model_type {str(config.get('model_type'))!r} is not fla's 'parallax'; parallax-probe loads fla "
            "Parallax models (other models: load them yourself and pass them to Probe with a Layout)"
        )
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{folder}: no *.safetensors weights (pickled .bin weights are not loaded: they can run code)")
    try:
        import fla  # noqa: F401  (registers fla's model types with transformers' Auto classes)
        from transformers import AutoModelForCausalLM
    except ImportError as error:
        raise ModelLoadError(
            f"{folder}: loading an fla model needs flash-linear-attention: pip install 'parallax-probe[fla]' ({error})"
        ) from None
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, use_safetensors=True, local_files_only=True)
