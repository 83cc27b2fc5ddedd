"""3D Shapes: a file of the published schema (480,000 rows, mostly unwritten chunks), its checks, the
held-out ground truth read by random access, the cached download's checks, and the streamed splits."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets import shapes3d
from datasets.registry import DataError, get_dataset
from datasets.shapes3d import FACTOR_SIZES, NUM_IMAGES, SPEC, Shapes3DOptions, load_shapes3d

WRITTEN = np.arange(0, NUM_IMAGES, 997)  # rows given random pixels; the others read as 0


def published_labels() -> np.ndarray:
    """float64 ``(480000, 6)`` factor values in the published order (orientation fastest)."""
    values = [np.linspace(0, 0.9, 10)] * 3 + [np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]
    classes = SPEC.factors_of(np.arange(NUM_IMAGES))
    return np.stack([v[classes[:, k]] for k, v in enumerate(values)], axis=1)


def write_shapes3d(path: Path, *, labels: np.ndarray | None = None, image_shape=(64, 64, 3), chunk_rows: int = 10,
                   skip: str | None = None, written: np.ndarray = WRITTEN) -> Path:
    """A file of the published schema: ``images`` chunked and compressed, random pixels at ``written`` rows."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        if skip != "images":
            images = f.create_dataset("images", (NUM_IMAGES, *image_shape), dtype=np.uint8,
                                      chunks=(chunk_rows, *image_shape), compression="gzip")
            for row in written:
                images[row] = rng.integers(0, 256, size=image_shape, dtype=np.uint8)
        if skip != "labels":
            f.create_dataset("labels", data=published_labels() if labels is None else labels)
    return path


@pytest.fixture(scope="module")
def shapes_file(tmp_path_factory) -> Path:
    return write_shapes3d(tmp_path_factory.mktemp("shapes3d") / "3dshapes.h5")


def options(path, **extra) -> Shapes3DOptions:
    return Shapes3DOptions(name="shapes3d", path=str(path), **extra)


def file_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """uint8 ``(n, 3, 64, 64)`` of the file's rows, read directly."""
    with h5py.File(path, "r") as f:
        return np.stack([f["images"][int(r)] for r in rows]).transpose(0, 3, 1, 2)


def assert_pixels(x: np.ndarray, expected: np.ndarray) -> None:
    """``x`` float32 in [0, 1] holds the uint8 pixels ``expected`` scaled by 1/255."""
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert np.array_equal(np.round(x * 255).astype(np.uint8), expected)


def test_load_describes_the_streamed_grid(shapes_file):
    prepared = get_dataset("shapes3d").load(options(shapes_file), 0)
    description = prepared.describe()
    assert description.input_shape == (3, 64, 64) and description.has_factors
    assert description.num_train + description.num_val == NUM_IMAGES
    assert description.num_val == len(prepared.ground_truth) == pytest.approx(0.1 * NUM_IMAGES, rel=0.01)
    assert description.classes == dict(zip(shapes3d.FACTOR_NAMES, FACTOR_SIZES))
    assert prepared.ray_datasets is not None and prepared.train == {}  # never in memory
    assert prepared.info["chunk_rows"] == 10 and prepared.info["block_rows"] == 40
    assert prepared.info["file_chosen_by"] == "dataset.path"


def test_ground_truth_observes_the_file_row_at_the_grid_index(shapes_file):
    data = pickle.loads(pickle.dumps(load_shapes3d(options(shapes_file), 0).ground_truth))  # as a Ray worker gets it
    assert data.factors_num_values == list(FACTOR_SIZES) and data.factor_names == list(shapes3d.FACTOR_NAMES)
    rng = np.random.default_rng(0)
    factors = data.sample_factors(5000, rng)
    assert factors.min() >= 0 and (factors.max(axis=0) < np.array(FACTOR_SIZES)).all()
    assert set(SPEC.rows_of(factors).tolist()) <= set(data.file_rows.tolist())
    rows = np.concatenate([WRITTEN[[3, 100, 481]], [5, 479_999]])
    wanted = SPEC.factors_of(rows)  # e.g. row 5 is (0, 0, 0, 0, 0, 5)
    x = data.sample_observations_from_factors(wanted, rng)
    assert x.shape == (5, 3, 64, 64) and x.dtype == np.float32
    assert_pixels(x, file_rows(shapes_file, rows))
    assert x[:3].max() > 0.5  # written rows, not zeros
    some = np.array([0, 7, len(data) - 1])
    assert_pixels(data.observations(some), file_rows(shapes_file, data.file_rows[some]))


def test_the_same_seed_holds_out_the_same_rows(shapes_file):
    first = load_shapes3d(options(shapes_file), 3).ground_truth.file_rows
    assert np.array_equal(first, load_shapes3d(options(shapes_file), 3).ground_truth.file_rows)
    assert not np.array_equal(first, load_shapes3d(options(shapes_file), 4).ground_truth.file_rows)


def refused(path: Path, *parts: str, **extra) -> str:
    with pytest.raises(DataError) as info:
        load_shapes3d(options(path, **extra), 0)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for part in parts:
        assert part in message, message
    return message


def test_wrong_images_are_refused(tmp_path):
    refused(write_shapes3d(tmp_path / "a.h5", image_shape=(64, 64, 1), written=[]),
            "key 'images' must be (480000, 64, 64, 3) uint8", "(480000, 64, 64, 1)")
    refused(write_shapes3d(tmp_path / "b.h5", skip="images"), "key 'images' missing")


def test_wrong_labels_are_refused(tmp_path):
    refused(write_shapes3d(tmp_path / "a.h5", skip="labels", written=[]), "key 'labels' missing")
    refused(write_shapes3d(tmp_path / "b.h5", labels=published_labels()[:, :5], written=[]),
            "key 'labels' must be (480000, 6)")
    shuffled = published_labels()
    shuffled[[7, 8]] = shuffled[[8, 7]]
    refused(write_shapes3d(tmp_path / "c.h5", labels=shuffled, written=[]), "not in the factor grid's order", "row 7")
    coarse = published_labels()
    coarse[:, 5] = np.round(coarse[:, 5] / 10)  # 7 distinct orientations
    refused(write_shapes3d(tmp_path / "d.h5", labels=coarse, written=[]), "column 5 (orientation) holds 7 distinct values")


def test_missing_or_non_hdf5_files_are_refused(tmp_path):
    refused(tmp_path / "absent.h5", "dataset.path", "no such file")
    (tmp_path / "text.h5").write_text("not hdf5")
    refused(tmp_path / "text.h5", "not an HDF5 file")


def test_checksum_compares_a_given_file_with_the_published_one(shapes_file):
    refused(shapes_file, "dataset.path", "bytes, but the published file has 267573662", checksum=True)


def test_env_variable_names_the_file(shapes_file, monkeypatch):
    monkeypatch.setenv("SHAPES3D_PATH", str(shapes_file))
    prepared = load_shapes3d(Shapes3DOptions(name="shapes3d"), 0)
    assert prepared.source == shapes_file and prepared.info["file_chosen_by"] == "SHAPES3D_PATH"


def test_the_cached_download_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SHAPES3D_PATH", raising=False)
    published = tmp_path / "served.h5"
    published.write_bytes(b"x" * 100)
    monkeypatch.setattr(shapes3d, "URL", published.as_uri())
    with pytest.raises(DataError, match="100 bytes, but the published file has 267573662") as info:
        load_shapes3d(Shapes3DOptions(name="shapes3d"), 0)
    assert "SHAPES3D_PATH" in str(info.value)  # says what to do instead
    monkeypatch.setattr(shapes3d, "FILE_BYTES", 100)
    with pytest.raises(DataError, match="md5 .* does not match the published 099a2078d58cec4daad0702c55d06868"):
        load_shapes3d(Shapes3DOptions(name="shapes3d"), 0)
    assert not (tmp_path / "cache" / "shapes3d" / "3dshapes.h5").exists()
    monkeypatch.setattr(shapes3d, "CHECKSUMS", {"md5": hashlib.md5(b"x" * 100).hexdigest()})
    with pytest.raises(DataError, match="not an HDF5 file"):  # downloaded and kept; then its layout is checked
        load_shapes3d(Shapes3DOptions(name="shapes3d"), 0)
    cached = tmp_path / "cache" / "shapes3d" / "3dshapes.h5"
    cached.write_bytes(b"x" * 99)  # a cached file is size-checked on every load
    with pytest.raises(DataError, match=f"{cached}: 99 bytes, but the published file has 100"):
        load_shapes3d(Shapes3DOptions(name="shapes3d"), 0)


def test_streamed_rows_are_the_files(shapes_file, local_ray):
    prepared = load_shapes3d(options(shapes_file, limit=1200, val_fraction=0.25, task_rows=400), 0)
    assert prepared.info["num_train"] + prepared.info["num_val"] == 1200  # 30 blocks of 40 rows
    splits = prepared.to_ray()
    for split, expected in (("train", prepared.info["num_train"]), ("val", prepared.info["num_val"])):
        batches = list(splits[split].iter_batches(batch_size=None, batch_format="numpy"))
        factors = np.stack([np.concatenate([b[n] for b in batches]) for n in shapes3d.FACTOR_NAMES], 1).astype(int)
        rows = SPEC.rows_of(factors)
        assert len(rows) == expected == len(set(rows.tolist()))
        image = np.concatenate([b["image"] for b in batches])
        pick = np.arange(0, len(rows), 97)
        assert_pixels(image[pick], file_rows(shapes_file, rows[pick]))
        if split == "val":
            assert np.array_equal(np.sort(rows), np.sort(prepared.ground_truth.file_rows))
