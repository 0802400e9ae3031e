"""`parallax-probe train --init-from`: a softmax model (ours, or Hugging Face Qwen3) becomes a Parallax
model that computes the same logits at step 0, then grows its probe from exactly 0.

Seeds: models are built under torch.manual_seed(SEED); batches come from torch.Generator seeded SEED.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from parallax_probe import load_model
from parallax_probe import train as training
from parallax_probe.cli import main
from parallax_probe.retrofit import RetrofitError, softmax_source
from parallax_probe.store import COR_MEAN, open_run

SEED = 7
TEXT = "a retrofit keeps what the softmax model computed and lets the probe grow. " * 30


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retrofit")
    (folder / "text.txt").write_text(TEXT)
    training.train(training.TrainConfig(
        preset="tiny", model_overrides={"attention": "softmax"}, task=f"text:{folder / 'text.txt'}", seq_len=32, batch_size=4,
        steps=3, log_every=1, eval_every=1000, checkpoint_every=3, keep_checkpoints=3, progress=False, device="cpu",
        out=str(folder / "softmax"), seed=SEED,
    ))
    return folder / "softmax"


def batch(vocab: int, shape=(3, 29)) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(SEED))


def test_our_softmax_run_converts_to_a_parallax_model_with_the_same_logits(softmax_run):
    softmax = load_model(softmax_run)
    parallax = softmax_source(softmax_run).parallax_model(seed=SEED, attention_backend="reference")
    assert softmax.config.attention == "softmax" and parallax.config.attention == "parallax"
    x = batch(256)
    with torch.no_grad():
        expected, got = softmax(x), parallax(x)
    # SDPA against the reference's einsums: the same sums in another order, so float32 rounding apart
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    for attention in parallax.attention_modules():
        assert torch.count_nonzero(attention.r_norm.weight) == 0 and attention.r_proj.weight.abs().min() > 0


def test_a_kept_checkpoint_converts_and_one_without_run_json_is_refused(softmax_run, tmp_path):
    kept = softmax_run / "checkpoints" / "step-3.pt"  # its run.json is one folder up
    parallax = softmax_source(kept).parallax_model(seed=SEED, attention_backend="reference")
    x = batch(256)
    with torch.no_grad():
        np.testing.assert_allclose(parallax(x).numpy(), load_model(kept)(x).numpy(), rtol=1e-5, atol=1e-5)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    alone = shutil.copy(kept, tmp_path / "deep" / "er" / "step-3.pt")
    with pytest.raises(RetrofitError, match=r"no run\.json beside it \(or in the folder above\)"):
        softmax_source(alone)


def qwen3_folder(folder, **changes):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(SEED)
    shape = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=128, tie_word_embeddings=False)
    config = Qwen3Config(**{**shape, **changes})
    model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms, so a missed or misplaced one shows
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_a_hugging_face_qwen3_folder_converts_with_the_same_logits(tmp_path, tied):
    pytest.importorskip("transformers")
    qwen3 = qwen3_folder(tmp_path / "qwen3", **({"tie_word_embeddings": True} if tied else {}))
    parallax = softmax_source(tmp_path / "qwen3").parallax_model(seed=SEED, attention_backend="reference")
    assert parallax.config.tie_embeddings is tied
    x = batch(300)
    with torch.no_grad():
        expected, got = qwen3(x).logits, parallax(x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_a_shape_mismatch_is_refused_with_both_shapes(tmp_path):
    pytest.importorskip("transformers")
    qwen3_folder(tmp_path / "qwen3")
    config = json.loads((tmp_path / "qwen3" / "config.json").read_text())
    config["intermediate_size"] = 80
    (tmp_path / "qwen3" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        RetrofitError, match=r"mlp\.\w+_proj\.weight has shape \((96, 64|64, 96)\), but the configuration makes it \((80, 64|64, 80)\)"
    ):
        softmax_source(tmp_path / "qwen3").parallax_model()


def test_training_from_a_softmax_run_starts_at_cor_0_and_grows(softmax_run, tmp_path):
    out = tmp_path / "retrofit"
    assert main(["train", "--init-from", str(softmax_run), "--task", f"text:{softmax_run.parent / 'text.txt'}", "--seq-len", "32",
                 "--batch-size", "4", "--steps", "4", "--probe-every", "1", "--spectra-every", "2", "--optimizer", "adamw",
                 "--warmup-steps", "0", "--no-progress", "--device", "cpu", "--out", str(out), "--seed", str(SEED)]) == 0
    run = open_run(out)
    cor, gain = run[COR_MEAN], run["attn/probe_gain_norm"]  # (steps, L, H), (steps, L)
    assert (cor[0] == 0).all() and (gain[0] == 0).all()  # step 0: exactly the softmax model
    assert (cor[1:] > 0).all() and (np.diff(gain, axis=0) > 0).all()  # then the probe grows from 0
    assert cor[1].max() < 0.1  # ... gradually: one step of the gain, not a jump to full size
    assert json.loads((out / "run.json").read_text())["train_config"]["init_from"] == str(softmax_run)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--wr-init", "zero"], "drop --wr-init zero"),
        (["--attention", "softmax"], "drop --attention softmax"),
    ],
    ids=["wr-init-zero", "softmax"],
)
def test_combinations_that_cannot_retrofit_are_refused(softmax_run, tmp_path, capsys, extra, message):
    code = main(["train", "--init-from", str(softmax_run), *extra, "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_parallax_run_is_not_a_softmax_source(softmax_run, tmp_path, capsys):
    parallax_run = tmp_path / "parallax"
    shutil.copytree(softmax_run, parallax_run)
    info = json.loads((parallax_run / "run.json").read_text())
    info["model_config"]["attention"] = "parallax"
    (parallax_run / "run.json").write_text(json.dumps(info))
    assert main(["train", "--init-from", str(parallax_run), "--task", f"text:{softmax_run.parent / 'text.txt'}", "--steps", "2",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "use --resume" in capsys.readouterr().err and not (tmp_path / "r").exists()
