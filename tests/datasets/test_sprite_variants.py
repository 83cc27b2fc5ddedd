"""The dSprites variants' shared machinery: per-row parameters fixed by the seed, the ground truth drawing
fresh ones from the metric's random state, the split shared with ``dsprites``, and the streamed rows."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from datasets.registry import get_dataset
from datasets.sprite_variants import TRAIN, VAL, Colour, Noise, VariantGroundTruth, _observe, row_params

VARIANTS = ["color_dsprites", "noisy_dsprites"]  # scream_dsprites needs a picture: test_scream_dsprites.py


def load(name: str, seed: int = 0, **extra):
    entry = get_dataset(name)
    return entry.load(entry.options_cls(name=name, limit=3000, val_fraction=0.2, **extra), seed)


def test_row_params_depend_on_the_row_not_the_batch():
    variant = Colour()
    together = row_params(variant, 0, TRAIN, np.array([4, 9, 2]))
    apart = np.concatenate([row_params(variant, 0, TRAIN, np.array([r])) for r in (4, 9, 2)])
    assert np.array_equal(together, apart)
    assert not np.array_equal(together, row_params(variant, 1, TRAIN, np.array([4, 9, 2])))  # the seed
    assert not np.array_equal(together, row_params(variant, 0, VAL, np.array([4, 9, 2])))  # the split


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_keeps_dsprites_split_and_factors(name):
    sprites, variant = load("dsprites"), load(name)
    assert variant.describe().input_shape == (3, 64, 64)
    assert variant.describe().columns["image"] == (3, 64, 64)
    assert (variant.describe().num_train, variant.describe().num_val) == (2400, 600)
    assert np.array_equal(variant.ground_truth.factors, sprites.ground_truth.factors)
    assert np.array_equal(variant.ground_truth.images, sprites.ground_truth.images)  # binary sprites underneath
    assert variant.source == sprites.source and variant.ray_datasets is not None


@pytest.mark.parametrize("name", VARIANTS)
def test_metrics_draw_fresh_observations_of_the_same_sprites(name):
    data = pickle.loads(pickle.dumps(load(name).ground_truth))
    assert isinstance(data, VariantGroundTruth)
    factors = data.sample_factors(20, np.random.default_rng(0))
    first = data.sample_observations_from_factors(factors, np.random.default_rng(1))
    again = data.sample_observations_from_factors(factors, np.random.default_rng(1))
    other = data.sample_observations_from_factors(factors, np.random.default_rng(2))
    assert first.shape == (20, 3, 64, 64) and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 1
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    sprites = data.images[data.rows_of(factors, np.random.default_rng(1))][:, 0].astype(bool)  # (20, 64, 64)
    on_sprite = {"color_dsprites": first.min(axis=1) >= 0.5, "noisy_dsprites": first.min(axis=1) == 1.0}[name]
    assert np.array_equal(on_sprite, sprites)  # the same sprites, observed differently


@pytest.mark.parametrize("name", VARIANTS)
def test_observations_of_rows_are_fixed_by_the_seed(name):
    data = load(name).ground_truth
    rows = np.array([5, 0, 17])
    assert np.array_equal(data.observations(rows), load(name).ground_truth.observations(rows))
    other_seed = VariantGroundTruth(data, data.variant, seed=1)  # the same sprites, another study seed
    assert not np.array_equal(data.observations(rows), other_seed.observations(rows))
    assert np.array_equal(data.subset(rows).observations(np.arange(3)), data.observations(rows))


def test_training_rows_are_observed_the_same_every_time():
    prepared = load("noisy_dsprites", seed=3)
    batch = {"image": prepared.train["image"][:8], "shape": prepared.train["shape"][:8],
             "__row__": np.arange(8, dtype=np.int64)}
    first, again = _observe(Noise(), 3, TRAIN, batch), _observe(Noise(), 3, TRAIN, batch)
    assert "__row__" not in first and set(first) == {"image", "shape"}
    assert np.array_equal(first["image"], again["image"])
    assert not np.array_equal(first["image"], _observe(Noise(), 4, TRAIN, batch)["image"])


def test_streamed_rows_are_observed_as_the_ground_truth_says(local_ray):
    prepared = load("color_dsprites")
    splits = prepared.to_ray()
    val = list(splits["val"].iter_batches(batch_size=None, batch_format="numpy"))
    images = np.concatenate([b["image"] for b in val])
    assert images.shape == (600, 3, 64, 64) and images.dtype == np.float32
    assert "__row__" not in val[0] and "factors" in val[0]
    assert np.allclose(images, prepared.ground_truth.observations(np.arange(600)))
    epochs = [list(splits["train"].iter_batches(batch_size=None, batch_format="numpy")) for _ in range(2)]
    train = [np.concatenate([b["image"] for b in batches]) for batches in epochs]
    assert train[0].shape == (2400, 3, 64, 64)
    # the same rows observed alike every epoch (concurrent tasks may hand over blocks in another order)
    assert sorted(hash(x.tobytes()) for x in train[0]) == sorted(hash(x.tobytes()) for x in train[1])
    order = np.concatenate([b["orientation"] * 1e4 + b["pos_x"] * 1e2 + b["pos_y"] for b in epochs[0]])
    expected = prepared.train["orientation"] * 1e4 + prepared.train["pos_x"] * 1e2 + prepared.train["pos_y"]
    assert sorted(order.tolist()) == sorted(expected.tolist())
