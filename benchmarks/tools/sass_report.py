"""Build one of the Triton kernels for sm_90 on a machine without a GPU and report what the
H200 would run: registers, stack (spills), shared memory, and per loop the SASS instructions of
one iteration by kind (wgmma, barriers, spills, ...; an outer loop's count holds its inner
loops), plus the code before and after the loops.

    pip install --target /tmp/t36 triton==3.6.0          # the device's Triton, once
    PYTHONPATH=/tmp/t36:. python benchmarks/tools/sass_report.py forward --head-dim 128 --tiles 128,64,8,3 --stats
    PYTHONPATH=/tmp/t36:. python benchmarks/tools/sass_report.py kv --head-dim 128 --tiles 32,64,4,3 --varlen
    PYTHONPATH=/tmp/t36:. python benchmarks/tools/sass_report.py dq --head-dim 64 --tiles 64,64,4,3 --sass-out /tmp/a

Use the device's Triton version: another one builds different code (kernels/NOTES.md,
version 3). `--sass-out DIR` writes the SASS with addresses blanked, so that two builds of a
refactored kernel can be compared with `diff` (same SASS: same speed, no GPU call needed).
The pointer arguments get the 16-byte divisibility hints the JIT gives real tensors; without
them every kernel reports spills it does not have.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import Counter
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from parallax_probe.kernels import parallel
from parallax_probe.kernels.parallel import TileConfig

# what one iteration of a loop is made of: label -> SASS opcode pattern
KINDS = {
    "HGMMA": r"HGMMA", "BAR": r"\bBAR\b", "WARPGROUP": r"WARPGROUP", "LDL/STL": r"\bLDL|\bSTL",
    "MUFU": r"MUFU", "FFMA": r"\bFFMA\b", "FMUL": r"\bFMUL\b", "F2F": r"F2FP|\bF2F\b",
    "SHFL": r"SHFL", "STS": r"\bSTS\b", "LDS": r"\bLDSM?\b", "LDG": r"\bLDG(?:STS)?\b", "STG": r"\bSTG\b",
}


def _signature(names_types: list[tuple[str, str]], constants: dict) -> dict:
    signature = dict(names_types)
    signature.update({name: "constexpr" for name in constants})
    return signature


def build(kernel: str, D: int, tiles: TileConfig, stats: bool, residuals: bool, window: bool, varlen: bool = False):
    """The compiled kernel, with the launch's constexprs for 16 heads (no GQA); varlen: packed
    sequences (an int32 offsets pointer; without it the launch passes None, a constexpr)."""
    common = {"HQ": 16, "HK": 16, "D": D, "BM": tiles.BM, "BN": tiles.BN, "HAS_WINDOW": window,
              "IS_VARLEN": varlen, "INTERPRET": False}
    offsets = [("CU_SEQLENS", "*i32")] if varlen else []
    if not varlen:
        common["CU_SEQLENS"] = None
    scalars = [("scale_log2", "fp32"), ("T", "i32"), ("MAX_T", "i32"), ("W", "i32"), ("GROUP", "i32")]
    if kernel == "forward":
        pointers = [(n, "*bf16") for n in ("Q", "R", "K", "V", "O")] + [("OSM", "*fp32"), ("OLO", "*bf16"),
                                                                       ("LSE", "*fp32"), ("TBAR", "*fp32"), ("STATS", "*fp32")]
        constants = dict(common, SAVE_RESIDUALS=residuals, WRITE_STATS=stats)
        fn, args = parallel._parallax_fwd_kernel, pointers + offsets + scalars
    elif kernel == "dq":
        pointers = [(n, "*bf16") for n in ("Q", "R", "K", "V", "DO")] + [("ROWS", "*fp32"), ("DQ", "*bf16"), ("DR", "*bf16")]
        constants = common
        fn, args = parallel._parallax_bwd_dq_kernel, pointers + offsets + [("scale", "fp32")] + scalars
    else:
        bm = tiles.BM
        # the split backward's kv kernel: no dQ, dR descriptors (the launch passes None)
        descriptors = [("qr_desc", f"tensordesc<bf16[1,{2 * bm},{D}]>"), ("do_desc", f"tensordesc<bf16[1,{bm},{D}]>")]
        pointers = [("K", "*bf16"), ("V", "*bf16"), ("ROWS", "*fp32"), ("DK", "*bf16"), ("DV", "*bf16")]
        constants = dict(common, ACCUMULATE_DQ=False, dq_desc=None, dr_desc=None)
        fn, args = parallel._parallax_bwd_kernel, descriptors + pointers + offsets + [("scale", "fp32")] + scalars
    # attrs are keyed by the position in the kernel's own parameter list, constexprs included
    hints = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in args if t.startswith("*")}
    source = ASTSource(fn, _signature(args, constants), constants, attrs=hints)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": tiles.num_warps, "num_stages": tiles.num_stages})


def compiled_resources(compiled, cubin: Path) -> tuple[str, str, list[tuple[int, str]]]:
    """Write `compiled`'s cubin to `cubin`; (registers, stack bytes, SASS lines), '?' where
    cuobjdump's resource report has no number."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    cubin.write_bytes(compiled.asm["cubin"])
    usage = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True).stdout
    registers, stack = (re.search(pattern, usage) for pattern in (r"REG:(\d+)", r"STACK:(\d+)"))
    return (registers.group(1) if registers else "?", stack.group(1) if stack else "?", sass_lines(cubin, cuobjdump))


def sass_lines(cubin: Path, cuobjdump: Path) -> list[tuple[int, str]]:
    sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    lines = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            lines.append((int(m.group(1), 16), m.group(2)))
    return lines


def loops(lines: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(first, last) addresses of every backward branch's body of more than 40 instructions."""
    found = []
    for address, text in lines:
        m = re.search(r"BRA\s.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < address and (address - int(m.group(1), 16)) // 16 > 40:
            found.append((int(m.group(1), 16), address))
    return found


def describe(body: list[str]) -> str:
    counts = Counter()
    for text in body:
        for kind, pattern in KINDS.items():
            counts[kind] += bool(re.search(pattern, text))
    return f"{len(body)} instructions: " + ", ".join(f"{kind} {counts[kind]}" for kind in KINDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kernel", choices=["forward", "dq", "kv"])
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--tiles", required=True, help="BM,BN,num_warps,num_stages (kernels/parallel.py's TileConfig)")
    parser.add_argument("--stats", action="store_true", help="forward: statistics mode")
    parser.add_argument("--residuals", action="store_true", help="forward: save the backward's residuals")
    parser.add_argument("--window", action="store_true", help="the sliding-window variant")
    parser.add_argument("--varlen", action="store_true", help="the packed-sequence (cu_seqlens) variant")
    parser.add_argument("--sass-out", type=Path, help="write the address-blanked SASS here, for diff")
    args = parser.parse_args()
    tiles = TileConfig(*map(int, args.tiles.split(",")))
    compiled = build(args.kernel, args.head_dim, tiles, args.stats, args.residuals, args.window, args.varlen)
    tag = f"{args.kernel}_d{args.head_dim}_{'_'.join(map(str, tiles))}" + "".join(
        f"_{flag}" for flag in ("stats", "residuals", "window", "varlen") if getattr(args, flag))
    workdir = Path("/tmp/sass_report")
    workdir.mkdir(exist_ok=True)
    registers, stack, lines = compiled_resources(compiled, workdir / f"{tag}.cubin")
    print(f"{tag} (triton {triton.__version__}): {registers} registers, {stack} B stack, "
          f"{compiled.metadata.shared} B shared memory")
    spans = loops(lines)
    for first, last in spans:
        print(f"  loop {first:#06x}-{last:#06x}: " + describe([t for a, t in lines if first <= a <= last]))
    if spans:
        start, end = min(a for a, _ in spans), max(b for _, b in spans)
        print("  before the loops: " + describe([t for a, t in lines if a < start]))
        print("  after the loops: " + describe([t for a, t in lines if a > end]))
    if args.sass_out:
        args.sass_out.mkdir(parents=True, exist_ok=True)
        (args.sass_out / f"{tag}.sass").write_text("\n".join(re.sub(r"0x[0-9a-f]+", "ADDR", t) for _, t in lines) + "\n")


if __name__ == "__main__":
    main()
