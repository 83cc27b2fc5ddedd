"""3D Shapes: 480,000 renders of an object in a room, by six factors, streamed from ``3dshapes.h5``.

The published file (Burgess & Kim 2018) holds ``images (480000, 64, 64, 3) uint8`` and
``labels (480000, 6) float64``, the factor *values* of each image, ordered as the full grid of
floor_hue 10 x wall_hue 10 x object_hue 10 x scale 8 x shape 4 x orientation 15 (orientation
fastest). Loading checks the layout and that the labels follow that order (each column's sorted
distinct values give the class indices; the row order must be the grid's), then streams the file:
training through Ray Data, the metrics by random access into the same file
(:mod:`datasets.factor_grid`), so the 5.9 GB of pixels never sit in memory.

Which file is read, first match wins: ``dataset.path`` (a local path or a URI such as
``s3://bucket/3dshapes.h5``), ``$SHAPES3D_PATH``, else ``3dshapes.h5`` in the cache
(``$VAE_STUDY_CACHE/shapes3d``), downloaded once from DeepMind's bucket and checked against the
published size (267,573,662 bytes) and md5 (``099a2078...``; also pinned by disent and other
loaders), and its size checked on every load. A given file is checked by its layout and labels,
and also by the published size and md5 with ``dataset.checksum: true``.

References:
    Burgess & Kim 2018, "3D Shapes Dataset", https://github.com/deepmind/3d-shapes;
    Kim & Mnih 2018, "Disentangling by Factorising", ICML (arXiv:1802.05983);
    disentanglement_lib ``data/ground_truth/shapes3d.py`` (factor order and sizes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.factor_grid import (
    GridOptions,
    GridSpec,
    cache_dir,
    check_digests,
    check_grid_images,
    download,
    prepare_grid,
)
from datasets.hdf5 import open_hdf5
from datasets.registry import DataError, PreparedData, register_dataset
from datasets.remote import Location, given_location, require
from datasets.storage import is_uri

__all__ = ["Shapes3DOptions", "load_shapes3d", "resolve_path", "check_file", "label_classes", "SPEC",
           "FACTOR_NAMES", "FACTOR_SIZES", "NUM_IMAGES", "URL", "FILE_BYTES", "CHECKSUMS"]

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
NUM_IMAGES = 480_000
FILENAME = "3dshapes.h5"
URL = "https://storage.googleapis.com/3d-shapes/3dshapes.h5"
FILE_BYTES = 267_573_662
# DeepMind publishes no digest; this md5 of the bucket's file is pinned alike by disent
# (nmichlo/disent, ``uri_hash['full']``) and other public loaders.
CHECKSUMS = {"md5": "099a2078d58cec4daad0702c55d06868"}
LABELS_KEY = "labels"
SPEC = GridSpec("shapes3d", FACTOR_NAMES, FACTOR_SIZES, (64, 64, 3))


class Shapes3DOptions(GridOptions):
    """The ``dataset`` section for 3D Shapes (see the module docstring for the file and its checks)."""


def resolve_path(path: str | Path | None) -> tuple[Location, str | None]:
    """``(file, where it was given)``: ``dataset.path``, else ``$SHAPES3D_PATH``, else the cached
    download (``where`` None).

    Raises:
        DataError: If a given file or object does not exist, or the download fails.
    """
    given = given_location(path, "SHAPES3D_PATH")
    if given is None:
        cached = cache_dir() / "shapes3d" / FILENAME
        if not cached.exists():
            download(URL, cached, CHECKSUMS, size=FILE_BYTES, what=FILENAME,
                     hint="download it by hand and set dataset.path or SHAPES3D_PATH")
        return cached, None
    location, where = given
    if is_uri(location):
        return require(location, "object", "3dshapes.h5", where), where
    if not location.is_file():
        raise DataError(f"{where}: {location}: no such file (expected 3dshapes.h5)")
    return location, where


def label_classes(labels: np.ndarray, location: Location | str) -> np.ndarray:
    """The class index of each label value: its rank among the column's distinct values.

    Args:
        labels: ``(N, 6)`` factor values (floats in the published file).
        location: The file, for messages.

    Returns:
        int64 ``(N, 6)``, column k in ``[0, FACTOR_SIZES[k])``.

    Raises:
        DataError: If a column does not hold exactly ``FACTOR_SIZES[k]`` distinct values.
    """
    classes = np.empty(labels.shape, dtype=np.int64)
    for k, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
        values, classes[:, k] = np.unique(labels[:, k], return_inverse=True)
        if len(values) != size:
            raise DataError(f"{location}: key {LABELS_KEY!r} column {k} ({name}) holds {len(values)} distinct "
                            f"values; expected {size}")
    return classes


def check_file(location: Location | str, where: str | None = None) -> int:
    """Checks a 3dshapes.h5 file's layout and row order; returns its images' HDF5 chunk rows.

    Raises:
        DataError: One line naming the file and key, if ``images`` is not ``(480000, 64, 64, 3)``
            uint8, ``labels`` is not ``(480000, 6)`` numbers with the factor sizes, or the rows are
            not in the grid's order.
    """
    chunk_rows = check_grid_images(location, SPEC, where=where)
    prefix = f"{where}: " if where else ""
    with open_hdf5(location) as handle:
        if LABELS_KEY not in handle or not hasattr(handle[LABELS_KEY], "shape"):
            raise DataError(f"{prefix}{location}: key {LABELS_KEY!r} missing (found {sorted(handle.keys())}); "
                            f"expected labels ({NUM_IMAGES}, 6)")
        data = handle[LABELS_KEY]
        if data.shape != (NUM_IMAGES, 6) or data.dtype.kind not in "fiu":
            raise DataError(f"{prefix}{location}: key {LABELS_KEY!r} must be ({NUM_IMAGES}, 6) numbers, but got "
                            f"{data.shape} {data.dtype}")
        labels = data[:]
    classes = label_classes(labels, location)
    expected = SPEC.factors_of(np.arange(NUM_IMAGES))
    wrong = np.flatnonzero((classes != expected).any(axis=1))
    if len(wrong):
        raise DataError(f"{prefix}{location}: rows are not in the factor grid's order (row {wrong[0]} has factor "
                        f"classes {classes[wrong[0]].tolist()}, expected {expected[wrong[0]].tolist()})")
    return chunk_rows


@register_dataset("shapes3d", Shapes3DOptions)
def load_shapes3d(options: Shapes3DOptions, seed: int) -> PreparedData:
    """Checks the file and returns its streamed splits and held-out ground truth.

    Returns:
        PreparedData of :func:`datasets.factor_grid.prepare_grid`: columns ``image`` float32
        ``(3, 64, 64)`` in [0, 1] and one float32 class column per factor; the metrics' ground truth
        reads the held-out rows from the file.

    Raises:
        DataError: If the file is missing, fails its checks (size and digest where they apply), or
            a split would be empty.
    """
    location, where = resolve_path(options.path)
    if where is None:  # the cached download: its size on every load (the digest was checked when downloaded)
        check_digests(location, {}, size=FILE_BYTES)
    elif options.checksum:
        check_digests(location, CHECKSUMS, size=FILE_BYTES, label=f"{where}: {location}")
    chunk_rows = check_file(location, where)
    return prepare_grid(SPEC, location, options, seed,
                        info={"file_chosen_by": where or "cache", "chunk_rows": chunk_rows})
