"""Known answers for the BetaVAE score (disentanglement_lib's metric tests, extended)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.beta_vae import beta_vae_from_features, compute_beta_vae
from datasets.base import ArrayGroundTruthData
from tests.analysis.metrics.spelled import GRID_SIZES, K, grid, identity_like, noise, read_factors, spell, spelled_data  # noqa: F401

SMALL = {"num_train": 300, "num_eval": 300}  # fast, still well away from chance


def score(data, representation_fn, seed: int = 0, **kwargs) -> dict[str, float]:
    return compute_beta_vae(data, representation_fn, random_state=np.random.default_rng(seed), **(SMALL | kwargs))


# beta_vae_from_features: logistic regression on (num_points, latent_dim) features.


def one_small_feature(labels: np.ndarray, num_latents: int, seed: int) -> np.ndarray:
    """Features ``(n, num_latents)`` near 1, except near 0 in the latent of each point's label."""
    features = np.random.default_rng(seed).uniform(0.8, 1.2, (len(labels), num_latents))
    features[np.arange(len(labels)), labels] = 0.01
    return features


def test_features_naming_the_factor_score_one():
    labels = np.random.default_rng(0).integers(0, 3, size=200)
    features = one_small_feature(labels, 3, seed=1)
    rng = np.random.default_rng(0)
    assert beta_vae_from_features(features, labels, features[::-1], labels[::-1], random_state=rng) == (1.0, 1.0)


def test_uninformative_features_score_the_majority_class():
    labels = np.array([0] * 30 + [1] * 50 + [2] * 20)
    eval_labels = np.array([0, 1, 1, 2, 2, 2, 2, 2])
    result = beta_vae_from_features(
        np.ones((100, 4)), labels, np.ones((8, 4)), eval_labels, random_state=np.random.default_rng(0)
    )
    assert result == (0.5, 2 / 8)  # every point is predicted factor 1


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((10, 3), (9,), (10, 3), (10,)), "train_features"),
        (((10, 3), (10,), (10,), (10,)), "eval_features"),
        (((10, 3), (10,), (10, 4), (10,)), "columns"),
        (((10, 3), (10, 1), (10, 3), (10,)), "train_labels"),
    ],
)
def test_bad_shapes_are_refused(shapes, match):
    rng = np.random.default_rng(0)
    train_x, train_y, eval_x, eval_y = (rng.integers(0, 2, size=s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        beta_vae_from_features(train_x, train_y, eval_x, eval_y, random_state=rng)


def test_a_single_training_factor_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="two factors"):
        beta_vae_from_features(
            rng.normal(size=(10, 2)), np.full(10, 3), rng.normal(size=(5, 2)), np.zeros(5), random_state=rng
        )


# compute_beta_vae on data whose images spell their factors.


def test_identity_like_code_scores_one(spelled_data):
    result = score(spelled_data, identity_like)
    assert result == {"beta_vae": 1.0, "beta_vae_train_accuracy": 1.0}


def test_constant_code_scores_chance(spelled_data):
    # All features are 0: the classifier predicts one factor, right for about 1/K of the points.
    result = score(spelled_data, lambda x: np.full((len(x), 3), 0.7), num_eval=600)
    assert result["beta_vae"] == pytest.approx(1 / K, abs=0.06)


def test_code_ignoring_one_factor_still_scores_one(spelled_data):
    # Kim & Mnih 2018's objection: the factor no latent captures is the one with no small feature.
    result = score(spelled_data, lambda x: identity_like(x)[:, : K - 1])
    assert result["beta_vae"] > 0.98


def test_code_ignoring_two_factors_confuses_them(spelled_data):
    # The two ignored factors give features with one distribution: half their points are missed.
    result = score(spelled_data, lambda x: identity_like(x)[:, : K - 2], num_eval=600)
    assert result["beta_vae"] == pytest.approx(1 - 1 / K, abs=0.06)  # the identity-like code scores 1


def test_permuted_code_scores_the_same(spelled_data):
    def half_informative(x):  # scores well below 1, so agreement is not trivially 1 == 1
        return np.column_stack([identity_like(x)[:, :2], noise(x, 2, 1.0)])

    plain = score(spelled_data, half_informative)
    permuted = score(spelled_data, lambda x: half_informative(x)[:, [3, 1, 0, 2]])
    assert plain["beta_vae"] < 0.9
    assert permuted == pytest.approx(plain, abs=0.01)


def test_same_random_state_gives_the_same_result(spelled_data):
    def very_noisy(x):
        return read_factors(x) + noise(x, K, 5.0)

    a, b = (score(spelled_data, very_noisy, seed=5, num_train=200, num_eval=200) for _ in range(2))
    assert a == b
    assert 0.3 < a["beta_vae"] < 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_train": 1}, "num_train"), ({"num_eval": 0}, "num_eval"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_arguments_are_refused(spelled_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        score(spelled_data, identity_like, **kwargs)


# A subset of a grid, where most factor combinations have no image.


def test_identity_like_code_scores_one_on_a_subset():
    sizes = [3, 6, 10, 8, 8]  # 11,520 combinations, of which 1,500 are kept
    rows = np.random.default_rng(4).choice(np.prod(sizes), size=1500, replace=False)
    factors = grid(sizes)[rows]
    data = ArrayGroundTruthData(spell(factors), factors, sizes, list("abcde"))

    def read(x):
        return x[:, 0, 0, :5].astype(np.float64) + noise(x, 5, 0.01)

    assert score(data, read) == {"beta_vae": 1.0, "beta_vae_train_accuracy": 1.0}
