"""Runs: every run found under the folder, what was skipped and why, and the groups being compared."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from parallax_probe.analysis.runs import GROUP_KEYS, group_label

from .text import md
from .ui import Context, show_table

# The summary a user scans first, then the metadata the groups are usually made from.
SUMMARY_COLUMNS = ("status", "final loss", "held-out accuracy", "steps", "duration (min)")


def runs_table(ctx: Context) -> pd.DataFrame:
    rows = []
    key = ctx.grouping.key
    group_of = {run.name: group for group, members in ctx.grouping.groups.items() for run in members}
    for run in ctx.summaries:
        last = run.last_logged_step
        row = {
            "run": run.name,
            "status": run.status,
            "final loss": run.final_loss,
            "held-out accuracy": run.eval_accuracy,
            "steps": None if last is None else last + 1,
            "duration (min)": None if run.duration_s is None else round(run.duration_s / 60, 1),
            "group": group_of.get(run.name, group_label(run.value(key)) if run.ok else None),
        }
        row.update({k: run.meta.get(k) for k in GROUP_KEYS})
        row.update(
            {
                "layers": run.layers,
                "heads": run.heads,
                "steps logged": run.steps_logged if run.ok else None,
                "last step": run.last_step,
                "error": run.error or "",
            }
        )
        rows.append(row)
    columns = ["run", *SUMMARY_COLUMNS, "group", *GROUP_KEYS, "layers", "heads", "steps logged", "last step", "error"]
    table = pd.DataFrame(rows, columns=columns)
    # Mixed int/str metadata (seed 0, seed "unknown") would make Arrow refuse the column.
    for column in ("group", *GROUP_KEYS):
        table[column] = table[column].map(lambda v: None if v is None else str(v))
    return table


def render(ctx: Context) -> None:
    st.header("Runs")
    if ctx.discovery.error:
        st.error(md(ctx.discovery.error))
        return
    st.caption(
        f"Run folders under {md(ctx.root)}; grouped by {md(ctx.grouping.key)}. Steps: the last logged step + 1; "
        "duration: from the run's first segment being created to the last write."
    )
    if not ctx.summaries:
        st.info(
            f"No runs in {md(ctx.root)}. A run is a folder of segment-NNNNN.h5 files, written by "
            "`parallax-probe train --out FOLDER` or by `Probe` in your own training loop."
        )
    else:
        show_table(runs_table(ctx), "runs")
        broken = [s for s in ctx.summaries if not s.ok]
        if broken:
            st.warning(f"{len(broken)} run(s) cannot be read; their error is on their row. The other runs work as usual.")

    if ctx.groups:
        st.subheader("Groups compared")
        for group in ctx.groups:
            members = ctx.members(group)
            seeds = sorted({str(m.meta.get("seed")) for m in members})
            note = f" (seeds {', '.join(seeds)}: mean with a min-max band)" if len(members) > 1 else ""
            st.markdown(f"- **{md(group)}**: {md(', '.join(m.name for m in members))}{md(note)}")
    if ctx.grouping.left_out:
        st.subheader("Left out of the groups")
        show_table(pd.DataFrame([{"run": s.name, "reason": s.reason} for s in ctx.grouping.left_out]), "left out")
    if ctx.discovery.skipped:
        st.subheader("Skipped entries")
        show_table(pd.DataFrame([{"entry": s.name, "reason": s.reason} for s in ctx.discovery.skipped]), "skipped")
