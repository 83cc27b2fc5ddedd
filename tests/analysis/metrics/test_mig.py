"""Known answers for the Mutual Information Gap (disentanglement_lib's metric tests, extended)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.mig import compute_mig, mig_from_codes
from datasets.base import ArrayGroundTruthData
from tests.analysis.metrics.spelled import factor_reader, spelled_ground_truth

SIZES = np.array([3, 5, 7, 9, 10])  # values of each of the five factors
NUM_SAMPLES = 5000


@pytest.fixture
def factors() -> np.ndarray:
    """int ``(5000, 5)``, each factor uniform over its values, independent."""
    return np.random.default_rng(0).integers(0, SIZES, size=(NUM_SAMPLES, len(SIZES)))


def identity_code(factors: np.ndarray, seed: int = 1) -> np.ndarray:
    """Codes equal to the factors plus noise far smaller than the bin width."""
    return factors + np.random.default_rng(seed).normal(0.0, 1e-3, factors.shape)


def entropy(p: np.ndarray) -> float:
    """Entropy in nats of a probability vector."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_identity_code_scores_near_one(factors):
    assert mig_from_codes(identity_code(factors), factors) > 0.99


def test_permuted_identity_code_scores_the_same(factors):
    code = identity_code(factors)
    permuted = code[:, [3, 1, 4, 0, 2]]
    assert mig_from_codes(permuted, factors) == pytest.approx(mig_from_codes(code, factors))
    assert mig_from_codes(permuted, factors) > 0.99


def test_scaled_and_shifted_identity_code_scores_near_one(factors):
    code = identity_code(factors) * np.array([3.0, -0.5, 100.0, 1e-3, 7.0]) + 42.0
    assert mig_from_codes(code, factors) > 0.99


def test_constant_code_scores_zero(factors):
    assert mig_from_codes(np.full((NUM_SAMPLES, 4), 0.3), factors) < 0.01


def test_random_noise_code_scores_near_zero(factors):
    noise = np.random.default_rng(2).normal(size=(NUM_SAMPLES, 6))
    assert mig_from_codes(noise, factors) < 0.05


def test_duplicated_latent_zeroes_its_factor(factors):
    # Factor 0 is captured by two identical latents: its gap is 0; the other four stay ~1.
    code = identity_code(factors)
    duplicated = np.concatenate([code, code[:, :1]], axis=1)
    assert mig_from_codes(duplicated, factors) == pytest.approx(4 / 5, abs=0.01)


def test_code_of_two_factors_summed_scores_the_exact_information(factors):
    # z0 = f0 + f1 mixes factors 0 and 1 in one latent; no other latent carries them.
    # With f0, f1 independent uniform: I(z0; f0) = H(z0) - H(f1), I(z0; f1) = H(z0) - H(f0),
    # and each of the other three factors has gap 1.
    code = np.column_stack([factors[:, 0] + factors[:, 1], factors[:, 2:]]).astype(float)
    p_sum = np.convolve(np.full(SIZES[0], 1 / SIZES[0]), np.full(SIZES[1], 1 / SIZES[1]))
    h0, h1, h_sum = np.log(SIZES[0]), np.log(SIZES[1]), entropy(p_sum)
    expected = ((h_sum - h1) / h0 + (h_sum - h0) / h1 + 3) / 5
    assert expected < 0.8  # the known answer is itself well below the identity's 1
    score = mig_from_codes(code, factors)
    assert score == pytest.approx(expected, abs=0.01)
    assert score < mig_from_codes(identity_code(factors), factors) - 0.2


def test_code_entangling_two_factors_scores_below_identity(factors):
    # z0 = f0 + 10 * f1 beside a latent for f1 alone: f1's gap shrinks, f0 is read only coarsely.
    code = identity_code(factors).copy()
    code[:, 0] = factors[:, 0] + 10 * factors[:, 1]
    assert mig_from_codes(code, factors) < mig_from_codes(identity_code(factors), factors) - 0.2


def test_constant_factor_is_left_out_of_the_mean(factors):
    with_constant = np.concatenate([factors, np.zeros((NUM_SAMPLES, 1), dtype=np.int64)], axis=1)
    code = identity_code(factors)
    assert mig_from_codes(code, with_constant) == pytest.approx(mig_from_codes(code, factors))


def test_single_latent_gap_is_its_normalised_information(factors):
    # One latent: the second-largest information is taken as 0, so f0's gap is 1 and the rest ~0.
    code = identity_code(factors)[:, :1]
    assert mig_from_codes(code, factors) == pytest.approx(1 / 5, abs=0.01)


@pytest.mark.parametrize(
    ("codes_shape", "factors_shape", "match"),
    [
        ((100, 3), (99, 3), "rows"),
        ((100,), (100, 3), "2-D"),
        ((100, 3), (100,), "2-D"),
        ((100, 3, 1), (100, 3), "2-D"),
    ],
)
def test_bad_shapes_are_refused(codes_shape, factors_shape, match):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=match):
        mig_from_codes(rng.normal(size=codes_shape), rng.integers(0, 3, size=factors_shape))


def test_too_few_bins_are_refused(factors):
    with pytest.raises(ValueError, match="num_bins"):
        mig_from_codes(identity_code(factors), factors, num_bins=1)


def test_all_constant_factors_are_refused():
    with pytest.raises(ValueError, match="constant"):
        mig_from_codes(np.random.default_rng(0).normal(size=(50, 2)), np.zeros((50, 3), dtype=np.int64))


# compute_mig: factors and codes of the same observations must stay row-aligned.

GRID_SIZES = [3, 4, 5, 6, 7]


@pytest.fixture
def spelled_data() -> ArrayGroundTruthData:
    """The full factor grid, rows shuffled; each image's first pixel row spells its factors."""
    return spelled_ground_truth(GRID_SIZES)


read_factors = factor_reader(len(GRID_SIZES))  # decodes the spelled factors: float (B, 5)


def test_compute_mig_of_the_true_factors_scores_near_one(spelled_data):
    result = compute_mig(spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=2000)
    assert set(result) == {"mig"}
    assert result["mig"] > 0.9


def test_compute_mig_with_batches_not_dividing_num_train(spelled_data):
    result = compute_mig(
        spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=1001, batch_size=64
    )
    assert result["mig"] > 0.9


def test_compute_mig_of_other_rows_codes_scores_near_zero(spelled_data):
    def shuffled(x: np.ndarray) -> np.ndarray:
        return read_factors(np.roll(x, 1, axis=0))  # each row gets its neighbour's code

    result = compute_mig(spelled_data, shuffled, random_state=np.random.default_rng(0), num_train=2000)
    assert result["mig"] < 0.1


def test_compute_mig_is_reproducible_from_the_random_state(spelled_data):
    def noisy(x: np.ndarray) -> np.ndarray:
        return read_factors(x) + np.random.default_rng(int(x.sum())).normal(0, 1.0, (len(x), 5))

    a = compute_mig(spelled_data, noisy, random_state=np.random.default_rng(5), num_train=500)
    b = compute_mig(spelled_data, noisy, random_state=np.random.default_rng(5), num_train=500)
    assert a == b


def test_compute_mig_refuses_too_few_samples(spelled_data):
    with pytest.raises(ValueError, match="num_train"):
        compute_mig(spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=1)
