"""The dashboard's entry script: `streamlit run app.py -- RUNS_DIR` (what `parallax-probe dashboard` starts).

The sidebar picks the page, the runs and the groups; the page itself renders inside a
fragment that re-runs every few seconds while a picked run is live, so a growing run
updates without a full page reload. URL query parameters: `page`, `group_by` and
`refresh` follow the sidebar widgets; `run` (repeatable) limits the runs to those named,
and a name that leads outside the runs folder is refused.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from parallax_probe.dashboards import (
    cache,
    data,
    page_collapse,
    page_cor,
    page_probe,
    page_runs,
    page_training,
    page_wr,
)
from parallax_probe.dashboards.ui import Context

PAGES = {
    "Runs": page_runs.render,
    "COR": page_cor.render,
    "W_R rank": page_wr.render,
    "Probe norms": page_probe.render,
    "Training": page_training.render,
    "Rank collapse": page_collapse.render,
}
DEFAULT_REFRESH_S = 5


@dataclass(frozen=True, slots=True)
class Settings:
    page: str
    group_by: str
    groups: tuple[str, ...]
    runs: tuple[str, ...]  # names of the included runs
    found: tuple[str, ...]  # names of every run found when the sidebar was drawn
    refresh_s: int
    image_format: str


def requested_runs(discovery: data.Discovery) -> tuple[list[str], list[str]]:
    """The `run` query parameters: (names of runs found, one refusal message per other name)."""
    names, refused = [], []
    for name in st.query_params.get_all("run"):
        try:
            names.append(data.resolve_run_name(discovery, name).name)
        except data.RunNameError as error:
            refused.append(str(error))
    return names, refused


def runs_picker(names: list[str], default: list[str]) -> list[str]:
    """The included runs. A run that appears while the app is open is added to the user's choice."""
    known = st.session_state.get("known-runs")
    st.session_state["known-runs"] = names
    appeared = [n for n in names if known is not None and n not in known]
    if appeared and "runs" in st.session_state:
        st.session_state["runs"] = [*st.session_state["runs"], *appeared]
        default = None  # the value was just set through the session state; a default would be ignored, with a warning
    return st.multiselect(
        "Runs", names, default=default, key="runs", help="Runs of the folder to include; the groups below are made from these.",
    )


def sidebar(discovery: data.Discovery, summaries: tuple[data.RunSummary, ...]) -> tuple[Settings, list[str]]:
    readable = [s for s in summaries if s.ok]
    requested, refused = requested_runs(discovery)
    with st.sidebar:
        st.title("parallax-probe")
        page = st.radio("Page", list(PAGES), key="page", bind="query-params")
        names = [s.name for s in readable]
        included = runs_picker(names, requested if requested or refused else names)
        keys = data.group_keys(readable)
        group_by = st.selectbox(
            "Group runs by", keys, key="group_by", bind="query-params",
            help="A metadata key (or a dotted path into the run's config); 'run' makes every run its own group.",
        )
        grouping = data.group_runs([s for s in readable if s.name in included], group_by)
        labels = list(grouping.groups)
        groups = st.multiselect(
            "Groups to compare", labels, default=labels[:2], key=f"groups-{group_by}",
            help="Seeds of a group are shown as their mean with a band; differences are first minus second group.",
        )
        refresh = st.number_input(
            "Live refresh (seconds)", min_value=1, max_value=300, value=DEFAULT_REFRESH_S, key="refresh",
            bind="query-params", help="How often a page showing a live run reads it again.",
        )
        image_format = st.radio("Figure download format", ["png", "svg"], horizontal=True, key="image_format")
    found = tuple(s.name for s in summaries)
    settings = Settings(page, group_by, tuple(groups), tuple(included), found, int(refresh), image_format)
    return settings, refused


def page_body(root: Path, settings: Settings) -> None:
    """The page, from a fresh look at the folder: in a fragment, this is what re-runs while a run is live."""
    discovery = data.discover_runs(root)
    summaries = tuple(cache.summary(entry) for entry in discovery.runs)
    if tuple(s.name for s in summaries) != settings.found:
        st.rerun()  # a run appeared or went away: the whole app, sidebar included, runs again
    included = [s for s in summaries if s.ok and s.name in settings.runs]
    grouping = data.group_runs(included, settings.group_by)
    groups = tuple(g for g in settings.groups if g in grouping.groups)
    ctx = Context(root, discovery, summaries, grouping, groups, settings.image_format)
    live = [s for s in included if s.status == "live"]
    if live:
        st.caption(
            "Live: " + ", ".join(f"**{s.name}** at step {s.last_step}" for s in live)
            + f" (read again every {settings.refresh_s} s)"
        )
    PAGES[settings.page](ctx)


def main(runs_dir: str) -> None:
    st.set_page_config(page_title="parallax-probe dashboard", layout="wide")
    root = Path(runs_dir).expanduser()
    discovery = data.discover_runs(root)
    summaries = tuple(cache.summary(entry) for entry in discovery.runs)
    settings, refused = sidebar(discovery, summaries)
    for message in refused:
        st.error(message)
    live = any(s.status == "live" and s.name in settings.runs for s in summaries)
    st.fragment(page_body, run_every=settings.refresh_s if live else None)(root, settings)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
