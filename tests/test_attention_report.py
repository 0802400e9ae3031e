"""The attention benchmark's table from saved results (benchmarks/attention.py --report): ratio
cells compare an `ours` row with a peer's row of the same shape and pass, across merged files."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

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
