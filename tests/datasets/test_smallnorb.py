"""smallNORB: the NORB binary matrix reader, refusals, the loader on a converted file (the instance drawn
per observation), and (slow) six files of the published schema, rows shuffled, converted once."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from datasets import smallnorb
from datasets.factor_grid import write_grid_file
from datasets.registry import DataError
from datasets.smallnorb import SPEC, SmallNORBOptions, file_name, load_smallnorb, read_matrix

INSTANCES = {"training": (4, 6, 7, 8, 9), "testing": (0, 1, 2, 3, 5)}  # the published split of the toys
MAGIC = {np.dtype(np.uint8): 0x1E3D4C55, np.dtype(np.int32): 0x1E3D4C54, np.dtype(np.float64): 0x1E3D4C53}


def matrix_header(array: np.ndarray, magic: int | None = None) -> bytes:
    """The NORB binary matrix header of ``array`` (at least 3 dims stored)."""
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    return np.array([MAGIC[array.dtype] if magic is None else magic, array.ndim, *dims], dtype="<i4").tobytes()


def matrix_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """``array`` (little-endian) in the NORB binary matrix format."""
    return matrix_header(array, magic) + np.ascontiguousarray(array).tobytes()


def quadrant_images(factors: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 2, 96, 96)`` stereo pairs whose quadrants spell the factors (survive resizing):
    top-left 10 * category + instance + 1, top-right elevation + 1, bottom-left azimuth index + 1,
    bottom-right lighting + 1; the second image of each pair is 255."""
    quadrants = np.full((len(factors), 2, 2, 2), 255, dtype=np.uint8)  # (N, pair, row half, column half)
    quadrants[:, 0, 0, 0] = 10 * factors[:, 0] + factors[:, 1] + 1
    quadrants[:, 0, 0, 1] = factors[:, 2] + 1
    quadrants[:, 0, 1, 0] = factors[:, 3] // 2 + 1
    quadrants[:, 0, 1, 1] = factors[:, 4] + 1
    spread = np.broadcast_to(quadrants[:, :, :, None, :, None], (len(factors), 2, 2, 48, 2, 48))
    return spread.reshape(len(factors), 2, 96, 96)


def half_factors(half: str, seed: int) -> np.ndarray:
    """int32 ``(24300, 5)`` category, instance, elevation, azimuth (0, 2, .., 34), lighting in a shuffled order."""
    grid = np.indices((5, 5, 9, 18, 6)).reshape(5, -1).T
    grid[:, 1] = np.array(INSTANCES[half])[grid[:, 1]]
    grid[:, 3] *= 2
    return grid[np.random.default_rng(seed).permutation(len(grid))].astype(np.int32)


def write_part(folder: Path, part: str, array: np.ndarray, gzipped: bool = True) -> None:
    if gzipped:
        with gzip.open(folder / file_name(part), "wb", compresslevel=1) as f:
            f.write(matrix_bytes(array))
    else:
        with open(folder / file_name(part, gzipped=False), "wb") as f:
            f.write(matrix_header(array))
            f.write(memoryview(np.ascontiguousarray(array)).cast("B"))


def write_published(folder: Path) -> Path:
    """The six published files in their exact schema: the training half's cat/info gzipped as
    published, the rest unpacked (.mat; gzipping 2 x 448 MB would cost 13 s more)."""
    for seed, half in enumerate(("training", "testing")):
        factors = half_factors(half, seed)
        gzipped = half == "training"
        write_part(folder, f"{half}-cat", factors[:, 0].copy(), gzipped)
        write_part(folder, f"{half}-info", factors[:, 1:].copy(), gzipped)
        write_part(folder, f"{half}-dat", quadrant_images(factors), gzipped=False)
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A converted file (the layout the loader streams) whose rows spell their factors as
    :func:`quadrant_images` does, at 64x64."""
    factors = SPEC.factors_of(np.arange(SPEC.num_rows))
    values = np.stack([10 * factors[:, 0] + factors[:, 1] + 1, factors[:, 2] + 1, factors[:, 3] + 1,
                       factors[:, 4] + 1], axis=1).astype(np.uint8)

    def fill(data):
        quadrants = values.reshape(-1, 2, 2)
        data[:] = np.broadcast_to(quadrants[:, :, None, :, None, None], (len(values), 2, 32, 2, 32, 1)).reshape(
            len(values), 64, 64, 1)

    return write_grid_file(tmp_path_factory.mktemp("smallnorb") / "smallnorb64.h5", SPEC, fill, source="test")


def spelled(x: np.ndarray) -> np.ndarray:
    """The quadrant values of observations float32 ``(N, 1, 64, 64)``, as ints ``(N, 4)``."""
    pixels = np.round(x[:, 0] * 255).astype(int)
    return np.stack([pixels[:, 16, 16], pixels[:, 16, 48], pixels[:, 48, 16], pixels[:, 48, 48]], axis=1)


def test_read_matrix_of_each_type_and_rank():
    for array in (np.arange(6, dtype=np.int32), np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                  np.linspace(0, 1, 20).reshape(2, 2, 5, 1)):
        got = read_matrix(matrix_bytes(array), "m")
        assert got.shape == array.shape and np.array_equal(got, array)


def test_read_matrix_refusals():
    with pytest.raises(DataError, match="m: not a NORB binary matrix \\(magic number 0x1234\\)"):
        read_matrix(matrix_bytes(np.zeros(3, np.int32), magic=0x1234), "m")
    with pytest.raises(DataError, match="needs 12 bytes after its header, but has 8"):
        read_matrix(matrix_bytes(np.zeros(3, np.int32))[:-4], "m")
    with pytest.raises(DataError, match="too short"):
        read_matrix(b"\x00" * 10, "m")


def test_the_metrics_see_four_factors_and_a_random_instance(converted):
    prepared = load_smallnorb(SmallNORBOptions(name="smallnorb", path=str(converted)), 0)
    description = prepared.describe()
    assert description.input_shape == (1, 64, 64)
    assert description.classes == {"category": 5, "elevation": 9, "azimuth": 18, "lighting": 6}
    assert description.num_train + description.num_val == 48_600
    data = pickle.loads(pickle.dumps(prepared.ground_truth))
    assert data.factor_names == ["category", "elevation", "azimuth", "lighting"]
    assert data.factors_num_values == [5, 9, 18, 6]
    rng = np.random.default_rng(0)
    factors = data.sample_factors(2000, rng)
    assert (factors.max(axis=0) < np.array([5, 9, 18, 6])).all() and factors.min() >= 0
    wanted = np.array([[3, 8, 17, 5]] * 200)
    values = spelled(data.sample_observations_from_factors(wanted, rng))
    assert np.array_equal(values[:, 1:], np.tile([9, 18, 6], (200, 1)))
    assert set((values[:, 0] - 1 - 30).tolist()) == set(range(10))  # every instance drawn
    assert np.array_equal(data.sample_observations_from_factors(wanted[:5], np.random.default_rng(1)),
                          data.sample_observations_from_factors(wanted[:5], np.random.default_rng(1)))


@pytest.mark.slow  # 2 x 448 MB written and read, 48,600 images resized: ~10 s of one idle core
def test_the_published_files_are_converted_sorted_by_factor(tmp_path, monkeypatch):
    folder = tmp_path / "norb"
    folder.mkdir()
    write_published(folder)
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    prepared = load_smallnorb(SmallNORBOptions(name="smallnorb", path=str(folder)), 0)
    converted = list((tmp_path / "cache" / "smallnorb").glob("smallnorb64-*.h5"))
    assert [prepared.source] == converted and prepared.info["file_chosen_by"] == "dataset.path (converted)"
    rows = np.array([0, 1, 4321, 48_599])
    truth = SPEC.factors_of(rows)  # category, instance, elevation, azimuth index, lighting
    expected = np.stack([10 * truth[:, 0] + truth[:, 1] + 1, truth[:, 2] + 1, truth[:, 3] + 1, truth[:, 4] + 1], 1)
    assert np.array_equal(spelled(prepared.ground_truth.reader.read(rows).transpose(0, 3, 1, 2) / 255.0), expected)
    mtime = converted[0].stat().st_mtime_ns
    assert load_smallnorb(SmallNORBOptions(name="smallnorb", path=str(folder)), 0).source == converted[0]
    assert converted[0].stat().st_mtime_ns == mtime  # converted once


def test_wrong_files_are_refused(tmp_path):
    def refused(*parts: str) -> None:
        with pytest.raises(DataError) as info:
            load_smallnorb(SmallNORBOptions(name="smallnorb", path=str(tmp_path)), 0)
        assert "\n" not in str(info.value)
        for part in parts:
            assert part in str(info.value), str(info.value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
        refused(str(tmp_path), "training-cat.mat.gz", "missing")
        factors = half_factors("training", 0)
        write_part(tmp_path, "training-cat", factors[:100, 0].copy())
        write_part(tmp_path, "training-info", factors[:, 1:].copy())
        refused(file_name("training-cat"), "must be a (24300,) int32 matrix, but holds (100,) int32")
        write_part(tmp_path, "training-cat", factors[:, 0] + 5)
        refused("the training half has category", "expected 0-4")
        write_part(tmp_path, "training-cat", factors[:, 0].copy())
        write_part(tmp_path, "training-dat", np.zeros((10, 2, 96, 96), np.uint8))
        refused(file_name("training-dat"), "must be a (24300, 2, 96, 96) uint8 matrix")
        (tmp_path / file_name("training-dat")).write_bytes(b"not gzip")
        refused("not a readable gzip file")
    with pytest.raises(DataError, match="no such folder"):
        load_smallnorb(SmallNORBOptions(name="smallnorb", path=str(tmp_path / "absent")), 0)


def test_checksum_compares_the_given_files_with_the_published_digests(tmp_path):
    for part in smallnorb.FILES:
        write_part(tmp_path, part, np.zeros(3, np.int32), gzipped=part != "training-dat")
    with pytest.raises(DataError, match="training-dat.mat: md5 [0-9a-f]+ does not match the published 8138a090"):
        load_smallnorb(SmallNORBOptions(name="smallnorb", path=str(tmp_path), checksum=True), 0)
    (tmp_path / file_name("training-dat", gzipped=False)).unlink()
    write_part(tmp_path, "training-dat", np.zeros(3, np.int32))
    with pytest.raises(DataError, match="training-dat.mat.gz: md5 [0-9a-f]+ does not match the published 66054832"):
        load_smallnorb(SmallNORBOptions(name="smallnorb", path=str(tmp_path), checksum=True), 0)


def test_downloads_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SMALLNORB_PATH", raising=False)
    served = tmp_path / "served"
    served.mkdir()
    (served / file_name("training-dat")).write_bytes(b"x")
    monkeypatch.setattr(smallnorb, "URL", served.as_uri() + "/")
    with pytest.raises(DataError, match="md5 .* does not match the published 66054832.*SMALLNORB_PATH"):
        load_smallnorb(SmallNORBOptions(name="smallnorb"), 0)
    assert not any((tmp_path / "cache" / "smallnorb").iterdir())
