"""`parallax-probe trace`: every recorded quantity against float64 from the definitions, the file, the CLI.

Seeds: the models are built under torch.manual_seed(SEED); token ids come from numpy's
default_rng(SEED).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from parallax_probe import build_model
from parallax_probe import train as training
from parallax_probe.cli import main
from parallax_probe.hooks import trace as hooks_trace
from parallax_probe.hooks.trace import capture_attention_calls
from parallax_probe.store import open_run
from parallax_probe.trace import PER_TOKEN, Tokens, trace_model, write_trace

SEED = 21


def definitions_float64(call):
    """docs/definitions.md sections 1 and 3, token by token in numpy float64, with c in its
    covariance form (c_i = -Sigma_i^T r_i), not the form the trace code uses."""
    q, r, k, v = (t[0].detach().double().numpy() for t in (call.q, call.r, call.k, call.v))  # (T, H, D)
    T, H, D = q.shape
    group = H // k.shape[1]
    scale = D**-0.5 if call.scale is None else call.scale
    out = {name: np.zeros((H, T)) for name in PER_TOKEN}
    p_maps, w_maps, fractions, o = np.zeros((H, T, T)), np.zeros((H, T, T)), np.zeros(H), np.zeros((H, T, D))
    for h in range(H):
        negative, pairs = 0, 0
        for i in range(T):
            lo = 0 if call.window is None else max(0, i - call.window + 1)
            keys = np.arange(lo, i + 1)
            k_, v_ = k[keys, h // group], v[keys, h // group]
            s1 = k_ @ q[i, h] * scale
            p = np.exp(s1 - s1.max())
            p /= p.sum()
            s2 = k_ @ r[i, h]
            tbar = p @ s2
            kbar, o_sm = p @ k_, p @ v_
            sigma = (p[:, None] * (k_ - kbar)).T @ (v_ - o_sm)  # (D, D)
            c = -sigma.T @ r[i, h]
            w = p * (1 + tbar - s2)
            np.testing.assert_allclose(w.sum(), 1.0, atol=1e-12)  # the effective weights sum to 1
            o[h, i] = w @ v_
            np.testing.assert_allclose(o[h, i], o_sm + c, atol=1e-10 * (1 + np.abs(o_sm + c).max()))
            values = dict(cor=np.linalg.norm(c) / np.linalg.norm(o_sm), osm_norm=np.linalg.norm(o_sm), c_norm=np.linalg.norm(c),
                          r_norm=np.linalg.norm(r[i, h]), tbar=tbar, negative_mass=-w[w < 0].sum(),
                          sink_p=p[0] if keys[0] == 0 else 0.0, sink_w=w[0] if keys[0] == 0 else 0.0)
            for name, value in values.items():
                out[name][h, i] = value
            p_maps[h, i, keys], w_maps[h, i, keys] = p, w
            negative += int((w < 0).sum())
            pairs += len(keys)
        fractions[h] = negative / pairs
    return out, fractions, p_maps, w_maps, o


@pytest.mark.parametrize(("window", "block"), [(None, 256), (None, 7), (5, 7)], ids=["causal", "causal-blocks7", "window5-blocks7"])
def test_every_traced_quantity_matches_float64_definitions(window, block, tmp_path, monkeypatch):
    monkeypatch.setattr(hooks_trace, "QUERY_BLOCK", block)  # 23 tokens: one block, or four with a short last one
    torch.manual_seed(SEED)
    model = build_model("tiny", vocab_size=40, window=window).eval()  # 4 query heads over 2 key heads (GQA)
    ids = np.random.default_rng(SEED).integers(0, 40, 23)  # a length that is no block size
    trace = trace_model(model, ids, maps="all")
    calls = capture_attention_calls(model, torch.as_tensor(ids)[None])
    assert trace.maps == [(layer, head) for layer in range(2) for head in range(4)]
    for layer, (_, call) in enumerate(calls):
        expected, fractions, p_maps, w_maps, o = definitions_float64(call)
        for name in PER_TOKEN:
            np.testing.assert_allclose(trace.per_token[name][layer], expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(trace.negative_fraction[layer], fractions, rtol=1e-12)
        assert (fractions > 0).all() and (expected["negative_mass"] > 0).any()  # the case the test is about
        np.testing.assert_allclose(trace.p[layer * 4 : layer * 4 + 4], p_maps, atol=1e-7)  # stored in float32
        np.testing.assert_allclose(trace.w[layer * 4 : layer * 4 + 4], w_maps, atol=1e-7)
        np.testing.assert_allclose(trace.w[layer * 4 : layer * 4 + 4].sum(-1), 1.0, atol=1e-5)
        # sum_j w_ij v_j is the attention output the model itself computed
        model_out = model.layers[layer].self_attn
        from parallax_probe.kernels import parallax_attention_reference

        theirs = parallax_attention_reference(call.q.double(), call.r.double(), call.k.double(), call.v.double(),
                                              scale=model_out.head_dim**-0.5, window=window)
        np.testing.assert_allclose(o.transpose(1, 0, 2), theirs[0].numpy(), atol=1e-9)

    path = write_trace(tmp_path / "trace.h5", trace, Tokens(ids=ids, text=[str(i) for i in ids], display="ids"))
    run = open_run(path)
    assert run.meta["kind"] == "token-trace" and run.meta["maps"] == [list(p) for p in trace.maps]
    np.testing.assert_array_equal(run["tokens/step"], np.arange(23))
    np.testing.assert_array_equal(run["tokens/token_id"], ids)
    for name in PER_TOKEN:
        np.testing.assert_allclose(run[f"tokens/{name}"], trace.per_token[name].transpose(2, 0, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(run.read("maps/w", select=(5,))["maps/w"], trace.w[5], rtol=1e-7)
    summary = trace.head_summary()
    np.testing.assert_allclose(run["heads/sink_p_mean"][0], trace.per_token["sink_p"][..., 1:].mean(-1), rtol=1e-6)
    np.testing.assert_allclose(run["heads/negative_fraction"][0], summary["negative_fraction"], rtol=1e-6)


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
    """A tiny byte-level model trained 2 steps on a text file (its run.json says text:)."""
    folder = tmp_path_factory.mktemp("trace")
    (folder / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    training.train(training.TrainConfig(
        preset="tiny", task=f"text:{folder / 'text.txt'}", seq_len=32, batch_size=4, steps=2, probe_every=0, log_every=1,
        eval_every=1000, checkpoint_every=2, progress=False, device="cpu", out=str(folder / "run"), seed=SEED,
    ))
    return folder / "run"


def test_the_cli_traces_a_prompt_of_a_byte_level_model(byte_run, tmp_path):
    out = tmp_path / "t.h5"
    result = run_cli("trace", str(byte_run), "--prompt", "hi\nthere é", "--out", str(out))
    assert result.returncode == 0, result.stderr
    run = open_run(out)
    assert run.meta["token_display"] == "bytes"
    assert run.meta["token_text"] == ["h", "i", "\\n", "t", "h", "e", "r", "e", " ", "\\xc3", "\\xa9"]
    assert run["tokens/cor"].shape == (11, 2, 4) and np.isfinite(run["tokens/cor"]).all()
    assert run.meta["maps"] == [[layer, head] for layer in range(2) for head in range(4)]  # auto: small enough for all


def test_a_tokens_file_and_chosen_maps(byte_run, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("104\n105\n 32 116\n")
    out = tmp_path / "t.h5"
    assert run_cli("trace", str(byte_run), "--tokens", str(ids), "--out", str(out), "--maps", "1:2,0").returncode == 0
    run = open_run(out)
    assert run.meta["maps"] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 2]]
    np.testing.assert_array_equal(run["tokens/token_id"], [104, 105, 32, 116])
    np.save(tmp_path / "ids.npy", np.array([[1, 2], [3, 4]], dtype=np.int32))
    assert main(["trace", str(byte_run), "--tokens", str(tmp_path / "ids.npy"), "--out", str(tmp_path / "n.h5")]) == 0
    np.testing.assert_array_equal(open_run(tmp_path / "n.h5")["tokens/token_id"], [1, 2, 3, 4])


def _pickled_npy(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda d: (d / "ids.txt").write_text("1 2 x"), ["--tokens", "ids.txt"], "integer token ids"),
        (lambda d: (d / "ids.txt").write_text("1 2 999"), ["--tokens", "ids.txt"], "token id 999 is outside"),
        (lambda d: (d / "ids.txt").write_text(""), ["--tokens", "ids.txt"], "holds no token ids"),
        (lambda d: _pickled_npy(d / "ids.npy"), ["--tokens", "ids.npy"], "not a readable .npy"),
        (lambda d: (d / "out.h5").write_bytes(b"x"), ["--prompt", "hi"], "exists; pass --overwrite"),
        (lambda d: None, ["--prompt", "hi", "--maps", "2:0"], "layers 0 to 1"),
        (lambda d: None, ["--prompt", "hi", "--maps", "one"], "expected auto, all, none"),
        (lambda d: None, ["--prompt", ""], "--prompt is empty"),
    ],
    ids=["not-ids", "outside-vocab", "empty", "pickle", "out-exists", "map-range", "map-syntax", "empty-prompt"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(byte_run, tmp_path, monkeypatch, capsys, make, args, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["trace", str(byte_run), *args, "--out", "out.h5"]) == 2  # in-process: the CLI's own entry point
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_model_without_a_tokenizer_refuses_a_prompt(byte_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(byte_run, run)
    info = json.loads((run / "run.json").read_text())
    info["task"]["name"] = "in-context-recall"  # not byte-level: ids only
    (run / "run.json").write_text(json.dumps(info))
    assert main(["trace", str(run), "--prompt", "hi", "--out", str(tmp_path / "t.h5")]) == 2
    assert "--tokens FILE" in capsys.readouterr().err and not (tmp_path / "t.h5").exists()


def test_an_fla_model_from_a_save_pretrained_folder_with_its_tokenizer(tmp_path):
    pytest.importorskip("fla")
    import fla.layers.parallax as fla_layer
    from fla_on_cpu import fla_kernels_on_cpu, tiny_fla_model, torch_rms_norms
    from tokenizers import Tokenizer, models, pre_tokenizers

    from parallax_probe import load_model
    from parallax_probe.trace import TokenText

    folder = tmp_path / "hf"
    tiny_fla_model(qk_norm=True, num_kv_heads=2, seed=SEED).save_pretrained(folder)
    words = ["the", "cat", "sat", "on", "mat", "[UNK]"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))

    text = TokenText.for_model(folder)
    ids = text.encode("the cat sat on the mat dog")
    assert text.kind == "tokenizer.json" and text.show(ids) == ["the", "cat", "sat", "on", "the", "mat", "[UNK]"]
    model = load_model(folder)
    torch_rms_norms(model)
    outputs = []
    with fla_kernels_on_cpu():
        trace = trace_model(model, ids, maps="all")
        calls = capture_attention_calls(model, torch.as_tensor(ids)[None])
        own = fla_layer.parallel_parallax

        def recording(*args, **kwargs):
            outputs.append(own(*args, **kwargs))
            return outputs[-1]

        fla_layer.parallel_parallax = recording  # fla_kernels_on_cpu puts the original back
        model(input_ids=torch.as_tensor(ids)[None], use_cache=False)
    for layer, (_, call) in enumerate(calls):
        expected, _, _, w_maps, o = definitions_float64(call)
        for name in PER_TOKEN:
            np.testing.assert_allclose(trace.per_token[name][layer], expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
        # the effective weights reproduce fla's own attention output (float32 there)
        np.testing.assert_allclose(o.transpose(1, 0, 2), outputs[layer][0].detach().double().numpy(), rtol=1e-4, atol=1e-5)
    assert trace.per_token["r_norm"].min() > 0 and json.dumps(trace.maps)
