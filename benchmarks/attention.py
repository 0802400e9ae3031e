"""Time causal bf16 attention kernels: ours (plain and statistics mode), SDPA's flash and
cuDNN backends (softmax attention, the kernels users already have), fla-core's
`parallel_parallax` and the official parallax-kernel's `parallax_func` (both optional), forward
and forward+backward, each graph-replayed and called eagerly, in one run; then packed
sequences (cu_seqlens) through ours, the official `parallax_varlen_func` and fla.

    python benchmarks/attention.py [--shapes 8,16,1024,128 ...] [--passes fwd fwd+bwd] [--packed 3000,1,517,...]
        [--kernels ours official ...] [--helion] [--markdown FILE] [--json FILE]
    python benchmarks/attention.py --report RESULT.json [...]   # one table from saved results

Two times per kernel and pass, medians of triton.testing:
- graph: do_bench_cudagraph, each call captured many times over in one CUDA graph and
  replayed: device time, with no host work between launches;
- eager: do_bench, each call launched from Python after an L2-flushing memset, as a training
  loop calls it: the host's time to validate, allocate and launch shows wherever it exceeds
  the GPU's work (the memset hides up to its own duration of it).
A peer that cannot be captured in a CUDA graph (a host sync in its call) gets an eager time only.

Before its times, every kernel of Parallax attention runs one forward on ours' inputs and is
compared with ours (AGREEMENT_LIMIT below): the notes give each difference, and name any kernel
that computed something else (a layout or scale the benchmark passed it wrongly).

FLOPs as docs/definitions.md section 1 counts them, halved for causal attention with Lq = Lk:
Parallax forward 8*B*H*T*T*D, backward 16*B*H*T*T*D; softmax attention forward
4*B*H*T*T*D, backward 2.5x that; packed, the sum over the sequences. TFLOP/s from the graph
time (the eager time where there is none). Ratio cells "g / e" are ours over the peer, graph
times then eager times (below 1: ours faster).

The official kernel takes (B, H, T, D) tensors: it gets contiguous copies in that layout, made
once outside the timing. --helion adds the official package's Helion kernels (same layouts),
labelled with the autotuning effort they ran with. Its window convention is not exercised (no window here).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
from results import add_result_args, read_result, write_result
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench, do_bench_cudagraph

from parallax_probe.kernels import parallax_attention

SHAPES = [(8, 16, 1024, 128), (4, 16, 4096, 128), (2, 16, 8192, 128), (4, 16, 4096, 64)]
# One packed row of 16,384 tokens: a long document, short ones, one of a single token.
PACKED_LENGTHS = [3000, 1, 517, 2048, 4096, 1200, 777, 4745]
PACKED_HEADS, PACKED_HEAD_DIM = 16, 128
PASSES = ("fwd", "fwd+bwd")
PEERS = ("sdpa-flash", "sdpa-cudnn", "fla", "official", "official-helion")
KERNELS = ("ours", "ours+stats", *PEERS)
# Before timing, each kernel that computes Parallax attention runs one forward on the inputs ours
# gets, and its output is compared with ours: max |output - ours| / max |ours|. Two bf16
# implementations of the function differ by a few 1e-3 on such inputs (3.4e-3 between our Triton
# kernel, interpreted, and the bf16 reference at B,T,H,D = 1,512,2,64 with ||r|| = 10, on a CPU);
# a wrong layout or scale passed to a peer gives a difference of order 1, and that peer's times
# would be of another computation.
AGREEMENT_LIMIT = 0.05
# Seconds of back-to-back calls before each kernel's timing. A GPU that has idled (while a kernel
# compiles or autotunes) runs its next ~100 ms faster than under sustained load: on the H200 the
# first eager time after compilation came out 8% below every later one of the same kernel
# (benchmarks/RESULTS.md, "Eager against graph replay"), so whichever kernel was timed first
# looked faster. Heating each kernel's own calls first times every kernel in the same state.
HEAT_S = 1.0
# Where the inputs live. Only tests/test_attention_report.py changes it, to "cpu", to run the
# script end to end through Triton's interpreter with the timing swapped out.
DEVICE = "cuda"


def same_layout(out):
    return out


def heads_first_to_ours(out):
    return out.transpose(1, 2)  # (B, H, T, D) -> ours' (B, T, H, D)


class Candidate(NamedTuple):
    run: Callable  # one forward on `tensors`
    tensors: tuple
    flops: Callable  # (B, H, T, D, pass) -> FLOPs
    to_ours: Callable | None = same_layout  # its output in ours' layout; None: another function (softmax)


def parallax_flops(B, H, T, D, mode):
    forward = 8 * B * H * T * T * D / 2  # causal: half the score matrix
    return forward if mode == "fwd" else 3 * forward  # backward = 2x forward


def softmax_flops(B, H, T, D, mode):
    forward = 4 * B * H * T * T * D / 2
    return forward if mode == "fwd" else 3.5 * forward  # backward = 2.5x forward


def load_peers():
    """(fla's parallel_parallax, the official package's module), None where not importable."""

    def fla():
        from fla.ops.parallax import parallel_parallax

        return parallel_parallax

    def official():
        import parallax

        return parallax

    found = []
    for what, load in (("fla-core", fla), ("parallax-kernel", official)):
        try:
            found.append(load())
        except Exception as exc:  # a peer that does not import only drops its rows
            print(f"{what} not importable ({type(exc).__name__}: {exc}); its rows are left out", file=sys.stderr)
            found.append(None)
    return found


def random_inputs(B, T, H, D, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q, r, k, v = (torch.randn(B, T, H, D, device=DEVICE, generator=g).bfloat16() for _ in range(4))
    r = (r.float() / r.float().norm(dim=-1, keepdim=True) * 10).bfloat16()  # ||r|| = 10
    return q, r, k, v


def candidates(B, H, T, D, parallel_parallax, official, helion=None):
    """name -> (callable running one forward, its tensors, flop fn)."""
    q, r, k, v = random_inputs(B, T, H, D)
    scale = D**-0.5

    def ours(stats):
        def run(q, r, k, v):
            out = parallax_attention(q, r, k, v, scale=scale, return_stats=stats, backend="triton")
            return out[0] if stats else out

        return Candidate(run, (q, r, k, v), parallax_flops)

    def sdpa(backend):
        def run(q, k, v):
            with sdpa_kernel(backend):
                # [B, T, H, D] viewed as [B, H, T, D], as a model calls it
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale
                )
            return out.transpose(1, 2)

        return Candidate(run, (q, k, v), softmax_flops, to_ours=None)

    table = {
        "ours": ours(False),
        "ours+stats": ours(True),
        "sdpa-flash": sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa-cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
    }
    if parallel_parallax is not None:
        table["fla"] = Candidate(lambda q, r, k, v: parallel_parallax(q, r, k, v, scale=scale), (q, r, k, v),
                                 parallax_flops)
    if official is not None:
        heads_first = tuple(t.transpose(1, 2).contiguous() for t in (q, r, k, v))  # its (B, H, T, D)
        table["official"] = Candidate(lambda q, r, k, v: official.parallax_func(q, r, k, v, qk_scale=scale),
                                      heads_first, parallax_flops, heads_first_to_ours)
    if helion is not None:
        table["official-helion"] = Candidate(lambda q, r, k, v: helion.parallax_func(q, r, k, v, qk_scale=scale),
                                             heads_first, parallax_flops, heads_first_to_ours)
    return table


def packed_candidates(lengths, H, D, parallel_parallax, official, helion=None):
    """The same for one packed row [1, sum(lengths), H, D] with flash-attention's offsets."""
    q, r, k, v = random_inputs(1, sum(lengths), H, D)
    scale = D**-0.5
    offsets = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cu_seqlens = torch.tensor(offsets, dtype=torch.int32, device=DEVICE)
    longest = max(lengths)

    def flops(B, H_, T, D_, mode):  # the sum over the sequences
        return sum(parallax_flops(1, H, n, D, mode) for n in lengths)

    def ours(q, r, k, v):
        return parallax_attention(q, r, k, v, scale=scale, cu_seqlens=cu_seqlens, max_seqlen=longest, backend="triton")

    table = {"ours": Candidate(ours, (q, r, k, v), flops)}
    if parallel_parallax is not None:
        cu_long = cu_seqlens.long()  # fla's signature asks for a LongTensor
        table["fla"] = Candidate(lambda q, r, k, v: parallel_parallax(q, r, k, v, scale=scale, cu_seqlens=cu_long),
                                 (q, r, k, v), flops)
    if official is not None:
        table["official"] = Candidate(lambda q, r, k, v: official.parallax_varlen_func(q, r, k, v, qk_scale=scale,
                                                                                      cu_seqlens=cu_seqlens),
                                      (q, r, k, v), flops)
    if helion is not None:
        table["official-helion"] = Candidate(
            lambda q, r, k, v: helion.parallax_varlen_func(q, r, k, v, qk_scale=scale, cu_seqlens=cu_seqlens),
            (q, r, k, v), flops)
    return table


def differences_from_ours(table):
    """name -> max |its forward output - ours| / max |ours|, for every kernel in `table` (which
    holds ours) but ours that computes Parallax attention; a kernel whose forward fails is
    reported and left out (its timing reports the failure again)."""
    with torch.no_grad():
        ours = table["ours"]
        expected = ours.run(*ours.tensors).float()
        differences = {}
        for name, candidate in table.items():
            if name == "ours" or candidate.to_ours is None:
                continue
            try:
                got = candidate.to_ours(candidate.run(*candidate.tensors)).float()
            except Exception as exc:
                print(f"{name} forward failed before timing: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
                continue
            if got.shape != expected.shape:
                differences[name] = float("inf")
            else:
                differences[name] = ((got - expected).abs().max() / expected.abs().max()).item()
    return differences


def training_step(run, tensors):
    """(step, leaves): one forward+backward of `run` on copies of `tensors` that require grad,
    against a fixed random dO. The caller resets the leaves' grads between steps."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    do = torch.randn_like(run(*leaves))

    def step():
        run(*leaves).backward(do)

    return step, leaves


def one_call(run, tensors, mode):
    """A callable making one call of `run` in `mode` as it is timed: the forward without grad, or
    a forward+backward (training_step) with the leaves' grads reset first."""
    if mode == "fwd":
        def call():
            with torch.no_grad():
                run(*tensors)
        return call
    step, leaves = training_step(run, tensors)

    def call():
        for leaf in leaves:
            leaf.grad = None
        step()
    return call


def heat(run, tensors, mode, seconds=None):
    """Call the kernel back to back (at least once) until `seconds` (HEAT_S) have passed: its
    first call compiles or autotunes, and the rest bring the GPU to the state it is timed in."""
    seconds = HEAT_S if seconds is None else seconds
    call = one_call(run, tensors, mode)
    start = time.perf_counter()
    while True:
        call()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        if time.perf_counter() - start >= seconds:
            return


def time_one(run, tensors, mode, graph):
    """Median ms of one forward (no grad) or one forward+backward."""
    bench = do_bench_cudagraph if graph else do_bench
    if mode == "fwd":
        with torch.no_grad():
            return bench(lambda: run(*tensors), rep=100, return_mode="median")
    step, leaves = training_step(run, tensors)
    return bench(step, rep=100, grad_to_none=leaves, return_mode="median")


def measure(table, mode, label):
    """name -> (graph ms or None, eager ms or None); failures are reported, not fatal."""
    times = {}
    for name, (run, tensors, *_) in table.items():
        got, started = {}, time.perf_counter()
        # eager first, after the heating (which runs any autotuning outside a capture); a failed
        # capture (a host sync inside the call) cannot spoil the eager time
        for graph in (False, True):
            try:
                if not graph:
                    heat(run, tensors, mode)
                got[graph] = time_one(run, tensors, mode, graph)
            except Exception as exc:  # a peer that does not run (or capture) here is reported
                got[graph] = None
                print(f"{name} {mode} {'graph' if graph else 'eager'} at {label} failed: "
                      f"{type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            torch.cuda.empty_cache()
        # where a cut run's time went: a peer's first call may autotune for minutes
        print(f"{label} {mode} {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if any(t is not None for t in got.values()):
            times[name] = (got[True], got[False])
    return times


def fmt(ms):
    return "" if ms is None else f"{ms:.3f}"


def ratio(ours, peer):
    return "-" if ours is None or peer is None else f"{ours / peer:.2f}x"


def records_of(label, mode, table, times, flops_args, differences):
    """One flat record per kernel timed at this shape and pass: what the JSON result keeps, with
    its output's difference from ours where one was measured (differences_from_ours)."""
    records = []
    for name, (graph, eager) in times.items():
        flops = table[name].flops(*flops_args, mode)
        best = graph if graph is not None else eager
        record = {"shape": label, "pass": mode, "kernel": name, "graph_ms": graph, "eager_ms": eager,
                  "tflops": flops / best / 1e9}
        if name in differences:
            record["max_diff_vs_ours"] = differences[name]
        records.append(record)
    return records


TABLE_HEAD = ["| shape (B,H,T,D) | pass | kernel | graph ms | eager ms | eager/graph | TFLOP/s | ours/flash g / e "
              "| ours/cudnn g / e | ours/fla g / e | ours/official g / e | ours/helion g / e |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def table_lines(records):
    """The table's lines for records of one or more (shape, pass) groups, in their order: a ratio
    cell compares an `ours` row with a peer's row of the same shape and pass."""
    groups = {}
    for record in records:
        groups.setdefault((record["shape"], record["pass"]), {})[record["kernel"]] = record
    lines = []
    for (label, mode), by_kernel in groups.items():
        for name, record in by_kernel.items():
            graph, eager = record["graph_ms"], record["eager_ms"]
            cells = []
            for peer in PEERS:
                if name.startswith("ours") and peer in by_kernel:
                    other = by_kernel[peer]
                    cells.append(f"{ratio(graph, other['graph_ms'])} / {ratio(eager, other['eager_ms'])}")
                else:
                    cells.append("")
            eager_over_graph = f"{eager / graph:.2f}x" if graph and eager else ""
            lines.append(f"| {label} | {mode} | {name} | {fmt(graph)} | {fmt(eager)} | {eager_over_graph} | "
                         f"{record['tflops']:.0f} | " + " | ".join(cells) + " |")
    return lines


def statistics_cost(records):
    """The notes on what statistics mode costs over plain, per shape and pass (graph times)."""
    graph = {(r["shape"], r["pass"], r["kernel"]): r["graph_ms"] for r in records}
    notes = []
    for (label, mode, kernel), plain in graph.items():
        stats = graph.get((label, mode, "ours+stats"))
        if kernel == "ours" and plain and stats:
            notes.append(f"{label} {mode}: statistics mode costs {100 * (stats / plain - 1):+.1f}% over plain (graph)")
    return notes


def agreement_notes(records):
    """One note per shape: each kernel's forward output against ours (records that carry it)."""
    by_shape = {}
    for record in records:
        if "max_diff_vs_ours" in record:
            by_shape.setdefault(record["shape"], {})[record["kernel"]] = record["max_diff_vs_ours"]
    notes = []
    for label, differences in by_shape.items():
        cells = ", ".join(f"{name} {difference:.1e}" for name, difference in differences.items())
        note = f"{label}: forward output against ours, max |difference| / max |ours|: {cells}"
        differing = [name for name, difference in differences.items() if not difference <= AGREEMENT_LIMIT]
        if differing:
            note += (f"; above {AGREEMENT_LIMIT}: {', '.join(differing)} computed something else here, "
                     "so those times are not comparable")
        notes.append(note)
    return notes


def notes_of(records):
    """Every note the records give: statistics mode's cost, the kernels' outputs against ours."""
    return statistics_cost(records) + agreement_notes(records)


def table_text(head_lines, records, notes):
    """The printed result: its head lines, the table of `records`, then the notes."""
    return "\n".join([*head_lines, "", *TABLE_HEAD, *table_lines(records), ""] + [f"- {line}" for line in notes])


ROW_KEYS = frozenset({"shape", "pass", "kernel", "graph_ms", "eager_ms", "tflops"})


def report_saved(paths):
    """One table from saved results (this script's JSON), in the order given, each result's
    provenance above it, numbered: the same lines the runs printed, merged. Ratios never pair
    rows of two results (another run, perhaps another device)."""
    results = [read_result(path, "attention", ROW_KEYS) for path in paths]  # all checked before printing
    # A shape and pass that more than one result measured gets each result's number beside its
    # label, so that every ratio and note pairs rows of one run: one process on one device.
    measured_by = Counter(key for result in results for key in {(row["shape"], row["pass"]) for row in result["rows"]})
    heads, records = [], []
    for number, result in enumerate(results, start=1):
        config = result["config"]
        finished = "" if config.get("finished", True) else " (cut before its end: the rows it had)"
        helion = f", Helion autotune effort {config['helion_autotune_effort']}" if config.get("helion_autotune_effort") else ""
        heads.append(f"- [{number}] {result['date'][:10]}, {result.get('device')}, torch {result.get('torch')}, triton "
                     f"{result.get('triton', '?')}{helion}, commit {result.get('commit')}: `{result['command']}`{finished}")
        for row in result["rows"]:
            shared = measured_by[row["shape"], row["pass"]] > 1
            records.append({**row, "shape": f"{row['shape']} [{number}]"} if shared else row)
    print(table_text(heads, records, notes_of(records)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", default=[",".join(map(str, s)) for s in SHAPES],
                        help="B,H,T,D entries")
    parser.add_argument("--packed", default=",".join(map(str, PACKED_LENGTHS)),
                        help=f"sequence lengths of the packed row (H={PACKED_HEADS}, D={PACKED_HEAD_DIM}); '' for none")
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES),
                        help="which passes to time (a short device call may want fwd+bwd alone)")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    add_result_args(parser, "attention")
    parser.add_argument("--helion", action="store_true",
                        help="also the official package's Helion kernels (parallax.helion; needs the helion "
                             "package; autotunes on first call: set HELION_AUTOTUNE_EFFORT=quick within a device budget)")
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=None,
                        help="time only these (default: every one that imports); a short device call may want "
                             "ours beside one peer, whose ratios then come from this run alone")
    parser.add_argument("--report", nargs="+", metavar="RESULT_JSON",
                        help="print one table from saved results (their rows, in order); run nothing")
    args = parser.parse_args()
    if args.report:
        report_saved(args.report)
        return
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes]
    parallel_parallax, official = load_peers()
    helion = None
    if args.helion and official is not None:
        try:
            from parallax import helion
        except Exception as exc:
            print(f"parallax.helion not importable ({type(exc).__name__}: {exc}); its rows are left out", file=sys.stderr)

    versions = f"torch {torch.__version__}  triton {triton.__version__}"
    if official is not None:
        versions += f"  parallax-kernel {getattr(official, '__version__', '?')}"
    helion_effort = os.environ.get("HELION_AUTOTUNE_EFFORT", "default (full)") if helion is not None else None
    if helion is not None:
        versions += f"  Helion autotune effort {helion_effort}"
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    header = f"{datetime.date.today()}  {device}  {versions}  command: python {' '.join(sys.argv)}"
    records = []
    config = {"shapes": args.shapes, "passes": args.passes, "packed": args.packed, "kernels": args.kernels,
              "helion": args.helion, "helion_autotune_effort": helion_effort, "finished": False}

    def timed(label, table, flops_args):
        # ours stays in the comparison of outputs even where --kernels leaves it out of the timing
        chosen = {name: entry for name, entry in table.items() if args.kernels is None or name in args.kernels}
        differences = differences_from_ours({"ours": table["ours"], **chosen})
        table = chosen
        for mode in args.passes:
            new = records_of(label, mode, table, measure(table, mode, label), flops_args, differences)
            records.extend(new)
            print("\n".join(table_lines(new)), flush=True)
            # written after every shape and pass: a run cut by a time limit keeps what it measured
            write_result(args, records, config={**config, "notes": notes_of(records)})

    for B, H, T, D in shapes:
        timed(f"{B},{H},{T},{D}", candidates(B, H, T, D, parallel_parallax, official, helion), (B, H, T, D))
    extra_notes = []
    if args.packed:
        lengths = [int(x) for x in args.packed.split(",")]
        table = packed_candidates(lengths, PACKED_HEADS, PACKED_HEAD_DIM, parallel_parallax, official, helion)
        label = f"packed {len(lengths)} seqs, {sum(lengths)} tokens, max {max(lengths)},{PACKED_HEADS},{PACKED_HEAD_DIM}"
        timed(label, table, (1, PACKED_HEADS, sum(lengths), PACKED_HEAD_DIM))
        extra_notes.append(f"packed lengths: {lengths}")
    notes = notes_of(records) + extra_notes
    text = table_text([header], records, notes)
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    write_result(args, records, config={**config, "finished": True, "notes": notes})


if __name__ == "__main__":
    main()
