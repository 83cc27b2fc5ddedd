"""Known answers for UDR (disentanglement_lib's udr_test, made exact on a full factor grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.metrics.udr import LASSO_ALPHA, _relative_strength, codes_and_kl, configuration_groups, udr_from_codes

CORRELATIONS = ["lasso", "spearman"]
# The same code scores 1 under spearman and 1 - alpha under the lasso (its shrinkage of a unit-variance code).
SAME_CODE = {"lasso": 1 - LASSO_ALPHA, "spearman": 1.0}


@pytest.fixture
def grid_code() -> np.ndarray:
    """float ``(1296, 4)``: every combination of 4 latents with 6 values each, rows shuffled. The
    latents of a full grid are exactly uncorrelated (in value and in rank): no sampling noise."""
    values = np.stack(np.meshgrid(*[np.linspace(-1, 1, 6)] * 4, indexing="ij"), -1).reshape(-1, 4)
    return values[np.random.default_rng(0).permutation(len(values))]


def ones(code: np.ndarray) -> np.ndarray:
    return np.ones(code.shape[1])


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("correlation", CORRELATIONS)
def test_identical_axis_aligned_codes_score_the_same_code_value(grid_code, correlation):
    result = udr_from_codes([grid_code] * 3, [ones(grid_code)] * 3, correlation=correlation, random_state=rng())
    np.testing.assert_allclose(result.scores, SAME_CODE[correlation], atol=1e-6)


@pytest.mark.parametrize("correlation", CORRELATIONS)
def test_permuted_and_sign_flipped_axes_score_as_the_same_code(grid_code, correlation):
    flipped = grid_code[:, [2, 0, 3, 1]] * np.array([1.0, -1.0, -1.0, 1.0])
    stretched = grid_code[:, [3, 2, 1, 0]] * np.array([5.0, 0.1, -2.0, 1.0]) + 7.0  # scale and shift: standardised away
    result = udr_from_codes([grid_code, flipped, stretched], [ones(grid_code)] * 3, correlation=correlation,
                            random_state=rng())
    np.testing.assert_allclose(result.scores, SAME_CODE[correlation], atol=1e-6)


@pytest.mark.parametrize("correlation", CORRELATIONS)
def test_unrelated_random_codes_score_low(correlation):
    generator = np.random.default_rng(1)
    codes = [generator.normal(size=(1000, 5)) for _ in range(3)]
    result = udr_from_codes(codes, [np.ones(5)] * 3, correlation=correlation, random_state=rng())
    assert (result.scores < 0.05).all(), result.scores  # lasso: 0 (every coefficient shrunk away); spearman ~0.02


@pytest.mark.parametrize("correlation", CORRELATIONS)
def test_entangled_mixtures_score_between_random_and_the_same_code(grid_code, correlation):
    mixed = grid_code @ np.random.default_rng(2).normal(size=(4, 4))  # each latent a mixture of all four
    result = udr_from_codes([grid_code, mixed], [ones(grid_code)] * 2, correlation=correlation, random_state=rng())
    assert (0.1 < result.scores).all() and (result.scores < SAME_CODE[correlation] - 0.2).all(), result.scores


@pytest.mark.parametrize("correlation", CORRELATIONS)
def test_latents_at_or_below_the_kl_threshold_are_ignored(grid_code, correlation):
    noise = np.random.default_rng(3)
    # One latent in common; the other four are each model's own noise (disentanglement_lib's test_metric_kl).
    a = np.concatenate([grid_code[:, :1], noise.uniform(size=(len(grid_code), 4))], axis=1)
    b = np.concatenate([grid_code[:, :1], noise.uniform(size=(len(grid_code), 4))], axis=1)
    kl = np.array([2.0, 0.01, 0.0, 0.005, 0.001])  # only the first latent above 0.01 nats
    filtered = udr_from_codes([a, b], [kl, kl], correlation=correlation, random_state=rng())
    np.testing.assert_allclose(filtered.scores, SAME_CODE[correlation], atol=1e-6)
    unfiltered = udr_from_codes([a, b], [np.ones(5)] * 2, correlation=correlation, random_state=rng())
    assert (unfiltered.scores < 0.3).all(), unfiltered.scores  # 1 of 5 rows and columns matches: ~1/5
    none_kept = udr_from_codes([a, b], [kl, kl], correlation=correlation, kl_threshold=5.0, random_state=rng())
    np.testing.assert_array_equal(none_kept.scores, [0.0, 0.0])  # no informative latent: no agreement


@pytest.mark.parametrize("correlation", CORRELATIONS)
def test_the_matrix_is_pairwise_with_a_nan_diagonal_and_scores_its_column_medians(grid_code, correlation):
    generator = np.random.default_rng(4)
    codes = [grid_code, grid_code[:, ::-1], grid_code @ generator.normal(size=(4, 4)), generator.normal(size=(1296, 3))]
    kl = [ones(code) for code in codes]
    result = udr_from_codes(codes, kl, correlation=correlation, random_state=rng())
    assert result.matrix.shape == (4, 4) and result.scores.shape == (4,)
    assert np.isnan(np.diag(result.matrix)).all()
    off = ~np.eye(4, dtype=bool)
    assert np.isfinite(result.matrix[off]).all() and (result.matrix[off] >= 0).all()
    for j in range(4):
        assert result.scores[j] == np.median(result.matrix[off[:, j], j])
    assert result.matrix[0, 1] == pytest.approx(SAME_CODE[correlation])
    if correlation == "spearman":  # the rank correlation is symmetric; the lasso regresses one way
        np.testing.assert_allclose(result.matrix[off], result.matrix.T[off])


def test_models_may_differ_in_latent_dimensions(grid_code):
    wider = np.concatenate([grid_code, np.zeros((len(grid_code), 2))], axis=1)  # two collapsed latents
    kl = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    result = udr_from_codes([grid_code, wider], [ones(grid_code), kl], correlation="spearman", random_state=rng())
    np.testing.assert_allclose(result.scores, 1.0, atol=1e-6)


def test_relative_strength_known_answers():
    # disentanglement_lib's test_relative_strength_disentanglement, exactly.
    assert _relative_strength(np.eye(3)) == 1.0
    assert _relative_strength(np.array([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])) == pytest.approx(2 / 3)
    assert _relative_strength(np.ones((3, 3))) == pytest.approx(1 / 3)
    assert _relative_strength(np.zeros((3, 3))) == 0.0
    assert _relative_strength(np.zeros((0, 3))) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    ({"codes": [np.zeros((10, 2))], "kl": [np.ones(2)]}, ">= 2 models"),
    ({"codes": [np.zeros((10, 2))] * 2, "kl": [np.ones(2)]}, "one KL vector per model"),
    ({"codes": [np.zeros((10, 2)), np.zeros((9, 2))], "kl": [np.ones(2)] * 2}, "num_samples"),
    ({"codes": [np.zeros((10, 2))] * 2, "kl": [np.ones(3)] * 2}, r"shape \(2,\)"),
    ({"codes": [np.zeros((10, 2))] * 2, "kl": [np.ones(2)] * 2, "correlation": "pearson"}, "'lasso' or 'spearman'"),
    ({"codes": [np.zeros((10, 2))] * 2, "kl": [np.ones(2)] * 2, "kl_threshold": -1.0}, "kl_threshold"),
])
def test_bad_input_is_refused_naming_it(kwargs, match):
    with pytest.raises(ValueError, match=match):
        udr_from_codes(**kwargs, random_state=rng())


class FixedPosterior(torch.nn.Module):
    """``encode`` returns mu = the first two pixels, logvar = log(4) in latent 0 and 0 in latent 1."""

    def encode(self, x):
        mu = x[:, 0, 0, :2]
        logvar = torch.stack([torch.full_like(mu[:, 0], float(np.log(4.0))), torch.zeros_like(mu[:, 1])], dim=1)
        return mu, logvar


def test_codes_and_kl_are_the_means_and_the_mean_gaussian_kl_per_latent():
    images = np.zeros((5, 1, 2, 2), dtype=np.float32)
    images[:, 0, 0, 0] = [0, 1, 2, 3, 4]
    images[:, 0, 0, 1] = [1, -1, 1, -1, 1]
    codes, kl = codes_and_kl(FixedPosterior(), images, batch_size=2)  # batches of 2, 2, 1
    np.testing.assert_allclose(codes, images[:, 0, 0, :2])
    # KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - log s^2 - 1) / 2: latent 0 mean mu^2 = 6, s^2 = 4; latent 1 mu^2 = 1.
    np.testing.assert_allclose(kl, [(6 + 4 - np.log(4) - 1) / 2, 0.5])


def test_configuration_groups_are_the_finished_seeds_of_each_configuration():
    trials = pd.DataFrame({
        "trial_id": list("abcdef"), "beta": [1.0, 1.0, 4.0, 4.0, 4.0, 8.0], "repeat": [0, 1, 0, 1, 2, 0],
        "status": ["TERMINATED", "TERMINATED", "TERMINATED", "ERROR", "TERMINATED", "TERMINATED"],
        "checkpoint_path": ["p", "p", "p", None, "p", None],
    })
    groups = configuration_groups(trials, ["beta"])
    assert [list(trials.loc[g, "trial_id"]) for g in groups] == [["a", "b"], ["c", "e"]]


class PixelCode(torch.nn.Module):
    """``encode``: mu = the first 4 pixels mixed by ``weights`` (4, 4), logvar = 0 (KL = mu^2 / 2)."""

    def __init__(self, weights: np.ndarray):
        super().__init__()
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def encode(self, x):
        mu = x.reshape(len(x), -1)[:, :4] @ self.weights
        return mu, torch.zeros_like(mu)


@pytest.mark.parametrize("correlation", CORRELATIONS)
def test_compute_udr_scores_each_trial_against_the_seeds_of_its_configuration(grid_code, correlation, monkeypatch):
    import types

    from analysis import checkpoints
    from analysis.metrics.udr import compute_udr

    images = np.zeros((len(grid_code), 1, 2, 2), dtype=np.float32)
    images.reshape(len(grid_code), 4)[:] = grid_code  # the grid written into the pixels
    flip = np.eye(4)[[2, 0, 3, 1]] * np.array([1.0, -1.0, -1.0, 1.0])
    mixing = np.random.default_rng(5).normal(size=(4, 4))
    models = {"a": np.eye(4), "b": flip, "c": mixing, "d": np.eye(4), "e": np.eye(4)}
    seen_rows = []

    def load_prepared(info):
        return types.SimpleNamespace(val_rows=lambda num: seen_rows.append(num) or {"image": images[:num]})

    monkeypatch.setattr(checkpoints, "load_prepared", load_prepared)
    monkeypatch.setattr(checkpoints, "load_trial_model", lambda path: (PixelCode(models[path]), {}))
    trials = pd.DataFrame({"trial_id": list("abcdef"), "beta": [1.0, 1.0, 4.0, 4.0, 8.0, 8.0],
                           "status": ["TERMINATED"] * 5 + ["ERROR"], "checkpoint_path": list("abcde") + [None]})
    info = types.SimpleNamespace(searched_params=["beta"])
    warnings = []
    scored = compute_udr(trials, info, correlation=correlation, random_state=rng(), warn=warnings.append,
                         num_samples=len(grid_code), batch_size=500)
    udr = scored.set_index("trial_id")["udr"]
    assert seen_rows == [len(grid_code)]  # read once: the same held-out rows for every model
    np.testing.assert_allclose(udr[["a", "b"]], SAME_CODE[correlation], atol=1e-6)  # same code, permuted
    assert (udr[["c", "d"]] < SAME_CODE[correlation] - 0.2).all()  # an entangled seed against a clean one
    assert np.isnan(udr[["e", "f"]]).all()
    assert warnings == ["warning: udr: configuration (beta=8.0) has 1 finished seed; its udr is NaN"]
    assert "udr" not in trials  # the input table is left alone
