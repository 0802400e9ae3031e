"""Rank measures of a matrix or of its singular values, computed in float64.

Every public function accepts either a 2-D matrix (its singular values are computed here,
in float64) or a 1-D array of singular values (order free, all finite and >= 0). Where a
measure needs the matrix shape (`effective_rank(normalized=True)`, the Marchenko-Pastur
functions) a 1-D input takes it from `len(s)` or from an explicit `shape`.

A spectrum of all zeros (the zero matrix, or `W_R` before training moves it off zero) has
no rank: every rank measure returns 0 and `condition_number` returns inf, rather than the
0/0 a formula would give.

A 1-D input that is only the top k singular values (the run files may store a truncated
spectrum) gives the measure of those k values, not of the whole matrix.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
from scipy import integrate, optimize

__all__ = [
    "condition_number",
    "effective_rank",
    "energy_rank",
    "marchenko_pastur_noise_scale",
    "marchenko_pastur_outliers",
    "numerical_rank",
    "participation_ratio",
    "spectral_entropy",
    "stable_rank",
]


def _spectrum(matrix_or_singular_values) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Singular values in descending order (float64), and the matrix shape if 2-D was given."""
    a = np.asarray(matrix_or_singular_values, dtype=np.float64)
    if a.ndim == 2:
        if a.size == 0:
            raise ValueError(f"matrix of shape {a.shape} has no singular values; pass a non-empty matrix")
        if not np.all(np.isfinite(a)):
            raise ValueError("matrix has non-finite entries (NaN or inf); its singular values are undefined")
        return np.linalg.svd(a, compute_uv=False), a.shape
    if a.ndim == 1:
        if a.size == 0:
            raise ValueError("empty singular-value array; pass at least one singular value")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError("singular values must be finite and >= 0; got NaN, inf or a negative value")
        return np.sort(a)[::-1], None
    raise ValueError(f"expected a 2-D matrix or a 1-D array of singular values, got {a.ndim}-D input")


def _probabilities(weights: np.ndarray) -> np.ndarray:
    """weights / sum(weights), with the zero entries dropped (0 log 0 = 0 in the entropies)."""
    positive = weights[weights > 0]
    return positive / positive.sum()


def stable_rank(matrix_or_singular_values) -> float:
    """Stable rank `sum_k s_k^2 / s_max^2` = ||A||_F^2 / ||A||_2^2 (Rudelson & Vershynin 2007).

    Between 1 and rank(A); n for the n x n identity, k for k equal singular values, near 1
    when one singular value dominates. 0 for an all-zero spectrum.
    """
    s, _ = _spectrum(matrix_or_singular_values)
    if s[0] == 0:
        return 0.0
    return float(np.sum((s / s[0]) ** 2))


def spectral_entropy(
    matrix_or_singular_values,
    *,
    distribution: Literal["singular_values", "energy"] = "singular_values",
) -> float:
    """Shannon entropy, in nats, of the normalised spectrum.

    distribution="singular_values": p_k = s_k / sum s (Roy & Vetterli 2007; exp of this is
    `effective_rank`). distribution="energy": p_k = s_k^2 / sum s^2, the share of squared
    Frobenius norm (variance) in each direction. Zero-probability terms contribute 0.
    At most log(number of non-zero singular values); 0 for an all-zero spectrum.
    """
    s, _ = _spectrum(matrix_or_singular_values)
    if distribution == "singular_values":
        weights = s
    elif distribution == "energy":
        weights = s**2
    else:
        raise ValueError(f"distribution must be 'singular_values' or 'energy', got {distribution!r}")
    if s[0] == 0:
        return 0.0
    p = _probabilities(weights)
    # max(0, .): a one-term spectrum gives -0.0, and rounding must not make it negative.
    return max(0.0, float(-np.sum(p * np.log(p))))


def effective_rank(matrix_or_singular_values, *, normalized: bool = False) -> float:
    """Effective rank `exp(-sum_k p_k log p_k)`, p_k = s_k / sum s (Roy & Vetterli 2007).

    Between 1 and rank(A) for a non-zero matrix; n for the n x n identity, k for k equal
    singular values. normalized=True divides by min(m, n) for a matrix, by len(s) for a 1-D
    spectrum, so a full-rank flat spectrum gives 1. 0 for an all-zero spectrum.
    """
    s, shape = _spectrum(matrix_or_singular_values)
    if s[0] == 0:
        return 0.0
    rank = float(np.exp(spectral_entropy(s, distribution="singular_values")))
    if normalized:
        return rank / (min(shape) if shape is not None else len(s))
    return rank


def participation_ratio(matrix_or_singular_values) -> float:
    """Participation ratio `(sum_k s_k^2)^2 / sum_k s_k^4`.

    The convention of the neuroscience dimensionality literature (e.g. Gao et al. 2017):
    the participation ratio of the eigenvalues lambda_k = s_k^2 of A^T A, i.e.
    (sum lambda)^2 / sum lambda^2. n for the n x n identity, k for k equal singular values.
    0 for an all-zero spectrum.
    """
    s, _ = _spectrum(matrix_or_singular_values)
    if s[0] == 0:
        return 0.0
    energy = (s / s[0]) ** 2  # scaled by s_max so s^4 cannot overflow or underflow
    return float(energy.sum() ** 2 / np.sum(energy**2))


def energy_rank(matrix_or_singular_values, fraction: float = 0.9) -> int:
    """Smallest k with `sum_{i<=k} s_i^2 >= fraction * sum s^2` (s in descending order).

    The number of directions that hold `fraction` of the squared Frobenius norm; use
    fraction=0.9 and 0.99 for the 90% and 99% energy ranks. 0 for an all-zero spectrum.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s, _ = _spectrum(matrix_or_singular_values)
    if s[0] == 0:
        return 0
    cumulative_share = np.cumsum(s**2) / np.sum(s**2)
    # The relative slack keeps an exact share (9 of 10 equal values at 0.9) from missing
    # by one rounding step.
    return int(np.searchsorted(cumulative_share, fraction * (1 - 1e-12)) + 1)


def numerical_rank(matrix_or_singular_values, *, rtol: float | None = None) -> int:
    """Number of singular values `s_k > rtol * s_max`.

    rtol defaults to `max(m, n) * eps(float64)`, numpy.linalg.matrix_rank's default; for a
    1-D spectrum without a shape, `len(s) * eps`. 0 for an all-zero spectrum.
    """
    s, shape = _spectrum(matrix_or_singular_values)
    if rtol is None:
        rtol = (max(shape) if shape is not None else len(s)) * np.finfo(np.float64).eps
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    if s[0] == 0:
        return 0
    return int(np.count_nonzero(s > rtol * s[0]))


def condition_number(matrix_or_singular_values) -> float:
    """`s_max / s_min`, s_min the smallest of the min(m, n) singular values (of a 1-D input,
    the smallest given). inf when s_min is 0, the zero matrix included."""
    s, _ = _spectrum(matrix_or_singular_values)
    if s[-1] == 0:
        return float("inf")
    return float(s[0] / s[-1])


@cache
def _marchenko_pastur_median(aspect_ratio: float) -> float:
    """Median of the Marchenko-Pastur law with ratio beta = aspect_ratio <= 1 and variance 1.

    The law of the eigenvalues of (1/n) X X^T for an m x n (m <= n) matrix X of iid
    unit-variance entries, beta = m/n, with density
    sqrt((b - x)(x - a)) / (2 pi beta x) on [a, b] = [(1 - sqrt beta)^2, (1 + sqrt beta)^2].
    """
    beta = aspect_ratio
    lower, upper = (1 - np.sqrt(beta)) ** 2, (1 + np.sqrt(beta)) ** 2

    # x = lower + (upper - lower) sin^2(theta) removes the square-root endpoint
    # singularities (and, at beta = 1, the 1/sqrt(x) one), so quad sees a smooth integrand.
    def density_in_theta(theta: float) -> float:
        x = lower + (upper - lower) * np.sin(theta) ** 2
        dx_dtheta = 2 * (upper - lower) * np.sin(theta) * np.cos(theta)
        return np.sqrt((upper - x) * (x - lower)) / (2 * np.pi * beta * x) * dx_dtheta

    def mass_below(x: float) -> float:
        theta = np.arcsin(np.sqrt((x - lower) / (upper - lower)))
        return integrate.quad(density_in_theta, 0.0, theta)[0]

    return optimize.brentq(lambda x: mass_below(x) - 0.5, lower, upper, xtol=1e-12)


def _matrix_shape(shape_of_matrix, given_shape: tuple[int, int] | None) -> tuple[int, int]:
    if shape_of_matrix is not None:
        return shape_of_matrix
    if given_shape is None:
        raise ValueError("a 1-D spectrum needs the matrix shape: pass shape=(m, n)")
    m, n = (int(d) for d in given_shape)
    if m < 1 or n < 1:
        raise ValueError(f"shape must be two positive sizes, got {given_shape}")
    return m, n


def marchenko_pastur_noise_scale(matrix_or_singular_values, *, shape: tuple[int, int] | None = None) -> float:
    """Entry-wise noise level sigma fitted from the median singular value (Gavish & Donoho 2014).

    For an m x n matrix of iid noise of standard deviation sigma, with beta = min/max of
    (m, n), the median singular value is close to sigma * sqrt(max(m, n) * mu_beta), mu_beta the
    median of the Marchenko-Pastur law (computed here by quadrature). So
    sigma_hat = s_median / sqrt(max(m, n) * mu_beta). A few large singular values (signal) barely
    move the median, so sigma_hat stays a noise estimate when the signal rank is small
    against min(m, n). It needs the whole spectrum: a 1-D input must hold all min(m, n) values.
    """
    s, shape_of_matrix = _spectrum(matrix_or_singular_values)
    m, n = _matrix_shape(shape_of_matrix, shape)
    if len(s) != min(m, n):
        raise ValueError(
            f"fitting the noise scale needs all min(m, n) = {min(m, n)} singular values, got {len(s)}; "
            "pass noise_scale explicitly for a truncated spectrum"
        )
    aspect_ratio = min(m, n) / max(m, n)
    return float(np.median(s) / np.sqrt(max(m, n) * _marchenko_pastur_median(aspect_ratio)))


def marchenko_pastur_outliers(
    matrix_or_singular_values,
    *,
    noise_scale: float | None = None,
    shape: tuple[int, int] | None = None,
) -> int:
    """Number of singular values above the Marchenko-Pastur bulk edge `sigma * (sqrt(m) + sqrt(n))`.

    The largest singular value of an m x n matrix of iid noise with standard deviation sigma
    converges to sigma * (sqrt(m) + sqrt(n)) (Marchenko & Pastur 1967; Geman 1980); values
    above it are directions that noise alone does not explain. sigma is `noise_scale` if
    given, else fitted by `marchenko_pastur_noise_scale` (median singular value against the
    MP median). A 1-D input needs shape=(m, n).

    The edge is a limit, not a test: at finite size the top noise singular value
    fluctuates around it on the Tracy-Widom scale (relative width ~ min(m, n)^(-2/3)), so a
    pure-noise matrix shows 1 "outlier" in a minority of draws (with the fitted sigma, 16-26%
    of Gaussian draws from 64 x 64 to 256 x 256; docs/analysis.md). Read a count of 1 as
    "no clear signal direction", not as one.
    0 for an all-zero spectrum.
    """
    s, shape_of_matrix = _spectrum(matrix_or_singular_values)
    m, n = _matrix_shape(shape_of_matrix, shape)
    if noise_scale is None:
        noise_scale = marchenko_pastur_noise_scale(s, shape=(m, n))
    elif not (np.isfinite(noise_scale) and noise_scale >= 0):
        raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale}")
    if s[0] == 0:
        return 0
    bulk_edge = noise_scale * (np.sqrt(m) + np.sqrt(n))
    return int(np.count_nonzero(s > bulk_edge))
