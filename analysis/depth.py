"""How a per-layer statistic (COR, a W_R rank) changes with depth at one step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["DepthTrend", "depth_trend", "depth_trend_at_step"]

# Up to 8 layers the p-value is exact over all n! layer orders (8! = 40320, ~0.1 s); at 9
# that is ~1 s per call, and from about 10 layers the t approximation is close to exact.
EXACT_PERMUTATION_MAX_LAYERS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class DepthTrend:
    """Spearman correlation of a statistic with layer index (0 = first layer), and the first
    layer whose value exceeds a threshold. None where the data cannot give a number; `reason` says why.

    p_value tests "no monotone association with depth" treating the layers of one profile
    as the sample; it is withheld (None) when even a perfectly monotone profile of this
    many layers could not reach `alpha` (smallest_achievable_p >= alpha).
    """

    step: int | float | None
    n_layers: int
    spearman_rho: float | None
    p_value: float | None
    p_value_method: str | None
    smallest_achievable_p: float | None
    alpha: float
    threshold: float | None
    first_layer_above: int | None
    reason: str | None


def depth_trend(values_per_layer, *, threshold: float | None = None, alpha: float = 0.05) -> DepthTrend:
    """Depth trend of one profile: values_per_layer (L,), layer 0 first.

    rho is Spearman's rank correlation with the layer index (scipy.stats.spearmanr). Its
    two-sided p-value is exact (a permutation test over all L! layer orders,
    scipy.stats.permutation_test) for L <= 8, and spearmanr's t approximation above. The
    smallest two-sided p an exact test can give is 2 / L! (0.083 at 4 layers), so with 4 or
    fewer layers no p-value is reported at alpha = 0.05.

    first_layer_above is the first layer (0-based) whose value is > threshold, None if none
    is or no threshold is given. Non-finite layer values are left out of both.
    """
    values = np.asarray(values_per_layer, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values_per_layer must be 1-D (L,), got shape {values.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return _depth_trend(values, step=None, threshold=threshold, alpha=alpha)


def depth_trend_at_step(
    steps, values, *, step: int | float | None = None, threshold: float | None = None, alpha: float = 0.05
) -> DepthTrend:
    """`depth_trend` of values (N, L) at the logged step nearest to `step` (default: the last).

    The step used is returned in `.step`; rows with no finite value are skipped when
    choosing the default last step.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    if steps.ndim != 1 or values.ndim != 2 or values.shape[0] != steps.shape[0]:
        raise ValueError(f"expected steps (N,) and values (N, L), got shapes {steps.shape} and {values.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    usable_rows = np.flatnonzero(np.any(np.isfinite(values), axis=1))
    if usable_rows.size == 0:
        return _depth_trend(
            np.full(values.shape[1], np.nan), step=None, threshold=threshold, alpha=alpha
        )
    if step is None:
        row = usable_rows[-1]
    else:
        row = usable_rows[np.argmin(np.abs(steps[usable_rows].astype(np.float64) - step))]
    return _depth_trend(values[row], step=steps[row].item(), threshold=threshold, alpha=alpha)


def _spearman_p_value(layer_index: np.ndarray, values: np.ndarray) -> tuple[float, str]:
    n = len(values)
    if n > EXACT_PERMUTATION_MAX_LAYERS:
        return float(stats.spearmanr(layer_index, values).pvalue), "t approximation (scipy.stats.spearmanr)"

    # Vectorised Spearman rho: Pearson correlation of the ranks (ties get average ranks, as in
    # spearmanr), over a batch of shuffled value vectors at once.
    centred_index_ranks = stats.rankdata(layer_index) - (n + 1) / 2

    def rho(shuffled_values, axis=-1):
        value_ranks = stats.rankdata(shuffled_values, axis=axis)
        centred = value_ranks - value_ranks.mean(axis=axis, keepdims=True)
        covariance = np.sum(centred * centred_index_ranks, axis=axis)
        return covariance / np.sqrt(np.sum(centred**2, axis=axis) * np.sum(centred_index_ranks**2))

    result = stats.permutation_test(
        (values,), rho, permutation_type="pairings", vectorized=True, n_resamples=np.inf, alternative="two-sided"
    )
    return float(result.pvalue), f"exact permutation over all {math.factorial(n)} layer orders"


def _depth_trend(values: np.ndarray, *, step, threshold: float | None, alpha: float) -> DepthTrend:
    finite = np.isfinite(values)
    layer_index = np.flatnonzero(finite)
    kept = values[finite]
    n = len(kept)
    reasons = []
    if n < len(values):
        reasons.append(f"{len(values) - n} layer(s) with a non-finite value left out")

    first_layer_above = None
    if threshold is not None:
        above = layer_index[kept > threshold]
        first_layer_above = int(above[0]) if above.size else None

    rho = p_value = method = smallest_p = None
    if n < 3:
        reasons.append(f"{n} layer(s) with finite values; a rank correlation needs at least 3")
    elif np.all(kept == kept[0]):
        reasons.append("the value is the same in every layer, so the rank correlation is undefined")
    else:
        rho = float(stats.spearmanr(layer_index, kept).statistic)
        smallest_p = 2 / math.factorial(n)
        if smallest_p >= alpha:
            reasons.append(
                f"with {n} layers the smallest possible two-sided p is {smallest_p:.3g} >= alpha = {alpha}, "
                "so no p-value is reported"
            )
        else:
            p_value, method = _spearman_p_value(layer_index.astype(np.float64), kept)

    return DepthTrend(
        step=step,
        n_layers=n,
        spearman_rho=rho,
        p_value=p_value,
        p_value_method=method,
        smallest_achievable_p=smallest_p,
        alpha=alpha,
        threshold=threshold,
        first_layer_above=first_layer_above,
        reason="; ".join(reasons) or None,
    )
