"""`format_run_summary(run) -> str`: the text `parallax-probe inspect RUN` prints.

What it shows: where the run is and whether it is live, closed or crashed; its segments;
provenance; how many attention rows were logged and the last step; per layer at the last
logged attention step, the mean over heads of the COR mean, and at the last W_R spectrum
(its own step, shown), W_R's stable and effective rank; the last value of each scalar.
Whatever the run lacks (no rows yet, no spectra, a column) is said, not failed on.
"""

from __future__ import annotations

import numpy as np

from .store import COR_MEAN, SCALARS_STEP, SCALARS_TABLE, WR_EFFECTIVE_RANK, WR_STABLE_RANK, WR_STEP, Run, nan_mean

_STATUS_NOTES = {
    "live": "a writer is appending to it now",
    "closed": "its writer closed it",
    "crashed": "its writer stopped without closing it; every committed row is readable. "
    "`parallax-probe repair RUN` writes clean copies; resuming the run does that too",
}


def _field(label: str, value: object) -> str:
    return f"  {label:<13}{value}"


def _number(value: float) -> str:
    if not np.isfinite(value):
        return "nan" if np.isnan(value) else str(value)
    return f"{value:.4g}"


def format_run_summary(run: Run) -> str:
    """The multi-line summary of `run` (see the module docstring)."""
    lines = [f"run {run.path}", _field("run_id", run.meta.get("run_id", "?"))]
    status = _field("status", f"{run.status}: {_STATUS_NOTES.get(run.status, '')}")
    if run.status != "closed":
        status += f" (writer pid {run.meta.get('writer_pid', '?')} on {run.meta.get('writer_host', '?')})"
    lines.append(status)
    starts = ", ".join(f"{s.path.name} from step {s.start_step}" for s in run.segments)
    lines.append(_field("segments", f"{len(run.segments)}: {starts}"))
    for key in ("optimizer", "device", "code_version", "created"):
        if key in run.meta:
            lines.append(_field(key, run.meta[key]))
    layers, heads = (n if n is not None else "?" for n in (run.layers, run.heads))
    lines.append(_field("shape", f"{layers} layers, {heads} heads"))

    has = set(run.names())
    attn_names = [n for n in ("step", COR_MEAN) if n in has]
    attn = run.read(*attn_names) if attn_names else {}
    steps = attn.get("step", np.zeros(0, dtype=np.int64))
    wr_names = [n for n in (WR_STEP, WR_STABLE_RANK, WR_EFFECTIVE_RANK) if n in has]
    wr = run.read(*wr_names) if wr_names else {}
    wr_steps = wr.get(WR_STEP, np.zeros(0, dtype=np.int64))

    if len(steps) == 0:
        lines.append(_field("steps", "no attention rows logged yet"))
    else:
        lines.append(_field("steps", f"{len(steps)} logged, last step {int(steps[-1])}"))
    if len(wr_steps) == 0:
        lines.append(_field("W_R", "no spectra logged yet"))
    else:
        lines.append(_field("W_R", f"{len(wr_steps)} spectra logged, last at step {int(wr_steps[-1])}"))

    table = _layer_table(steps, attn.get(COR_MEAN), wr_steps, wr)
    if table:
        lines.append("")
        lines.extend(table)
    scalars = _scalar_lines(run, has)
    if scalars:
        lines.append("")
        lines.extend(scalars)
    return "\n".join(lines)


def _layer_table(steps: np.ndarray, cor_mean: np.ndarray | None, wr_steps: np.ndarray, wr: dict) -> list[str]:
    """Per layer: COR at the last attention row, W_R ranks at the last spectrum (each labelled with its step)."""
    cor = None
    if cor_mean is not None and len(cor_mean):
        cor = nan_mean(cor_mean[-1], axis=-1)  # (L,): NaN heads left out
    wr_row = len(wr_steps) - 1 if len(wr_steps) else None
    stable = wr.get(WR_STABLE_RANK)
    effective = wr.get(WR_EFFECTIVE_RANK)
    columns: list[tuple[str, np.ndarray]] = []
    if cor is not None:
        columns.append((f"COR (head mean, step {int(steps[-1])})", cor))
    if wr_row is not None:
        at = int(wr_steps[wr_row])
        if stable is not None:
            columns.append((f"W_R stable rank (step {at})", stable[wr_row]))
        if effective is not None:
            columns.append((f"W_R effective rank (step {at})", effective[wr_row]))
    if not columns:
        return []
    n_layers = max(len(values) for _, values in columns)
    widths = [max(len(title), 8) for title, _ in columns]
    header = "  layer  " + "  ".join(title.rjust(w) for (title, _), w in zip(columns, widths))
    out = [header]
    for layer in range(n_layers):
        cells = [(_number(float(v[layer])) if layer < len(v) else "-").rjust(w) for (_, v), w in zip(columns, widths)]
        out.append(f"  {layer:>5}  " + "  ".join(cells))
    return out


def _scalar_lines(run: Run, has: set[str]) -> list[str]:
    prefix = SCALARS_TABLE + "/"
    names = [n for n in has if n.startswith(prefix) and n != SCALARS_STEP]
    if not names:
        return []
    data = run.read(SCALARS_STEP, *sorted(names))
    steps = data[SCALARS_STEP]
    if len(steps) == 0:
        return []
    parts = []
    for name in sorted(names):
        values = data[name]
        finite = np.nonzero(~np.isnan(values))[0]
        if len(finite):
            i = int(finite[-1])
            parts.append(f"{name.removeprefix(prefix)}={_number(float(values[i]))} (step {int(steps[i])})")
    return [_field("scalars", ", ".join(parts))] if parts else []
