"""Text, Markdown and JSON renderings of a `Report`.

Text and Markdown are two layouts of one document (`_document`): the same sections, tables
and sentences, every number formatted once by `_number`, so the two cannot disagree. JSON is
`Report.to_dict()` with full precision.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .groups import DIFFERENCE_RULE

if TYPE_CHECKING:  # annotations only: report.py imports this module
    from .compare import GroupComparison
    from .depth import DepthTrend
    from .report import Report

__all__ = ["render_json", "render_markdown", "render_text"]

MISSING = "-"
TEXT_WIDTH = 100


@dataclass(frozen=True, slots=True)
class _Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class _Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Section:
    title: str
    blocks: tuple  # of str (a paragraph), _Table, _Bullets


def _number(value) -> str:
    """The one number format of the text and Markdown reports: 4 significant digits, ints whole."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _interval(low, high) -> str:
    return MISSING if low is None else f"[{_number(low)}, {_number(high)}]"


def _collapse_definition(report: Report) -> str:
    settings = report.settings
    reference = {"peak": " x its peak", "initial": " x its initial value", None: ""}[settings.collapse_relative_to]
    persistence = (
        "a tenth of the logged span" if settings.persistence is None else f"{_number(settings.persistence)} steps"
    )
    return (
        f"Collapse onset: the first logged step from which the value stays below "
        f"{_number(settings.collapse_threshold)}{reference} to the end of the run, for at least {persistence}."
    )


def _onsets_cell(onsets: tuple) -> str:
    if not onsets:
        return MISSING
    collapsed = [onset for onset in onsets if onset is not None]
    cell = f"{len(collapsed)}/{len(onsets)}"
    return cell + (": " + ", ".join(_number(onset) for onset in collapsed) if collapsed else "")


def _header_section(report: Report) -> _Section:
    settings = report.settings
    lines = [f"{len(report.runs)} run(s)."]
    if settings.group_by is None:
        lines.append("All runs form one group.")
    else:
        groups = "; ".join(f"{group.name}: {', '.join(group.runs)}" for group in report.groups) or "none"
        lines.append(f"Grouped by '{settings.group_by}': {groups}.")
        if len(report.groups) > 1:
            lines.append(f"Sign: {DIFFERENCE_RULE}.")
    return _Section("Rank-collapse report", tuple(lines))


def _final_values_section(report: Report) -> _Section:
    header = ["layer"]
    for group in report.groups:
        header += [f"{group.name} COR", f"{group.name} stable rank", f"{group.name} effective rank"]
    n_layers = len(report.groups[0].layers)
    rows = []
    for layer in range(n_layers):
        row = [str(layer)]
        for group in report.groups:
            summary = group.layers[layer]
            row += [_number(summary.final_cor), _number(summary.final_stable_rank), _number(summary.final_effective_rank)]
        rows.append(tuple(row))
    return _Section(
        "Final values per layer (mean over each group's runs)",
        (
            "COR: attn/cor_mean averaged over heads; ranks of W_R from wr/stable_rank and wr/effective_rank; "
            "each at the run's last logged step.",
            _Table(tuple(header), tuple(rows)),
        ),
    )


def _across_layers_line(comparison: GroupComparison) -> str:
    test = comparison.across_layers
    if test is None:
        return "Across layers: no test (the notes say why)."
    return (
        f"Across layers: {test.test}; W = {_number(test.statistic)}, p = {_number(test.p_value)} "
        f"({test.p_value_method}), rank-biserial r = {_number(test.rank_biserial)}, "
        f"{test.n_nonzero} of {test.n_layers} layers with a non-zero difference."
    )


def _comparison_section(comparison: GroupComparison, shown_notes: set[str]) -> _Section:
    """One comparison's table, test and notes; a note already shown in an earlier section is not repeated."""
    a, b = comparison.group_a, comparison.group_b
    level = f"{comparison.confidence:.0%} interval"
    header = ("layer", f"{a} mean (runs)", f"{b} mean (runs)", f"difference {a} - {b}", level)
    rows = tuple(
        (
            str(layer.layer),
            f"{_number(layer.mean_a)} ({layer.n_a})",
            f"{_number(layer.mean_b)} ({layer.n_b})",
            _number(layer.difference),
            _interval(layer.interval_low, layer.interval_high),
        )
        for layer in comparison.layers
    )
    new_notes = tuple(note for note in comparison.notes if note not in shown_notes)
    shown_notes.update(new_notes)
    blocks = (_Table(header, rows), _across_layers_line(comparison))
    return _Section(f"{comparison.statistic}: {a} vs {b}", blocks + ((_Bullets(new_notes),) if new_notes else ()))


def _onsets_section(report: Report) -> _Section:
    header = ["layer"]
    for group in report.groups:
        header += [f"{group.name} stable rank", f"{group.name} effective rank"]
    rows = []
    for layer in range(len(report.groups[0].layers)):
        row = [str(layer)]
        for group in report.groups:
            summary = group.layers[layer]
            row += [_onsets_cell(summary.stable_rank_onsets), _onsets_cell(summary.effective_rank_onsets)]
        rows.append(tuple(row))
    return _Section(
        "W_R rank collapse onsets (collapsed runs / runs: onset steps)",
        (_collapse_definition(report), _Table(tuple(header), tuple(rows))),
    )


def _trend_row(group: str, statistic: str, trend: DepthTrend | None) -> tuple[str, ...]:
    if trend is None:
        return (group, statistic, MISSING, MISSING, MISSING, MISSING, "no data")
    return (
        group,
        statistic,
        _number(trend.spearman_rho),
        _number(trend.p_value),
        trend.p_value_method or MISSING,
        _number(trend.first_layer_above) if trend.threshold is not None else MISSING,
        trend.reason or "",
    )


def _depth_section(report: Report) -> _Section:
    threshold = _number(report.settings.cor_threshold)
    rows = []
    for group in report.groups:
        rows.append(_trend_row(group.name, "final COR", group.cor_depth_trend))
        rows.append(_trend_row(group.name, "final stable rank", group.stable_rank_depth_trend))
    header = ("group", "statistic", "Spearman rho", "p", "p-value method", f"first layer with COR > {threshold}", "note")
    return _Section(
        "Depth trends (group-mean final values against layer index, layer 0 first)",
        (
            "Spearman rank correlation with layer index; the p-value treats the layers of one profile as the "
            "sample, and is withheld when the number of layers cannot give p < alpha.",
            _Table(header, tuple(rows)),
        ),
    )


def _runs_section(report: Report) -> _Section:
    overview = tuple(
        (run.run, run.group or MISSING, _number(run.seed), _number(run.n_layers), _number(run.in_comparisons))
        for run in report.runs
    )
    per_layer = []
    for run in report.runs:
        for layer in run.layers:
            stable, effective = layer.stable_rank, layer.effective_rank
            per_layer.append(
                (
                    run.run,
                    str(layer.layer),
                    _number(layer.cor.final if layer.cor else None),
                    _number(stable.final if stable else None),
                    _number(stable.peak if stable else None),
                    _number(stable.final_over_peak if stable else None),
                    _number(stable.collapse_onset if stable else None),
                    _number(effective.final if effective else None),
                    _number(effective.collapse_onset if effective else None),
                )
            )
    return _Section(
        "Runs",
        (
            _Table(("run", "group", "seed", "layers", "in comparisons"), overview),
            _Table(
                (
                    "run",
                    "layer",
                    "final COR",
                    "stable rank final",
                    "stable rank peak",
                    "final/peak",
                    "stable rank onset",
                    "effective rank final",
                    "effective rank onset",
                ),
                tuple(per_layer),
            ),
        ),
    )


def _document(report: Report) -> list[_Section]:
    sections = [_header_section(report)]
    if report.problems:
        sections.append(
            _Section(
                "Problems with the input",
                (_Bullets(tuple(f"{p.run}: {p.message}" if p.run else p.message for p in report.problems)),),
            )
        )
    if report.groups:
        sections.append(_final_values_section(report))
        shown_notes: set[str] = set()
        sections.extend(_comparison_section(comparison, shown_notes) for comparison in report.comparisons)
        sections.append(_onsets_section(report))
        sections.append(_depth_section(report))
    if report.runs:
        sections.append(_runs_section(report))
    # The onsets section states the collapse definition; without it, the runs table needs it here.
    notes = report.notes if report.groups else (*report.notes, _collapse_definition(report))
    if notes:
        sections.append(_Section("Notes", (_Bullets(notes),)))
    return sections


def _text_table(table: _Table) -> list[str]:
    widths = [max(len(row[i]) for row in (table.header, *table.rows)) for i in range(len(table.header))]

    def line(cells) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return [line(table.header), line("-" * width for width in widths), *(line(row) for row in table.rows)]


def _wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    # No breaks inside words or at hyphens: a number like 1e-05 must stay whole.
    return textwrap.wrap(
        text,
        TEXT_WIDTH,
        initial_indent=first or indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [first.rstrip()]


def render_text(report: Report) -> str:
    """Plain text for a terminal: titles underlined, tables aligned, prose wrapped at 100 columns."""
    lines: list[str] = []
    for section in _document(report):
        lines += [section.title, "=" * len(section.title)]
        for block in section.blocks:
            if isinstance(block, _Table):
                lines += _text_table(block)
            elif isinstance(block, _Bullets):
                for item in block.items:
                    lines += _wrap(item, indent="    ", first="  - ")
            else:
                lines += _wrap(block)
            lines.append("")
    return "\n".join(lines)


def _markdown_cell(cell: str) -> str:
    return cell.replace("|", "\\|")


def render_markdown(report: Report) -> str:
    """GitHub-flavoured Markdown: one `##` section per part, pipe tables, bullet notes."""
    lines: list[str] = []
    for index, section in enumerate(_document(report)):
        lines += [f"{'#' if index == 0 else '##'} {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, _Table):
                lines.append("| " + " | ".join(map(_markdown_cell, block.header)) + " |")
                lines.append("|" + "|".join(" --- " for _ in block.header) + "|")
                lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, _Bullets):
                lines += [f"- {item}" for item in block.items]
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    """`report.to_dict()` as strict JSON (no NaN), indented."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
