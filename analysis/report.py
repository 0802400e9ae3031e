"""A rank-collapse report over runs: per layer, final COR and W_R ranks per group, collapse
onsets, group differences with intervals and tests, and every problem with the input.

`build_report` reads runs through a tiny protocol (`RunLike`: what `parallax_probe.store.open_run`
returns), so it never opens files itself; how runs form groups, which depth they keep and which
column gives a layer's COR are the read model's rules (`runs.py`), shared with the dashboards.
Bad input (a run without spectra, too few steps, another depth, no grouping key) becomes a
`Problem` naming the run and what is missing, and the rest of the report is still built.
`analyze_main` is the `parallax-probe analyze` body.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, Protocol, TextIO

import numpy as np

from parallax_probe.store import COR_MEAN, LAYER_COR_MEAN, WR_EFFECTIVE_RANK, WR_STABLE_RANK, WR_STEP, open_run

from .compare import GroupComparison, compare_groups
from .depth import DepthTrend, depth_trend
from .groups import lookup
from .render import render_json, render_markdown, render_text
from .runs import group_runs, most_common_shape, read_layer_means
from .trajectory import MIN_POINTS_FOR_TREND, TrajectoryStats, trajectory_stats

__all__ = [
    "GroupLayerSummary",
    "GroupSummary",
    "Problem",
    "Report",
    "ReportSettings",
    "RunLayerSummary",
    "RunLike",
    "RunSummary",
    "analyze_main",
    "build_report",
    "render_json",
    "render_markdown",
    "render_text",
]

COR_STEP_NAME = "step"
# Expected dimensions of the columns read for a layer's COR: steps, per head, per layer.
COR_COLUMN_NDIM = {COR_STEP_NAME: 1, COR_MEAN: 3, LAYER_COR_MEAN: 2}

# The statistics compared between groups: (JSON/report name, what the reader is told it is).
COMPARED_STATISTICS = (
    ("final_cor", f"final COR ({COR_MEAN}, mean over heads)"),
    ("final_stable_rank", f"final W_R stable rank ({WR_STABLE_RANK})"),
    ("final_effective_rank", f"final W_R effective rank ({WR_EFFECTIVE_RANK})"),
)
FORMATS = ("text", "json", "markdown")


class RunLike(Protocol):
    """What the report needs of a run: named arrays, their names, metadata and where it lives.
    A run may also carry `name`, the label the report shows (else its folder's name)."""

    meta: Mapping[str, Any]
    path: Any

    def __getitem__(self, name: str) -> Any: ...

    def names(self) -> list[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """Something missing or inconsistent in the input; `run` is None when it concerns no single run."""

    run: str | None
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLayerSummary:
    """One run, one layer: the trajectories of COR (mean over heads) and of the W_R ranks.
    A field is None when the run does not hold that series."""

    layer: int
    cor: TrajectoryStats | None
    stable_rank: TrajectoryStats | None
    effective_rank: TrajectoryStats | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    run: str
    path: str
    group: str | None
    seed: Any
    n_layers: int | None
    in_comparisons: bool
    layers: tuple[RunLayerSummary, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupLayerSummary:
    """One group, one layer: means over its runs of the final values, and the collapse onsets
    of the W_R ranks, one per run that holds the series with enough points (None: no collapse)."""

    layer: int
    final_cor: float | None
    final_stable_rank: float | None
    final_effective_rank: float | None
    stable_rank_onsets: tuple[int | float | None, ...]
    effective_rank_onsets: tuple[int | float | None, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSummary:
    """Runs of one group (of the report's common depth), per layer, and depth trends of the
    group-mean final profiles."""

    name: str
    runs: tuple[str, ...]
    runs_with_spectra: tuple[str, ...]
    layers: tuple[GroupLayerSummary, ...]
    cor_depth_trend: DepthTrend | None
    stable_rank_depth_trend: DepthTrend | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSettings:
    group_by: str | None
    merge_configurations: bool
    collapse_threshold: float
    collapse_relative_to: str | None
    persistence: float | None
    cor_threshold: float
    confidence: float
    alpha: float
    n_resamples: int
    seed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    settings: ReportSettings
    runs: tuple[RunSummary, ...]
    groups: tuple[GroupSummary, ...]
    comparisons: tuple[GroupComparison, ...]
    problems: tuple[Problem, ...]
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        """Plain JSON types only: tuples become lists, NaN and inf become None."""
        return _json_safe(dataclasses.asdict(self))


def _json_safe(value):
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _run_label(run: RunLike) -> str:
    """A run by the name its reader gives it (`run.name`, where it has one: the dashboard passes
    its own), else by its folder's name, as the dashboard lists a run (one segment file opened
    alone: folder/file); without a path, by its run_id (32 hex digits, which no reader can place)."""
    name = getattr(run, "name", None)
    if isinstance(name, str) and name:
        return name
    path = getattr(run, "path", None)
    if path:
        path = PurePath(path)
        name = path.name or str(path)
        return f"{path.parent.name}/{name}" if name.endswith(".h5") and path.parent.name else name
    run_id = run.meta.get("run_id") if isinstance(run.meta, Mapping) else None
    return str(run_id) if run_id else "<unnamed run>"


class _RunReader:
    """Reads one run's arrays, turning every failure into a Problem for that run."""

    def __init__(self, run: RunLike, label: str, problems: list[Problem]):
        self.run, self.label, self.problems = run, label, problems
        try:
            self.available = set(run.names())
        except Exception as error:  # a broken file must not stop the other runs' report
            self.available = set()
            self.problems.append(Problem(run=label, message=f"could not list its arrays: {error}"))

    def read(self, name: str, ndim: int) -> np.ndarray | None:
        if name not in self.available:
            return None
        try:
            array = np.asarray(self.run[name])
        except KeyError:
            return None
        except Exception as error:  # a damaged array is reported, the rest of the run still used
            self.problems.append(Problem(run=self.label, message=f"could not read '{name}': {error}"))
            return None
        if array.ndim != ndim:
            self.problems.append(
                Problem(run=self.label, message=f"'{name}' has shape {array.shape}, expected {ndim} dimensions")
            )
            return None
        return array

    def series(self, steps_name: str, values_name: str, ndim: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps (N,), values (N, ...)) when both exist and agree in length."""
        values = self.read(values_name, ndim)
        if values is None:
            return None
        steps = self.read(steps_name, 1)
        if steps is None:
            self._no_steps(steps_name, values_name)
            return None
        return self.checked(steps_name, values_name, steps, values)

    def _no_steps(self, steps_name: str, values_name: str) -> None:
        self.problems.append(
            Problem(run=self.label, message=f"has '{values_name}' but no '{steps_name}' to place it in training")
        )

    def checked(self, steps_name: str, values_name: str, steps: np.ndarray, values: np.ndarray):
        """(steps, values) if they agree in length (a Problem if not, or if too short for a trend)."""
        if len(steps) != len(values):
            self.problems.append(
                Problem(
                    run=self.label,
                    message=f"'{steps_name}' has {len(steps)} entries but '{values_name}' has {len(values)} rows",
                )
            )
            return None
        if len(steps) < MIN_POINTS_FOR_TREND:
            self.problems.append(
                Problem(
                    run=self.label,
                    message=f"'{values_name}' has {len(steps)} logged step(s); trends need at least "
                    f"{MIN_POINTS_FOR_TREND} (final values are still used)",
                )
            )
        return steps, values

    def layer_cor(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps (N,), COR (N, L) float64 as the mean over heads of each head's token mean), by
        the read model's rule (`runs.read_layer_means`): the probe's stored head mean where every
        row has it, else the per-head column with NaN heads left out."""
        if COR_MEAN not in self.available and LAYER_COR_MEAN not in self.available:
            return None

        def read(*names: str) -> dict[str, np.ndarray]:
            arrays = {name: self.read(name, COR_COLUMN_NDIM[name]) for name in names}
            if arrays[COR_STEP_NAME] is None and any(arrays[name] is not None for name in names[1:]):
                self._no_steps(COR_STEP_NAME, names[1])
            if any(array is None for array in arrays.values()):
                raise _Unusable
            return arrays

        try:
            steps, values = read_layer_means(read, self.available, [COR_MEAN], step=COR_STEP_NAME)
        except _Unusable:
            return None
        found = self.checked(COR_STEP_NAME, COR_MEAN, steps, values[COR_MEAN])
        return None if found is None else (found[0], found[1].astype(np.float64))


class _Unusable(Exception):
    """A column the report cannot use; its Problem, if any, is recorded already."""


def _per_layer_stats(steps, values, label: str, values_name: str, problems: list[Problem], settings: ReportSettings):
    """trajectory_stats for each column of values (N, L); None for all on invalid steps."""
    try:
        return [
            trajectory_stats(
                steps,
                values[:, layer],
                threshold=settings.collapse_threshold,
                relative_to=settings.collapse_relative_to,
                persistence=settings.persistence,
                confidence=settings.confidence,
            )
            for layer in range(values.shape[1])
        ]
    except ValueError as error:
        problems.append(Problem(run=label, message=f"'{values_name}': {error}"))
        return None


def _summarize_run(run: RunLike, label: str, group, settings: ReportSettings, problems: list[Problem]):
    reader = _RunReader(run, label, problems)
    cor = reader.layer_cor()
    stable = reader.series(WR_STEP, WR_STABLE_RANK, ndim=2)
    effective = reader.series(WR_STEP, WR_EFFECTIVE_RANK, ndim=2)

    if cor is None and COR_MEAN not in reader.available:
        problems.append(Problem(run=label, message=f"has no COR statistics ('{COR_MEAN}' missing)"))
    if stable is None and effective is None and WR_STABLE_RANK not in reader.available:
        problems.append(
            Problem(
                run=label,
                message=f"has no W_R spectra ('{WR_STABLE_RANK}' missing: a softmax model, or logged without "
                "spectra); its ranks are left out",
            )
        )
    elif effective is None and WR_EFFECTIVE_RANK not in reader.available:
        problems.append(Problem(run=label, message=f"has no '{WR_EFFECTIVE_RANK}'"))

    cor_stats = stable_stats = effective_stats = None
    if cor is not None:
        cor_stats = _per_layer_stats(*cor, label, COR_MEAN, problems, settings)
    if stable is not None:
        stable_stats = _per_layer_stats(*stable, label, WR_STABLE_RANK, problems, settings)
    if effective is not None:
        effective_stats = _per_layer_stats(*effective, label, WR_EFFECTIVE_RANK, problems, settings)

    depths = {
        name: len(layer_stats)
        for name, layer_stats in ((COR_MEAN, cor_stats), (WR_STABLE_RANK, stable_stats), (WR_EFFECTIVE_RANK, effective_stats))
        if layer_stats is not None
    }
    n_layers = max(depths.values()) if depths else None
    if len(set(depths.values())) > 1:
        problems.append(
            Problem(
                run=label,
                message="its arrays disagree on the layer count ("
                + ", ".join(f"'{name}': {depth}" for name, depth in depths.items())
                + "); layers missing from an array are left empty",
            )
        )

    def at(layer_stats, layer):
        return layer_stats[layer] if layer_stats is not None and layer < len(layer_stats) else None

    layers = tuple(
        RunLayerSummary(
            layer=layer,
            cor=at(cor_stats, layer),
            stable_rank=at(stable_stats, layer),
            effective_rank=at(effective_stats, layer),
        )
        for layer in range(n_layers or 0)
    )
    return RunSummary(
        run=label,
        path=str(getattr(run, "path", "")),
        group=group,
        seed=_json_safe(lookup(_meta(run), "seed")),
        n_layers=n_layers,
        in_comparisons=False,
        layers=layers,
    )


def _final(stats: TrajectoryStats | None) -> float:
    return np.nan if stats is None or stats.final is None else stats.final


def _final_values(runs: Sequence[RunSummary], statistic: str) -> np.ndarray:
    """(runs, L) final values of one compared statistic, NaN where a run lacks it."""
    field = {"final_cor": "cor", "final_stable_rank": "stable_rank", "final_effective_rank": "effective_rank"}[statistic]
    return np.array([[_final(getattr(layer, field)) for layer in run.layers] for run in runs], dtype=np.float64)


def _mean_or_none(column: np.ndarray) -> float | None:
    finite = column[np.isfinite(column)]
    return float(finite.mean()) if finite.size else None


def _onsets(runs: Sequence[RunSummary], field: str, layer: int) -> tuple:
    """Collapse onsets of the runs in which one could be looked for (the series is there, with
    enough points); None for those that did not collapse."""
    series = (getattr(run.layers[layer], field) for run in runs)
    return tuple(stats.collapse_onset for stats in series if stats is not None and stats.collapse_evaluated)


def _profile_trend(profile: np.ndarray, threshold: float | None, alpha: float) -> DepthTrend | None:
    return depth_trend(profile, threshold=threshold, alpha=alpha) if np.any(np.isfinite(profile)) else None


def _summarize_group(name: str, runs: Sequence[RunSummary], settings: ReportSettings) -> GroupSummary:
    finals = {statistic: _final_values(runs, statistic) for statistic, _ in COMPARED_STATISTICS}
    n_layers = runs[0].n_layers
    layers = tuple(
        GroupLayerSummary(
            layer=layer,
            final_cor=_mean_or_none(finals["final_cor"][:, layer]),
            final_stable_rank=_mean_or_none(finals["final_stable_rank"][:, layer]),
            final_effective_rank=_mean_or_none(finals["final_effective_rank"][:, layer]),
            stable_rank_onsets=_onsets(runs, "stable_rank", layer),
            effective_rank_onsets=_onsets(runs, "effective_rank", layer),
        )
        for layer in range(n_layers)
    )

    def profile(field: str) -> np.ndarray:
        return np.array([np.nan if getattr(g, field) is None else getattr(g, field) for g in layers])

    return GroupSummary(
        name=name,
        runs=tuple(run.run for run in runs),
        runs_with_spectra=tuple(
            run.run for run in runs if any(layer.stable_rank is not None for layer in run.layers)
        ),
        layers=layers,
        cor_depth_trend=_profile_trend(profile("final_cor"), settings.cor_threshold, settings.alpha),
        stable_rank_depth_trend=_profile_trend(profile("final_stable_rank"), None, settings.alpha),
    )


def _final_step_note(runs: Sequence[RunSummary]) -> str | None:
    final_steps = {}
    for run in runs:
        steps = {
            getattr(layer, field).final_step
            for layer in run.layers
            for field in ("cor", "stable_rank")
            if getattr(layer, field) is not None and getattr(layer, field).final_step is not None
        }
        if steps:
            final_steps[run.run] = max(steps)
    if len(set(final_steps.values())) > 1:
        listed = ", ".join(f"{run} at step {step}" for run, step in final_steps.items())
        return f"Final values are taken at different steps ({listed}); differences may partly reflect training length."
    return None


def build_report(
    runs: Sequence[RunLike],
    *,
    group_by: str | None = "optimizer",
    merge_configurations: bool = False,
    collapse_threshold: float = 0.5,
    collapse_relative_to: Literal["peak", "initial"] | None = "peak",
    persistence: float | None = None,
    cor_threshold: float = 1.0,
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_resamples: int = 9999,
    seed: int = 0,
) -> Report:
    """Per-run trajectories, per-group summaries and pairwise group comparisons of final values.

    group_by: a metadata key (meta[key], else the run's config at that dotted path) whose
        value names each run's group; "run" makes every run its own group; None puts every run
        in one group "all" (`runs.group_runs`, the dashboard's rule).
    merge_configurations: average runs that share a group label but were trained differently
        (model, attention, task, optimizer settings, steps, batch size, sequence length:
        `groups.configuration`). By default they become one group per configuration, labelled
        with what differs, and a note says so.
    collapse_threshold, collapse_relative_to, persistence: the collapse definition passed to
        `trajectory_stats` for every series (default: below half the peak for a tenth of the
        logged span).
    cor_threshold: the depth trends report the first layer whose group-mean final COR exceeds it
        (1: the correction is as large as the softmax output).
    confidence, alpha, n_resamples, seed: passed to `compare_groups` and `depth_trend`.

    Runs of a depth other than the most common one, and runs without the grouping key,
    keep their per-run summary but are left out of groups and comparisons, with a Problem.
    Groups are compared pairwise in `groups.group_order` (sorted by name), each difference the
    earlier group minus the later one, whatever order the runs are given in.
    """
    if collapse_relative_to not in ("peak", "initial", None):
        raise ValueError(f"collapse_relative_to must be 'peak', 'initial' or None, got {collapse_relative_to!r}")
    if not (math.isfinite(collapse_threshold) and math.isfinite(cor_threshold)):
        raise ValueError(f"thresholds must be finite, got {collapse_threshold} and {cor_threshold}")
    if persistence is not None and not persistence >= 0:
        raise ValueError(f"persistence must be >= 0 steps or None, got {persistence}")
    if not (0 < confidence < 1 and 0 < alpha < 1):
        raise ValueError(f"confidence and alpha must be in (0, 1), got {confidence} and {alpha}")
    settings = ReportSettings(
        group_by=group_by,
        merge_configurations=merge_configurations,
        collapse_threshold=collapse_threshold,
        collapse_relative_to=collapse_relative_to,
        persistence=persistence,
        cor_threshold=cor_threshold,
        confidence=confidence,
        alpha=alpha,
        n_resamples=n_resamples,
        seed=seed,
    )
    problems: list[Problem] = []
    notes: list[str] = []
    if not runs:
        problems.append(Problem(run=None, message="no runs given"))

    labelled: dict[str, RunLike] = {}
    labels_by_path: dict[str, str] = {}
    for run in runs:
        label = _run_label(run)
        path = str(getattr(run, "path", ""))
        if label in labels_by_path.values():
            # Two runs whose folders share a name: the path tells them apart in every message and table.
            label = f"{label} ({path})"
        if path and path in labels_by_path:
            problems.append(Problem(run=label, message=f"given twice (same path as {labels_by_path[path]}); counted once"))
            continue
        labels_by_path[path] = label
        labelled[label] = run

    grouping = group_runs({label: _meta(run) for label, run in labelled.items()}, group_by,
                          merge_configurations=merge_configurations)
    group_of = {label: group for group, members in grouping.groups.items() for label in members}
    for label, reason in grouping.left_out:
        problems.append(Problem(run=label, message=f"{reason}; left out of groups and comparisons"))
    notes += grouping.notes
    summaries = [_summarize_run(run, label, group_of.get(label), settings, problems) for label, run in labelled.items()]

    comparable = _comparable_runs(summaries, problems)
    summaries = [dataclasses.replace(s, in_comparisons=s.run in comparable) for s in summaries]
    # runs.group_runs gives the groups in groups.group_order: the order (and so the sign of every
    # difference) the dashboard uses too.
    runs_by_group = {
        name: members
        for name in grouping.groups
        if (members := [summary for summary in summaries if summary.in_comparisons and summary.group == name])
    }
    problems += _shared_seed_problems(runs_by_group)
    groups = tuple(_summarize_group(name, members, settings) for name, members in runs_by_group.items())

    if len(runs_by_group) == 1 and group_by is not None:
        notes.append(f"Only one group ('{next(iter(runs_by_group))}') by '{group_by}': nothing to compare.")
    comparisons = _compare_all_pairs(runs_by_group, settings, notes)
    n_tests = sum(comparison.across_layers is not None for comparison in comparisons)
    if n_tests > 1:
        notes.append(f"{n_tests} across-layer tests in this report; their p-values are not corrected for multiple testing.")
    final_step_note = _final_step_note([summary for summary in summaries if summary.in_comparisons])
    if final_step_note:
        notes.append(final_step_note)

    return Report(
        settings=settings,
        runs=tuple(summaries),
        groups=groups,
        comparisons=comparisons,
        problems=tuple(problems),
        notes=tuple(notes),
    )


def _meta(run: RunLike) -> Mapping[str, Any]:
    return run.meta if isinstance(run.meta, Mapping) else {}


def _comparable_runs(summaries: Sequence[RunSummary], problems: list[Problem]) -> set[str]:
    """Labels of the grouped runs with per-layer data at the most common depth."""
    grouped = []
    for summary in summaries:
        if summary.group is None:
            continue
        if not summary.n_layers:
            problems.append(Problem(run=summary.run, message="has no per-layer data; left out of groups and comparisons"))
        else:
            grouped.append(summary)
    if not grouped:
        return set()
    # Groups are compared layer by layer: every group at one depth, the read model's common one.
    (common_depth,) = most_common_shape((summary.n_layers,) for summary in grouped)
    for summary in grouped:
        if summary.n_layers != common_depth:
            problems.append(
                Problem(
                    run=summary.run,
                    message=f"has {summary.n_layers} layers where the other runs have {common_depth}; "
                    "left out of groups and comparisons",
                )
            )
    return {summary.run for summary in grouped if summary.n_layers == common_depth}


def _shared_seed_problems(runs_by_group: Mapping[str, Sequence[RunSummary]]) -> list[Problem]:
    problems = []
    for name, members in runs_by_group.items():
        seeds = Counter(str(member.seed) for member in members if member.seed is not None)
        problems += [
            Problem(
                run=None,
                message=f"{count} runs of group '{name}' share seed {seed}; they are counted as independent "
                "replicates but may not be",
            )
            for seed, count in seeds.items()
            if count > 1
        ]
    return problems


def _compare_all_pairs(
    runs_by_group: Mapping[str, Sequence[RunSummary]], settings: ReportSettings, notes: list[str]
) -> tuple[GroupComparison, ...]:
    comparisons = []
    names = list(runs_by_group)
    for i, name_a in enumerate(names):
        for name_b in names[i + 1 :]:
            for statistic, description in COMPARED_STATISTICS:
                values_a = _final_values(runs_by_group[name_a], statistic)
                values_b = _final_values(runs_by_group[name_b], statistic)
                # Runs without this statistic (no spectra) are not seeds of this comparison.
                values_a = values_a[np.any(np.isfinite(values_a), axis=1)]
                values_b = values_b[np.any(np.isfinite(values_b), axis=1)]
                if len(values_a) == 0 or len(values_b) == 0:
                    notes.append(f"No comparison of {description} between '{name_a}' and '{name_b}': a group has no run with it.")
                    continue
                comparisons.append(
                    compare_groups(
                        values_a,
                        values_b,
                        group_a=name_a,
                        group_b=name_b,
                        statistic=description,
                        confidence=settings.confidence,
                        alpha=settings.alpha,
                        n_resamples=settings.n_resamples,
                        seed=settings.seed,
                    )
                )
    return tuple(comparisons)


def _open_run(path: str):
    return open_run(path)


def analyze_main(
    paths: list[str], group_by: str, fmt: str, out: TextIO, err: TextIO, *, merge_configurations: bool = False
) -> int:
    """`parallax-probe analyze`: open the runs, build the report, write it in `fmt` to `out`.

    A path that does not open as a run gets one line on `err` (and a Problem in the report);
    the report on the runs that did open is still written. Exit code: 0 when every path
    opened, 2 when any did not (or for an unknown format), so scripts notice a run left out.
    """
    if fmt not in FORMATS:
        err.write(f"parallax-probe analyze: error: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}\n")
        return 2
    runs, opening_problems = [], []
    for path in paths:
        try:
            runs.append(_open_run(path))
        except Exception as error:  # one unreadable path must not hide the report on the others
            message = " ".join(str(error).split())  # one line, whatever the error's text holds
            err.write(f"parallax-probe analyze: error: {message if str(path) in message else f'{path}: {message}'}\n")
            opening_problems.append(Problem(run=str(path), message=f"could not be opened: {message}"))
    if not runs:
        return 2
    report = build_report(runs, group_by=group_by, merge_configurations=merge_configurations)
    report = dataclasses.replace(report, problems=tuple(opening_problems) + report.problems)
    renderer = {"text": render_text, "json": render_json, "markdown": render_markdown}[fmt]
    out.write(renderer(report))
    return 2 if opening_problems else 0
