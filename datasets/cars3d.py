"""Cars3D: 17,568 renders of 183 car models by elevation (4) and azimuth (24).

Published by Reed et al. as ``nips2015-analogy-data.tar.gz``, whose ``data/cars/`` folder holds one
MATLAB file per car, ``car_<id>_mesh.mat``, with ``im (128, 128, 3, 24, 4) uint8`` (height, width,
RGB, azimuth, elevation), and ``list.txt`` naming the cars in order. Each image is resized to 64x64
(Lanczos, as disentanglement_lib's thumbnail) and the whole converted once into the factor-grid HDF5
layout of :mod:`datasets.factor_grid`, rows ordered by elevation 4 x azimuth 24 x object 183 (the
object fastest, disentanglement_lib's order). The object index is the car's line in ``list.txt``
(else the file names sorted). The ``.mat`` files are read by :func:`scipy.io.loadmat` (MATLAB's
format, no pickle).

Which file is read, first match wins: ``dataset.path``, else ``$CARS3D_PATH``: the ``.tar.gz``, a
folder of the ``.mat`` files (with ``list.txt``), or a converted ``.h5``; else the archive
downloaded into ``$VAE_STUDY_CACHE/cars3d`` and checked against the md5 disent pins for it (the
authors publish none).

References:
    Reed, Zhang, Zhang, Lee 2015, "Deep Visual Analogy-Making", NeurIPS, http://www.scottreed.info/;
    disentanglement_lib ``data/ground_truth/cars3d.py``.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

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
from datasets.remote import (
    BlockCachedFile,
    Location,
    child,
    given_location,
    list_objects,
    name_of,
    read_object,
    require,
)
from datasets.storage import is_uri

__all__ = ["Cars3DOptions", "load_cars3d", "read_mesh", "convert", "SPEC", "FACTOR_NAMES", "FACTOR_SIZES", "URL",
           "CHECKSUMS"]

FACTOR_NAMES = ("elevation", "azimuth", "object")
FACTOR_SIZES = (4, 24, 183)
SPEC = GridSpec("cars3d", FACTOR_NAMES, FACTOR_SIZES, (64, 64, 3))
URL = "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz"
ARCHIVE = "nips2015-analogy-data.tar.gz"
CHECKSUMS = {"md5": "4e866a7919c1beedf53964e6f7a23686"}  # pinned by disent (nmichlo/disent); none published
MESH_SHAPE = (128, 128, 3, 24, 4)  # height, width, RGB, azimuth, elevation


class Cars3DOptions(GridOptions):
    """The ``dataset`` section for Cars3D (see the module docstring for the files and checks)."""


def read_mesh(data: bytes, label: str) -> np.ndarray:
    """One car's images from its ``.mat`` file, resized.

    Args:
        data: The file's bytes.
        label: Names the file in messages.

    Returns:
        uint8 ``(4, 24, 64, 64, 3)``: elevation, azimuth, then the 64x64 RGB image.

    Raises:
        DataError: If it is not a MATLAB file with ``im`` of shape ``(128, 128, 3, 24, 4)`` uint8.
    """
    from PIL import Image
    from scipy.io import loadmat

    try:
        mesh = loadmat(io.BytesIO(data), variable_names=["im"]).get("im")
    except (ValueError, TypeError, NotImplementedError, OSError, KeyError, zlib.error) as err:
        raise DataError(f"{label}: not a readable MATLAB file ({str(err)[:200]})") from None
    if mesh is None or mesh.shape != MESH_SHAPE or mesh.dtype != np.uint8:
        found = "no 'im'" if mesh is None else f"im {mesh.shape} {mesh.dtype}"
        raise DataError(f"{label}: expected im {MESH_SHAPE} uint8 (height, width, RGB, azimuth, elevation), "
                        f"but found {found}")
    out = np.empty((4, 24, 64, 64, 3), dtype=np.uint8)
    for e in range(4):
        for a in range(24):
            image = Image.fromarray(np.ascontiguousarray(mesh[:, :, :, a, e]))
            out[e, a] = np.asarray(image.resize((64, 64), Image.Resampling.LANCZOS))
    return out


def _members(source: Location) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of the ``.mat`` files and ``list.txt`` of a Cars3D archive or folder."""
    name = name_of(source).lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        raw = BlockCachedFile(str(source)) if is_uri(source) else open(source, "rb")
        try:
            with raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
                for member in archive:
                    path = PurePosixPath(member.name)
                    if member.isfile() and path.parent.name == "cars" and (path.suffix == ".mat" or path.name == "list.txt"):
                        yield path.name, archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise DataError(f"{source}: not a readable tar archive ({err})") from None
        return
    keys = [k for k, _ in list_objects(str(source))] if is_uri(source) else sorted(p.name for p in Path(source).iterdir())
    for key in keys:
        if "/" not in key and (key.endswith(".mat") or key == "list.txt"):
            location = child(source, key)
            yield key, read_object(str(location)) if is_uri(location) else Path(location).read_bytes()


def convert(source: Location, dest: Path) -> Path:
    """Converts the published archive or folder into the factor-grid HDF5 layout.

    Raises:
        DataError: If a file is wrong, or there are not 183 cars (``list.txt`` names a missing one).
    """
    print(f"converting Cars3D from {source} to {dest} (once) ...", flush=True)
    meshes: dict[str, np.ndarray] = {}
    listed: list[str] | None = None
    for name, data in _members(source):
        if name == "list.txt":
            listed = [line.strip() + ".mat" for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
        else:
            meshes[name] = read_mesh(data, f"{source}: {name}")
    order = listed if listed is not None else sorted(meshes)
    missing = [name for name in order if name not in meshes]
    if missing or len(order) != FACTOR_SIZES[2]:
        raise DataError(f"{source}: expected {FACTOR_SIZES[2]} car .mat files" + (" named in list.txt" if listed else "")
                        + f", but found {len(meshes)}" + (f" (missing {missing[0]})" if missing else ""))
    images = np.stack([meshes[name] for name in order], axis=2)  # (4, 24, 183, 64, 64, 3)

    def fill(data) -> None:
        data[:] = images.reshape(SPEC.num_rows, 64, 64, 3)

    return write_grid_file(dest, SPEC, fill, source=str(source))


def _resolve(options: Cars3DOptions) -> tuple[Location, str, int]:
    """``(converted file, how it was found, its chunk rows)``, downloading and converting where needed."""
    given = given_location(options.path, "CARS3D_PATH")
    if given is None:
        converted = cache_dir() / "cars3d" / "cars3d64.h5"
        if not converted.exists():
            archive = cache_dir() / "cars3d" / ARCHIVE
            if not archive.exists():
                download(URL, archive, CHECKSUMS, what="Cars3D", hint="download it by hand and set dataset.path or "
                         "CARS3D_PATH")
            convert(archive, converted)
        return converted, "cache", check_grid_file(converted, SPEC)
    location, where = given
    name = name_of(location).lower()
    if is_uri(location):
        require(location, "prefix" if not name.endswith((".h5", ".hdf5", ".tar.gz", ".tgz", ".tar")) else "object",
                "Cars3D files", where)
    elif not location.exists():
        raise DataError(f"{where}: {location}: no such file or folder (expected {ARCHIVE}, a folder of "
                        f"car_*_mesh.mat files, or a converted .h5)")
    if name.endswith((".h5", ".hdf5")):
        return location, where, check_grid_file(location, SPEC, where=where)
    if options.checksum and name.endswith(".tar.gz"):
        check_digests(location, CHECKSUMS, label=f"{where}: {location}")
    converted = converted_path("cars3d", "cars3d64", file_fingerprint(location))
    if not converted.exists():
        convert(location, converted)
    return converted, f"{where} (converted)", check_grid_file(converted, SPEC)


@register_dataset("cars3d", Cars3DOptions)
def load_cars3d(options: Cars3DOptions, seed: int) -> PreparedData:
    """The converted file's streamed splits and held-out ground truth.

    Returns:
        PreparedData of :func:`datasets.factor_grid.prepare_grid`: ``image`` float32 ``(3, 64, 64)``
        in [0, 1] and float32 class columns ``elevation``, ``azimuth``, ``object``.

    Raises:
        DataError: If a file is missing or wrong, the download fails, or a split would be empty.
    """
    location, chosen_by, chunk_rows = _resolve(options)
    return prepare_grid(SPEC, location, options, seed, info={"file_chosen_by": chosen_by, "chunk_rows": chunk_rows})
