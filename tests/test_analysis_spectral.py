"""Known answers for the rank measures in parallax_probe.analysis.spectral."""

import math

import numpy as np
import pytest

from parallax_probe.analysis import (
    condition_number,
    effective_rank,
    energy_rank,
    marchenko_pastur_noise_scale,
    marchenko_pastur_outliers,
    numerical_rank,
    participation_ratio,
    spectral_entropy,
    stable_rank,
)

RANK_MEASURES = (stable_rank, effective_rank, participation_ratio)


def orthonormal_columns(rng, rows: int, columns: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(rows, columns)))
    return q


def test_identity_has_every_rank_measure_n():
    n = 7
    identity = np.eye(n)
    for measure in RANK_MEASURES:
        assert measure(identity) == pytest.approx(n, rel=1e-12)
    assert effective_rank(identity, normalized=True) == pytest.approx(1.0, rel=1e-12)
    assert energy_rank(identity, 0.9) == n  # 6 of 7 equal values hold only 86%
    assert energy_rank(identity, 0.99) == n
    assert numerical_rank(identity) == n
    assert condition_number(identity) == 1.0
    for distribution in ("singular_values", "energy"):
        assert spectral_entropy(identity, distribution=distribution) == pytest.approx(math.log(n), rel=1e-12)


def test_one_d_input_matches_the_matrix():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(9, 5))
    singular_values = np.linalg.svd(matrix, compute_uv=False)
    shuffled = rng.permutation(singular_values)  # order of a 1-D input does not matter
    for measure in (*RANK_MEASURES, spectral_entropy, energy_rank, condition_number):
        assert measure(shuffled) == pytest.approx(measure(matrix), rel=1e-12)
    # normalised effective rank: min(m, n) for a matrix, len(s) for a spectrum, here both 5
    assert effective_rank(shuffled, normalized=True) == pytest.approx(effective_rank(matrix, normalized=True))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_rank_k_with_equal_singular_values_gives_k(k):
    rng = np.random.default_rng(k)
    m, n, value = 12, 9, 2.5
    matrix = value * orthonormal_columns(rng, m, k) @ orthonormal_columns(rng, n, k).T  # (m, n), rank k
    for measure in RANK_MEASURES:
        assert measure(matrix) == pytest.approx(k, rel=1e-9)
    assert effective_rank(matrix, normalized=True) == pytest.approx(k / n, rel=1e-9)
    assert energy_rank(matrix, 0.99) == k
    assert numerical_rank(matrix) == k
    assert condition_number(matrix) > 1e12  # the n - k zero singular values, up to rounding


def test_one_dominant_singular_value_gives_stable_rank_near_one():
    singular_values = np.array([100.0, 1.0, 1.0, 1.0])
    assert stable_rank(singular_values) == pytest.approx(1 + 3 / 100**2, rel=1e-12)
    assert participation_ratio(singular_values) == pytest.approx((100**2 + 3) ** 2 / (100**4 + 3), rel=1e-12)
    assert energy_rank(singular_values, 0.99) == 1
    assert condition_number(singular_values) == 100.0


def test_hand_computed_two_by_two():
    matrix = np.array([[3.0, 0.0], [0.0, 4.0]])  # singular values 4 and 3
    assert stable_rank(matrix) == pytest.approx(25 / 16)
    assert participation_ratio(matrix) == pytest.approx(25**2 / (3**4 + 4**4))
    p = np.array([4 / 7, 3 / 7])
    assert spectral_entropy(matrix) == pytest.approx(-np.sum(p * np.log(p)))
    assert effective_rank(matrix) == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    energy_share = np.array([16 / 25, 9 / 25])
    assert spectral_entropy(matrix, distribution="energy") == pytest.approx(-np.sum(energy_share * np.log(energy_share)))
    assert energy_rank(matrix, 0.6) == 1  # 16/25 = 0.64 of the energy in the first direction
    assert energy_rank(matrix, 0.9) == 2
    assert condition_number(matrix) == pytest.approx(4 / 3)
    assert numerical_rank(matrix, rtol=0.8) == 1  # 3 < 0.8 * 4
    assert numerical_rank(matrix, rtol=0.7) == 2


def test_zero_matrix_has_rank_zero_and_infinite_condition_number():
    zero = np.zeros((4, 6))
    for measure in (*RANK_MEASURES, spectral_entropy, energy_rank, numerical_rank, marchenko_pastur_outliers):
        assert measure(zero) == 0
    assert effective_rank(zero, normalized=True) == 0
    assert condition_number(zero) == math.inf
    assert marchenko_pastur_outliers(np.zeros(3), shape=(3, 5)) == 0


def test_singular_matrix_has_infinite_condition_number():
    assert condition_number(np.array([2.0, 1.0, 0.0])) == math.inf


@pytest.mark.parametrize(
    "bad_input",
    [np.zeros((2, 2, 2)), np.array([]), np.array([1.0, -1.0]), np.array([1.0, np.nan]), np.array([[np.inf, 0.0]])],
    ids=["3d", "empty", "negative", "nan", "inf"],
)
def test_invalid_input_is_refused_with_a_message(bad_input):
    with pytest.raises(ValueError):
        stable_rank(bad_input)


def test_energy_rank_refuses_a_fraction_outside_zero_one():
    with pytest.raises(ValueError, match="fraction"):
        energy_rank(np.ones(3), 1.5)


# Gaussian noise, m x n = 100 x 200, sigma = 0.7. Over 300 draws the top singular value
# fell within [0.95, 1.04] x sigma (sqrt(m) + sqrt(n)) (Tracy-Widom fluctuations), the
# fitted sigma within 3% of the truth, and 85% of draws had no value above the bulk edge.
NOISE_SHAPE = (100, 200)
NOISE_SIGMA = 0.7


def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=NOISE_SIGMA, size=NOISE_SHAPE)


def test_gaussian_top_singular_value_is_at_the_marchenko_pastur_edge():
    m, n = NOISE_SHAPE
    matrix = noise(0)
    top = np.linalg.svd(matrix, compute_uv=False)[0]
    assert top / (NOISE_SIGMA * (math.sqrt(m) + math.sqrt(n))) == pytest.approx(1.0, abs=0.06)
    assert marchenko_pastur_noise_scale(matrix) == pytest.approx(NOISE_SIGMA, rel=0.03)
    assert marchenko_pastur_outliers(matrix) == 0
    assert marchenko_pastur_outliers(matrix, noise_scale=NOISE_SIGMA) == 0


def test_gaussian_noise_rarely_shows_an_outlier():
    # Expected share of draws with no outlier: about 0.85; 0.6 is four binomial SDs below it.
    counts = [marchenko_pastur_outliers(noise(seed)) for seed in range(40)]
    assert np.mean(np.array(counts) == 0) >= 0.6
    assert max(counts) <= 2


def test_planted_spikes_are_counted():
    m, n = NOISE_SHAPE
    rng = np.random.default_rng(1)
    # A spike is detectable above sigma * (m n)^(1/4) (the BBP transition); plant two at 3x and 5x.
    detection_threshold = NOISE_SIGMA * (m * n) ** 0.25
    u, v = orthonormal_columns(rng, m, 2), orthonormal_columns(rng, n, 2)
    spikes = u @ np.diag([3 * detection_threshold, 5 * detection_threshold]) @ v.T
    # Both spikes clear the edge in every draw; the noise bulk's own top value can still poke
    # above it (as in test_gaussian_noise_rarely_shows_an_outlier), so at most one more.
    counts = [marchenko_pastur_outliers(noise(seed) + spikes) for seed in range(10)]
    assert all(count in (2, 3) for count in counts)
    assert marchenko_pastur_outliers(noise(0) + spikes) == 2


def test_marchenko_pastur_needs_the_shape_and_the_whole_spectrum_for_one_d_input():
    singular_values = np.linalg.svd(noise(0), compute_uv=False)
    assert marchenko_pastur_outliers(singular_values, shape=NOISE_SHAPE) == marchenko_pastur_outliers(noise(0))
    with pytest.raises(ValueError, match="shape"):
        marchenko_pastur_outliers(singular_values)
    with pytest.raises(ValueError, match="noise_scale"):
        marchenko_pastur_outliers(singular_values[:10], shape=NOISE_SHAPE)
    # A truncated spectrum works with a given noise scale.
    assert marchenko_pastur_outliers(singular_values[:10], shape=NOISE_SHAPE, noise_scale=NOISE_SIGMA) == 0


def test_square_matrix_noise_scale_uses_the_marchenko_pastur_median():
    # beta = 1: the MP median is 0.6528 (Gavish & Donoho 2014), so sigma_hat = s_med / sqrt(0.6528 n).
    matrix = np.random.default_rng(3).normal(scale=2.0, size=(300, 300))
    assert marchenko_pastur_noise_scale(matrix) == pytest.approx(2.0, rel=0.02)
