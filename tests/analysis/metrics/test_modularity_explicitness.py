"""Known answers for modularity and explicitness (disentanglement_lib's modularity_explicitness_test, extended)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.modularity_explicitness import (
    compute_modularity_explicitness,
    explicitness_from_codes,
    modularity,
    modularity_explicitness_from_codes,
    modularity_from_codes,
)
from analysis.metrics.utils import discrete_entropy
from datasets.base import ArrayGroundTruthData
from tests.analysis.metrics.spelled import factor_reader, spelled_ground_truth

SIZES = np.array([3, 5, 7, 9, 10])  # values of each of the five factors
NUM_TRAIN, NUM_TEST = 3000, 1000
KEYS = {"modularity", "explicitness_train", "explicitness_test"}


def uniform_factors(sizes: np.ndarray, num: int, seed: int) -> np.ndarray:
    """int ``(num, len(sizes))``, each factor uniform over its values, independent."""
    return np.random.default_rng(seed).integers(0, sizes, size=(num, len(sizes)))


def identity_code(factors: np.ndarray, seed: int) -> np.ndarray:
    """Codes equal to the factors plus noise far smaller than the bin width."""
    return factors + np.random.default_rng(seed).normal(0.0, 1e-3, factors.shape)


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    return uniform_factors(SIZES, NUM_TRAIN, 0)


@pytest.fixture(scope="module")
def binary_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identity codes of four binary factors, train then test."""
    sizes = np.full(4, 2)
    f_train, f_test = uniform_factors(sizes, NUM_TRAIN, 0), uniform_factors(sizes, NUM_TEST, 1)
    return identity_code(f_train, 2), f_train, identity_code(f_test, 3), f_test


# modularity from a mutual-information matrix, closed forms.


def test_modularity_of_one_factor_per_latent_is_one():
    assert modularity(np.diag([0.3, 1.2, 2.0])) == pytest.approx(1.0)


def test_modularity_of_a_latent_informing_equally_about_all_factors_is_zero():
    assert modularity(np.full((1, 4), 0.7)) == pytest.approx(0.0)


def test_modularity_of_a_partly_shared_latent():
    # theta = 2, the rest (1, 0) over K - 1 = 2 factors: delta = 1 / (4 * 2).
    assert modularity(np.array([[2.0, 1.0, 0.0]])) == pytest.approx(1 - 1 / 8)


def test_latent_without_information_scores_zero_and_counts_in_the_mean():
    assert modularity(np.array([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.5)


def test_modularity_with_one_factor_is_one_for_informative_latents():
    assert modularity(np.array([[0.4], [0.0]])) == pytest.approx(0.5)


# modularity of codes.


def test_identity_code_is_modular(factors):
    assert modularity_from_codes(identity_code(factors, 1), factors) > 0.99


def test_duplicated_and_permuted_latents_stay_modular(factors):
    # Modularity asks only that each latent inform about one factor; copies do not hurt it.
    code = identity_code(factors, 1)
    assert modularity_from_codes(np.c_[code, code[:, :2]][:, ::-1], factors) > 0.99


def test_latent_determining_two_factors_scores_the_closed_form(factors):
    # z0 = f0 + 3 f1 determines f0 and f1 (<= 15 values, one bin each): I(z0; f0) = H(f0),
    # I(z0; f1) = H(f1), and nearly 0 for f2..f4, so delta_0 = H(f0)^2 / (H(f1)^2 (K - 1)).
    code = np.column_stack([factors[:, 0] + 3 * factors[:, 1], identity_code(factors[:, 2:], 1)])
    h = discrete_entropy(factors)
    expected = (1 - h[0] ** 2 / (h[1] ** 2 * 4) + 3) / 4
    assert modularity_from_codes(code, factors) == pytest.approx(expected, abs=0.01)


def test_constant_code_has_zero_modularity(factors):
    assert modularity_from_codes(np.full((NUM_TRAIN, 3), 0.3), factors) == 0.0


def test_noise_code_is_far_from_modular(factors):
    noise = np.random.default_rng(2).normal(size=(NUM_TRAIN, 5))
    assert modularity_from_codes(noise, factors) < 0.8


# explicitness.


def test_identity_code_of_binary_factors_is_fully_explicit(binary_split):
    train, test = explicitness_from_codes(*binary_split)
    assert train == pytest.approx(1.0)
    assert test == pytest.approx(1.0)


def test_identity_code_of_many_valued_factors_is_nearly_explicit(factors):
    # One-vs-rest scores of one latent rank the middle values too (the probabilities are
    # normalised across values), if not perfectly.
    f_test = uniform_factors(SIZES, NUM_TEST, 1)
    train, test = explicitness_from_codes(identity_code(factors, 1), factors, identity_code(f_test, 2), f_test)
    assert train > 0.95 and test > 0.95


def test_constant_code_is_at_chance(binary_split):
    _, f_train, _, f_test = binary_split
    train, test = explicitness_from_codes(np.full((NUM_TRAIN, 2), 3.0), f_train, np.full((NUM_TEST, 2), 3.0), f_test)
    assert train == pytest.approx(0.5)
    assert test == pytest.approx(0.5)


def test_noise_code_is_near_chance_on_the_test_set(binary_split):
    _, f_train, _, f_test = binary_split
    rng = np.random.default_rng(4)
    _, test = explicitness_from_codes(rng.normal(size=(NUM_TRAIN, 4)), f_train, rng.normal(size=(NUM_TEST, 4)), f_test)
    assert test == pytest.approx(0.5, abs=0.05)


def test_explicitness_ignores_scale_and_shift(binary_split):
    c_train, f_train, c_test, f_test = binary_split
    noisy_train = c_train + np.random.default_rng(5).normal(0, 0.7, c_train.shape)
    noisy_test = c_test + np.random.default_rng(6).normal(0, 0.7, c_test.shape)
    scale, shift = np.array([3.0, -0.5, 100.0, 1e-3]), 42.0
    plain = explicitness_from_codes(noisy_train, f_train, noisy_test, f_test)
    scaled = explicitness_from_codes(noisy_train * scale + shift, f_train, noisy_test * scale + shift, f_test)
    np.testing.assert_allclose(scaled, plain, atol=1e-6)


def test_value_missing_from_the_test_set_is_left_out(binary_split):
    c_train, f_train, c_test, f_test = binary_split
    f_train3 = np.c_[f_train, np.random.default_rng(7).integers(0, 3, NUM_TRAIN)]
    code_train = np.c_[c_train, f_train3[:, -1]]
    keep = np.ones(NUM_TEST, dtype=np.int64)  # the test set only has value 1 of the new factor...
    f_test3 = np.c_[f_test, np.where(np.arange(NUM_TEST) % 2 == 0, keep, 2)]  # ...and value 2, not 0
    _, test = explicitness_from_codes(code_train, f_train3, np.c_[c_test, f_test3[:, -1]], f_test3)
    assert 0.9 < test <= 1.0


def test_scores_together(binary_split):
    result = modularity_explicitness_from_codes(*binary_split)
    assert set(result) == KEYS
    assert min(result.values()) > 0.99


def test_constant_factor_is_left_out(binary_split):
    c_train, f_train, c_test, f_test = binary_split
    zeros = np.zeros((NUM_TRAIN, 1), dtype=np.int64), np.zeros((NUM_TEST, 1), dtype=np.int64)
    with_constant = modularity_explicitness_from_codes(
        c_train, np.c_[f_train, zeros[0]], c_test, np.c_[f_test, zeros[1]]
    )
    assert with_constant == pytest.approx(modularity_explicitness_from_codes(*binary_split))


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((100, 3), (99, 2), (50, 3), (50, 2)), "rows"),
        (((100, 3), (100, 2), (50, 4), (50, 2)), "latents"),
        (((100,), (100, 2), (50, 3), (50, 2)), "2-D"),
    ],
)
def test_bad_shapes_are_refused(shapes, match):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s) if i % 2 == 0 else rng.integers(0, 3, size=s) for i, s in enumerate(shapes)]
    with pytest.raises(ValueError, match=match):
        modularity_explicitness_from_codes(*arrays)


def test_bad_bins_and_constant_factors_are_refused(factors):
    code = identity_code(factors, 1)
    with pytest.raises(ValueError, match="num_bins"):
        modularity_from_codes(code, factors, num_bins=1)
    with pytest.raises(ValueError, match="constant"):
        modularity_from_codes(code, np.zeros_like(factors))


# compute_modularity_explicitness: factors and codes of the same observations must stay row-aligned.

GRID_SIZES = [3, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def spelled_data() -> ArrayGroundTruthData:
    """The full factor grid, rows shuffled; each image's first pixel row spells its factors."""
    return spelled_ground_truth(GRID_SIZES)


read_factors = factor_reader(len(GRID_SIZES))  # decodes the spelled factors: float (B, 5)


def test_compute_of_the_true_factors_scores_near_one(spelled_data):
    result = compute_modularity_explicitness(
        spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=1500, num_test=500, batch_size=64
    )
    assert set(result) == KEYS
    assert result["modularity"] > 0.98
    assert result["explicitness_test"] > 0.95


def test_compute_of_other_rows_codes_is_at_chance(spelled_data):
    def shuffled(x: np.ndarray) -> np.ndarray:
        return read_factors(np.roll(x, 1, axis=0))  # each row gets its neighbour's code

    result = compute_modularity_explicitness(
        spelled_data, shuffled, random_state=np.random.default_rng(0), num_train=1500, num_test=500
    )
    assert result["explicitness_test"] == pytest.approx(0.5, abs=0.05)


def test_compute_is_reproducible_from_the_random_state(spelled_data):
    def noisy(x: np.ndarray) -> np.ndarray:
        return read_factors(x) + np.random.default_rng(int(x.sum())).normal(0, 1.0, (len(x), 5))

    kwargs = {"num_train": 300, "num_test": 300}
    a = compute_modularity_explicitness(spelled_data, noisy, random_state=np.random.default_rng(5), **kwargs)
    b = compute_modularity_explicitness(spelled_data, noisy, random_state=np.random.default_rng(5), **kwargs)
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"num_train": 1}, "num_t"), ({"num_test": 0}, "num_t"), ({"num_bins": 1}, "num_bins")]
)
def test_compute_refuses_bad_options(spelled_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_modularity_explicitness(spelled_data, read_factors, random_state=np.random.default_rng(0), **kwargs)
