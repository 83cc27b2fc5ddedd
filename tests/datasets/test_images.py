"""The generic images dataset: every source, layout and conversion, refusals, the registry and the exporter."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from datasets import images as images_module
from datasets.images import ImagesOptions, convert_channels, export_digits, load_images, resize_square
from datasets.registry import DataError, get_dataset, split_rows


def options(path=None, **kwargs) -> ImagesOptions:
    return ImagesOptions(name="images", path=path, **kwargs)


def digits_uint8(num: int = 40) -> np.ndarray:
    """The first ``num`` scikit-learn digits as uint8 ``(num, 8, 8)`` in 0..255 (real images, no download)."""
    return np.rint(load_digits().images[:num] * (255 / 16)).astype(np.uint8)


@pytest.fixture
def rgb_nhwc() -> np.ndarray:
    """uint8 ``(12, 8, 8, 3)``: digits in the red channel, their inverse in green, constant 51 in blue."""
    grey = digits_uint8(12)
    return np.stack([grey, 255 - grey, np.full_like(grey, 51)], axis=-1)


# Sources and layouts.


def test_npz_nhwc_uint8_becomes_nchw_float_divided_by_255(tmp_path, rgb_nhwc):
    path = tmp_path / "faces.npz"
    np.savez(path, images=rgb_nhwc)
    out, facts = load_images(path, options())
    assert out.dtype == np.float32 and out.shape == (12, 3, 8, 8)
    np.testing.assert_array_equal(out, rgb_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))
    assert facts["scale"] == "uint8/255" and facts["stored_shape"] == [12, 3, 8, 8]


def test_nchw_is_detected_and_a_given_layout_is_obeyed(tmp_path, rgb_nhwc):
    nchw = rgb_nhwc.transpose(0, 3, 1, 2).copy()
    np.savez(tmp_path / "a.npz", images=nchw)
    out, _ = load_images(tmp_path / "a.npz", options())
    np.testing.assert_array_equal(out, nchw / np.float32(255))
    given, _ = load_images(tmp_path / "a.npz", options(layout="nchw"))
    np.testing.assert_array_equal(given, out)


def test_ambiguous_layout_is_refused_until_given(tmp_path):
    cube = np.zeros((4, 3, 3, 3), dtype=np.uint8)  # 3x3 RGB images: either axis could hold the channels
    cube[:, 0] = 255  # NCHW: channel 0 on; NHWC: row 0 on
    np.savez(tmp_path / "c.npz", images=cube)
    with pytest.raises(DataError, match="dataset.layout"):
        load_images(tmp_path / "c.npz", options())
    nchw, _ = load_images(tmp_path / "c.npz", options(layout="nchw"))
    nhwc, _ = load_images(tmp_path / "c.npz", options(layout="nhwc"))
    assert nchw[:, 0].min() == 1.0 and nchw[:, 1:].max() == 0.0
    assert nhwc[:, :, 0].min() == 1.0 and nhwc[:, :, 1:].max() == 0.0


def test_grey_npy_float_and_bool(tmp_path):
    grey = digits_uint8(10).astype(np.float32) / 255
    np.save(tmp_path / "g.npy", grey)
    out, facts = load_images(tmp_path / "g.npy", options())
    assert out.shape == (10, 1, 8, 8) and facts["scale"] == "float"
    np.testing.assert_array_equal(out[:, 0], grey)
    np.save(tmp_path / "b.npy", grey > 0.5)
    binary, _ = load_images(tmp_path / "b.npy", options())
    np.testing.assert_array_equal(binary[:, 0], (grey > 0.5).astype(np.float32))


def test_hdf5_key_reads_the_requested_rows_in_order(tmp_path, rgb_nhwc):
    path = tmp_path / "faces.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("group/faces", data=rgb_nhwc)
        f.create_dataset("other", data=np.zeros(3))
    rows = np.array([5, 0, 11, 5])  # unsorted, repeated: h5py itself takes increasing rows only
    out, _ = load_images(path, options(key="group/faces"), rows)
    np.testing.assert_array_equal(out, rgb_nhwc[rows].transpose(0, 3, 1, 2) / np.float32(255))


def test_folder_of_pngs_in_sorted_order(tmp_path):
    grey = digits_uint8(6)
    for i, image in enumerate(grey):
        Image.fromarray(image).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    out, facts = load_images(tmp_path, options())
    assert out.shape == (6, 1, 8, 8) and facts["num_rows"] == 6
    np.testing.assert_array_equal(out[:, 0], grey / np.float32(255))  # PNG is lossless
    rgb, _ = load_images(tmp_path, options(channels=3))
    np.testing.assert_array_equal(rgb, np.repeat(out, 3, axis=1))


def test_folder_of_jpgs_of_different_sizes_is_cropped_and_resized(tmp_path):
    photos = load_sample_images().images  # china.jpg and flower.jpg, (427, 640, 3) uint8
    Image.fromarray(photos[0]).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(photos[1][:400, :500]).save(tmp_path / "b.jpg", quality=95)
    with pytest.raises(DataError, match="dataset.size"):
        load_images(tmp_path, options())
    out, _ = load_images(tmp_path, options(size=32))
    assert out.shape == (2, 3, 32, 32) and 0.0 <= out.min() and out.max() <= 1.0
    # Area averaging keeps each channel's mean over the centre square (up to JPEG's loss).
    centre = photos[0][:, 106:533].astype(np.float32) / 255  # the central 427x427 square
    np.testing.assert_allclose(out[0].mean(axis=(1, 2)), centre.mean(axis=(0, 1)), atol=0.02)


# Conversions with known answers.


def test_resize_shrinks_blocks_exactly_and_keeps_constants_when_enlarging():
    blocks = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 16
    big = np.kron(blocks, np.ones((1, 1, 4, 4), dtype=np.float32))  # (1, 1, 16, 16), 4x4 blocks
    np.testing.assert_allclose(resize_square(big, 4), blocks, atol=1e-7)
    constant = np.full((2, 3, 8, 8), 0.25, dtype=np.float32)
    np.testing.assert_allclose(resize_square(constant, 64), 0.25, atol=1e-7)


def test_resize_centre_crops_non_square_images():
    wide = np.zeros((1, 1, 4, 8), dtype=np.float32)
    wide[..., 2:6] = 1.0  # the centre 4x4 square is on, the sides off
    np.testing.assert_array_equal(resize_square(wide, 4), np.ones((1, 1, 4, 4), dtype=np.float32))


def test_rgb_to_grey_uses_the_luma_weights_and_grey_to_rgb_repeats():
    pure = np.eye(3, dtype=np.float32)[:, :, None, None]  # red, green, blue: (3, 3, 1, 1)
    np.testing.assert_allclose(convert_channels(pure, 1).ravel(), [0.299, 0.587, 0.114], rtol=1e-6)
    grey = np.full((1, 1, 2, 2), 0.4, dtype=np.float32)
    np.testing.assert_array_equal(convert_channels(grey, 3), np.full((1, 3, 2, 2), 0.4, dtype=np.float32))


def test_size_and_channels_options_on_an_array(tmp_path):
    np.savez(tmp_path / "d.npz", images=digits_uint8(5))
    out, _ = load_images(tmp_path / "d.npz", options(size=16, channels=3))
    assert out.shape == (5, 3, 16, 16)
    shrunk, _ = load_images(tmp_path / "d.npz", options(size=4, channels=1))
    np.testing.assert_allclose(shrunk[:, 0], digits_uint8(5).reshape(5, 4, 2, 4, 2).mean(axis=(2, 4)) / 255, atol=1e-6)


# Refusals: one DataError naming the file or key and what was expected.


@pytest.mark.parametrize(
    ("arrays", "kwargs", "expected"),
    [
        pytest.param({"images": np.zeros((4, 8), np.uint8)}, {}, "expected (N, H, W)", id="rank-2"),
        pytest.param({"images": np.zeros((4, 8, 8, 5), np.uint8)}, {}, "one axis of size 1 or 3", id="5-channels"),
        pytest.param({"images": np.zeros((4, 8, 8, 3), np.uint8)}, {"layout": "nchw"}, "expected 1 or 3",
                     id="wrong-layout"),
        pytest.param({"images": np.zeros((4, 8, 8), np.int32)}, {}, "uint8 (0-255), bool, or float", id="int32"),
        pytest.param({"images": np.full((4, 8, 8), 2.0)}, {}, "must lie in [0, 1]", id="float-range"),
        pytest.param({"images": np.full((4, 8, 8), np.nan)}, {}, "non-finite", id="nan"),
        pytest.param({"images": np.zeros((4, 8, 6), np.uint8)}, {}, "not square; set dataset.size", id="non-square"),
        pytest.param({"a": np.zeros((4, 8, 8)), "b": np.zeros((4, 8, 8))}, {}, "set dataset.key", id="which-key"),
        pytest.param({"images": np.zeros((4, 8, 8))}, {"key": "faces"}, "key 'faces' missing", id="missing-key"),
        pytest.param({"images": np.zeros((4, 8, 8)), "labels": np.zeros(3)}, {"label_key": "labels"},
                     "labels must be numbers of shape (4,)", id="label-count"),
    ],
)
def test_bad_arrays_are_refused_naming_the_file(tmp_path, arrays, kwargs, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        load_images(path, options(**kwargs))
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_pickled_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([np.zeros((2, 2)), "x"], dtype=object))
    with pytest.raises(DataError, match="without unpickling"):
        load_images(path, options())


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        pytest.param(lambda p: p.with_suffix(".npz").write_bytes(b"not a zip"), "not a readable .npz", id="corrupt-npz"),
        pytest.param(lambda p: p.with_suffix(".h5").write_bytes(b"not hdf5"), "not a readable HDF5", id="corrupt-h5"),
        pytest.param(lambda p: p.with_suffix(".txt").write_text("x"), "unknown file type", id="txt"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, write, expected):
    write(tmp_path / "f")
    path = next(tmp_path.iterdir())
    with pytest.raises(DataError, match=expected):
        load_images(path, options())


def test_damaged_deflate_data_in_an_npz_is_refused_naming_the_file(tmp_path):
    """Compressed entries damaged anywhere (zlib errors, bad CRCs) give one DataError naming the file."""
    path = tmp_path / "d.npz"
    np.savez_compressed(path, images=np.random.default_rng(0).integers(0, 255, (40, 16, 16), dtype=np.uint8))
    original = path.read_bytes()
    for offset in range(60, len(original) - 150, 41):
        damaged = bytearray(original)
        damaged[offset : offset + 8] = b"\xff" * 8
        path.write_bytes(bytes(damaged))
        with pytest.raises(DataError) as err:
            load_images(path, options())
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_broken_image_in_a_folder_is_named(tmp_path):
    Image.fromarray(digits_uint8(1)[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="b.png: not a readable image"):
        load_images(tmp_path, options())


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images"):
        load_images(tmp_path, options())


# The registered dataset.


def test_registered_loader_splits_deterministically_and_keeps_labels(tmp_path):
    path = export_digits(tmp_path / "digits.npz", size=16, channels=3)
    entry = get_dataset("images")
    opts = entry.options_cls(name="images", path=path, label_key="labels", val_fraction=0.2, limit=500)
    data = entry.load(opts, 3)
    train_rows, val_rows = split_rows(1797, 0.2, 3, 500)
    everything, _ = load_images(path, options())
    np.testing.assert_array_equal(data.val["image"], everything[val_rows])
    np.testing.assert_array_equal(data.train["image"], everything[train_rows])
    np.testing.assert_array_equal(data.val["label"], load_digits().target[val_rows])
    assert data.input_shape == (3, 16, 16) and data.ground_truth is None
    assert data.info["num_train"] == 400 and data.info["num_val"] == 100
    again = entry.load(opts, 3)
    np.testing.assert_array_equal(again.val["image"], data.val["image"])


def test_path_from_environment_and_missing_everywhere(tmp_path, monkeypatch):
    np.savez(tmp_path / "f.npz", images=digits_uint8(10))
    monkeypatch.setenv("FACES_PATH", str(tmp_path / "f.npz"))
    assert get_dataset("images").load(options(), 0).input_shape == (1, 8, 8)
    monkeypatch.delenv("FACES_PATH")
    with pytest.raises(DataError, match=r"dataset.path: .*FACES_PATH"):
        get_dataset("images").load(options(), 0)
    with pytest.raises(DataError, match="no such file or folder"):
        get_dataset("images").load(options(tmp_path / "missing.npz"), 0)


def test_one_image_is_too_few(tmp_path):
    np.savez(tmp_path / "one.npz", images=digits_uint8(1))
    with pytest.raises(DataError, match="1 image.*need at least 2"):
        get_dataset("images").load(options(tmp_path / "one.npz"), 0)


def test_option_values_are_bounded():
    with pytest.raises(ValueError, match="channels"):
        options(channels=2)
    with pytest.raises(ValueError, match="size"):
        options(size=0)


# The exporter.


def test_digits_export_round_trips(tmp_path, capsys):
    out = tmp_path / "digits.npz"
    assert images_module.main(["digits", str(out), "--size", "16", "--channels", "3"]) == 0
    assert "(1797, 16, 16, 3)" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as written:
        pixels, labels = written["images"], written["labels"]
    assert pixels.dtype == np.uint8 and pixels.shape == (1797, 16, 16, 3)
    np.testing.assert_array_equal(labels, load_digits().target)
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])  # grey repeated
    originals = (load_digits().images / 16).astype(np.float32)[:, None]  # (1797, 1, 8, 8), 0..16 -> [0, 1]
    expected = np.rint(resize_square(originals, 16)[:, 0] * 255)
    np.testing.assert_array_equal(pixels[..., 1], expected.astype(np.uint8))
    # Bilinear doubling keeps each digit's mean ink, up to the uint8 rounding.
    np.testing.assert_allclose(pixels[..., 0].mean(axis=(1, 2)) / 255, originals.mean(axis=(1, 2, 3)), atol=2e-3)


# From a bucket (a loopback S3 server).


def test_npz_hdf5_and_a_folder_of_pngs_from_a_bucket(tmp_path, s3_bucket, rgb_nhwc, monkeypatch):
    np.savez(tmp_path / "faces.npz", images=rgb_nhwc, labels=np.arange(12))
    with h5py.File(tmp_path / "faces.h5", "w") as f:
        f.create_dataset("faces", data=rgb_nhwc)
    for i, image in enumerate(rgb_nhwc[:5]):
        (tmp_path / "pngs" / f"s{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "pngs" / f"s{i % 2}" / f"{i}.png")
        s3_bucket.put(f"pngs/s{i % 2}/{i}.png", tmp_path / "pngs" / f"s{i % 2}" / f"{i}.png")
    expected = rgb_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    out, facts = load_images(s3_bucket.put("faces.npz", tmp_path / "faces.npz"), options(label_key="labels"))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(facts["labels"], np.arange(12))
    rows = np.array([7, 2, 9])
    out, _ = load_images(s3_bucket.put("faces.h5", tmp_path / "faces.h5"), options(key="faces"), rows)
    np.testing.assert_array_equal(out, expected[rows])
    local, _ = load_images(tmp_path / "pngs", options())
    remote, facts = load_images(f"{s3_bucket.uri}/pngs", options())
    assert remote.shape == (5, 3, 8, 8) and facts["num_rows"] == 5
    np.testing.assert_array_equal(remote, local)
    monkeypatch.setenv("FACES_PATH", f"{s3_bucket.uri}/pngs/")
    prepared = get_dataset("images").load(options(val_fraction=0.4), 0)
    assert prepared.source == f"{s3_bucket.uri}/pngs" and prepared.fingerprint().size == sum(
        p.stat().st_size for p in (tmp_path / "pngs").rglob("*.png"))
    monkeypatch.setenv("FACES_PATH", f"{s3_bucket.uri}/nothing")
    with pytest.raises(DataError, match=r"^FACES_PATH: s3://.*/nothing: no such prefix"):
        get_dataset("images").load(options(), 0)
