"""Noisy dSprites observes a sprite as disentanglement_lib's NoisyDSprites: a white sprite on uniform noise."""

from __future__ import annotations

import numpy as np

from datasets.noisy_dsprites import NoisyDSpritesOptions, load_noisy_dsprites
from datasets.sprite_variants import Noise


def test_noise_is_drawn_as_disentanglement_lib_draws_it():
    sprite = np.zeros((2, 1, 8, 8), dtype=np.uint8)
    sprite[:, 0, 2:5, 3:6] = 1
    x = Noise((8, 8)).apply(sprite, Noise((8, 8)).draw(2, np.random.default_rng(3)))
    noise = np.random.default_rng(3).uniform(0, 1, size=(2, 8, 8, 3)).transpose(0, 3, 1, 2)  # drawn (N, H, W, C)
    on = sprite[:, 0].astype(bool)
    assert x.shape == (2, 3, 8, 8) and x.dtype == np.float32
    assert (x.transpose(1, 0, 2, 3)[:, on] == 1).all()  # the sprite white in every channel
    assert np.allclose(x.transpose(1, 0, 2, 3)[:, ~on], noise.transpose(1, 0, 2, 3)[:, ~on])


def test_loader_puts_the_shipped_grid_on_noise():
    prepared = load_noisy_dsprites(NoisyDSpritesOptions(name="noisy_dsprites", limit=2000), 0)
    data = prepared.ground_truth
    rng = np.random.default_rng(0)
    factors = data.sample_factors(20, rng)
    x = data.sample_observations_from_factors(factors, np.random.default_rng(5))
    sprites = data.images[data.rows_of(factors, np.random.default_rng(5))][:, 0].astype(bool)
    background = x.transpose(1, 0, 2, 3)[:, ~sprites]
    assert 0.45 < background.mean() < 0.55 and background.min() >= 0 and background.max() < 1  # U[0, 1)
    assert (x.transpose(1, 0, 2, 3)[:, sprites] == 1).all()
