"""Known answers for the SAP score (disentanglement_lib's sap_score_test, extended)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.sap import compute_sap, sap_from_codes, sap_score_matrix
from datasets.base import ArrayGroundTruthData
from tests.analysis.metrics.spelled import factor_reader, spelled_ground_truth

SIZES = np.array([3, 5, 7, 9, 10])  # values of each of the five factors
NUM_TRAIN, NUM_TEST = 2000, 1000


def uniform_factors(sizes: np.ndarray, num: int, seed: int) -> np.ndarray:
    """int ``(num, len(sizes))``, each factor uniform over its values, independent."""
    return np.random.default_rng(seed).integers(0, sizes, size=(num, len(sizes)))


def identity_code(factors: np.ndarray, seed: int) -> np.ndarray:
    """Codes equal to the factors plus noise far smaller than the gap between values."""
    return factors + np.random.default_rng(seed).normal(0.0, 1e-3, factors.shape)


@pytest.fixture
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identity codes and factors (SIZES), train then test."""
    f_train, f_test = uniform_factors(SIZES, NUM_TRAIN, 0), uniform_factors(SIZES, NUM_TEST, 1)
    return identity_code(f_train, 2), f_train, identity_code(f_test, 3), f_test


@pytest.fixture
def binary_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identity codes of four binary factors, train then test."""
    sizes = np.full(4, 2)
    f_train, f_test = uniform_factors(sizes, NUM_TRAIN, 0), uniform_factors(sizes, NUM_TEST, 1)
    return identity_code(f_train, 2), f_train, identity_code(f_test, 3), f_test


def test_identity_code_scores_near_one_with_continuous_factors(split):
    # R^2 is ~1 for the matching latent and ~0 for the others.
    assert sap_from_codes(*split, continuous_factors=True) > 0.99


def test_identity_code_of_binary_factors_scores_one_minus_chance(binary_split):
    # The matching latent classifies perfectly; every other latent is at chance (accuracy 1/2).
    scores = sap_score_matrix(*binary_split)
    np.testing.assert_allclose(np.diag(scores), 1.0)
    off_diagonal = scores[~np.eye(4, dtype=bool)]
    np.testing.assert_allclose(off_diagonal, 0.5, atol=0.05)
    assert sap_from_codes(*binary_split) == pytest.approx(0.5, abs=0.03)


def test_score_matrix_has_one_row_per_latent_and_one_column_per_factor(split):
    c_train, f_train, c_test, f_test = split
    scores = sap_score_matrix(c_train[:, :2], f_train, c_test[:, :2], f_test)
    assert scores.shape == (2, 5)
    assert np.all((scores >= 0) & (scores <= 1))


def test_permuted_identity_code_scores_the_same(split):
    c_train, f_train, c_test, f_test = split
    order = [3, 1, 4, 0, 2]
    for continuous in (False, True):
        permuted = sap_from_codes(c_train[:, order], f_train, c_test[:, order], f_test, continuous_factors=continuous)
        assert permuted == pytest.approx(sap_from_codes(*split, continuous_factors=continuous))


@pytest.mark.parametrize("continuous", [False, True])
def test_constant_code_scores_zero(split, continuous):
    _, f_train, _, f_test = split
    constant_train, constant_test = np.full((NUM_TRAIN, 4), 0.3), np.full((NUM_TEST, 4), 0.3)
    assert sap_from_codes(constant_train, f_train, constant_test, f_test, continuous_factors=continuous) == 0.0


@pytest.mark.parametrize("continuous", [False, True])
def test_random_noise_code_scores_near_zero(split, continuous):
    _, f_train, _, f_test = split
    rng = np.random.default_rng(4)
    noise_train, noise_test = rng.normal(size=(NUM_TRAIN, 6)), rng.normal(size=(NUM_TEST, 6))
    assert sap_from_codes(noise_train, f_train, noise_test, f_test, continuous_factors=continuous) < 0.05


def test_duplicated_latent_zeroes_its_factor(binary_split):
    # Factor 0 is predicted equally well by two identical latents: its gap is 0, the others keep 1/2.
    c_train, f_train, c_test, f_test = binary_split
    duplicated = sap_from_codes(np.c_[c_train, c_train[:, :1]], f_train, np.c_[c_test, c_test[:, :1]], f_test)
    assert duplicated == pytest.approx(3 / 4 * 0.5, abs=0.03)


def test_duplicated_latent_zeroes_its_factor_with_continuous_factors(split):
    c_train, f_train, c_test, f_test = split
    duplicated = sap_from_codes(
        np.c_[c_train, c_train[:, :1]], f_train, np.c_[c_test, c_test[:, :1]], f_test, continuous_factors=True
    )
    assert duplicated == pytest.approx(4 / 5, abs=0.01)


def test_sum_of_two_equally_spread_factors_scores_half_each(split):
    # z0 = f0 + f1 with f0, f1 independent and of equal variance: R^2(z0, f0) = R^2(z0, f1) = 1/2,
    # and no other latent informs about them, so both gaps are 1/2; f2..f4 keep gap ~1.
    f_train = split[1].copy()
    f_train[:, 1] = np.random.default_rng(5).integers(0, SIZES[0], NUM_TRAIN)  # same law as f0
    code = np.column_stack([f_train[:, 0] + f_train[:, 1], identity_code(f_train[:, 2:], 6)])
    expected = (0.5 + 0.5 + 3) / 5
    score = sap_from_codes(code, f_train, code[:NUM_TEST], f_train[:NUM_TEST], continuous_factors=True)  # test unused
    assert score == pytest.approx(expected, abs=0.03)


def test_single_latent_gap_is_its_own_score(split):
    # One latent: the second-best score is taken as 0, so f0's gap is R^2 ~ 1 and the rest ~0.
    c_train, f_train, c_test, f_test = split
    score = sap_from_codes(c_train[:, :1], f_train, c_test[:, :1], f_test, continuous_factors=True)
    assert score == pytest.approx(1 / 5, abs=0.01)


def test_constant_factor_is_left_out_of_the_mean(split):
    c_train, f_train, c_test, f_test = split
    zeros = np.zeros((NUM_TRAIN, 1), dtype=np.int64), np.zeros((NUM_TEST, 1), dtype=np.int64)
    with_constant = sap_from_codes(c_train, np.c_[f_train, zeros[0]], c_test, np.c_[f_test, zeros[1]])
    assert with_constant == pytest.approx(sap_from_codes(*split))


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((100, 3), (99, 2), (50, 3), (50, 2)), "rows"),
        (((100, 3), (100, 2), (50, 3), (49, 2)), "rows"),
        (((100, 3), (100, 2), (50, 4), (50, 2)), "latents"),
        (((100, 3), (100, 2), (50, 3), (50, 1)), "factors"),
        (((100,), (100, 2), (50, 3), (50, 2)), "2-D"),
    ],
)
def test_bad_shapes_are_refused(shapes, match):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s) if i % 2 == 0 else rng.integers(0, 3, size=s) for i, s in enumerate(shapes)]
    with pytest.raises(ValueError, match=match):
        sap_from_codes(*arrays)


def test_all_constant_factors_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="constant"):
        sap_from_codes(rng.normal(size=(50, 2)), np.zeros((50, 3)), rng.normal(size=(20, 2)), np.zeros((20, 3)))


# compute_sap: factors and codes of the same observations must stay row-aligned.

GRID_SIZES = [3, 4, 5, 6, 7]


@pytest.fixture
def spelled_data() -> ArrayGroundTruthData:
    """The full factor grid, rows shuffled; each image's first pixel row spells its factors."""
    return spelled_ground_truth(GRID_SIZES)


read_factors = factor_reader(len(GRID_SIZES))  # decodes the spelled factors: float (B, 5)


def test_compute_sap_of_the_true_factors_scores_near_one(spelled_data):
    rng = np.random.default_rng(0)
    kwargs = {"num_train": 1000, "num_test": 10, "continuous_factors": True}
    result = compute_sap(spelled_data, read_factors, random_state=rng, **kwargs)
    assert set(result) == {"sap"}
    assert result["sap"] > 0.95


def test_compute_sap_of_other_rows_codes_scores_near_zero(spelled_data):
    def shuffled(x: np.ndarray) -> np.ndarray:
        return read_factors(np.roll(x, 1, axis=0))  # each row gets its neighbour's code

    rng = np.random.default_rng(0)
    true = compute_sap(spelled_data, read_factors, random_state=rng, num_train=1000, num_test=500, batch_size=64)
    other = compute_sap(spelled_data, shuffled, random_state=rng, num_train=1000, num_test=500, batch_size=64)
    assert other["sap"] < 0.05
    assert true["sap"] > other["sap"] + 0.2


def test_compute_sap_is_reproducible_from_the_random_state(spelled_data):
    def noisy(x: np.ndarray) -> np.ndarray:
        return read_factors(x) + np.random.default_rng(int(x.sum())).normal(0, 1.0, (len(x), 5))

    a = compute_sap(spelled_data, noisy, random_state=np.random.default_rng(5), num_train=300, num_test=300)
    b = compute_sap(spelled_data, noisy, random_state=np.random.default_rng(5), num_train=300, num_test=300)
    assert a == b


@pytest.mark.parametrize(("num_train", "num_test"), [(1, 10), (10, 0)])
def test_compute_sap_refuses_too_few_samples(spelled_data, num_train, num_test):
    with pytest.raises(ValueError, match="num_t"):
        compute_sap(
            spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=num_train, num_test=num_test
        )
