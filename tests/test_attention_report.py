"""The attention benchmark (benchmarks/attention.py): its table from saved results (--report),
whose ratio cells compare an `ours` row with a peer's row of the same shape, pass and run; the
check of each kernel's output against ours; and a whole run on the CPU, the timing swapped out."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling results.py
SPEC = importlib.util.spec_from_file_location("attention_benchmark", BENCHMARKS / "attention.py")
attention = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(attention)


def row(shape, kernel, graph, eager, tflops=100.0, mode="fwd+bwd"):
    return {"shape": shape, "pass": mode, "kernel": kernel, "graph_ms": graph, "eager_ms": eager, "tflops": tflops}


def saved(path, rows, finished=True, **config):
    result = {"benchmark": "attention", "date": "2026-12-05T05:48:42+00:00", "command": "python benchmarks/attention.py",
              "device": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "commit": "abc1234",
              "config": {"finished": finished, **config}, "rows": rows}
    path.write_text(json.dumps(result))
    return str(path)


def cells(line):
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_ratios_pair_rows_of_the_same_shape_and_pass_across_files(tmp_path, capsys):
    first = saved(tmp_path / "a.json", [row("8,16,1024,128", "ours", 0.75, 0.90),
                                        row("8,16,1024,128", "ours+stats", 0.78, 0.95),
                                        row("8,16,1024,128", "official", 1.00, 1.20),
                                        row("8,16,1024,128", "official", 0.50, 0.60, mode="fwd")])
    second = saved(tmp_path / "b.json", [row("4,16,4096,128", "ours", 4.0, None),
                                         row("4,16,4096,128", "sdpa-flash", 3.2, 3.4)], finished=False,
                   helion_autotune_effort="quick")
    attention.report_saved([first, second])
    out = capsys.readouterr().out
    lines = {tuple(cells(line)[:3]): cells(line) for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    ours = lines[("8,16,1024,128", "fwd+bwd", "ours")]
    head = cells(attention.TABLE_HEAD[0])
    assert ours[head.index("ours/official g / e")] == "0.75x / 0.75x"
    assert ours[head.index("eager/graph")] == "1.20x"
    assert ours[head.index("ours/flash g / e")] == ""  # no flash row at this shape
    # a forward row of the official kernel is not paired with a fwd+bwd row of ours
    assert lines[("8,16,1024,128", "fwd", "official")][head.index("ours/official g / e")] == ""
    # a kernel without an eager time: its ratio says so, the graph ratio stands
    assert lines[("4,16,4096,128", "fwd+bwd", "ours")][head.index("ours/flash g / e")] == "1.25x / -"
    assert "8,16,1024,128 fwd+bwd: statistics mode costs +4.0% over plain (graph)" in out
    assert out.count("cut before its end") == 1 and "commit abc1234" in out
    assert out.count("Helion autotune effort quick") == 1  # the effort its Helion rows ran with


NOT_RESULTS = ['{"benchmark": "throughput", "rows": []}', "[1, 2]", "{not json",
               '{"benchmark": "attention", "rows": []}',  # no provenance
               '{"benchmark": "attention", "date": "d", "device": "x", "torch": "t", "command": "c", "config": {}, '
               '"rows": [{"shape": "1,1,1,1"}]}']  # a row without its times


@pytest.mark.parametrize("content", NOT_RESULTS)
def test_a_file_that_is_not_an_attention_result_is_refused_in_one_line(tmp_path, capsys, content):
    good = saved(tmp_path / "good.json", [row("8,16,1024,128", "ours", 0.75, 0.90)])
    other = tmp_path / "other.json"
    other.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        attention.report_saved([good, str(other)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing printed from the good file either
    assert len(captured.err.strip().splitlines()) == 1 and str(other) in captured.err


def test_the_saved_h200_results_give_the_table_in_results_md(capsys):
    saved_results = sorted(str(p) for p in (BENCHMARKS / "results").glob("attention_h200_*.json"))
    assert saved_results, "benchmarks/results/attention_h200_*.json are the record RESULTS.md's table comes from"
    attention.report_saved(saved_results)
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    results_md = (BENCHMARKS / "RESULTS.md").read_text()
    assert all(line in results_md for line in table)


def test_each_peer_output_is_compared_with_ours_in_ours_layout_and_a_wrong_call_stands_out():
    import torch

    from parallax_probe.kernels import parallax_attention

    generator = torch.Generator().manual_seed(0)
    q, r, k, v = (torch.randn(2, 33, 4, 16, generator=generator) for _ in range(4))  # ours' (B, T, H, D)

    def reference(scale):
        return lambda q, r, k, v: parallax_attention(q, r, k, v, scale=scale, backend="reference")

    def heads_first_peer(q, r, k, v):  # a peer taking and returning (B, H, T, D)
        return reference(16**-0.5)(*(t.transpose(1, 2) for t in (q, r, k, v))).transpose(1, 2)

    heads_first = tuple(t.transpose(1, 2).contiguous() for t in (q, r, k, v))
    table = {
        "ours": attention.Candidate(reference(16**-0.5), (q, r, k, v), attention.parallax_flops),
        "official": attention.Candidate(heads_first_peer, heads_first, attention.parallax_flops,
                                        attention.heads_first_to_ours),
        "fla": attention.Candidate(reference(1.0), (q, r, k, v), attention.parallax_flops),  # a wrong scale
        "sdpa-flash": attention.Candidate(lambda q, k, v: q, (q, k, v), attention.softmax_flops, to_ours=None),
        "official-helion": attention.Candidate(heads_first_peer, heads_first, attention.parallax_flops),  # layout not undone
    }
    differences = attention.differences_from_ours(table)
    assert set(differences) == {"official", "fla", "official-helion"}  # softmax computes another function
    assert differences["official"] < 1e-6
    assert differences["fla"] > attention.AGREEMENT_LIMIT
    assert differences["official-helion"] == float("inf")  # (B, H, T, D) against (B, T, H, D): no comparison


def test_the_report_gives_each_output_difference_and_names_a_kernel_that_computed_something_else(tmp_path, capsys):
    rows = [row("8,16,1024,128", "ours", 0.75, 0.90), {**row("8,16,1024,128", "official", 1.0, 1.2), "max_diff_vs_ours": 3.2e-3},
            {**row("8,16,1024,128", "official", 0.5, 0.6, mode="fwd"), "max_diff_vs_ours": 3.2e-3},
            {**row("4,16,4096,128", "fla", 9.0, 9.5), "max_diff_vs_ours": 0.8}]
    attention.report_saved([saved(tmp_path / "a.json", rows)])
    notes = [line for line in capsys.readouterr().out.splitlines() if "forward output against ours" in line]
    assert notes == ["- 8,16,1024,128: forward output against ours, max |difference| / max |ours|: official 3.2e-03",
                     "- 4,16,4096,128: forward output against ours, max |difference| / max |ours|: fla 8.0e-01; above 0.05: "
                     "fla computed something else here, so those times are not comparable"]


def test_rows_of_one_shape_from_two_runs_are_kept_apart_and_paired_within_their_run(tmp_path, capsys):
    h200 = saved(tmp_path / "h200.json", [row("4,16,4096,128", "ours", 4.0, 3.8), row("4,16,4096,128", "official", 5.0, 5.0),
                                          row("8,16,1024,128", "ours", 0.75, 0.75)])
    other = json.loads(Path(h200).read_text())
    other.update(device="NVIDIA H100", rows=[row("4,16,4096,128", "ours", 6.0, 6.0), row("4,16,4096,128", "official-helion", 5.0, 5.0)])
    h100 = tmp_path / "h100.json"
    h100.write_text(json.dumps(other))
    attention.report_saved([h200, str(h100)])
    out = capsys.readouterr().out
    head = cells(attention.TABLE_HEAD[0])
    lines = {tuple(cells(line)[:3]): cells(line) for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    first, second = lines[("4,16,4096,128 [1]", "fwd+bwd", "ours")], lines[("4,16,4096,128 [2]", "fwd+bwd", "ours")]
    assert first[head.index("ours/official g / e")] == "0.80x / 0.76x" and first[head.index("ours/helion g / e")] == ""
    assert second[head.index("ours/helion g / e")] == "1.20x / 1.20x" and second[head.index("ours/official g / e")] == ""
    assert ("8,16,1024,128", "fwd+bwd", "ours") in lines  # measured by one run only: its label stays as it was
    assert "- [1] 2026-12-05, NVIDIA H200" in out and "- [2] 2026-12-05, NVIDIA H100" in out


def test_a_whole_run_on_the_cpu_compares_times_and_saves_every_kernel_that_runs(tmp_path, monkeypatch, capsys):
    """benchmarks/attention.py end to end on this machine: ours through Triton's interpreter, SDPA's
    CPU kernels, a packed row. What cannot run here is swapped out: the timing (CUDA events and
    graphs), whose stand-in still makes each call, and the peers' packages (their kernels need a
    GPU). SDPA's cuDNN backend has no CPU kernel: its failures are reported, its rows left out."""
    monkeypatch.setattr(attention, "DEVICE", "cpu")
    monkeypatch.setattr(attention, "load_peers", lambda: (None, None))
    monkeypatch.setattr(attention, "HEAT_S", 0.0)  # one heating call per kernel: the interpreter is slow
    asked = []

    def time_one(run, tensors, mode, graph):
        # the call the real timing makes; raises for a kernel that cannot run here, as it would
        if mode == "fwd":
            run(*tensors)
        else:
            step, leaves = attention.training_step(run, tensors)
            step()
            assert all(leaf.grad is not None for leaf in leaves)
        asked.append(mode)
        return 2.0 if graph else 2.5

    monkeypatch.setattr(attention, "time_one", time_one)
    result = tmp_path / "attention.json"
    monkeypatch.setattr(sys, "argv", ["attention.py", "--shapes", "1,2,40,64", "--packed", "3,1,20", "--json", str(result)])
    attention.main()
    captured = capsys.readouterr()
    saved_result = json.loads(result.read_text())
    assert saved_result["config"]["finished"] is True
    rows = {(r["shape"], r["pass"], r["kernel"]): r for r in saved_result["rows"]}
    dense = [("1,2,40,64", mode, kernel) for mode in ("fwd", "fwd+bwd")
             for kernel in ("ours", "ours+stats", "sdpa-flash")]
    packed = [(label, mode, "ours") for (label, mode, _) in rows if label.startswith("packed 3 seqs, 24 tokens")]
    assert sorted(rows) == sorted(dense + packed) and len(packed) == 2
    assert rows[("1,2,40,64", "fwd", "ours+stats")]["max_diff_vs_ours"] < 1e-6  # the same output, with statistics
    assert "sdpa" not in str(saved_result["config"]["notes"])  # softmax: another function, not compared
    assert asked.count("fwd") == asked.count("fwd+bwd") == 2 * 3 + 2  # graph and eager of each kernel that ran
    assert captured.err.count("sdpa-cudnn fwd eager at 1,2,40,64 failed") == 1
    assert "| 1,2,40,64 | fwd+bwd | ours | 2.000 | 2.500 | 1.25x |" in captured.out


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_each_kernel_is_heated_by_its_own_calls_before_it_is_timed(monkeypatch, mode):
    """Its calls run back to back for HEAT_S seconds, at least once (the first one compiles), so
    no kernel is timed on a GPU that has just idled. The clock is the module's, advanced 0.3 s per
    call; the calls are real, on the CPU."""
    clock = {"now": 0.0}
    monkeypatch.setattr(attention.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(attention, "DEVICE", "cpu")
    calls = []

    def run(q, k):
        calls.append(torch.is_grad_enabled())
        clock["now"] += 0.3
        return q * k

    tensors = (torch.ones(3), torch.full((3,), 2.0))
    attention.heat(run, tensors, mode, seconds=1.0)
    backward = mode == "fwd+bwd"
    assert len(calls) == 4 + backward  # 0.3 s each until 1.0 s; the training step's dO costs one more
    assert all(calls) == backward  # the forward heats without grad, as it is timed
    calls.clear()
    attention.heat(run, tensors, mode, seconds=0)
    assert len(calls) == 1 + backward
