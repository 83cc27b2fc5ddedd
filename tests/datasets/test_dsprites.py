"""dSprites loading, refusal of malformed files, the shipped grid, path resolution, download, and the
registered loader."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from datasets import dsprites
from datasets.base import ArrayGroundTruthData
from datasets.dsprites import GRID_PATH, DSpritesOptions, download, load_dsprites, resolve_path
from datasets.registry import DataError, get_dataset, split_rows
from tests.conftest import REPO, SHARED_DATA, write_dsprites_npz

SYNTHETIC_SIZES = [3, 6, 10, 16, 16]  # write_dsprites_npz's factor grid


def draw_sprite(shape: int, scale: int, x: int, y: int) -> np.ndarray:
    """The 64x64 image write_dsprites_npz draws for these factors (orientation is not drawn)."""
    img = np.zeros((64, 64), dtype=np.uint8)
    half = 2 + scale + shape
    cx, cy = 8 + 3 * x, 8 + 3 * y
    img[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = 1
    return img


def save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def valid_arrays(num: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "imgs": rng.integers(0, 2, size=(num, 64, 64), dtype=np.uint8),
        "latents_classes": rng.integers(0, 3, size=(num, 5)),
    }


def assert_refused(path: Path, *names: str) -> DataError:
    """load_dsprites(path) raises DataError whose message names the file and each of ``names``."""
    with pytest.raises(DataError) as info:
        load_dsprites(path)
    message = str(info.value)
    assert str(path) in message
    for name in names:
        assert name in message
    return info.value


# Loading both layouts.


@pytest.mark.parametrize("six_columns", [False, True])
def test_load_gives_five_factors_and_channel_first_images(tmp_path, six_columns):
    path = write_dsprites_npz(tmp_path / "d.npz", num=200, six_columns=six_columns, seed=4)
    data = load_dsprites(path)
    raw = np.load(path)
    assert isinstance(data, ArrayGroundTruthData)
    assert data.images.shape == (200, 1, 64, 64)
    assert data.images.dtype == np.uint8
    assert data.num_factors == 5
    assert data.factor_names == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    np.testing.assert_array_equal(data.images[:, 0], raw["imgs"])
    np.testing.assert_array_equal(data.factors, raw["latents_classes"][:, -5:])
    assert data.factors_num_values == (raw["latents_classes"][:, -5:].max(axis=0) + 1).tolist()


def test_both_layouts_load_the_same_data(tmp_path):
    five = load_dsprites(write_dsprites_npz(tmp_path / "five.npz", num=100, seed=1))
    six = load_dsprites(write_dsprites_npz(tmp_path / "six.npz", num=100, six_columns=True, seed=1))
    np.testing.assert_array_equal(five.images, six.images)
    np.testing.assert_array_equal(five.factors, six.factors)


def test_loaded_factors_match_the_drawn_images(dsprites_file):
    data = load_dsprites(dsprites_file)
    for i in (0, 17, 599):
        shape, scale, _, x, y = data.factors[i]
        np.testing.assert_array_equal(data.images[i, 0], draw_sprite(shape, scale, x, y))


@pytest.mark.parametrize(
    ("name", "num", "num_values"),
    [("dsprites_downsampled.npz", 46080, [3, 6, 10, 16, 16]), ("dsprites_subset.npz", 20000, [3, 6, 40, 32, 32])],
)
def test_real_files(name, num, num_values):
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    data = load_dsprites(path)
    assert data.images.shape == (num, 1, 64, 64)
    assert data.images.dtype == np.uint8
    assert data.images.max() == 1
    assert data.factors.shape == (num, 5)
    assert data.factors_num_values == num_values
    # Cross-check the factors against the original dSprites index of each row (see SOURCES.txt).
    indices = np.load(path)["original_dataset_indices"]
    multiplier = [1, 1, 4, 2, 2] if "downsampled" in name else [1, 1, 1, 1, 1]
    np.testing.assert_array_equal((data.factors * multiplier) @ [245760, 40960, 1024, 32, 1], indices)


# Refusals: each a DataError naming the file and the key.


@pytest.mark.parametrize("key", ["imgs", "latents_classes"])
def test_missing_key(tmp_path, key):
    arrays = valid_arrays()
    del arrays[key]
    assert_refused(save(tmp_path / "d.npz", **arrays), key)


@pytest.mark.parametrize("shape", [(8, 64), (8, 1, 64, 64), (8, 64, 32)])
def test_imgs_of_wrong_shape(tmp_path, shape):
    arrays = valid_arrays()
    arrays["imgs"] = np.zeros(shape, dtype=np.uint8)
    assert_refused(save(tmp_path / "d.npz", **arrays), "imgs")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, bool])
def test_imgs_of_wrong_dtype(tmp_path, dtype):
    arrays = valid_arrays()
    arrays["imgs"] = arrays["imgs"].astype(dtype)
    assert_refused(save(tmp_path / "d.npz", **arrays), "imgs", "uint8")


def test_non_binary_imgs(tmp_path):
    arrays = valid_arrays()
    arrays["imgs"][3, 10, 10] = 255
    assert_refused(save(tmp_path / "d.npz", **arrays), "imgs", "255")


@pytest.mark.parametrize("columns", [4, 7])
def test_latents_classes_with_wrong_column_count(tmp_path, columns):
    arrays = valid_arrays()
    arrays["latents_classes"] = np.zeros((8, columns), dtype=np.int64)
    assert_refused(save(tmp_path / "d.npz", **arrays), "latents_classes")


def test_latents_classes_with_wrong_row_count(tmp_path):
    arrays = valid_arrays()
    arrays["latents_classes"] = arrays["latents_classes"][:-1]
    assert_refused(save(tmp_path / "d.npz", **arrays), "latents_classes")


def test_six_columns_with_varying_colour(tmp_path):
    arrays = valid_arrays()
    colour = np.zeros((8, 1), dtype=np.int64)
    colour[5] = 1
    arrays["latents_classes"] = np.concatenate([colour, arrays["latents_classes"]], axis=1)
    assert_refused(save(tmp_path / "d.npz", **arrays), "latents_classes", "colour")


@pytest.mark.parametrize("bad", ["float", "negative"])
def test_latents_classes_not_non_negative_ints(tmp_path, bad):
    arrays = valid_arrays()
    classes = arrays["latents_classes"]
    arrays["latents_classes"] = classes.astype(np.float64) if bad == "float" else classes - 1
    assert_refused(save(tmp_path / "d.npz", **arrays), "latents_classes")


@pytest.mark.parametrize("size", [32, 128])
def test_images_other_than_64x64_are_refused_naming_the_shape(tmp_path, size):
    """dSprites images are 64x64; other sizes belong to the ``images`` dataset."""
    arrays = valid_arrays(num=10)
    arrays["imgs"] = np.zeros((10, size, size), dtype=np.uint8)
    error = assert_refused(save(tmp_path / "d.npz", **arrays), "imgs", f"{size}x{size}", "64x64", "'images'")
    assert "\n" not in str(error)


def test_corrupt_deflate_data_is_refused_naming_the_file(tmp_path):
    """Damaged compressed entries (zlib errors, bad CRCs) are one DataError naming the file, at any offset."""
    path = write_dsprites_npz(tmp_path / "d.npz", num=50)
    original = path.read_bytes()
    outcomes = set()
    for offset in range(100, len(original) - 200, 37):
        damaged = bytearray(original)
        damaged[offset : offset + 8] = b"\xff" * 8
        path.write_bytes(bytes(damaged))
        try:
            load_dsprites(path)
            outcomes.add("read")  # the damage hit an entry load_dsprites does not read (latents_values)
        except DataError as err:
            assert str(path) in str(err) and "\n" not in str(err), err
            outcomes.add("refused")
    assert "refused" in outcomes


def test_fewer_than_two_images(tmp_path):
    assert_refused(save(tmp_path / "d.npz", **valid_arrays(num=1)), "imgs")


def test_text_file_is_not_an_npz(tmp_path):
    path = tmp_path / "d.npz"
    path.write_text("imgs,latents_classes\n1,2\n")
    assert_refused(path)


def test_npy_file_is_not_an_npz(tmp_path):
    # np.load returns a bare array for .npy content; that must be refused as not an npz.
    path = tmp_path / "d.npz"
    with open(path, "wb") as f:
        np.save(f, valid_arrays()["imgs"])
    assert_refused(path)


def test_truncated_npz(tmp_path):
    path = write_dsprites_npz(tmp_path / "d.npz", num=50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path)


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "absent.npz")


UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Tripwire:
    """Records in UNPICKLED when it is unpickled."""

    def __reduce__(self):
        return _record_unpickling, ("unpickled",)


def test_object_array_is_refused_without_unpickling(tmp_path):
    imgs = np.empty(8, dtype=object)
    imgs[:] = [_Tripwire() for _ in range(8)]
    path = tmp_path / "d.npz"
    np.savez(path, imgs=imgs, latents_classes=valid_arrays()["latents_classes"])
    UNPICKLED.clear()
    error = assert_refused(path, "imgs")
    assert "unpickl" in str(error)
    assert UNPICKLED == []
    # The tripwire works: unpickling the same file does record it.
    np.load(path, allow_pickle=True)["imgs"]
    assert UNPICKLED


def test_pickled_metadata_entry_is_not_touched(tmp_path):
    # The canonical file holds a pickled `metadata` entry beside the arrays: it loads fine.
    metadata = np.empty((), dtype=object)
    metadata[()] = _Tripwire()
    path = tmp_path / "d.npz"
    np.savez(path, metadata=metadata, **valid_arrays())
    UNPICKLED.clear()
    assert load_dsprites(path).images.shape == (8, 1, 64, 64)
    assert UNPICKLED == []


# Finding and downloading the file.


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DSPRITES_PATH / DSPRITES_SHA256, and the cache in an empty temporary directory."""
    monkeypatch.delenv("DSPRITES_PATH", raising=False)
    monkeypatch.delenv("DSPRITES_SHA256", raising=False)
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("variable, expected", [("VAE_STUDY_CACHE", "cache"), ("XDG_CACHE_HOME", "xdg/vae-study")])
def test_the_cache_directory_expands_the_home_directory(monkeypatch, tmp_path, variable, expected):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VAE_STUDY_CACHE", raising=False)
    monkeypatch.setenv(variable, "~/" + expected.split("/")[0])
    assert dsprites.cache_dir() == tmp_path / expected


def test_resolve_explicit_path(clean_env, dsprites_file):
    assert resolve_path(dsprites_file) == dsprites_file


def test_resolve_explicit_missing_path(clean_env, tmp_path, monkeypatch, dsprites_file):
    monkeypatch.setenv("DSPRITES_PATH", str(dsprites_file))  # an explicit path is not replaced by the env
    missing = tmp_path / "absent.npz"
    with pytest.raises(DataError, match=re.escape("dataset.path")) as info:
        resolve_path(missing)
    assert str(missing) in str(info.value)


def test_resolve_explicit_directory_is_refused(clean_env, tmp_path):
    with pytest.raises(DataError, match="dataset.path"):
        resolve_path(tmp_path)


def test_resolve_uses_env_when_no_path(clean_env, monkeypatch, dsprites_file):
    monkeypatch.setenv("DSPRITES_PATH", str(dsprites_file))
    assert resolve_path(None) == dsprites_file


def test_resolve_env_missing_file(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DSPRITES_PATH", str(tmp_path / "absent.npz"))
    with pytest.raises(DataError, match="DSPRITES_PATH"):
        resolve_path(None)


def test_resolve_uses_cached_file_without_downloading(clean_env, monkeypatch, dsprites_file):
    cached = clean_env / "dsprites" / dsprites.FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(dsprites_file.read_bytes())

    def no_download(*args, **kwargs):
        raise AssertionError("download called although the file is cached")

    monkeypatch.setattr(dsprites, "download", no_download)
    assert resolve_path(None, "full") == cached


def test_download_from_unreachable_url_leaves_nothing(clean_env, tmp_path):
    dest = tmp_path / "dl" / "dsprites.npz"
    with pytest.raises(DataError, match="DSPRITES_PATH"):
        download(dest, url="http://127.0.0.1:9/x.npz", timeout=5)
    assert list(dest.parent.iterdir()) == []


def test_download_with_wrong_digest_leaves_nothing(clean_env, tmp_path, dsprites_file):
    dest = tmp_path / "dl" / "dsprites.npz"
    with pytest.raises(DataError, match="does not match"):
        download(dest, url=dsprites_file.as_uri())
    assert list(dest.parent.iterdir()) == []


def test_download_with_matching_digest(clean_env, monkeypatch, tmp_path, dsprites_file):
    monkeypatch.setenv("DSPRITES_SHA256", hashlib.sha256(dsprites_file.read_bytes()).hexdigest().upper())
    dest = tmp_path / "dl" / "dsprites.npz"
    assert download(dest, url=dsprites_file.as_uri()) == dest
    assert dest.read_bytes() == dsprites_file.read_bytes()
    assert list(dest.parent.iterdir()) == [dest]


# The grid shipped in the package (variant "grid", the default) and the downloaded full file.

GRID_SIZES = [3, 6, 10, 16, 16]
PUBLISHED_GRID_SHA256 = "8a632f70c0dbd279dd771854981a3de945b2448eddbd9b2af59fb83e8728f871"  # shared/data/SOURCES.txt


@pytest.fixture
def offline(clean_env, monkeypatch):
    """clean_env, and any download attempt fails the test."""

    def no_download(*args, **kwargs):
        raise AssertionError("download called")

    monkeypatch.setattr(dsprites, "download", no_download)
    return clean_env


def test_shipped_grid_matches_its_published_sha256():
    assert GRID_PATH.is_file()
    assert hashlib.sha256(GRID_PATH.read_bytes()).hexdigest() == PUBLISHED_GRID_SHA256 == dsprites.GRID_SHA256
    assert (GRID_PATH.parent / "dsprites_LICENSE.txt").read_text().lstrip().startswith("Apache License")


def test_default_is_the_shipped_balanced_grid(offline):
    assert resolve_path(None) == GRID_PATH
    prepared = load_registered(None, 0, val_fraction=0.15)
    assert prepared.source == GRID_PATH
    assert prepared.info["num_train"] + prepared.info["num_val"] == 46080
    assert prepared.info["factors_num_values"] == GRID_SIZES
    assert prepared.info["file_chosen_by"] == "dataset.variant=grid"
    assert set(prepared.train) == {"image", "shape", "scale", "orientation", "pos_x", "pos_y"}  # latents_values read
    data = load_dsprites(GRID_PATH)
    assert data.images.shape == (46080, 1, 64, 64) and data.images.max() == 1
    # Every combination of the 3x6x10x16x16 factors exactly once: a balanced grid.
    codes = np.ravel_multi_index(data.factors.T, GRID_SIZES)
    np.testing.assert_array_equal(np.sort(codes), np.arange(46080))
    # And each image is the canonical file's image of those factors (orientation every 4th, positions every 2nd).
    with np.load(GRID_PATH, allow_pickle=False) as npz:
        indices = npz["original_dataset_indices"]
    np.testing.assert_array_equal((data.factors * [1, 1, 4, 2, 2]) @ [245760, 40960, 1024, 32, 1], indices)


def test_main_job_config_reads_the_shipped_grid(offline):
    section = yaml.safe_load((REPO / "configs" / "beta_sweep.yaml").read_text())["dataset"]
    prepared = get_dataset("dsprites").load(DSpritesOptions(**section), 0)
    assert prepared.source == GRID_PATH
    assert (prepared.info["num_train"], prepared.info["num_val"]) == (28050, 4950)  # as the config's comment says


def test_tampered_grid_is_refused_in_one_line(offline, monkeypatch, tmp_path):
    tampered = tmp_path / "dsprites_downsampled.npz"
    data = bytearray(GRID_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(dsprites, "GRID_PATH", tampered)
    with pytest.raises(DataError, match="sha256") as info:
        load_registered(None, 0)
    message = str(info.value)
    assert str(tampered) in message and dsprites.GRID_SHA256 in message
    assert "\n" not in message


def test_missing_grid_is_refused(offline, monkeypatch, tmp_path):
    monkeypatch.setattr(dsprites, "GRID_PATH", tmp_path / "absent.npz")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "absent.npz"))):
        resolve_path(None)


def test_path_and_env_win_over_the_variant(offline, monkeypatch, dsprites_file, tmp_path):
    assert resolve_path(dsprites_file, "grid") == dsprites_file
    other = write_dsprites_npz(tmp_path / "other.npz", num=20)
    monkeypatch.setenv("DSPRITES_PATH", str(other))
    assert resolve_path(None, "grid") == other
    assert resolve_path(dsprites_file, "grid") == dsprites_file
    prepared = load_registered(None, 0)
    assert prepared.source == other and prepared.info["file_chosen_by"] == "DSPRITES_PATH"


def test_unknown_variant_is_refused():
    with pytest.raises(ValidationError, match="variant"):
        DSpritesOptions(name="dsprites", variant="tiny")


def test_full_variant_downloads_into_the_cache(clean_env, monkeypatch):
    calls = []

    def fake_download(dest: Path) -> Path:
        calls.append(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GRID_PATH, dest)  # stands in for the 737,280-image file
        return dest

    monkeypatch.setattr(dsprites, "download", fake_download)
    # The stand-in is accepted as "full" once the full layout is the grid's.
    monkeypatch.setattr(dsprites, "FULL_FACTOR_SIZES", GRID_SIZES)
    monkeypatch.setattr(dsprites, "FULL_NUM_IMAGES", 46080)
    prepared = load_registered(None, 0, variant="full", limit=1000)
    cached = clean_env / "dsprites" / dsprites.FILENAME
    assert calls == [cached] and prepared.source == cached
    assert prepared.info["file_chosen_by"] == "dataset.variant=full"
    load_registered(None, 0, variant="full", limit=1000)
    assert calls == [cached]  # downloaded once


@pytest.mark.parametrize("where", ["dataset.path", "DSPRITES_PATH"])
def test_full_variant_refuses_a_given_file_of_another_layout(offline, monkeypatch, where):
    # The shipped grid is a dSprites file, but not the full 737,280-image one.
    if where == "DSPRITES_PATH":
        monkeypatch.setenv("DSPRITES_PATH", str(GRID_PATH))
    with pytest.raises(DataError) as info:
        load_registered(GRID_PATH if where == "dataset.path" else None, 0, variant="full")
    message = str(info.value)
    assert message.startswith(f"{where}: {GRID_PATH}:")
    assert "737280" in message and "46080" in message and "\n" not in message


# The registered loader.


def write_indexed_npz(path: Path, num: int = 600) -> tuple[Path, np.ndarray]:
    """A synthetic dSprites file whose image i also spells i in binary in its last pixel row.

    Returns the path and the file's factor classes ``(num, 5)``.
    """
    write_dsprites_npz(path, num=num, seed=7)
    raw = dict(np.load(path))
    bits = (np.arange(num)[:, None] >> np.arange(16)) & 1  # (num, 16)
    assert not raw["imgs"][:, 63].any()  # the sprites never reach the last row
    raw["imgs"][:, 63, :16] = bits
    np.savez(path, **raw)
    return path, raw["latents_classes"]


def row_index(images: np.ndarray) -> np.ndarray:
    """The file row of each image ``(N, 1, 64, 64)`` written by write_indexed_npz."""
    return (images[:, 0, 63, :16].astype(np.int64) << np.arange(16)).sum(axis=1)


@pytest.fixture
def indexed_file(tmp_path):
    return write_indexed_npz(tmp_path / "indexed.npz")


def load_registered(path: Path, seed: int, **options):
    entry = get_dataset("dsprites")
    return entry.load(entry.options_cls(name="dsprites", path=path, **options), seed)


def test_registered_options_class():
    assert get_dataset("dsprites").options_cls is DSpritesOptions


def test_split_sizes_follow_val_fraction_and_limit(indexed_file):
    path, _ = indexed_file
    prepared = load_registered(path, 0, val_fraction=0.25, limit=400)
    assert prepared.train["image"].shape == (300, 1, 64, 64)
    assert prepared.val["image"].shape == (100, 1, 64, 64)
    assert prepared.val["factors"].shape == (100, 5)
    assert prepared.input_shape == (1, 64, 64)
    assert prepared.info["num_train"] == 300 and prepared.info["num_val"] == 100
    assert prepared.info["factors_num_values"] == SYNTHETIC_SIZES
    assert prepared.source == path
    assert len(prepared.ground_truth) == 100


def test_description_counts_the_values_each_factor_takes_in_the_held_out_rows(tmp_path):
    arrays = valid_arrays(num=40)
    classes = np.zeros((40, 5), dtype=np.int64)
    classes[:, 1] = np.arange(40) % 4  # scale takes 4 values; every other factor is constant
    path = save(tmp_path / "d.npz", imgs=arrays["imgs"], latents_classes=classes)
    described = load_registered(path, 0, val_fraction=0.5).describe()
    assert described.has_factors and described.factor_sizes == (1, 4, 1, 1, 1)
    classes[:, 1] = 0
    constant = load_registered(save(tmp_path / "c.npz", imgs=arrays["imgs"], latents_classes=classes), 0).describe()
    assert constant.has_factors and constant.factor_sizes == (1, 1, 1, 1, 1)


def test_split_without_limit_uses_every_row_once(indexed_file):
    path, _ = indexed_file
    prepared = load_registered(path, 3, val_fraction=0.1)
    train, val = row_index(prepared.train["image"]), row_index(prepared.val["image"])
    assert len(val) == 60
    assert not set(train) & set(val)
    assert sorted(np.concatenate([train, val])) == list(range(600))


def test_split_is_deterministic_in_the_seed(indexed_file):
    path, _ = indexed_file
    a = load_registered(path, 11, val_fraction=0.2, limit=300)
    b = load_registered(path, 11, val_fraction=0.2, limit=300)
    c = load_registered(path, 12, val_fraction=0.2, limit=300)
    np.testing.assert_array_equal(row_index(a.train["image"]), row_index(b.train["image"]))
    np.testing.assert_array_equal(row_index(a.val["image"]), row_index(b.val["image"]))
    assert set(row_index(a.val["image"])) != set(row_index(c.val["image"]))
    assert not set(row_index(a.train["image"])) & set(row_index(a.val["image"]))


def test_split_is_shuffled(indexed_file):
    # The canonical file is sorted by factor: a prefix split would hold out one corner of the grid.
    path, _ = indexed_file
    val = row_index(load_registered(path, 0, val_fraction=0.5).val["image"])
    assert val.min() < 100 and val.max() >= 500


def test_val_factors_and_ground_truth_align_with_images(indexed_file):
    path, classes = indexed_file
    prepared = load_registered(path, 5, val_fraction=0.3, limit=500)
    rows = row_index(prepared.val["image"])
    np.testing.assert_array_equal(prepared.val["factors"], classes[rows])
    gt = prepared.ground_truth
    np.testing.assert_array_equal(gt.images, prepared.val["image"])
    np.testing.assert_array_equal(gt.factors, prepared.val["factors"])
    for i in (0, 1, len(rows) - 1):
        shape, scale, _, x, y = gt.factors[i]
        np.testing.assert_array_equal(gt.images[i, 0, :63], draw_sprite(shape, scale, x, y)[:63])


def test_loader_refuses_a_limit_leaving_an_empty_split(indexed_file):
    path, _ = indexed_file
    with pytest.raises(DataError, match="val_fraction"):
        load_registered(path, 0, val_fraction=0.1, limit=4)


def test_loader_reports_a_bad_file(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_text("not an npz")
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_registered(path, 0)


@pytest.mark.parametrize(("num_rows", "val_fraction", "limit"), [(10, 0.01, None), (3, 0.9, None), (1000, 0.5, 1)])
def test_split_rows_refuses_an_empty_split(num_rows, val_fraction, limit):
    with pytest.raises(DataError, match="empty"):
        split_rows(num_rows, val_fraction, 0, limit)


def test_split_rows_known_sizes():
    train, val = split_rows(1000, 0.1, 0, limit=250)
    assert len(train) == 225 and len(val) == 25
    assert train.dtype.kind == "i" and val.dtype.kind == "i"
    assert not set(train) & set(val)
    assert set(train) | set(val) <= set(range(1000))


# ArrayGroundTruthData.


@pytest.fixture
def small_data() -> ArrayGroundTruthData:
    """Images whose pixels spell their factors; two images share factors (0, 1)."""
    factors = np.array([[0, 0], [0, 1], [1, 0], [0, 1], [2, 2]])
    images = np.zeros((5, 1, 2, 2), dtype=np.uint8)
    images[:, 0, 0, :2] = factors
    images[:, 0, 1, 0] = np.arange(5)  # the row, to tell apart images with the same factors
    return ArrayGroundTruthData(images, factors, [3, 3], ["a", "b"], scale=0.5)


def test_observations_from_factors_match_the_factors(small_data):
    rng = np.random.default_rng(0)
    wanted = np.array([[2, 2], [0, 0], [0, 1], [1, 0], [0, 1], [0, 1]])
    x = small_data.sample_observations_from_factors(wanted, rng)
    assert x.shape == (6, 1, 2, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0, 0, :2] / 0.5, wanted)


def test_observations_from_factors_draw_among_equal_factors(small_data):
    x = small_data.sample_observations_from_factors(np.array([[0, 1]] * 50), np.random.default_rng(0))
    assert set((x[:, 0, 1, 0] / 0.5).tolist()) == {1.0, 3.0}


def test_absent_factor_combination_raises_key_error(small_data):
    with pytest.raises(KeyError, match=re.escape("[2, 0]")):
        small_data.sample_observations_from_factors(np.array([[0, 0], [2, 0]]), np.random.default_rng(0))


def test_sample_factors_draws_present_rows(small_data):
    sampled = small_data.sample_factors(200, np.random.default_rng(1))
    assert sampled.shape == (200, 2) and sampled.dtype == np.int64
    present = {tuple(r) for r in small_data.factors.tolist()}
    assert {tuple(r) for r in sampled.tolist()} == present


def test_subset_keeps_rows_aligned(small_data):
    sub = small_data.subset(np.array([4, 1]))
    np.testing.assert_array_equal(sub.factors, [[2, 2], [0, 1]])
    np.testing.assert_array_equal(sub.images[:, 0, 1, 0], [4, 1])
    assert sub.factors_num_values == [3, 3] and sub.scale == 0.5


@pytest.mark.parametrize(
    ("images_rows", "factors_shape", "names"),
    [(4, (5, 2), ["a", "b"]), (5, (5, 3), ["a", "b"]), (5, (5, 2), ["a"])],
)
def test_array_ground_truth_refuses_disagreeing_arrays(images_rows, factors_shape, names):
    with pytest.raises(ValueError):
        ArrayGroundTruthData(np.zeros((images_rows, 1, 2, 2)), np.zeros(factors_shape, dtype=int), [3, 3], names)


# From a bucket (a loopback S3 server).


def test_npz_from_a_bucket_gives_the_rows_of_the_local_file(clean_env, s3_bucket, indexed_file, monkeypatch):
    path, _ = indexed_file
    uri = s3_bucket.put("data/indexed.npz", path)
    local, remote = load_registered(path, 3, val_fraction=0.2), load_registered(uri, 3, val_fraction=0.2)
    assert remote.source == uri and local.source == path
    for split in ("train", "val"):
        assert set(remote.__dict__[split]) == set(local.__dict__[split])
        for name, column in local.__dict__[split].items():
            np.testing.assert_array_equal(remote.__dict__[split][name], column)
    fingerprint = remote.fingerprint()
    assert (fingerprint.path, fingerprint.size, fingerprint.scope) == (uri, path.stat().st_size, "etag")
    monkeypatch.setenv("DSPRITES_PATH", uri)  # the environment variable takes a URI too
    assert resolve_path(None) == uri
    np.testing.assert_array_equal(load_dsprites(uri).images, load_dsprites(path).images)


def test_a_missing_object_or_bucket_is_refused_in_one_line(clean_env, s3_bucket, monkeypatch):
    with pytest.raises(DataError) as info:
        load_registered(f"{s3_bucket.uri}/absent.npz", 0)
    assert str(info.value) == (f"dataset.path: {s3_bucket.uri}/absent.npz: no such object "
                               "(expected a dSprites .npz)")
    monkeypatch.setenv("DSPRITES_PATH", "s3://vae-no-such-bucket/d.npz")
    with pytest.raises(DataError, match=r"^DSPRITES_PATH: s3://vae-no-such-bucket/d.npz: no such bucket"):
        resolve_path(None)
