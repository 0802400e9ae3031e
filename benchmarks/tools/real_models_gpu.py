"""The probe on unmodified fla and parallax-kernel models on a GPU, in bf16: is what it records exact?

    python benchmarks/tools/real_models_gpu.py            # needs CUDA, fla and parallax-kernel; prints markdown

For each case the q, r, k, v (and window, boundaries) that every layer passes to its attention
op are captured where the layer looks the op up, the statistics are computed from them in
float64, and the probe's recorded per-head COR and sums are compared with them: the largest
relative error over layers and heads. Cases: fla's ParallaxForCausalLM with random weights
(W_R drawn at std 0.05) and after a few hundred training steps on byte-level text, in train
mode (fla's parallel kernel, served by ours at logging steps) and eval mode with the default
cache (fla's decode kernel, statistics beside it); models calling the official parallax_func
and parallax_varlen_func. Then the training check: 20 steps with and without the probe
(every=5) from the same weights and data, and whether a non-logging step computes
bit-identically to the unprobed model.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from parallax import parallax_func, parallax_varlen_func  # bound here: the layout finds them in this module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from probe_expectations import CapturedCalls, float64_rows, head_stats

from parallax_probe import Probe, open_run

COMPARED = ("cor_mean", "cor_p50", "cor_p90", "sum_osm_sq", "sum_c_sq", "probe_norm_mean")
FLA_OPS = ("parallel_parallax", "parallax_decode", "parallax_decode_one_step")


def fla_model(*, layers, hidden, heads, kv_heads=None, qk_norm, window=None, wr_std=None, seed=0):
    from fla.models import ParallaxConfig, ParallaxForCausalLM

    torch.manual_seed(seed)
    config = ParallaxConfig(hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads, num_hidden_layers=layers,
                            qk_norm=qk_norm, window_size=window, vocab_size=256)
    model = ParallaxForCausalLM(config).cuda()
    if wr_std is not None:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.attn.r_proj.weight.normal_(0.0, wr_std)
    return model


def byte_batches(batch, seq_len, seed):
    """Byte-level text: the Python standard library's sources (on every machine with Python)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    data = torch.frombuffer(bytearray(b"".join(f.read_bytes() for f in files)), dtype=torch.uint8)
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=g)
        yield torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()]).long().cuda()


def train(model, steps, batch=8, seq_len=1024, lr=1e-3, seed=0):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = byte_batches(batch, seq_len, seed)
    model.train()
    for step in range(steps):
        if step % 50 == 0:
            print(f"  training step {step}/{steps}", file=sys.stderr, flush=True)
        tokens = next(batches)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(tokens[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(loss)


def recorded_error(run, calls, layer_count, row=0, expected_rows=None) -> tuple[float, float]:
    """(max relative error over layers and heads of COR and the sums, max layer COR)."""
    worst, cor = 0.0, 0.0
    for layer in range(layer_count):
        expected = head_stats(expected_rows(calls[layer]))
        for name in COMPARED:
            got, want = run[f"attn/{name}"][row, layer], expected[name]
            worst = max(worst, float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12))))
        cor = max(cor, float(np.nanmean(expected["cor_mean"])))
    return worst, cor


def fla_rows(call):
    name, args, kwargs = call
    if name == "parallel_parallax":
        return float64_rows(*args[:4], window=kwargs.get("window_size"), cu_seqlens=kwargs.get("cu_seqlens"))
    # a cached prefill without padding: the queries are all the cache's positions
    assert kwargs.get("cache_start") is None and args[0].shape[1] == args[2].shape[1], "unpadded prefill only here"
    return float64_rows(*args[:4], window=kwargs.get("window_size"))


def check_fla(model, tokens, mode, folder) -> tuple[float, float, str]:
    import fla.layers.parallax as fla_layer

    model.train(mode == "train")
    with torch.autocast("cuda", dtype=torch.bfloat16), Probe(model, folder, every=1, spectra_every=100) as probe:
        captured = CapturedCalls(fla_layer, FLA_OPS)
        try:
            with probe.step(0), torch.no_grad():
                model(tokens, use_cache=(mode == "eval"))
        finally:
            captured.restore()
    run = open_run(folder)
    ops = sorted({name for name, _, _ in captured.calls})
    error, cor = recorded_error(run, captured.calls, len(model.model.layers), expected_rows=fla_rows)
    return error, cor, ",".join(ops)


class OfficialAttention(nn.Module):
    def __init__(self, hidden=512, heads=8, kv_heads=4, varlen=False):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.varlen = heads, kv_heads, hidden // heads, varlen
        self.q_proj, self.r_proj = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)
        self.cu_seqlens = None

    def forward(self, x):
        B, T, _ = x.shape

        def split(t, h):
            return F.rms_norm(t.view(B, T, h, self.head_dim), (self.head_dim,))

        q, r, k = split(self.q_proj(x), self.num_heads), split(self.r_proj(x), self.num_heads), split(self.k_proj(x), self.num_kv_heads)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.varlen:
            o = parallax_varlen_func(q, r, k, v, cu_seqlens=self.cu_seqlens)
        else:
            o = parallax_func(*(t.transpose(1, 2) for t in (q, r, k, v))).transpose(1, 2)
        return self.o_proj(o.reshape(B, T, -1))


def check_official(varlen, folder) -> tuple[float, float]:
    torch.manual_seed(1)
    layers = nn.Sequential(*(OfficialAttention(varlen=varlen) for _ in range(3))).cuda().to(torch.bfloat16)
    with torch.no_grad():
        for layer in layers:
            layer.r_proj.weight.mul_(4.0)
    x = torch.randn(1 if varlen else 2, 2048 if varlen else 1024, 512, device="cuda", dtype=torch.bfloat16)
    for layer in layers:
        layer.cu_seqlens = torch.tensor([0, 300, 1301, 2048], dtype=torch.int32, device="cuda")
    name = "parallax_varlen_func" if varlen else "parallax_func"
    with Probe(layers, folder, every=1, spectra_every=100) as probe:
        captured = CapturedCalls(sys.modules[__name__], [name])  # where the layer's code looks it up
        try:
            with probe.step(0), torch.no_grad():
                layers(x)
        finally:
            captured.restore()
    run = open_run(folder)

    def rows(call):
        _, args, kwargs = call
        if varlen:
            return float64_rows(*args[:4], cu_seqlens=kwargs["cu_seqlens"])
        return float64_rows(*(t.transpose(1, 2) for t in args[:4]))

    return recorded_error(run, captured.calls, 3, expected_rows=rows)


def training_check(folder) -> dict:
    """20 steps with and without the probe from the same weights and data; one non-logging step's logits."""
    def fresh():
        return fla_model(layers=4, hidden=512, heads=8, kv_heads=4, qk_norm=True, wr_std=0.05, seed=5)

    def run(probe_every):
        model = fresh()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batches = byte_batches(8, 1024, seed=6)
        probe = Probe(model, folder / f"every{probe_every}", every=probe_every, spectra_every=100) if probe_every else None
        losses = []
        for step in range(20):
            tokens = next(batches)
            with (probe.step(step) if probe else torch.enable_grad()), torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(tokens[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss))
        if probe:
            probe.close()
        return losses

    plain, probed = run(0), run(5)
    model = fresh()
    tokens = next(byte_batches(4, 1024, seed=7))
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        reference = model(tokens, use_cache=False).logits
        with Probe(model, folder / "identity", every=5, spectra_every=100) as probe:
            with probe.step(1):
                skipped = model(tokens, use_cache=False).logits
            with probe.step(5):
                served = model(tokens, use_cache=False).logits
    return {
        "losses without probe": plain, "losses with probe every=5": probed,
        "max relative loss difference": max(abs(a - b) / abs(a) for a, b in zip(plain, probed)),
        "non-logging step bit-identical": bool(torch.equal(skipped, reference)),
        "logging step logits, max relative difference": float((served.float() - reference.float()).norm() / reference.float().norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="training,random,trained,official", help="comma-separated, run in this order")
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="real-models-"))
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    for part in args.parts.split(","):
        PARTS[part](folder, args)


def part_training(folder, args) -> None:
    print("\ntraining check (fla 4x512, qk_norm, GQA 4, AdamW, bf16 autocast, batch 8x1024):")
    for key, value in training_check(folder).items():
        print(f"- {key}: {np.round(value, 5).tolist() if isinstance(value, list) else value}", flush=True)


TABLE_HEADER = (
    "\n| model | weights | mode | ops seen | layer COR (max) | max rel. error, COR and sums per head |\n|---|---|---|---|---|---|"
)


def part_random(folder, args) -> None:
    print(TABLE_HEADER)
    cases = [
        ("fla qk_norm MHA", dict(qk_norm=True)),
        ("fla no norm GQA(2)", dict(qk_norm=False, kv_heads=2)),
        ("fla qk_norm window 64", dict(qk_norm=True, window=64)),
    ]
    tokens = torch.randint(0, 256, (2, 1024), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for i, (name, options) in enumerate(cases):
        model = fla_model(layers=3, hidden=256, heads=4, wr_std=0.05, seed=i, **options)
        for mode in ("train", "eval"):
            error, cor, ops = check_fla(model, tokens, mode, folder / f"random-{i}-{mode}")
            print(f"| {name}, 3x256 | random (W_R std 0.05) | {mode} | {ops} | {cor:.2f} | {100 * error:.3f}% |", flush=True)


def part_trained(folder, args) -> None:
    print(TABLE_HEADER)
    for i, (name, options) in enumerate([("fla qk_norm GQA(4)", dict(qk_norm=True, kv_heads=4)), ("fla no norm MHA", dict(qk_norm=False))]):
        model = fla_model(layers=6, hidden=512, heads=8, seed=10 + i, **options)
        loss = train(model, args.train_steps, seed=i)
        text = next(byte_batches(2, 1024, seed=99))[:, :-1]
        for mode in ("train", "eval"):
            error, cor, ops = check_fla(model, text, mode, folder / f"trained-{i}-{mode}")
            print(
                f"| {name}, 6x512 | {args.train_steps} AdamW steps (loss {loss:.2f}) | {mode} | {ops} | {cor:.2f} | {100 * error:.3f}% |",
                flush=True,
            )


def part_official(folder, args) -> None:
    print(TABLE_HEADER)
    for varlen in (False, True):
        error, cor = check_official(varlen, folder / f"official-{varlen}")
        label = "parallax_varlen_func, 3 documents in 2048" if varlen else "parallax_func, 2x1024"
        print(
            f"| parallax-kernel {label} | random | no_grad | {'varlen' if varlen else 'func'} | {cor:.2f} | {100 * error:.3f}% |",
            flush=True,
        )


PARTS = {"training": part_training, "random": part_random, "trained": part_trained, "official": part_official}

if __name__ == "__main__":
    main()
