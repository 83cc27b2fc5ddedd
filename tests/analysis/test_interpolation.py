"""Latent interpolation: lerp and slerp known answers, and the report figure on tiny checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.checkpoints import load_trial_model
from analysis.interpolation import _endpoints, interpolation_grid, lerp, slerp, study_interpolation_figure
from datasets.registry import get_dataset
from study.spec import StudySpec
from trainables.checkpoint import save_checkpoint
from trainables.registry import get_family
from trainables.training import TrainingSpec
from trainables.trial import TrialConfig, build_model

T = np.linspace(0.0, 1.0, 9)


def test_lerp_known_points():
    a, b = np.array([0.0, 2.0]), np.array([4.0, -2.0])
    np.testing.assert_allclose(lerp(a, b, np.array([0.0, 0.25, 1.0])), [[0, 2], [1, 1], [4, -2]])


def test_slerp_of_orthogonal_unit_vectors_follows_the_circle():
    u, v = np.eye(3)[0], np.eye(3)[1]
    path = slerp(u, v, T)
    np.testing.assert_allclose(path, np.stack([np.cos(T * np.pi / 2), np.sin(T * np.pi / 2), 0 * T], axis=1),
                               atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_slerp_keeps_the_norm_of_equal_norm_endpoints_and_hits_them_exactly(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=16), rng.normal(size=16)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    path = slerp(a, b, T)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-12)
    assert np.array_equal(path[0], a) and np.array_equal(path[-1], b)
    assert np.array_equal(lerp(a, b, T)[[0, -1]], np.stack([a, b]))
    # Straight lines cut inside the sphere; for these codes the midpoint is clearly shorter.
    assert np.linalg.norm(lerp(a, b, T)[4]) < 0.95 * np.linalg.norm(a)


def test_slerp_norm_stays_between_unequal_endpoint_norms():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=8), 3 * rng.normal(size=8)
    norms = np.linalg.norm(slerp(a, b, T), axis=1)
    low, high = sorted([np.linalg.norm(a), np.linalg.norm(b)])
    assert np.all(norms >= low - 1e-12) and np.all(norms <= high + 1e-12)
    np.testing.assert_allclose(norms, (1 - T) * np.linalg.norm(a) + T * np.linalg.norm(b))


def test_slerp_of_antiparallel_vectors_turns_through_an_orthogonal_direction():
    a = np.array([3.0, 0.5, -1.0])
    path = slerp(a, -a, T)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-12)
    assert abs(path[4] @ a) < 1e-9  # the midpoint is orthogonal to both ends
    assert np.isfinite(path).all() and np.array_equal(path[-1], -a)
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)  # constant speed on the circle


def test_slerp_of_parallel_vectors_and_of_a_zero_vector_is_the_line():
    a = np.array([1.0, 2.0, 2.0])
    np.testing.assert_allclose(slerp(a, 2 * a, T), lerp(a, 2 * a, T))
    np.testing.assert_allclose(slerp(np.zeros(3), a, T), lerp(np.zeros(3), a, T))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="two vectors"):
        slerp(np.zeros(3), np.zeros(4), T)


def test_grid_decodes_both_paths_in_order():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    grid = interpolation_grid(lambda z: z[:, :, None, None] * np.ones((1, 1, 2, 2)), a, b, steps=5)
    assert grid.shape == (2, 5, 2, 2, 2)
    np.testing.assert_allclose(grid[0, :, :, 0, 0], lerp(a, b, np.linspace(0, 1, 5)), rtol=1e-6)
    np.testing.assert_allclose(grid[1, :, :, 0, 0], slerp(a, b, np.linspace(0, 1, 5)), rtol=1e-6)


# The report figure, on tiny checkpoints.


def checkpoint(tmp_path, family: str, family_config: dict, input_shape: tuple) -> str:
    config = TrialConfig(family=family, family_config=get_family(family).config_cls(**family_config),
                         training=TrainingSpec(epochs=1), input_shape=input_shape, seed=0)
    torch.manual_seed(0)
    model = build_model(config)
    directory = tmp_path / f"{family}_checkpoint"
    directory.mkdir()
    save_checkpoint(str(directory), model, [], 1, config, {})
    return str(directory)


def best_row(path: str) -> pd.Series:
    return pd.Series({"trial_id": "t0", "checkpoint_path": path})


def test_gan_figure_needs_no_data(tmp_path):
    path = checkpoint(tmp_path, "dcgan", {"latent_dim": 4, "filters": [8, 16]}, (3, 16, 16))
    figures = study_interpolation_figure(None, None, None, best_row(path), tmp_path)
    assert [title for title, _ in figures] == ["Latent interpolation of the best trial (rows: linear, spherical)"]
    assert figures[0][1] == tmp_path / "interpolation.png" and figures[0][1].stat().st_size > 1000


def test_vae_figure_encodes_two_held_out_images_of_the_study(tmp_path):
    images = np.rint(np.random.default_rng(0).random((20, 8, 8)) * 255).astype(np.uint8)
    np.savez(tmp_path / "faces.npz", images=images)
    family = {"latent_dim": 3, "filters": [8, 8], "hidden_dim": 16}
    spec = StudySpec(name="interp", dataset={"name": "images", "path": str(tmp_path / "faces.npz")},
                     family={"name": "conv_vae", **family},
                     search_space={"beta": {"type": "categorical", "choices": [1.0]}},
                     search={"algorithm": "grid"}, objective={"metric": "sample_mmd", "mode": "min"},
                     evaluation={"metrics": ["sample_mmd"]})
    path = checkpoint(tmp_path, "conv_vae", family, (1, 8, 8))
    out = tmp_path / "report"
    out.mkdir()
    figures = study_interpolation_figure(None, spec.info(), None, best_row(path), out)
    assert len(figures) == 1 and figures[0][1].is_file()
    # The endpoints are the posterior means of the first two rows of the study's held-out split.
    model, _ = load_trial_model(path)
    val = get_dataset("images").load(spec.dataset, spec.seed).val["image"][:2]
    a, b, decode, _ = _endpoints(model, spec.info())
    with torch.no_grad():
        mu = model.encode(torch.from_numpy(val))[0].numpy()
        mean_image = torch.sigmoid(model.decode(torch.from_numpy(mu[:1]))).numpy()
    np.testing.assert_array_equal(np.stack([a, b]), mu)
    np.testing.assert_allclose(decode(mu[:1]), mean_image)


def test_a_model_of_glyph_images_without_codes_has_no_figure(tmp_path):
    # seq2seq reads (L, 28, 28) glyphs but has no code to interpolate (no generate, no latent_dim).
    path = checkpoint(tmp_path, "seq2seq", {"input": "image", "hidden_dim": 16, "embedding_dim": 8}, (5, 28, 28))
    assert study_interpolation_figure(None, None, None, best_row(path), tmp_path) == []


def test_nothing_to_show_without_a_checkpoint(tmp_path):
    assert study_interpolation_figure(None, None, None, None, tmp_path) == []
    assert study_interpolation_figure(None, None, None, best_row(str(tmp_path / "gone")), tmp_path) == []
