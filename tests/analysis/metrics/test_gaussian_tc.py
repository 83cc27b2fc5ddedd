"""Known answers for the Gaussian total correlation (disentanglement_lib's unsupervised_metrics_test, extended)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.gaussian_tc import compute_gaussian_tc, gaussian_tc_from_codes
from datasets.base import ArrayGroundTruthData
from tests.analysis.metrics.spelled import factor_reader, spelled_ground_truth

NUM_SAMPLES = 20_000


def codes_with_covariance(cov: np.ndarray, num: int, seed: int) -> np.ndarray:
    """float ``(num, d)`` whose sample covariance (``ddof=1``) is exactly ``cov``."""
    x = np.random.default_rng(seed).normal(size=(num, len(cov)))
    x -= x.mean(axis=0)
    whitened = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return whitened @ np.linalg.cholesky(cov).T + 5.0


def kl_to_product_of_marginals(cov: np.ndarray) -> float:
    """KL(N(0, cov) || N(0, diag cov)) by the textbook formula for Gaussians, in nats."""
    diag = np.diag(np.diag(cov))
    inv = np.linalg.inv(diag)
    return 0.5 * (np.trace(inv @ cov) - len(cov) + np.log(np.linalg.det(diag) / np.linalg.det(cov)))


def test_independent_gaussian_codes_score_near_zero():
    codes = np.random.default_rng(0).normal(size=(NUM_SAMPLES, 5)) * np.array([1.0, 3.0, 0.1, 7.0, 1.0])
    assert 0.0 <= gaussian_tc_from_codes(codes) < 0.003


@pytest.mark.parametrize("rho", [0.3, 0.8, -0.95])
def test_two_correlated_gaussians_score_the_closed_form(rho):
    cov = np.array([[1.0, rho], [rho, 1.0]])
    codes = np.random.default_rng(1).multivariate_normal([0.0, 0.0], cov, size=NUM_SAMPLES)
    assert gaussian_tc_from_codes(codes) == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.02)


def test_exact_sample_covariance_gives_the_kl_divergence():
    a = np.random.default_rng(2).normal(size=(4, 4))
    cov = a @ a.T + 0.5 * np.eye(4)
    codes = codes_with_covariance(cov, 500, seed=3)
    assert gaussian_tc_from_codes(codes) == pytest.approx(kl_to_product_of_marginals(cov), rel=1e-9)


def test_scale_and_shift_of_each_latent_do_not_change_it():
    cov = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.0], [0.2, 0.0, 1.0]])
    codes = codes_with_covariance(cov, 1000, seed=4)
    scaled = codes * np.array([100.0, -0.01, 3.0]) - 7.0
    assert gaussian_tc_from_codes(scaled) == pytest.approx(gaussian_tc_from_codes(codes), rel=1e-9)


def test_constant_latent_is_left_out():
    codes = np.random.default_rng(5).multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], size=1000)
    with_constant = np.c_[codes, np.full(1000, 2.0)]
    assert gaussian_tc_from_codes(with_constant) == pytest.approx(gaussian_tc_from_codes(codes))


def test_single_latent_scores_zero():
    assert gaussian_tc_from_codes(np.random.default_rng(6).normal(size=(100, 1))) == 0.0
    assert gaussian_tc_from_codes(np.full((100, 3), 1.0)) == 0.0


def test_duplicated_latent_has_unbounded_total_correlation():
    codes = np.random.default_rng(7).normal(size=(1000, 3))
    assert gaussian_tc_from_codes(np.c_[codes, codes[:, :1]]) > 10.0


@pytest.mark.parametrize("shape", [(100,), (1, 3), (10, 3, 1)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="2-D"):
        gaussian_tc_from_codes(np.zeros(shape))


# compute_gaussian_tc: codes of the sampled observations.

GRID_SIZES = [3, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def spelled_data() -> ArrayGroundTruthData:
    """The full factor grid, rows shuffled; each image's first pixel row spells its factors."""
    return spelled_ground_truth(GRID_SIZES)


read_factors = factor_reader(len(GRID_SIZES))  # decodes the spelled factors: float (B, 5)


def test_compute_of_independent_factors_scores_near_zero(spelled_data):
    result = compute_gaussian_tc(spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=5000)
    assert set(result) == {"gaussian_tc"}
    assert result["gaussian_tc"] < 0.01


def test_compute_of_a_latent_summing_two_factors_scores_their_correlation(spelled_data):
    # Codes (f3 + f4, f4) of independent uniform factors: corr^2 = var f4 / (var f3 + var f4).
    def summed(x: np.ndarray) -> np.ndarray:
        f = read_factors(x)
        return np.c_[f[:, 3] + f[:, 4], f[:, 4]]

    var3, var4 = (GRID_SIZES[3] ** 2 - 1) / 12, (GRID_SIZES[4] ** 2 - 1) / 12  # discrete uniform variances
    expected = -0.5 * np.log(1 - var4 / (var3 + var4))
    result = compute_gaussian_tc(
        spelled_data, summed, random_state=np.random.default_rng(0), num_train=5000, batch_size=100
    )
    assert result["gaussian_tc"] == pytest.approx(expected, abs=0.03)


def test_compute_is_reproducible_from_the_random_state(spelled_data):
    a = compute_gaussian_tc(spelled_data, read_factors, random_state=np.random.default_rng(5), num_train=300)
    b = compute_gaussian_tc(spelled_data, read_factors, random_state=np.random.default_rng(5), num_train=300)
    assert a == b


def test_compute_refuses_too_few_samples(spelled_data):
    with pytest.raises(ValueError, match="num_train"):
        compute_gaussian_tc(spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=1)
