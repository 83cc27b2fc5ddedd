"""Colour dSprites observes a sprite as disentanglement_lib's ColorDSprites: one colour per image,
each channel uniform in [0.5, 1), on black."""

from __future__ import annotations

import numpy as np

from datasets.color_dsprites import ColorDSpritesOptions, load_color_dsprites
from datasets.sprite_variants import Colour


def sprites(num: int = 4) -> np.ndarray:
    """Binary uint8 ``(num, 1, 8, 8)``: sprite i covers rows 0..i+1."""
    out = np.zeros((num, 1, 8, 8), dtype=np.uint8)
    for i in range(num):
        out[i, 0, : i + 2] = 1
    return out


def test_colour_is_drawn_as_disentanglement_lib_draws_it():
    x = Colour().apply(sprites(), Colour().draw(4, np.random.default_rng(7)))
    colours = np.random.default_rng(7).uniform(0.5, 1, size=(4, 1, 1, 3))[:, 0, 0]  # (4, 3)
    assert x.shape == (4, 3, 8, 8) and x.dtype == np.float32
    for i in range(4):
        on = sprites()[i, 0].astype(bool)
        assert np.allclose(x[i][:, on], colours[i][:, None])  # every sprite pixel in the image's colour
        assert (x[i][:, ~on] == 0).all()  # the background stays black
    assert ((colours >= 0.5) & (colours < 1)).all()


def test_loader_observes_the_shipped_grid_in_colour():
    prepared = load_color_dsprites(ColorDSpritesOptions(name="color_dsprites", limit=2000), 0)
    x = prepared.ground_truth.sample_observations_from_factors(
        prepared.ground_truth.sample_factors(50, np.random.default_rng(0)), np.random.default_rng(0))
    on = x.max(axis=1) > 0  # (50, 64, 64)
    per_image = [x[i][:, on[i]] for i in range(50)]
    assert all(((p >= 0.5) & (p < 1)).all() and np.ptp(p, axis=1).max() == 0 for p in per_image)
    assert len({tuple(p[:, 0].round(6)) for p in per_image}) == 50  # a colour per image
    assert prepared.info["observation"].startswith("sprite x colour")
