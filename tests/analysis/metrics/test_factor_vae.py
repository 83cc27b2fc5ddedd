"""Known answers for the FactorVAE score (disentanglement_lib's metric tests, extended)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.factor_vae import FixedFactorSampler, compute_factor_vae, factor_vae_from_votes
from datasets.base import ArrayGroundTruthData
from tests.analysis.metrics.spelled import GRID_SIZES, K, grid, identity_like, noise, read_factors, spell, spelled_data  # noqa: F401

SMALL = {"num_train": 400, "num_eval": 400, "num_variance_estimate": 1000}  # fast, still well away from chance


def score(data, representation_fn, seed: int = 0, **kwargs) -> dict[str, float]:
    return compute_factor_vae(data, representation_fn, random_state=np.random.default_rng(seed), **(SMALL | kwargs))


# factor_vae_from_votes: the majority-vote classifier on (factor_index, latent_index) pairs.


def test_votes_hand_computed_example():
    # Latent 0: factor 0 x3, factor 1 x1 -> factor 0; latent 1: factor 1 x2 -> factor 1.
    train = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 1], [1, 1]])
    held_out = np.array([[0, 0], [1, 0], [1, 1], [2, 1]])
    assert factor_vae_from_votes(train, held_out) == (pytest.approx(5 / 6), pytest.approx(2 / 4))


def test_votes_ties_go_to_the_lowest_factor_and_unseen_latents_to_factor_0():
    train = np.array([[2, 0], [1, 0]])  # a tie in latent 0: factor 1 wins
    held_out = np.array([[1, 0], [2, 0], [0, 3], [1, 3]])  # latent 3 got no training vote: factor 0
    assert factor_vae_from_votes(train, held_out) == (0.5, 0.5)


def test_votes_of_a_perfect_code_score_one():
    factor = np.random.default_rng(0).integers(0, 5, size=300)
    votes = np.column_stack([factor, (factor + 2) % 5])  # each factor always picks its own latent
    assert factor_vae_from_votes(votes, votes[::-1]) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("train", "held_out", "match"),
    [
        (np.zeros((5, 3), dtype=int), np.zeros((5, 2), dtype=int), "train_votes"),
        (np.zeros((5, 2), dtype=int), np.zeros((0, 2), dtype=int), "eval_votes"),
        (np.zeros(5, dtype=int), np.zeros((5, 2), dtype=int), "train_votes"),
        (np.zeros((5, 2)), np.zeros((5, 2), dtype=int), "int"),
        (np.zeros((5, 2), dtype=int), -np.ones((5, 2), dtype=int), ">= 0"),
    ],
)
def test_bad_votes_are_refused(train, held_out, match):
    with pytest.raises(ValueError, match=match):
        factor_vae_from_votes(train, held_out)


# compute_factor_vae on data whose images spell their factors.


def test_identity_like_code_scores_one(spelled_data):
    result = score(spelled_data, identity_like)
    assert set(result) == {"factor_vae", "factor_vae_train_accuracy", "factor_vae_num_active_dims"}
    assert result == {"factor_vae": 1.0, "factor_vae_train_accuracy": 1.0, "factor_vae_num_active_dims": K}


def test_scaled_and_permuted_code_scores_the_same(spelled_data):
    # Per-latent scale is divided out by the global variance; a permutation only relabels votes.
    def transformed(x):
        return (identity_like(x) * np.array([3.0, -0.5, 100.0, 0.2]))[:, [2, 0, 3, 1]]

    def half_informative(x):  # scores well below 1, so agreement is not trivially 1 == 1
        return np.column_stack([identity_like(x)[:, :2], noise(x, 2, 1.0) + 5.0])

    def half_informative_permuted(x):
        return half_informative(x)[:, [3, 1, 0, 2]]

    assert score(spelled_data, transformed) == score(spelled_data, identity_like)
    plain, permuted = score(spelled_data, half_informative), score(spelled_data, half_informative_permuted)
    assert plain["factor_vae"] < 0.8
    assert permuted == plain


def test_constant_code_gets_disentanglement_libs_fixed_result(spelled_data):
    # No latent is active: disentanglement_lib returns accuracies 0 (not chance).
    result = score(spelled_data, lambda x: np.full((len(x), 3), 0.7))
    assert result == {"factor_vae": 0.0, "factor_vae_train_accuracy": 0.0, "factor_vae_num_active_dims": 0}


def test_noise_code_scores_chance(spelled_data):
    # Active latents that carry no information: each eval vote is right with probability 1/K.
    result = score(spelled_data, lambda x: noise(x, 5, 1.0), num_eval=1000)
    assert result["factor_vae_num_active_dims"] == 5
    assert result["factor_vae"] == pytest.approx(1 / K, abs=0.06)


def test_code_ignoring_one_factor_loses_that_factors_votes(spelled_data):
    # Batches fixing the ignored factor vote at random among latents claimed by other factors.
    result = score(spelled_data, lambda x: identity_like(x)[:, : K - 1], num_eval=1000)
    assert result["factor_vae"] == pytest.approx(1 - 1 / K, abs=0.05)
    assert result["factor_vae_num_active_dims"] == K - 1


def test_pruning_compares_the_standard_deviation_with_the_threshold(spelled_data):
    # disentanglement_lib's _prune_dims keeps sqrt(variance) >= 0.05: std 0.1 (variance 0.01)
    # stays active, std 0.01 is pruned; the pruned latent takes no votes, so the score stays 1.
    def with_small_latents(x):
        small = noise(x, 2, 1.0) * np.array([0.1, 0.01])
        return np.column_stack([small[:, :1], identity_like(x), small[:, 1:]])

    result = score(spelled_data, with_small_latents)
    assert result["factor_vae_num_active_dims"] == K + 1
    assert result["factor_vae"] == 1.0
    assert score(spelled_data, with_small_latents, prune_dims_threshold=0.2)["factor_vae_num_active_dims"] == K


def test_same_random_state_gives_the_same_result(spelled_data):
    def very_noisy(x):
        return read_factors(x) + noise(x, K, 1.0)

    a, b = score(spelled_data, very_noisy, seed=5), score(spelled_data, very_noisy, seed=5)
    assert a == b
    assert 0.3 < a["factor_vae"] < 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_train": 0}, "num_train"),
        ({"num_eval": 0}, "num_eval"),
        ({"num_variance_estimate": 1}, "num_variance_estimate"),
        ({"batch_size": 1}, "batch_size"),
        ({"prune_dims_threshold": -0.1}, "prune_dims_threshold"),
    ],
)
def test_bad_arguments_are_refused(spelled_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        score(spelled_data, identity_like, **kwargs)


# Subsets of a grid, where most factor combinations have no image.

SUBSET_SIZES = [3, 6, 10, 8, 8]  # 11,520 combinations, of which 1,500 are kept


@pytest.fixture
def subset_data() -> ArrayGroundTruthData:
    rows = np.random.default_rng(4).choice(np.prod(SUBSET_SIZES), size=1500, replace=False)
    factors = grid(SUBSET_SIZES)[rows]
    return ArrayGroundTruthData(spell(factors), factors, SUBSET_SIZES, list("abcde"))


def test_overwriting_a_factor_fails_on_a_subset(subset_data):
    # The plain interface (overwrite the column) asks for combinations that are not there.
    rng = np.random.default_rng(0)
    factors = subset_data.sample_factors(64, rng)
    factors[:, 2] = factors[0, 2]
    with pytest.raises(KeyError):
        subset_data.sample_observations_from_factors(factors, rng)


def test_sampler_draws_existing_rows_with_the_fixed_values(subset_data):
    rng = np.random.default_rng(0)
    sampler = FixedFactorSampler(subset_data)
    values = subset_data.sample_factors(500, rng)[:, 3]
    fixed = sampler.fix(subset_data.sample_factors(500, rng), 3, values, rng)
    np.testing.assert_array_equal(fixed[:, 3], values)
    present = {tuple(row) for row in subset_data.factors.tolist()}
    assert all(tuple(row) in present for row in fixed.tolist())
    assert len(np.unique(fixed[:, 0])) == SUBSET_SIZES[0]  # the other factors still vary
    subset_data.sample_observations_from_factors(fixed, rng)  # no KeyError


def test_sampler_refuses_a_value_no_row_has(subset_data):
    rows = subset_data.factors[:, 2] != 7
    data = subset_data.subset(np.flatnonzero(rows))
    with pytest.raises(ValueError, match=r"factor 2 equal to \[7\]"):
        FixedFactorSampler(data).fix(data.factors[:4], 2, np.array([1, 7, 7, 2]), np.random.default_rng(0))


def test_sampler_overwrites_the_column_for_other_datasets():
    class Grid:  # a dataset that renders any combination (not array-backed)
        num_factors, factors_num_values = 3, [2, 3, 4]

        def sample_factors(self, num, random_state):
            return random_state.integers(0, self.factors_num_values, size=(num, 3))

    rng = np.random.default_rng(0)
    factors = Grid().sample_factors(10, rng)
    fixed = FixedFactorSampler(Grid()).fix(factors, 1, 2, rng)
    expected = factors.copy()
    expected[:, 1] = 2
    np.testing.assert_array_equal(fixed, expected)
    assert not np.array_equal(factors, expected)  # the caller's rows are left alone


def test_identity_like_code_scores_one_on_a_subset(subset_data):
    def read(x):
        return x[:, 0, 0, :5].astype(np.float64) + noise(x, 5, 0.01)

    result = score(subset_data, read)
    assert result == {"factor_vae": 1.0, "factor_vae_train_accuracy": 1.0, "factor_vae_num_active_dims": 5}
