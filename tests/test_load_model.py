"""`parallax_probe.load_model`: our run folders and checkpoints, fla Hugging Face folders, and refusals."""

from __future__ import annotations

import json
import os

import pytest
import torch

from parallax_probe import load_model
from parallax_probe import train as training
from parallax_probe.load import ModelLoadError
from parallax_probe.model import ParallaxLM


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("load") / "run"
    training.train(training.TrainConfig(
        preset="tiny", seq_len=16, batch_size=4, steps=3, probe_every=0, log_every=1, eval_every=1000,
        checkpoint_every=3, progress=False, device="cpu", out=str(out), seed=5,
    ))
    return out


def test_a_run_folder_and_its_checkpoint_load_the_trained_weights(trained_run):
    saved = torch.load(trained_run / "checkpoint.pt", weights_only=True)["model"]
    for path in (trained_run, trained_run / "checkpoint.pt"):
        model = load_model(path)
        assert isinstance(model, ParallaxLM) and not model.training
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, saved[name]), name


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(trained_run, tmp_path, monkeypatch):
    planted = tmp_path / "run"
    planted.mkdir()
    (planted / "run.json").write_text((trained_run / "run.json").read_text())
    torch.save({"model": _RunsCode()}, planted / "checkpoint.pt")  # torch.save pickles whatever it is given
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="refused: it asks to run posix.system"):
        load_model(planted)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "not a model parallax-probe can load"),
        (lambda d: (d / "checkpoint.pt").write_bytes(b"\x00"), "no run.json beside it"),
        (lambda d: ((d / "checkpoint.pt").write_bytes(b"\x00"), (d / "run.json").write_text("{}")), "no usable model_config"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama"})), "is not fla's 'parallax'"),
        (
            lambda d: ((d / "config.json").write_text(json.dumps({"model_type": "parallax"})), (d / "pytorch_model.bin").write_bytes(b"")),
            "no \\*.safetensors",
        ),
    ],
)
def test_paths_without_a_loadable_model_get_one_clear_error(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(ModelLoadError, match=message):
        load_model(tmp_path)


def test_an_fla_hugging_face_folder_loads_with_its_weights(tmp_path):
    pytest.importorskip("fla")
    from fla_on_cpu import fla_kernels_on_cpu, tiny_fla_model, torch_rms_norms

    model = tiny_fla_model(qk_norm=True, num_kv_heads=2, seed=3)
    model.save_pretrained(tmp_path / "hf")  # safetensors, as transformers writes by default
    loaded = load_model(tmp_path / "hf")
    assert type(loaded).__name__ == "ParallaxForCausalLM" and not loaded.training
    torch_rms_norms(loaded)
    x = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(4))
    with fla_kernels_on_cpu():
        assert torch.equal(loaded(x, use_cache=False).logits, model(x, use_cache=False).logits)
