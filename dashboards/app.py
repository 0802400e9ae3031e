"""The dashboard's entry script: `streamlit run app.py -- RUNS_DIR` (what `parallax-probe dashboard` starts).

The sidebar picks the page, the runs and the groups; the page itself renders inside a
fragment that re-runs every few seconds while a picked run is live, so a growing run
updates without a full page reload. A second, empty fragment looks at the folder at the
same interval whatever is live, so a run started after the tab was opened appears by itself.

Every control that changes what is drawn is bound to a URL query parameter (its widget
key), so a link reopens the same view: `page`, `run` (repeatable), `filter`, `group_by`,
`merge`, `groups-<key>` (repeatable), `steps`, `log`, `refresh`, `image_format`, and on the
pages their views, layers, smoothing, bands, steps and measures. A `run` that names
something outside the runs folder is refused with a message.
"""

from __future__ import annotations

import math
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
    page_tokens,
    page_training,
    page_wr,
)
from parallax_probe.dashboards.figures import assign_colors
from parallax_probe.dashboards.text import md
from parallax_probe.dashboards.ui import Context

PAGES = {
    "Runs": page_runs.render,
    "COR": page_cor.render,
    "W_R rank": page_wr.render,
    "Probe norms": page_probe.render,
    "Training": page_training.render,
    "Rank collapse": page_collapse.render,
    "Tokens": page_tokens.render,
}
DEFAULT_REFRESH_S = 5
RUNS_KEY = "run"


@dataclass(frozen=True, slots=True)
class Settings:
    page: str
    group_by: str
    groups: tuple[str, ...]  # in analysis.groups.group_order
    runs: tuple[str, ...]  # names of the included runs (picked and matching the filter)
    found: tuple[str, ...]  # names of every run found when the sidebar was drawn
    live: bool  # an included run was live when the sidebar was drawn
    merge_configurations: bool
    step_range: tuple[int, int] | None
    log_y: bool
    refresh_s: int
    image_format: str
    color_index: dict[str, int]


def refused_run_names(discovery: data.Discovery) -> list[str]:
    """One message per `run` query parameter that does not name a run found in the folder.
    Read before the runs picker, which drops such values from the URL."""
    refused = []
    for name in st.query_params.get_all(RUNS_KEY):
        try:
            data.resolve_run_name(discovery, name)
        except data.RunNameError as error:
            refused.append(str(error))
    return refused


def runs_picker(names: list[str]) -> list[str]:
    """The picked runs, readable or not (an unreadable one shows its error on the Runs page and
    is left out of the charts). A run that appears while the app is open is added to the choice."""
    known = st.session_state.get("known-runs")
    st.session_state["known-runs"] = names
    appeared = [n for n in names if known is not None and n not in known]
    default: list[str] | None = names
    if appeared and RUNS_KEY in st.session_state:
        st.session_state[RUNS_KEY] = [*st.session_state[RUNS_KEY], *appeared]
        default = None  # the value was just set through the session state; a default would be ignored, with a warning
    return st.multiselect(
        "Runs", names, default=default, key=RUNS_KEY, bind="query-params",
        help="Runs of the folder to include; the groups below are made from these.",
    )


def groups_picker(labels: list[str], group_by: str) -> list[str]:
    """The picked groups; like runs, a group that appears while the app is open is added."""
    key, known_key = f"groups-{group_by}", f"known-groups-{group_by}"
    known = st.session_state.get(known_key)
    st.session_state[known_key] = labels
    appeared = [label for label in labels if known is not None and label not in known]
    default: list[str] | None = labels[:2]
    if appeared and key in st.session_state:
        st.session_state[key] = [*st.session_state[key], *appeared]
        default = None
    return st.multiselect(
        "Groups to compare", labels, default=default, key=key, bind="query-params",
        help="Seeds of a group are shown as their mean with a band. Differences are the first group minus the "
        "second in sorted order of their names, as in `parallax-probe analyze`.",
    )


def _round_up(step: int) -> int:
    """1, 2 or 5 times a power of ten at or above `step`: the step slider's end, which a live run
    crosses rarely (a slider whose end moves forgets the user's range)."""
    if step <= 10:
        return 10
    power = 10 ** math.floor(math.log10(step))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= step)


def step_range_picker(runs: list[data.RunSummary]) -> tuple[int, int] | None:
    """The steps every chart of the page shows; None: all of them."""
    last = max((s.last_logged_step for s in runs if s.last_logged_step is not None), default=None)
    if last is None:
        return None
    end = _round_up(last)
    low, high = st.slider(
        "Steps", 0, end, (0, end), key="steps", bind="query-params",
        help="Zoom: every chart of the page shows only these steps (the Rank collapse report reads whole runs).",
    )
    return None if (low, high) == (0, end) else (int(low), int(high))


def sidebar(discovery: data.Discovery, summaries: tuple[data.RunSummary, ...]) -> tuple[Settings, list[str], list[str]]:
    """(settings, refusal messages for `run` parameters, notes on the grouping)."""
    refused = refused_run_names(discovery)
    notes: list[str] = []
    with st.sidebar:
        st.title("parallax-probe")
        page = st.radio("Page", list(PAGES), key="page", bind="query-params")
        picked = runs_picker([s.name for s in summaries])
        expression = st.text_input(
            "Filter runs", key="filter", bind="query-params", placeholder="optimizer=muon lr<0.01",
            help="Terms KEY=VALUE, KEY!=VALUE, KEY<VALUE, KEY<=VALUE, KEY>VALUE, KEY>=VALUE, all of which must hold. "
            "KEY: a metadata key, a dotted path into the run's config, or the last part of one (lr).",
        )
        readable = [s for s in summaries if s.ok and s.name in picked]
        try:
            included = data.filter_runs(readable, expression)
        except data.FilterError as error:
            st.error(md(error))
            included = readable
        group_by = st.selectbox(
            "Group runs by", data.group_keys(included), key="group_by", bind="query-params",
            help="A metadata key, or a training-configuration field whose value differs between the runs; "
            "'run' makes every run its own group.",
        )
        merge = st.checkbox(
            "Average runs whose configurations differ", key="merge", bind="query-params",
            help="Off: runs that share a group label but differ in model, attention, task, optimizer settings, "
            "steps, batch size or sequence length are shown as separate groups.",
        )
        grouping = data.group_runs(included, group_by, merge_configurations=merge)
        groups = groups_picker(list(grouping.groups), group_by)
        notes += grouping.notes
        step_range = step_range_picker(included)
        log_y = st.checkbox("Log y axes", key="log", bind="query-params", help="Line charts of loss, COR, ranks and norms.")
        refresh = st.number_input(
            "Live refresh (seconds)", min_value=1, max_value=300, value=DEFAULT_REFRESH_S, key="refresh",
            bind="query-params", help="How often the page looks for new runs and reads live runs again.",
        )
        image_format = st.radio("Figure download format", ["png", "svg"], horizontal=True, key="image_format", bind="query-params")
    # Every label of this grouping gets its colour now, in sorted order, so picking or
    # removing groups later never recolours the others.
    colors = assign_colors(st.session_state.setdefault(f"colors-{group_by}", {}), grouping.groups)
    ordered = tuple(label for label in grouping.groups if label in groups)  # group_order, as the analysis compares them
    names = tuple(s.name for s in included)
    settings = Settings(
        page=page, group_by=group_by, groups=ordered, runs=names, found=tuple(s.name for s in summaries),
        live=any(s.status == "live" for s in included), merge_configurations=merge, step_range=step_range, log_y=log_y,
        refresh_s=int(refresh), image_format=image_format, color_index=colors,
    )
    return settings, refused, notes


def look_at_folder(root: Path, settings: Settings) -> None:
    """Runs every refresh interval, live runs or not: a run that appears, or starts or stops
    being live, makes the whole app run again (sidebar, grouping and the page's refresh)."""
    summaries = tuple(cache.summary(entry) for entry in data.discover_runs(root).runs)
    live = any(s.status == "live" and s.name in settings.runs for s in summaries)
    if tuple(s.name for s in summaries) != settings.found or live != settings.live:
        st.rerun()


def page_body(root: Path, settings: Settings) -> None:
    """The page, from a fresh look at the folder: in a fragment, this is what re-runs while a run is live."""
    discovery = data.discover_runs(root)
    summaries = tuple(cache.summary(entry) for entry in discovery.runs)
    if tuple(s.name for s in summaries) != settings.found:
        st.rerun()  # a run appeared or went away: the whole app, sidebar included, runs again
    included = [s for s in summaries if s.ok and s.name in settings.runs]
    grouping = data.group_runs(included, settings.group_by, merge_configurations=settings.merge_configurations)
    groups = tuple(g for g in settings.groups if g in grouping.groups)
    colors = {**settings.color_index, **assign_colors(dict(settings.color_index), grouping.groups)}
    ctx = Context(root, discovery, summaries, grouping, groups, settings.image_format, colors, settings.step_range, settings.log_y)
    live = [s for s in included if s.status == "live"]
    if live:
        st.caption(
            "Live: " + ", ".join(f"**{md(s.name)}** at step {s.last_logged_step}" for s in live)
            + f" (read again every {settings.refresh_s} s)"
        )
    PAGES[settings.page](ctx)


def main(runs_dir: str) -> None:
    st.set_page_config(page_title="parallax-probe dashboard", layout="wide")
    root = Path(runs_dir).expanduser()
    discovery = data.discover_runs(root)
    summaries = tuple(cache.summary(entry) for entry in discovery.runs)
    settings, refused, notes = sidebar(discovery, summaries)
    for message in refused:
        st.error(md(message))
    for note in notes:
        st.caption(md(note))
    st.fragment(look_at_folder, run_every=settings.refresh_s)(root, settings)
    st.fragment(page_body, run_every=settings.refresh_s if settings.live else None)(root, settings)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
