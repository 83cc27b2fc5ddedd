"""smallNORB: 48,600 photographs of 50 toys by category, instance, elevation, azimuth and lighting.

The published files are six NORB binary matrices (gzipped): for each of the training and testing
halves, ``-dat`` (``(24300, 2, 96, 96)`` uint8 stereo pairs), ``-cat`` (``(24300,)`` int32
category 0-4) and ``-info`` (``(24300, 4)`` int32: instance 0-9, elevation 0-8, azimuth 0, 2, ..., 34,
lighting 0-5). As disentanglement_lib does, the first image of each pair is resized to 64x64
(Lanczos), the azimuth halved to 0-17, and the two halves joined: together they hold every
combination of category 5 x instance 10 x elevation 9 x azimuth 18 x lighting 6 once. The files
are read by a small reader of the NORB matrix format (:func:`read_matrix`) and converted once into
the factor-grid HDF5 layout of :mod:`datasets.factor_grid` (rows sorted by those five factors).

The metrics see four factors (category, elevation, azimuth, lighting); the instance is drawn at
random for each observation with the metric's ``random_state`` (disentanglement_lib's
``latent_factor_indices = [0, 2, 3, 4]``).

Which files are read, first match wins: ``dataset.path``, else ``$SMALLNORB_PATH``: a folder (or a
prefix at a URI) holding the six files (``.mat.gz`` or unpacked ``.mat``), converted once into the
cache, or a converted ``.h5``; else the six files downloaded into ``$VAE_STUDY_CACHE/smallnorb`` and
checked against the md5 digests public loaders pin for them (the NYU page publishes none).

References:
    LeCun, Huang, Bottou 2004, "Learning Methods for Generic Object Recognition with Invariance to
    Pose and Lighting", CVPR; https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ (the file format);
    disentanglement_lib ``data/ground_truth/norb.py``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from datasets.factor_grid import (
    GridOptions,
    GridSpec,
    cache_dir,
    check_digests,
    check_grid_file,
    converted_path,
    download,
    prepare_grid,
    write_grid_file,
)
from datasets.registry import DataError, PreparedData, file_fingerprint, register_dataset
from datasets.remote import Location, child, exists, given_location, name_of, read_object, require
from datasets.storage import is_uri

__all__ = ["SmallNORBOptions", "load_smallnorb", "read_matrix", "read_half", "convert", "SPEC", "FILES",
           "FACTOR_NAMES", "FACTOR_SIZES", "URL"]

FACTOR_NAMES = ("category", "instance", "elevation", "azimuth", "lighting")
FACTOR_SIZES = (5, 10, 9, 18, 6)
SPEC = GridSpec("smallnorb", FACTOR_NAMES, FACTOR_SIZES, (64, 64, 1), latent=(0, 2, 3, 4))
URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
HALF_ROWS = 24_300
HALVES = {"training": "smallnorb-5x46789x9x18x6x2x96x96-training", "testing": "smallnorb-5x01235x9x18x6x2x96x96-testing"}
# File -> md5 of the published .mat.gz and of the unpacked .mat, as pinned by disent and a public
# PyTorch smallNORB loader alike (the NYU page publishes no digest).
FILES = {
    "training-dat": ("66054832f9accfe74a0f4c36a75bc0a2", "8138a0902307b32dfa0025a36dfa45ec"),
    "training-cat": ("23c8b86101fbf0904a000b43d3ed2fd9", "fd5120d3f770ad57ebe620eb61a0b633"),
    "training-info": ("51dee1210a742582ff607dfd94e332e3", "19faee774120001fc7e17980d6960451"),
    "testing-dat": ("e4ad715691ed5a3a5f138751a4ceb071", "e9920b7f7b2869a8f1a12e945b2c166c"),
    "testing-cat": ("5aa791cd7e6016cf957ce9bdb93b8603", "fd5120d3f770ad57ebe620eb61a0b633"),
    "testing-info": ("a9454f3864d7fd4bb3ea7fc3eb84924e", "7c5b871cc69dcadec1bf6a18141f5edc"),
}
# Magic number -> element type of the NORB binary matrix format (little-endian).
MATRIX_TYPES = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32, 0x1E3D4C56: np.int16, 0x1E3D4C51: np.float32,
                0x1E3D4C53: np.float64}
PART_SHAPES = {"dat": ((HALF_ROWS, 2, 96, 96), np.uint8), "cat": ((HALF_ROWS,), np.int32),
               "info": ((HALF_ROWS, 4), np.int32)}


class SmallNORBOptions(GridOptions):
    """The ``dataset`` section for smallNORB (see the module docstring for the files and checks)."""


def file_name(part: str, gzipped: bool = True) -> str:
    """The published name of ``part`` (``"training-dat"``), e.g. ``smallnorb-5x46789x...-training-dat.mat.gz``."""
    half, kind = part.split("-")
    return f"{HALVES[half]}-{kind}.mat" + (".gz" if gzipped else "")


def read_matrix(data: bytes, label: str) -> np.ndarray:
    """A NORB binary matrix: int32 magic and rank, ``max(3, rank)`` int32 dims, then the elements.

    Args:
        data: The file's bytes (unpacked).
        label: Names the file in messages.

    Returns:
        A read-only array of the stored type and shape (a view of ``data``).

    Raises:
        DataError: If the magic number is unknown, the rank is not 1-16 or the size disagrees.
    """
    if len(data) < 20:
        raise DataError(f"{label}: {len(data)} bytes, too short for a NORB binary matrix header")
    magic, ndim = (int(v) for v in np.frombuffer(data, "<i4", 2))
    if magic not in MATRIX_TYPES:
        raise DataError(f"{label}: not a NORB binary matrix (magic number {magic & 0xFFFFFFFF:#x})")
    if not 1 <= ndim <= 16:
        raise DataError(f"{label}: a NORB binary matrix of rank {ndim}; expected 1-16")
    header = 8 + 4 * max(3, ndim)
    dims = tuple(int(d) for d in np.frombuffer(data, "<i4", ndim, 8))
    dtype = np.dtype(MATRIX_TYPES[magic]).newbyteorder("<")
    if any(d < 0 for d in dims) or len(data) - header != int(np.prod(dims)) * dtype.itemsize:
        raise DataError(f"{label}: a NORB matrix {dims} of {dtype.name} needs {int(np.prod(dims)) * dtype.itemsize} "
                        f"bytes after its header, but has {len(data) - header}; a truncated or damaged file")
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def _part(folder: Location, part: str) -> tuple[Location, bool]:
    """``(file, gzipped)`` of a part in ``folder``: the ``.mat.gz``, else the unpacked ``.mat``."""
    for gzipped in (True, False):
        location = child(folder, file_name(part, gzipped))
        if exists(location):
            return location, gzipped
    raise DataError(f"{folder}: {file_name(part)} (or {file_name(part, False)}) missing; expected the six "
                    f"smallNORB files from {URL}")


def _read_part(folder: Location, part: str) -> np.ndarray:
    location, gzipped = _part(folder, part)
    data = read_object(str(location)) if is_uri(location) else Path(location).read_bytes()
    if gzipped:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{location}: not a readable gzip file ({err})") from None
    matrix = read_matrix(data, str(location))
    shape, dtype = PART_SHAPES[part.split("-")[1]]
    if matrix.shape != shape or matrix.dtype != dtype:
        raise DataError(f"{location}: must be a {shape} {np.dtype(dtype).name} matrix, but holds {matrix.shape} "
                        f"{matrix.dtype.name}")
    return matrix


def read_half(folder: Location, half: str) -> tuple[np.ndarray, np.ndarray]:
    """One half of the published files, resized.

    Args:
        folder: Holds the half's ``-dat``, ``-cat`` and ``-info`` files (local folder or URI prefix).
        half: ``"training"`` or ``"testing"``.

    Returns:
        ``images`` uint8 ``(24300, 64, 64)``: the first image of each stereo pair, 96x96 resized to
        64x64 with a Lanczos filter; ``factors`` int64 ``(24300, 5)``: category, instance,
        elevation, azimuth / 2, lighting.

    Raises:
        DataError: If a file is missing, not in the format, or holds a factor out of range.
    """
    from PIL import Image

    factors = np.column_stack([_read_part(folder, f"{half}-cat"), _read_part(folder, f"{half}-info")]).astype(np.int64)
    if np.any(factors[:, 3] % 2):
        raise DataError(f"{folder}: {file_name(half + '-info')} holds an odd azimuth; expected 0, 2, ..., 34")
    factors[:, 3] //= 2
    bad = (factors < 0) | (factors >= np.array(FACTOR_SIZES))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{folder}: the {half} half has {FACTOR_NAMES[col]} {factors[row, col]} at row {row}; "
                        f"expected 0-{FACTOR_SIZES[col] - 1}")
    dat = _read_part(folder, f"{half}-dat")  # 448 MB unpacked: read once the small files are known good
    images = np.empty((HALF_ROWS, 64, 64), dtype=np.uint8)
    for i in range(HALF_ROWS):
        images[i] = np.asarray(Image.fromarray(dat[i, 0]).resize((64, 64), Image.Resampling.LANCZOS))
    return images, factors


def convert(folder: Location, dest: Path) -> Path:
    """Converts the six published files into the factor-grid HDF5 layout (rows sorted by factors).

    Raises:
        DataError: If a file is wrong, or the two halves do not hold every factor combination once.
    """
    print(f"converting smallNORB from {folder} to {dest} (once) ...", flush=True)
    halves = [read_half(folder, half) for half in HALVES]
    images = np.concatenate([h[0] for h in halves])
    rows = SPEC.rows_of(np.concatenate([h[1] for h in halves]))
    if len(np.unique(rows)) != SPEC.num_rows:
        raise DataError(f"{folder}: the two halves hold {len(np.unique(rows))} distinct factor combinations; "
                        f"expected all {SPEC.num_rows} of {dict(zip(FACTOR_NAMES, FACTOR_SIZES))} once")
    ordered = np.empty_like(images)
    ordered[rows] = images

    def fill(data) -> None:
        data[:] = ordered[..., None]

    return write_grid_file(dest, SPEC, fill, source=str(folder))


def _resolve(options: SmallNORBOptions) -> tuple[Location, str, int]:
    """``(converted file, how it was found, its chunk rows)``, downloading and converting where needed."""
    given = given_location(options.path, "SMALLNORB_PATH")
    if given is None:
        folder = cache_dir() / "smallnorb"
        converted = folder / "smallnorb64.h5"
        if not converted.exists():
            for part, (md5_gz, _) in FILES.items():
                if not (folder / file_name(part)).exists():
                    download(URL + file_name(part), folder / file_name(part), {"md5": md5_gz},
                             what=f"smallNORB {part}", hint="download the six files by hand and set dataset.path "
                             "or SMALLNORB_PATH to their folder")
            convert(folder, converted)
        return converted, "cache", check_grid_file(converted, SPEC)
    location, where = given
    if name_of(location).lower().endswith((".h5", ".hdf5")):
        if not is_uri(location) and not location.is_file():
            raise DataError(f"{where}: {location}: no such file (expected a converted smallNORB .h5)")
        return location, where, check_grid_file(location, SPEC, where=where)
    if is_uri(location):
        require(location, "prefix", "a folder of the six smallNORB files", where)
    elif not location.is_dir():
        raise DataError(f"{where}: {location}: no such folder (expected the six smallNORB files)")
    if options.checksum:
        for part, digests in FILES.items():
            file, gzipped = _part(location, part)
            check_digests(file, {"md5": digests[0 if gzipped else 1]}, label=f"{where}: {file}")
    converted = converted_path("smallnorb", "smallnorb64", file_fingerprint(location))
    if not converted.exists():
        convert(location, converted)
    return converted, f"{where} (converted)", check_grid_file(converted, SPEC)


@register_dataset("smallnorb", SmallNORBOptions)
def load_smallnorb(options: SmallNORBOptions, seed: int) -> PreparedData:
    """The converted file's streamed splits and held-out ground truth.

    Returns:
        PreparedData of :func:`datasets.factor_grid.prepare_grid`: ``image`` float32 ``(1, 64, 64)``
        in [0, 1] and float32 class columns ``category``, ``elevation``, ``azimuth``, ``lighting``.

    Raises:
        DataError: If a file is missing or wrong, the download fails, or a split would be empty.
    """
    location, chosen_by, chunk_rows = _resolve(options)
    return prepare_grid(SPEC, location, options, seed, info={"file_chosen_by": chosen_by, "chunk_rows": chunk_rows})
