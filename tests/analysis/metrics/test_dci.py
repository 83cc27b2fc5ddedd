"""Known answers for DCI (disentanglement_lib's dci_test, extended).

Factors take few values (2, 3, 4) so that the defined classifier, one tree per class per
boosting stage, stays fast on a few hundred samples.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.dci import completeness, compute_dci, dci_from_codes, disentanglement
from datasets.base import ArrayGroundTruthData

SIZES = np.array([2, 3, 4])  # values of each of the three factors
NUM_TRAIN, NUM_TEST = 600, 300
KEYS = {"dci_disentanglement", "dci_completeness", "dci_informativeness_train", "dci_informativeness_test"}


def uniform_factors(num: int, seed: int) -> np.ndarray:
    """int ``(num, 3)``, each factor uniform over its values, independent."""
    return np.random.default_rng(seed).integers(0, SIZES, size=(num, len(SIZES)))


def identity_code(factors: np.ndarray, seed: int) -> np.ndarray:
    """Codes equal to the factors plus noise far smaller than the gap between values."""
    return factors + np.random.default_rng(seed).normal(0.0, 1e-3, factors.shape)


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identity codes and factors, train then test."""
    f_train, f_test = uniform_factors(NUM_TRAIN, 0), uniform_factors(NUM_TEST, 1)
    return identity_code(f_train, 2), f_train, identity_code(f_test, 3), f_test


@pytest.fixture(scope="module")
def identity_scores(split) -> dict[str, float]:
    """DCI of the identity code with the defined classifier."""
    return dci_from_codes(*split, random_state=0)


# The importance-matrix scores, on matrices with closed-form answers.


def test_diagonal_importance_scores_one():
    importance = np.diag([0.5, 2.0, 1.0])
    assert disentanglement(importance) == pytest.approx(1.0)
    assert completeness(importance) == pytest.approx(1.0)


def test_uniform_importance_scores_zero():
    importance = np.ones((4, 3))
    assert disentanglement(importance) == pytest.approx(0.0, abs=1e-9)
    assert completeness(importance) == pytest.approx(0.0, abs=1e-9)


def test_zero_importance_scores_zero():
    assert disentanglement(np.zeros((4, 3))) == pytest.approx(0.0, abs=1e-9)
    assert completeness(np.zeros((4, 3))) == pytest.approx(0.0, abs=1e-9)


def test_factor_split_over_two_latents_keeps_disentanglement_and_halves_its_completeness():
    # Latents 0 and 1 share factor 0 (1/2 each), latent 2 has factor 1: each latent is still
    # about one factor (disentanglement 1); factor 0 has entropy log 2 in base 3 over latents,
    # and both factors carry half the total importance.
    importance = np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])
    assert disentanglement(importance) == pytest.approx(1.0)
    assert completeness(importance) == pytest.approx(0.5 * (1 - np.log(2) / np.log(3)) + 0.5 * 1.0)


def test_latent_shared_by_two_factors_halves_its_disentanglement():
    # Latent 0 informs equally about both factors (entropy 1 in base 2), latent 1 about factor 1;
    # latent 0 carries 2/3 of the importance.
    importance = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert disentanglement(importance) == pytest.approx(2 / 3 * 0.0 + 1 / 3 * 1.0)


def test_single_factor_or_single_latent_scores_one():
    assert disentanglement(np.array([[0.3], [0.7]])) == pytest.approx(1.0)
    assert completeness(np.array([[0.3, 0.7]])) == pytest.approx(1.0)


# DCI of codes.


def test_identity_code_scores_near_one(identity_scores):
    assert set(identity_scores) == KEYS
    for key, value in identity_scores.items():
        assert value > 0.99, key


@pytest.mark.parametrize("fast", [False, True])
def test_code_mixing_all_factors_scores_lower_but_stays_informative(split, identity_scores, fast):
    c_train, f_train, c_test, f_test = split
    mix = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]  # a rotation, every latent mixes all factors
    scores = dci_from_codes(c_train @ mix, f_train, c_test @ mix, f_test, fast=fast, random_state=0)
    assert scores["dci_disentanglement"] < identity_scores["dci_disentanglement"] - 0.4
    assert scores["dci_completeness"] < identity_scores["dci_completeness"] - 0.4
    assert scores["dci_informativeness_test"] > 0.95  # the code still determines the factors


def test_factor_spread_over_duplicate_latents_lowers_completeness_only(split, identity_scores):
    # Trees split on either copy of latent 0; with shares (p, 1 - p) factor 0's completeness is
    # 1 - H(p)/log 4, and each factor carries 1/3 of the importance: between 5/6 (p = 1/2) and 1.
    c_train, f_train, c_test, f_test = split
    scores = dci_from_codes(
        np.c_[c_train, c_train[:, :1]], f_train, np.c_[c_test, c_test[:, :1]], f_test, random_state=0
    )
    assert scores["dci_disentanglement"] > 0.99
    assert 5 / 6 - 0.01 < scores["dci_completeness"] < 0.92
    assert scores["dci_completeness"] < identity_scores["dci_completeness"] - 0.07


def test_constant_code_scores_zero_and_predicts_the_majority(split):
    _, f_train, _, f_test = split
    scores = dci_from_codes(np.zeros((NUM_TRAIN, 3)), f_train, np.zeros((NUM_TEST, 3)), f_test, random_state=0)
    assert scores["dci_disentanglement"] == pytest.approx(0.0, abs=1e-6)
    assert scores["dci_completeness"] == pytest.approx(0.0, abs=1e-6)
    # Without a split, every classifier predicts its factor's most frequent train value.
    majority = [np.bincount(f_train[:, k]).argmax() for k in range(3)]
    assert scores["dci_informativeness_test"] == pytest.approx(np.mean(f_test == majority, axis=0).mean())


def test_noise_code_is_uninformative_on_the_test_set(split):
    _, f_train, _, f_test = split
    rng = np.random.default_rng(4)
    noise_train, noise_test = rng.normal(size=(NUM_TRAIN, 3)), rng.normal(size=(NUM_TEST, 3))
    scores = dci_from_codes(noise_train, f_train, noise_test, f_test, fast=True, random_state=0)
    chance = np.mean(1 / SIZES)
    assert scores["dci_informativeness_test"] == pytest.approx(chance, abs=0.06)
    assert scores["dci_informativeness_train"] > scores["dci_informativeness_test"] + 0.05  # trees fit noise


def test_permuted_identity_code_scores_the_same(split, identity_scores):
    c_train, f_train, c_test, f_test = split
    order = [2, 0, 1]
    permuted = dci_from_codes(c_train[:, order], f_train, c_test[:, order], f_test, random_state=0)
    for key, value in identity_scores.items():
        assert permuted[key] == pytest.approx(value, abs=1e-6), key


def test_fast_classifier_agrees_with_the_defined_one_on_the_identity(split, identity_scores):
    fast = dci_from_codes(*split, fast=True, random_state=0)
    for key, value in identity_scores.items():
        assert fast[key] == pytest.approx(value, abs=0.01), key


def test_constant_factor_is_left_out(split):
    c_train, f_train, c_test, f_test = split
    zeros = np.zeros((NUM_TRAIN, 1), dtype=np.int64), np.zeros((NUM_TEST, 1), dtype=np.int64)
    with_constant = dci_from_codes(
        c_train, np.c_[f_train, zeros[0]], c_test, np.c_[f_test, zeros[1]], fast=True, random_state=0
    )
    assert with_constant == dci_from_codes(*split, fast=True, random_state=0)


def test_same_seed_gives_the_same_scores(split):
    c_train, f_train, c_test, f_test = split
    noisy = c_train + np.random.default_rng(7).normal(0, 0.5, c_train.shape)
    a = dci_from_codes(noisy, f_train, c_test, f_test, fast=True, random_state=np.random.default_rng(1))
    b = dci_from_codes(noisy, f_train, c_test, f_test, fast=True, random_state=np.random.default_rng(1))
    assert a == b


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((100, 3), (99, 2), (50, 3), (50, 2)), "rows"),
        (((100, 3), (100, 2), (50, 4), (50, 2)), "latents"),
        (((100, 3, 1), (100, 2), (50, 3), (50, 2)), "2-D"),
    ],
)
def test_bad_shapes_are_refused(shapes, match):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s) if i % 2 == 0 else rng.integers(0, 3, size=s) for i, s in enumerate(shapes)]
    with pytest.raises(ValueError, match=match):
        dci_from_codes(*arrays)


def test_all_constant_factors_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="constant"):
        dci_from_codes(rng.normal(size=(50, 2)), np.zeros((50, 3)), rng.normal(size=(20, 2)), np.zeros((20, 3)))


# compute_dci: factors and codes of the same observations must stay row-aligned.

GRID_SIZES = [2, 3, 4]


@pytest.fixture(scope="module")
def spelled_data() -> ArrayGroundTruthData:
    """The full factor grid, each combination 20 times; each image's first pixel row spells its factors."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in GRID_SIZES], indexing="ij"), -1).reshape(-1, 3)
    factors = np.repeat(grid, 20, axis=0)
    images = np.zeros((len(factors), 1, 4, 4), dtype=np.uint8)  # (N, C, H, W)
    images[:, 0, 0, :3] = factors
    order = np.random.default_rng(3).permutation(len(factors))  # row order carries no information
    return ArrayGroundTruthData(images[order], factors[order], GRID_SIZES, list("abc"))


def read_factors(x: np.ndarray) -> np.ndarray:
    """Representation that decodes the factors spelled in the images ``(B, 1, 4, 4)``."""
    return x[:, 0, 0, :3].astype(np.float64)


def test_compute_dci_of_the_true_factors_scores_near_one(spelled_data):
    rng = np.random.default_rng(0)
    kwargs = {"num_train": 500, "num_test": 200, "batch_size": 64, "fast": True}
    result = compute_dci(spelled_data, read_factors, random_state=rng, **kwargs)
    assert set(result) == KEYS
    assert min(result.values()) > 0.99


def test_compute_dci_of_other_rows_codes_is_uninformative(spelled_data):
    def shuffled(x: np.ndarray) -> np.ndarray:
        return read_factors(np.roll(x, 1, axis=0))  # each row gets its neighbour's code

    result = compute_dci(
        spelled_data, shuffled, random_state=np.random.default_rng(0), num_train=500, num_test=500, fast=True
    )
    assert result["dci_informativeness_test"] < np.mean(1 / np.array(GRID_SIZES)) + 0.08


def test_compute_dci_is_reproducible_from_the_random_state(spelled_data):
    def noisy(x: np.ndarray) -> np.ndarray:
        return read_factors(x) + np.random.default_rng(int(x.sum())).normal(0, 1.0, (len(x), 3))

    a = compute_dci(spelled_data, noisy, random_state=np.random.default_rng(5), num_train=300, num_test=100, fast=True)
    b = compute_dci(spelled_data, noisy, random_state=np.random.default_rng(5), num_train=300, num_test=100, fast=True)
    assert a == b


@pytest.mark.parametrize(("num_train", "num_test"), [(1, 10), (10, 0)])
def test_compute_dci_refuses_too_few_samples(spelled_data, num_train, num_test):
    with pytest.raises(ValueError, match="num_t"):
        compute_dci(
            spelled_data, read_factors, random_state=np.random.default_rng(0), num_train=num_train, num_test=num_test
        )
