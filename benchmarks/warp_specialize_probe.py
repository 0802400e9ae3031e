"""Does Triton's automatic warp specialization (`tl.range(..., warp_specialize=True)`) give the
forward's loop FA3's producer/consumer split on sm_90, and does the result run?

The kernel is a sketch of kernels/parallel.py's forward loop (same math per tile, q, r, k, v
through tensor descriptors, no masks): query block i walks key blocks 0 .. i inclusive, each
unmasked. That is not causal attention, only its amount of work, so it is good for timing and
for comparing the warp-specialized build with the plain one, not for checking the kernel.

    pip install --target /tmp/t36 triton==3.6.0                            # the device's Triton
    PYTHONPATH=/tmp/t36:. python benchmarks/warp_specialize_probe.py build  # offline, any machine
    python benchmarks/warp_specialize_probe.py time                         # on the H200

`build` reports, per configuration, the warps the compiled kernel launches, its registers,
stack, `setmaxnreg` instructions and the loops' instruction mix. `time` runs each configuration
in a process of its own, killed after --timeout seconds (a warp-specialized kernel that
deadlocks would otherwise hang the GPU until the whole call times out), and prints its time and
its largest difference from the plain build's output. Findings: kernels/NOTES.md, version 7.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
import triton.language as tl

# (BM, BN, num_warps, num_stages, warp_specialize); the first is the forward's own tiles
CONFIGS = [(128, 64, 8, 3, False), (128, 64, 4, 2, True), (128, 64, 4, 3, True)]
SHAPE = (4, 16, 4096, 128)  # B, H, T, D
SCALE_LOG2 = 128**-0.5 * 1.4426950408889634


@triton.jit
def _sketch_forward(q_desc, r_desc, k_desc, v_desc, O, T, scale_log2,
                    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, WS: tl.constexpr):
    """Rows [bh * T + pid * BM, + BM) of [B * H * T, D] tensors against key blocks 0 .. pid."""
    pid = tl.program_id(0)
    first = tl.program_id(1) * T
    b_q = q_desc.load([first + pid * BM, 0])
    b_r = r_desc.load([first + pid * BM, 0])
    o1 = tl.zeros((BM, D), dtype=tl.float32)
    o2 = tl.zeros((BM, D), dtype=tl.float32)
    d1 = tl.zeros((BM,), dtype=tl.float32)
    mu = tl.zeros((BM,), dtype=tl.float32)
    m_i = tl.full((BM,), -1.0e30, dtype=tl.float32)
    for blk in tl.range(0, (pid + 1) * BM // BN, warp_specialize=WS):
        b_k = k_desc.load([first + blk * BN, 0])
        s = tl.dot(b_q, tl.trans(b_k))
        s2 = tl.dot(b_r, tl.trans(b_k))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2((m_i - m_new) * scale_log2)
        o1 = o1 * alpha[:, None]
        o2 = o2 * alpha[:, None]
        m_i = m_new
        p = tl.math.exp2(s * scale_log2 - (m_i * scale_log2)[:, None])
        ps2 = p * s2
        sum_p = tl.sum(p, 1)
        d1 = d1 * alpha + sum_p
        shift = (tl.sum(ps2, 1) - mu * sum_p) / d1
        mu = mu + shift
        o2 = o2 - shift[:, None] * o1
        b_v = v_desc.load([first + blk * BN, 0])
        o2 = tl.dot((ps2 - mu[:, None] * p).to(tl.bfloat16), b_v, o2)
        o1 = tl.dot(p.to(tl.bfloat16), b_v, o1)
    # a pointer store: the warp-specialized build splits the rows between two consumer
    # warpgroups, and a descriptor store of BM rows then fails to compile
    rows = first + pid * BM + tl.arange(0, BM)
    tl.store(O + rows[:, None] * D + tl.arange(0, D)[None, :], ((o1 - o2) / d1[:, None]).to(tl.bfloat16))


def build(config) -> str:
    """One line per configuration from an offline sm_90 build (no GPU needed)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sass_report import compiled_resources, describe, loops

    BM, BN, warps, stages, ws = config
    D = SHAPE[3]
    signature = {"q_desc": f"tensordesc<bf16[{BM},{D}]>", "r_desc": f"tensordesc<bf16[{BM},{D}]>",
                 "k_desc": f"tensordesc<bf16[{BN},{D}]>", "v_desc": f"tensordesc<bf16[{BN},{D}]>",
                 "O": "*bf16", "T": "i32", "scale_log2": "fp32",
                 "BM": "constexpr", "BN": "constexpr", "D": "constexpr", "WS": "constexpr"}
    constants = {"BM": BM, "BN": BN, "D": D, "WS": ws}
    try:
        compiled = triton.compile(ASTSource(_sketch_forward, signature, constants, attrs={(4,): [["tt.divisibility", 16]]}),
                                  target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    except Exception as error:  # the pass pipeline reports through a RuntimeError
        return f"{config}: does not compile ({type(error).__name__}: {str(error).splitlines()[0][:100]})"
    registers, stack, lines = compiled_resources(compiled, Path(tempfile.mkdtemp(prefix="ws-probe-")) / "sketch.cubin")
    # the tile loop: of the innermost loops, the one issuing the most matrix products (a
    # backward branch can also span the tile loop and the code after it; a warp-specialized
    # build has one tile loop per consumer warpgroup and the producer's loop of copies)
    spans = loops(lines)
    innermost = [(f, l) for f, l in spans if not any(f <= f2 and l2 <= l and (f2, l2) != (f, l) for f2, l2 in spans)]
    bodies = [[t for a, t in lines if first <= a <= last] for first, last in innermost]
    tile_loop = max(bodies, key=lambda b: (sum("HGMMA" in t for t in b), -len(b)), default=None)
    loop = describe(tile_loop) if tile_loop else "none found"
    setmaxnreg = sum("SETMAXREG" in t for _, t in lines)
    return (f"{config}: {compiled.metadata.num_warps} warps, {registers} registers, {stack} B stack, "
            f"{setmaxnreg} setmaxnreg; tile loop: {loop}")


def time_one(config, out: Path) -> None:
    """Time one configuration on the GPU and save its output; print ms and the difference from
    the plain build's output when that is already saved."""
    import torch
    from triton.testing import do_bench
    from triton.tools.tensor_descriptor import TensorDescriptor

    BM, BN, warps, stages, ws = config
    B, H, T, D = SHAPE
    g = torch.Generator(device="cuda").manual_seed(0)
    q, r, k, v = (torch.randn(B * H * T, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    o = torch.full_like(q, float("nan"))
    descs = [TensorDescriptor.from_tensor(t, [rows, D]) for t, rows in ((q, BM), (r, BM), (k, BN), (v, BN))]
    launch = lambda: _sketch_forward[(T // BM, B * H)](*descs, o, T, SCALE_LOG2, BM=BM, BN=BN, D=D, WS=ws,  # noqa: E731
                                                       num_warps=warps, num_stages=stages)
    ms = do_bench(launch, warmup=50, rep=300)
    plain = out / "plain.pt"
    if not ws:
        torch.save(o.cpu(), plain)
    diff = (o.cpu().float() - torch.load(plain).float()).abs().max().item() if plain.exists() else float("nan")
    print(f"| {config} | {ms:.3f} | {diff:.3g} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["build", "time", "time-one"])
    parser.add_argument("--timeout", type=float, default=45.0, help="time: seconds before a configuration's process is killed")
    parser.add_argument("--config", help=argparse.SUPPRESS)  # time-one: BM,BN,warps,stages,ws
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "build":
        for config in CONFIGS:
            print(build(config), flush=True)
    elif args.mode == "time-one":
        BM, BN, warps, stages, ws = map(int, args.config.split(","))
        time_one((BM, BN, warps, stages, bool(ws)), args.out)
    else:
        out = Path(tempfile.mkdtemp(prefix="ws-probe-"))
        print(f"sketch at (B, H, T, D) = {SHAPE}, triton {triton.__version__}\n")
        print("| BM, BN, warps, stages, warp_specialize | ms | max diff to the plain build |\n|---|---|---|")
        for config in CONFIGS:
            command = [sys.executable, __file__, "time-one", "--config", ",".join(str(int(x)) for x in config), "--out", str(out)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                print(done.stdout.strip() or f"| {config} | failed: {done.stderr.strip().splitlines()[-1][:100]} | |", flush=True)
            except subprocess.TimeoutExpired:
                print(f"| {config} | hung: killed after {args.timeout:g} s | |", flush=True)


if __name__ == "__main__":
    main()
