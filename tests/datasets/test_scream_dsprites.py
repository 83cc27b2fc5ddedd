"""Scream dSprites observes a sprite as disentanglement_lib's ScreamDSprites: a random patch of a picture,
averaged with a random colour, the sprite's pixels inverted; the picture given by the user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.registry import DataError
from datasets.scream_dsprites import ScreamDSpritesOptions, load_scream_dsprites
from datasets.sprite_variants import Scream, load_scream_image


def write_picture(path: Path, width: int = 500, height: int = 400) -> Path:
    """A smooth RGB picture (a generated stand-in for The Scream)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def test_patches_are_drawn_as_disentanglement_lib_draws_them():
    picture = np.random.default_rng(0).uniform(size=(70, 80, 3)).astype(np.float32)
    sprite = np.zeros((3, 1, 4, 4), dtype=np.uint8)
    sprite[:, 0, 1:3, 1:3] = 1
    scream = Scream(picture, (4, 4))
    x = scream.apply(sprite, scream.draw(3, np.random.default_rng(9)))
    rng = np.random.default_rng(9)
    for i in range(3):  # per image: crop row in [0, 66), column in [0, 76), colour, in this order
        r, c = rng.integers(0, 66), rng.integers(0, 76)
        background = ((picture[r : r + 4, c : c + 4] + rng.uniform(0, 1, size=3)) / 2).transpose(2, 0, 1)
        on = sprite[i, 0].astype(bool)
        assert np.allclose(x[i][:, ~on], background[:, ~on])
        assert np.allclose(x[i][:, on], 1 - background[:, on])


def test_the_picture_is_fitted_into_350_by_274(tmp_path):
    picture, digest = load_scream_image(write_picture(tmp_path / "p.png"))
    assert picture.shape == (274, 342, 3) and picture.dtype == np.float32  # 500x400 fitted, aspect kept
    assert 0 <= picture.min() and picture.max() <= 1 and len(digest) == 64


def test_pictures_are_refused_with_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("SCREAM_PATH", raising=False)
    with pytest.raises(DataError, match="dataset.background: scream_dsprites needs a background picture"):
        load_scream_image(None)
    with pytest.raises(DataError, match="dataset.background: .*absent.png: no such file"):
        load_scream_image(tmp_path / "absent.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="text.png: not a readable image"):
        load_scream_image(tmp_path / "text.png")
    with pytest.raises(DataError, match="40x30 once fitted into 350x274; the 64x64 patches need at least 65x65"):
        load_scream_image(write_picture(tmp_path / "small.png", 40, 30))
    monkeypatch.setenv("SCREAM_PATH", str(tmp_path / "absent.jpg"))
    with pytest.raises(DataError, match="^SCREAM_PATH: "):
        load_scream_image(None)


def test_loader_puts_the_shipped_grid_on_the_picture(tmp_path):
    options = ScreamDSpritesOptions(name="scream_dsprites", limit=2000, background=str(write_picture(tmp_path / "p.png")))
    prepared = load_scream_dsprites(options, 0)
    assert prepared.describe().input_shape == (3, 64, 64)
    assert len(prepared.info["background_sha256"]) == 64
    data = prepared.ground_truth
    factors = data.sample_factors(10, np.random.default_rng(0))
    x = data.sample_observations_from_factors(factors, np.random.default_rng(1))
    assert x.shape == (10, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
    again = data.sample_observations_from_factors(factors, np.random.default_rng(1))
    assert np.array_equal(x, again)
