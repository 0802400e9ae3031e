"""Two groups of runs (Muon vs AdamW, any grouping), one statistic per layer: differences and tests.

The unit of replication is the run (seed). Per layer, the difference of group means gets a
bootstrap interval over seeds; across layers, a Wilcoxon signed-rank test on the per-layer
group means, paired by layer, with its rank-biserial effect size. Each is given only when
the data can support it, and `notes` says what was done, what was withheld and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "MIN_SEEDS_FOR_INTERVAL",
    "MIN_SEEDS_FOR_TEST",
    "AcrossLayerTest",
    "GroupComparison",
    "LayerDifference",
    "compare_groups",
    "smallest_wilcoxon_p",
]

# With 2 seeds a group's resampled mean takes only three values, and the "95%" percentile
# interval is about the range of the data; from 3 on the interval means something, though it
# stays narrower than nominal (see the coverage note below).
MIN_SEEDS_FOR_INTERVAL = 3
# With one seed per group, seed-to-seed variation cannot be told apart from the group effect.
MIN_SEEDS_FOR_TEST = 2

# Measured miss rates of a nominal 95% percentile interval for a difference of two means,
# normal data, equal seeds per group (2000 simulated comparisons each; docs/analysis.md).
BOOTSTRAP_MISS_RATE_AT_95 = {2: 0.32, 3: 0.21, 4: 0.14, 5: 0.12, 8: 0.10, 10: 0.08, 20: 0.07}

INTERVAL_METHOD = "percentile bootstrap (scipy.stats.bootstrap), each group resampled independently"
WILCOXON_TEST = "Wilcoxon signed-rank, two-sided, zero differences dropped (scipy.stats.wilcoxon)"


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerDifference:
    """One layer: group means over seeds and their difference `mean_a - mean_b`.

    interval_low/high: the bootstrap interval of the difference, None when either group has
    fewer than MIN_SEEDS_FOR_INTERVAL finite values in this layer.
    """

    layer: int
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    difference: float | None
    interval_low: float | None
    interval_high: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AcrossLayerTest:
    """Wilcoxon signed-rank test of the per-layer differences of group means.

    rank_biserial is the matched-pairs rank-biserial correlation (W+ - W-) / (W+ + W-)
    (Kerby 2014), in [-1, 1]: +1 when group a is higher in every layer.
    """

    test: str
    n_layers: int
    n_nonzero: int
    statistic: float
    p_value: float
    p_value_method: str
    rank_biserial: float
    smallest_achievable_p: float
    alpha: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupComparison:
    statistic: str
    group_a: str
    group_b: str
    n_seeds_a: int
    n_seeds_b: int
    confidence: float
    interval_method: str | None
    layers: tuple[LayerDifference, ...]
    across_layers: AcrossLayerTest | None
    notes: tuple[str, ...]


def smallest_wilcoxon_p(n_nonzero: int) -> float:
    """Smallest two-sided p of the exact signed-rank test with n non-zero differences: 2 / 2^n
    (every difference of one sign). Ties only make it larger."""
    return min(1.0, 2.0 ** (1 - n_nonzero))


def _difference_of_means(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _layer_difference(layer: int, a: np.ndarray, b: np.ndarray, confidence: float, n_resamples: int, rng):
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    mean_a = float(np.mean(a)) if a.size else None
    mean_b = float(np.mean(b)) if b.size else None
    difference = mean_a - mean_b if a.size and b.size else None
    low = high = None
    if min(a.size, b.size) >= MIN_SEEDS_FOR_INTERVAL:
        result = stats.bootstrap(
            (a, b),
            _difference_of_means,
            vectorized=True,
            paired=False,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="percentile",
            rng=rng,
        )
        low, high = (float(x) for x in result.confidence_interval)
    return LayerDifference(
        layer=layer,
        n_a=int(a.size),
        n_b=int(b.size),
        mean_a=mean_a,
        mean_b=mean_b,
        difference=difference,
        interval_low=low,
        interval_high=high,
    )


def _wilcoxon_method(differences: np.ndarray) -> str:
    """The method scipy.stats.wilcoxon(method="auto") picks, in words (scipy >= 1.13)."""
    n = len(differences)
    has_ties = len(np.unique(np.abs(differences))) < n
    if has_ties:
        return "exact permutation over all sign flips (ties)" if n <= 13 else "normal approximation (ties)"
    return "exact null distribution" if n <= 50 else "normal approximation"


def _across_layer_test(means_a: np.ndarray, means_b: np.ndarray, alpha: float, notes: list[str]):
    differences = means_a - means_b
    differences = differences[np.isfinite(differences)]
    nonzero = differences[differences != 0]
    n_nonzero = len(nonzero)
    smallest_p = smallest_wilcoxon_p(n_nonzero)
    if smallest_p >= alpha:
        notes.append(
            f"No across-layer test: {n_nonzero} layer(s) with a non-zero difference, and the smallest two-sided "
            f"p the signed-rank test can give with {n_nonzero} is {smallest_p:.3g} >= alpha = {alpha} "
            "(at least 6 are needed at alpha = 0.05)."
        )
        return None
    result = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method="auto")
    ranks = stats.rankdata(np.abs(nonzero))
    positive_rank_sum, negative_rank_sum = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    rank_biserial = (positive_rank_sum - negative_rank_sum) / (positive_rank_sum + negative_rank_sum)
    notes.append(
        f"Across layers: {WILCOXON_TEST} on the per-layer group means, paired by layer; effect size: "
        "matched-pairs rank-biserial correlation (W+ - W-)/(W+ + W-) (Kerby 2014). It assumes the "
        "per-layer differences are independent and symmetric about their median. Layers of one model are "
        "not independent: a seed effect shared by all layers makes it too liberal, so it says whether these "
        "runs differ consistently across layers, not whether new seeds would."
    )
    return AcrossLayerTest(
        test=WILCOXON_TEST,
        n_layers=len(differences),
        n_nonzero=n_nonzero,
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        p_value_method=_wilcoxon_method(nonzero),
        rank_biserial=float(rank_biserial),
        smallest_achievable_p=smallest_p,
        alpha=alpha,
    )


def _coverage_note(n_seeds: int, confidence: float) -> str:
    measured = [(n, rate) for n, rate in sorted(BOOTSTRAP_MISS_RATE_AT_95.items()) if n <= n_seeds]
    closest_n, miss_rate = measured[-1]
    return (
        f"Intervals: {INTERVAL_METHOD}, {confidence:.0%} level. With few seeds they are narrower than "
        f"nominal: in simulation a nominal 95% interval missed the true difference in {miss_rate:.0%} of "
        f"cases at {closest_n} seeds per group (5% intended). Read them as descriptive spread, not as a test."
    )


def compare_groups(
    values_a,
    values_b,
    *,
    group_a: str = "a",
    group_b: str = "b",
    statistic: str = "value",
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_resamples: int = 9999,
    seed: int = 0,
) -> GroupComparison:
    """Per-layer differences of `statistic` between two groups of runs, and an across-layer test.

    values_a: (runs_a, L) one row per run (seed) of group a; values_b: (runs_b, L). Non-finite
    entries are left out layer by layer. difference = mean_a - mean_b.

    - Interval per layer (each group with >= MIN_SEEDS_FOR_INTERVAL = 3 finite values): a
      percentile bootstrap of the difference of means, resampling seeds within each group
      independently (scipy.stats.bootstrap, n_resamples, fixed `seed` for reproducibility).
    - Across layers (each group with >= MIN_SEEDS_FOR_TEST = 2 runs, and enough layers that
      2 / 2^n < alpha for n non-zero differences): a two-sided Wilcoxon signed-rank test on
      the per-layer group means, with the matched-pairs rank-biserial correlation.
    - One run in a group: differences only, a note that no significance can be claimed,
      and no p-value.
    """
    values_a = np.asarray(values_a, dtype=np.float64)
    values_b = np.asarray(values_b, dtype=np.float64)
    if values_a.ndim != 2 or values_b.ndim != 2:
        raise ValueError(f"values_a and values_b must be (runs, L), got shapes {values_a.shape} and {values_b.shape}")
    if values_a.shape[1] != values_b.shape[1]:
        raise ValueError(
            f"groups have different layer counts ({values_a.shape[1]} vs {values_b.shape[1]}); "
            "compare runs of one depth only"
        )
    if values_a.shape[1] == 0:
        raise ValueError("values have no layers (L = 0)")
    if values_a.shape[0] == 0 or values_b.shape[0] == 0:
        raise ValueError(f"each group needs at least one run, got {values_a.shape[0]} and {values_b.shape[0]}")
    if not 0 < confidence < 1 or not 0 < alpha < 1:
        raise ValueError(f"confidence and alpha must be in (0, 1), got {confidence} and {alpha}")

    n_seeds_a, n_seeds_b = values_a.shape[0], values_b.shape[0]
    notes = [f"difference = mean({group_a}) - mean({group_b}) of {statistic} per layer, means over runs (seeds)."]
    rng = np.random.default_rng(seed)
    layers = tuple(
        _layer_difference(layer, values_a[:, layer], values_b[:, layer], confidence, n_resamples, rng)
        for layer in range(values_a.shape[1])
    )

    has_intervals = any(layer.interval_low is not None for layer in layers)
    if has_intervals:
        notes.append(_coverage_note(min(n_seeds_a, n_seeds_b), confidence))
    if min(n_seeds_a, n_seeds_b) < MIN_SEEDS_FOR_INTERVAL:
        notes.append(
            f"No bootstrap interval: it needs at least {MIN_SEEDS_FOR_INTERVAL} runs per group ({group_a}: "
            f"{n_seeds_a}, {group_b}: {n_seeds_b}); with 2, a group's resampled mean takes only three values."
        )
    else:
        thin_layers = [str(layer.layer) for layer in layers if layer.interval_low is None]
        if thin_layers:
            notes.append(
                f"No interval in layer(s) {', '.join(thin_layers)}: fewer than {MIN_SEEDS_FOR_INTERVAL} finite "
                "values in a group there."
            )

    across_layers = None
    if min(n_seeds_a, n_seeds_b) < MIN_SEEDS_FOR_TEST:
        notes.append(
            f"One run in a group ({group_a}: {n_seeds_a}, {group_b}: {n_seeds_b}): the differences mix the group "
            "effect with seed-to-seed variation, which one run cannot measure. No significance can be claimed, "
            "and no p-value is given."
        )
    else:
        means = np.array([[np.nan if x is None else x for x in (d.mean_a, d.mean_b)] for d in layers])
        across_layers = _across_layer_test(means[:, 0], means[:, 1], alpha, notes)

    return GroupComparison(
        statistic=statistic,
        group_a=group_a,
        group_b=group_b,
        n_seeds_a=n_seeds_a,
        n_seeds_b=n_seeds_b,
        confidence=confidence,
        interval_method=INTERVAL_METHOD if has_intervals else None,
        layers=layers,
        across_layers=across_layers,
        notes=tuple(notes),
    )
