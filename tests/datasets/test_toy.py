"""datasets/toy.py: generated 2-D points, their classes, the split and the refused options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from datasets.registry import get_dataset
from datasets.toy import ToyOptions, make_points
from study.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]


def options(**kwargs) -> ToyOptions:
    return ToyOptions(name="toy", **kwargs)


def load(seed: int = 0, **kwargs):
    return get_dataset("toy").load(options(**kwargs), seed)


def test_columns_shapes_and_info():
    data = load(n=300, val_fraction=0.2)
    assert data.input_shape == (2,) and data.ground_truth is None
    assert data.describe().factor_sizes == ()  # no ground-truth factors
    assert data.train["image"].shape == (240, 2) and data.val["image"].shape == (60, 2)
    assert data.train["label"].shape == (240,) and data.val["label"].shape == (60,)
    assert {v.dtype for split in (data.train, data.val) for v in split.values()} == {np.dtype(np.float32)}
    assert data.info["kind"] == "moons" and data.info["n"] == 300 and data.info["num_classes"] == 2
    assert (data.info["num_train"], data.info["num_val"]) == (240, 60)
    assert sorted(np.unique(data.train["label"])) == [0.0, 1.0]


@pytest.mark.parametrize("kind, extra, counts", [
    ("moons", {}, [150, 151]),  # n // 2 in the upper moon, the rest in the lower
    ("circles", {}, [150, 151]),
    ("blobs", {"centers": 4}, [76, 75, 75, 75]),  # as even as possible, the remainder first
])
def test_class_balance(kind, extra, counts):
    _, labels = make_points(options(kind=kind, n=301, **extra), 0)
    assert np.bincount(labels).tolist() == counts
    assert options(kind=kind, **extra).num_classes == len(counts)


def test_noiseless_points_lie_on_the_known_curves():
    points, labels = make_points(options(kind="moons", n=200, noise=0.0), 0)
    upper, lower = points[labels == 0], points[labels == 1]
    np.testing.assert_allclose(np.linalg.norm(upper, axis=1), 1.0, atol=1e-5)  # unit circle, y >= 0
    assert (upper[:, 1] >= -1e-6).all()
    np.testing.assert_allclose(np.linalg.norm(lower - [1.0, 0.5], axis=1), 1.0, atol=1e-5)  # centred (1, 0.5), y <= 0.5
    assert (lower[:, 1] <= 0.5 + 1e-6).all()
    points, labels = make_points(options(kind="circles", n=200, noise=0.0), 0)
    np.testing.assert_allclose(np.linalg.norm(points[labels == 0], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(points[labels == 1], axis=1), 0.8, atol=1e-5)  # sklearn's factor


def test_blob_noise_is_each_blobs_standard_deviation():
    points, labels = make_points(options(kind="blobs", n=6000, centers=3, noise=0.5), 0)
    for c in range(3):
        np.testing.assert_allclose(points[labels == c].std(axis=0), 0.5, rtol=0.08)


def test_standardize_uses_the_train_rows():
    data = load(n=1000, kind="blobs", noise=1.0)
    np.testing.assert_allclose(data.train["image"].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.train["image"].std(axis=0), 1.0, rtol=1e-4)
    raw = load(n=1000, kind="blobs", noise=1.0, standardize=False)
    std = np.array(data.info["standardize_std"], dtype=np.float32)
    mean = np.array(data.info["standardize_mean"], dtype=np.float32)
    np.testing.assert_allclose(data.val["image"] * std + mean, raw.val["image"], atol=1e-4)
    assert raw.info["standardize_std"] == [1.0, 1.0]


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data():
    a, b, c = load(seed=3, n=200), load(seed=3, n=200), load(seed=4, n=200)
    for column in ("image", "label"):
        np.testing.assert_array_equal(a.train[column], b.train[column])
        np.testing.assert_array_equal(a.val[column], b.val[column])
    assert not np.array_equal(a.train["image"], c.train["image"])


def test_data_seed_fixes_the_points_whatever_the_study_seed():
    a = load(seed=0, n=200, data_seed=7, standardize=False)
    b = load(seed=1, n=200, data_seed=7, standardize=False)
    every = lambda d: np.sort(np.concatenate([d.train["image"], d.val["image"]]), axis=0)  # noqa: E731
    np.testing.assert_array_equal(every(a), every(b))  # the same points...
    assert not np.array_equal(a.val["image"], b.val["image"])  # ...split differently


def test_limit_keeps_that_many_rows():
    data = load(n=500, limit=100, val_fraction=0.1)
    assert (len(data.train["image"]), len(data.val["image"])) == (90, 10)


def test_path_is_refused():
    with pytest.raises(ValidationError, match="path") as err:
        options(path="/data/moons.npz")
    assert "reads no file" in str(err.value)


def test_path_is_refused_in_a_spec_on_one_line():
    with pytest.raises(SpecError) as err:
        load_spec(REPO / "configs" / "toy_beta_sweep.yaml", ["dataset.path=/data/moons.npz"])
    message = str(err.value)
    assert "dataset.path" in message and "reads no file" in message and "\n" not in message


@pytest.mark.parametrize("bad, field", [
    ({"kind": "spirals"}, "kind"), ({"n": 2}, "n"), ({"noise": -0.1}, "noise"),
    ({"centers": 1, "kind": "blobs"}, "centers"),
    ({"centers": 4}, "centers"),  # moons have no centers
    ({"data_seed": -1}, "data_seed"), ({"colour": "red"}, "colour"),
])
def test_bad_options_are_refused_naming_the_field(bad, field):
    with pytest.raises(ValidationError, match=field):
        options(**bad)


def test_configs_load():
    for name in ("toy_beta_sweep.yaml", "toy_cvae.yaml"):
        spec = load_spec(REPO / "configs" / name, [])
        assert spec.dataset.name == "toy" and spec.evaluation.metrics == []
    cvae = load_spec(REPO / "configs" / "toy_cvae.yaml", [])
    assert cvae.family["num_classes"] == cvae.dataset.num_classes
