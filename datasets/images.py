"""Generic images (faces, digits, ...) from an array file or a folder, as square float images in [0, 1].

Sources, picked by ``dataset.path`` (else ``$FACES_PATH``), a local path or a URI
(``s3://bucket/faces.npz``, a prefix ``s3://bucket/faces/`` for a folder):

* ``.npz`` (entry ``dataset.key``) or ``.npy``: read with ``np.load(..., allow_pickle=False)``
  (an object at a URI is read whole);
* ``.h5`` / ``.hdf5``: the dataset at ``dataset.key`` (h5py), only the rows used are read (from
  a URI through :class:`datasets.remote.BlockCachedFile`);
* a folder (prefix): every ``.png``, ``.jpg`` and ``.jpeg`` file under it (sorted paths,
  subfolders too), read with Pillow.

The driver reads the images; the rows reach the trials through Ray's object store.

Arrays are ``(N, H, W)`` (one channel), ``(N, H, W, C)`` or ``(N, C, H, W)`` with C in {1, 3}
(``dataset.layout``, detected from which axis has size 1 or 3 unless given); uint8 is divided by
255, bool becomes {0, 1}, float arrays must already lie in [0, 1]. Images are centre-cropped to a
square and resized to ``dataset.size`` (area averaging down, bilinear up), then converted to
``dataset.channels`` (grey to RGB repeats the channel; RGB to grey uses the ITU-R 601-2 luma
weights, as Pillow's ``"L"`` mode does). The loaded column ``image`` is float32 ``(N, C, S, S)``.

``python -m datasets.images digits OUT.npz --size 64 --channels 3`` writes scikit-learn's bundled
handwritten digits (1,797 real 8x8 images, no download) upscaled, as a stand-in where no face
data exists.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from pydantic import Field

from datasets.registry import DataError, DatasetOptions, PreparedData, register_dataset, split_rows
from datasets.remote import BlockCachedFile, Location, given_location, list_objects, location_of, read_object, require
from datasets.storage import is_uri

__all__ = ["ImagesOptions", "load_images", "resize_square", "convert_channels", "export_digits", "ENV_PATH"]

ENV_PATH = "FACES_PATH"
ARRAY_SUFFIXES = (".npz", ".npy", ".h5", ".hdf5")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_KEY = "images"
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, Pillow's RGB -> "L"
CHUNK_ROWS = 2048  # rows converted at a time: bounds the float copies of a large file


class ImagesOptions(DatasetOptions):
    """The ``dataset`` section for ``images``.

    ``path`` (else ``$FACES_PATH``) is an ``.npz``/``.npy``/``.h5`` file or a folder of images:
    a local path or a URI (``s3://bucket/faces.npz``, or a prefix holding the images).
    """

    key: str | None = None  # npz/HDF5 entry; None: "images" if present, else the only array
    label_key: str | None = None  # optional npz/HDF5 entry of per-image labels (N,), kept as column "label"
    size: int | None = Field(None, ge=4, le=1024)  # side of the square images; None: as stored (must be square)
    channels: Literal[1, 3] | None = None  # None: as stored
    layout: Literal["auto", "nhwc", "nchw"] = "auto"  # auto: the axis of size 1 or 3 is the channel axis


@dataclass
class _Source:
    """Rows of images before conversion: ``read(rows)`` gives the stored values of those rows."""

    name: str  # file (and key) for messages
    num_rows: int
    image_shape: tuple[int, ...]  # (C, H, W) as stored, after layout detection
    # sorted rows -> [(n_i, C, H, W)] in the stored dtype, in row order (one part unless sizes differ)
    read: Callable[[np.ndarray], list[np.ndarray]]
    scale: str  # how values become [0, 1]: "uint8/255", "bool" or "float"
    labels: np.ndarray | None = None
    close: Callable[[], None] = lambda: None


def resolve_path(path: str | Path | None) -> Location:
    """``path``, else ``$FACES_PATH``: a local Path, or a URI (an object or a prefix).

    Raises:
        DataError: If neither is given, or the path, object or prefix does not exist.
    """
    given = given_location(path, ENV_PATH)
    if given is None:
        raise DataError(f"dataset.path: no image file or folder given (set dataset.path or ${ENV_PATH})")
    location, where = given
    expected = f"{', '.join(ARRAY_SUFFIXES)} or a folder of {'/'.join(IMAGE_SUFFIXES)} images"
    if is_uri(location):
        if PurePosixPath(location).suffix.lower() in ARRAY_SUFFIXES:
            return require(location, "object", expected, where)
        return require(location, "prefix", expected, where)
    if not location.exists():
        raise DataError(f"{where}: {location}: no such file or folder (expected {expected})")
    return location


def _layout(shape: tuple[int, ...], layout: str, name: str) -> str:
    """``"nhw"``, ``"nchw"`` or ``"nhwc"`` for an array of ``shape``."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise DataError(f"{name}: expected (N, H, W), (N, H, W, C) or (N, C, H, W) images, but got shape {shape}")
    if layout == "auto":
        chw, hwc = shape[1] in (1, 3), shape[3] in (1, 3)
        if chw == hwc:
            raise DataError(f"{name}: cannot tell the channel axis of shape {shape} (expected one axis of size 1 or "
                            f"3); set dataset.layout to nhwc or nchw")
        layout = "nchw" if chw else "nhwc"
    channels = shape[1] if layout == "nchw" else shape[3]
    if channels not in (1, 3):
        raise DataError(f"{name}: dataset.layout={layout} puts {channels} channels on the channel axis of shape "
                        f"{shape}; expected 1 or 3")
    return layout


def _to_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    """``(n, H, W)``, ``(n, C, H, W)`` or ``(n, H, W, C)`` -> ``(n, C, H, W)`` (a view where possible)."""
    return {"nhw": lambda a: a[:, None], "nchw": lambda a: a, "nhwc": lambda a: a.transpose(0, 3, 1, 2)}[layout](array)


def _scale_of(dtype: np.dtype, name: str) -> str:
    if dtype == np.uint8:
        return "uint8/255"
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.floating):
        return "float"
    raise DataError(f"{name}: images must be uint8 (0-255), bool, or float in [0, 1], but got {dtype}")


def _array_source(array, name: str, layout: str, labels: np.ndarray | None, close=lambda: None) -> _Source:
    """A source over an array-like (numpy array, memmap or h5py dataset) of images."""
    shape = tuple(array.shape)
    found = _layout(shape, layout, name)
    scale = _scale_of(np.dtype(array.dtype), name)
    image_shape = _to_nchw(np.empty((0, *shape[1:]), dtype=np.uint8), found).shape[1:]
    return _Source(name, shape[0], tuple(image_shape), lambda rows: [_to_nchw(np.asarray(array[rows]), found)],
                   scale, labels, close)


def _pick_key(keys: list[str], key: str | None, path: Path, what: str) -> str:
    if key is not None:
        if key not in keys:
            raise DataError(f"{path}: key {key!r} missing (found {sorted(keys)}); set dataset.key to the {what}")
        return key
    if DEFAULT_KEY in keys:
        return DEFAULT_KEY
    if len(keys) == 1:
        return keys[0]
    raise DataError(f"{path}: {len(keys)} entries {sorted(keys)} and none named {DEFAULT_KEY!r}; set dataset.key "
                    f"to the {what}")


def _check_labels(labels: np.ndarray, num_rows: int, name: str) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != num_rows or not np.issubdtype(labels.dtype, np.number):
        raise DataError(f"{name}: labels must be numbers of shape ({num_rows},), but got {labels.shape} {labels.dtype}")
    return labels


def _suffix(path: Location) -> str:
    return PurePosixPath(str(path)).suffix.lower() if is_uri(path) else Path(path).suffix.lower()


def _open_npz(path: Location, options: ImagesOptions) -> _Source:
    remote = is_uri(path)
    source = io.BytesIO(read_object(str(path))) if remote else path
    try:
        loaded = np.load(source, allow_pickle=False, mmap_mode="r" if _suffix(path) == ".npy" and not remote else None)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable {_suffix(path)} file ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        if options.key is not None or options.label_key is not None:
            raise DataError(f"{path}: a .npy file holds one array; remove dataset.key/dataset.label_key or use an .npz")
        return _array_source(loaded, str(path), options.layout, None)
    with loaded:
        key = _pick_key(loaded.files, options.key, path, "image array")
        name = f"{path} key {key!r}"
        try:
            images = loaded[key]
            labels = None
            if options.label_key is not None:
                _pick_key(loaded.files, options.label_key, path, "label array")
                labels = loaded[options.label_key]
        except ValueError as err:  # object arrays need pickle, which is refused
            raise DataError(f"{name}: cannot be read without unpickling ({str(err).splitlines()[0]})") from None
        except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as err:  # zlib: damaged deflate data
            raise DataError(f"{name}: truncated or corrupt ({str(err).splitlines()[0]})") from None
    if labels is not None:
        labels = _check_labels(labels, len(images), f"{path} key {options.label_key!r}")
    return _array_source(images, name, options.layout, labels)


def _open_hdf5(path: Location, options: ImagesOptions) -> _Source:
    import h5py

    fileobj = BlockCachedFile(str(path)) if is_uri(path) else None  # only the rows used are fetched
    try:
        handle = h5py.File(fileobj if fileobj is not None else path, "r")
    except OSError as err:
        if fileobj is not None:
            fileobj.close()
        raise DataError(f"{path}: not a readable HDF5 file ({str(err).splitlines()[0]})") from None

    def close() -> None:
        handle.close()
        if fileobj is not None:
            fileobj.close()

    try:
        keys = [k for k, v in handle.items() if isinstance(v, h5py.Dataset)]
        key = options.key if options.key is not None and options.key in handle else _pick_key(
            keys, options.key, path, "image dataset")
        images = handle[key]
        name = f"{path} key {key!r}"
        if not isinstance(images, h5py.Dataset):
            raise DataError(f"{name}: a group, not a dataset of images")
        labels = None
        if options.label_key is not None:
            if options.label_key not in handle or not isinstance(handle[options.label_key], h5py.Dataset):
                raise DataError(f"{path}: key {options.label_key!r} missing (found {sorted(keys)}); set "
                                f"dataset.label_key to the label dataset")
            labels = _check_labels(handle[options.label_key][()], images.shape[0],
                                   f"{path} key {options.label_key!r}")
        source = _array_source(images, name, options.layout, labels, close)
    except BaseException:
        close()
        raise
    return source


def _image_files(path: Location) -> list[Location]:
    """The image files below a folder (or objects below a prefix), sorted."""
    if is_uri(path):
        return [f"{path}/{key}" for key, _ in list_objects(str(path)) if _suffix(key) in IMAGE_SUFFIXES]
    return sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _open_folder(path: Location, options: ImagesOptions) -> _Source:
    from PIL import Image, UnidentifiedImageError

    if options.key is not None or options.label_key is not None:
        raise DataError(f"{path}: a folder of images has no keys; remove dataset.key/dataset.label_key")
    files = _image_files(path)
    if not files:
        raise DataError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")

    def read_one(file: Location, mode: str | None) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(read_object(file)) if is_uri(file) else file) as image:
                if mode is None:  # as stored: grey stays one channel, anything else becomes RGB
                    mode = "L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
                return np.asarray(image.convert(mode))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DataError(f"{file}: not a readable image ({str(err).splitlines()[0]})") from None

    first = read_one(files[0], None)
    mode = "L" if first.ndim == 2 else "RGB"
    channels = 1 if mode == "L" else 3

    def read(rows: np.ndarray) -> list[np.ndarray]:
        images = [read_one(files[i], mode) for i in rows]
        shapes = {im.shape for im in images}
        if len(shapes) > 1 and options.size is None:
            raise DataError(f"{path}: images of different sizes {sorted(shapes)[:3]}; set dataset.size to resize them")
        layout = "nhw" if mode == "L" else "nhwc"
        if len(shapes) > 1:  # converted one by one to the target size
            return [_to_nchw(im[None], layout) for im in images]
        return [_to_nchw(np.stack(images), layout)]

    return _Source(str(path), len(files), (channels, *first.shape[:2]), read, "uint8/255")


def resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """Centre-crops images to a square and resizes them.

    Area averaging when shrinking (a box filter: a whole-factor shrink of a block image returns
    the blocks exactly), bilinear interpolation (half-pixel centres) when enlarging.

    Args:
        images: float32 ``(N, C, H, W)``.
        size: Side of the output, pixels.

    Returns:
        float32 ``(N, C, size, size)``, values within the input's range.
    """
    import torch
    import torch.nn.functional as F

    _, _, height, width = images.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    images = images[:, :, top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(images, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if side > size:
        out = F.interpolate(x, size=(size, size), mode="area")
    else:
        out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp_(float(x.min()), float(x.max())).numpy()


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grey ``(N, 1, H, W)`` to RGB (repeated) or RGB ``(N, 3, H, W)`` to grey (ITU-R 601-2 luma).

    Args:
        images: float32 ``(N, C, H, W)`` with C in {1, 3}.
        channels: 1 or 3.

    Returns:
        float32 ``(N, channels, H, W)``.
    """
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=1)
    return np.einsum("nchw,c->nhw", images, LUMA)[:, None]


def _convert(raw: np.ndarray, scale: str, size: int | None, channels: int | None, name: str) -> np.ndarray:
    """Stored values ``(n, C, H, W)`` -> float32 ``(n, channels, size, size)`` in [0, 1]."""
    if scale == "uint8/255":
        images = raw.astype(np.float32) / np.float32(255)
    else:
        images = raw.astype(np.float32)
        if scale == "float":
            if not np.isfinite(images).all():
                raise DataError(f"{name}: images hold non-finite values (NaN or inf)")
            low, high = float(images.min()), float(images.max())
            if low < 0.0 or high > 1.0:
                raise DataError(f"{name}: float images must lie in [0, 1], but range over [{low:.4g}, {high:.4g}]; "
                                f"rescale them (or store uint8 0-255)")
    _, _, height, width = images.shape
    if size is None and height != width:
        raise DataError(f"{name}: images are {height}x{width}, not square; set dataset.size to crop and resize them")
    if size is not None:
        images = resize_square(images, size)
    return convert_channels(images, channels) if channels is not None else images


def _open(path: Location, options: ImagesOptions) -> _Source:
    openers = {".npz": _open_npz, ".npy": _open_npz, ".h5": _open_hdf5, ".hdf5": _open_hdf5}
    if (is_uri(path) and _suffix(path) not in openers) or (not is_uri(path) and Path(path).is_dir()):
        return _open_folder(path, options)  # a prefix of a URI holds the images as objects
    if _suffix(path) not in openers:
        raise DataError(f"{path}: unknown file type {Path(path).suffix!r}; expected {', '.join(ARRAY_SUFFIXES)} or a "
                        f"folder of {'/'.join(IMAGE_SUFFIXES)} images")
    return openers[_suffix(path)](path, options)


def load_images(path: str | Location, options: ImagesOptions, rows: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Reads, checks and converts the images of ``path`` (all of them, or ``rows``).

    Args:
        path: An ``.npz``/``.npy``/``.h5``/``.hdf5`` file or a folder of images: a local path or a URI.
        options: Key, size, channels and layout.
        rows: int indices of the images to read, in the order wanted; None: all.

    Returns:
        ``(images, facts)``: float32 ``(n, C, S, S)`` in [0, 1], and a description
        (``source``, ``stored_shape``, ``scale``, ``num_rows``, and ``labels`` ``(n,)`` when
        ``options.label_key`` is set).

    Raises:
        DataError: Missing or unreadable file, missing key, pickled arrays, wrong rank or channel
            count, an unsupported dtype, float values outside [0, 1] or non-finite, non-square
            images without ``size``; the message names the file and key.
    """
    source = _open(location_of(path), options)
    try:
        return _read_rows(source, options, np.arange(source.num_rows) if rows is None else rows)
    finally:
        source.close()


def _read_rows(source: _Source, options: ImagesOptions, rows: np.ndarray) -> tuple[np.ndarray, dict]:
    order = np.asarray(rows, dtype=np.int64)
    channels = options.channels or source.image_shape[0]
    size = options.size or source.image_shape[1]
    out = np.empty((len(order), channels, size, size), dtype=np.float32)
    for start in range(0, len(order), CHUNK_ROWS):
        chunk = order[start : start + CHUNK_ROWS]
        sorted_rows, inverse = np.unique(chunk, return_inverse=True)  # h5py reads increasing rows only
        parts = [_convert(raw, source.scale, options.size, options.channels, source.name)
                 for raw in source.read(sorted_rows)]
        out[start : start + len(chunk)] = np.concatenate(parts)[inverse]
    facts = {"source": source.name, "stored_shape": [source.num_rows, *source.image_shape], "scale": source.scale,
             "num_rows": source.num_rows}
    if source.labels is not None:
        facts["labels"] = source.labels[order]
    return out, facts


@register_dataset("images", ImagesOptions)
def prepare(options: ImagesOptions, seed: int) -> PreparedData:
    """Loads the images and splits them deterministically from ``seed``.

    Raises:
        DataError: See :func:`load_images`; also fewer than 2 images, or a split left empty.
    """
    path = resolve_path(options.path)
    source = _open(path, options)
    try:
        if source.num_rows < 2:
            raise DataError(f"{source.name}: {source.num_rows} image(s); need at least 2 (one to train on, one held out)")
        train_rows, val_rows = split_rows(source.num_rows, options.val_fraction, seed, options.limit)
        images, facts = _read_rows(source, options, np.concatenate([train_rows, val_rows]))
    finally:
        source.close()
    num_train = len(train_rows)
    train, val = {"image": images[:num_train]}, {"image": images[num_train:]}
    labels = facts.pop("labels", None)
    if labels is not None:
        train["label"], val["label"] = labels[:num_train], labels[num_train:]
    return PreparedData(
        train=train,
        val=val,
        input_shape=tuple(images.shape[1:]),
        ground_truth=None,
        source=path,
        info={**facts, "num_train": num_train, "num_val": len(val_rows), "input_shape": list(images.shape[1:])},
    )


def export_digits(out: Path, size: int = 64, channels: int = 3) -> Path:
    """Writes scikit-learn's bundled digits, upscaled, as an ``.npz`` this dataset reads.

    Args:
        out: Destination ``.npz``.
        size: Side of the written images (pixels); the originals are 8x8.
        channels: 1, or 3 (the grey value repeated).

    Returns:
        ``out``, holding ``images`` uint8 ``(1797, size, size, channels)`` (NHWC, 0-255) and
        ``labels`` int64 ``(1797,)`` (the digit).

    References:
        Alpaydin & Kaynak 1998, UCI "Optical Recognition of Handwritten Digits" (the test set
        scikit-learn ships as ``load_digits``).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16 -> [0, 1]
    images = convert_channels(resize_square(images, size), channels)
    pixels = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (N, S, S, C)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=pixels, labels=digits.target.astype(np.int64))
    return out


EXPORTERS = {"digits": export_digits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.images",
                                     description="Write a bundled image set as an .npz the images dataset reads.")
    parser.add_argument("source", choices=sorted(EXPORTERS), help="digits: scikit-learn's 1,797 handwritten digits")
    parser.add_argument("out", type=Path, help="destination .npz")
    parser.add_argument("--size", type=int, default=64, help="side of the written images in pixels (default 64)")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1 (grey) or 3 (RGB, default)")
    args = parser.parse_args(argv)
    if not 4 <= args.size <= 1024:
        parser.error(f"--size must be in [4, 1024], but got {args.size}")
    path = EXPORTERS[args.source](args.out, size=args.size, channels=args.channels)
    with np.load(path, allow_pickle=False) as written:
        print(f"{path}: images {written['images'].shape} uint8, labels {written['labels'].shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
