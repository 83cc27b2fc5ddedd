"""MPI3D (toy, realistic, real): 1,036,800 images of a robot-held object by seven factors.

Each published variant is an ``.npz`` with one array, ``images (1036800, 64, 64, 3) uint8``,
ordered as the full grid of object_color 6 x object_shape 6 x object_size 2 x camera_height 3 x
background_color 3 x horizontal_axis 40 x vertical_axis 40 (the last fastest). An ``.npz`` cannot
be streamed by rows, so it is converted once (read member by member in pieces, never whole, never
unpickled) into the factor-grid HDF5 layout of :mod:`datasets.factor_grid`, which training streams
and the metrics read by random access.

Which file is read, first match wins:

1. ``dataset.path``, else ``$MPI3D_PATH``: the published ``.npz`` (converted once into
   ``$VAE_STUDY_CACHE/mpi3d/mpi3d-<fingerprint>.h5``) or an already converted ``.h5`` (written by
   ``python -m datasets.mpi3d convert IN.npz OUT.h5``; a local path or a URI, which is what a
   cluster should use: every node reads it);
2. the ``variant``'s converted file in the cache, downloaded (12.7 GB) and converted once.

Digests: the authors publish none. Downloads are checked against digests pinned by others:
``toy`` md5 ``55889cb7...`` (disent, of the file then at storage.googleapis.com; the files have
since moved to huggingface.co), ``realistic`` sha256 ``f6124f35...`` (pinned by a public loader of
the huggingface file); ``real`` has none (the authors replaced a corrupted ``mpi3d_real.npz`` in
April 2025): its download is checked by its array's shape and dtype only. ``$MPI3D_SHA256`` replaces
the pinned digest. A given ``.npz`` is checked against the pinned digest with ``dataset.checksum: true``.

References:
    Gondal et al. 2019, "On the Transfer of Inductive Bias from Simulation to the Real World: a New
    Disentanglement Dataset", NeurIPS (arXiv:1906.03292), https://github.com/rr-learning/disentanglement_dataset;
    disentanglement_lib ``data/ground_truth/mpi3d.py`` (the grid order).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

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
from datasets.remote import BlockCachedFile, Location, given_location, name_of, require
from datasets.storage import is_uri

__all__ = ["MPI3DOptions", "load_mpi3d", "resolve_path", "read_npz_header", "convert_npz", "SPEC", "FACTOR_NAMES",
           "FACTOR_SIZES", "NUM_IMAGES", "URLS", "CHECKSUMS"]

FACTOR_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
                "horizontal_axis", "vertical_axis")
FACTOR_SIZES = (6, 6, 2, 3, 3, 40, 40)
NUM_IMAGES = 1_036_800
SPEC = GridSpec("mpi3d", FACTOR_NAMES, FACTOR_SIZES, (64, 64, 3))
NPZ_MEMBER = "images.npy"
Variant = Literal["toy", "realistic", "real"]
URLS = {v: f"https://huggingface.co/datasets/waleedgondal/mpi3d/resolve/main/mpi3d_{v}.npz"
        for v in ("toy", "realistic", "real")}
CHECKSUMS: dict[str, dict[str, str]] = {
    "toy": {"md5": "55889cb7c7dfc655d6e0277beee88868"},
    "realistic": {"sha256": "f6124f358e02846695cb3795acf8714f990c84cf02d495796898c133cf1ae866"},
    "real": {},  # replaced by the authors in April 2025; no digest of the current file is pinned
}
READ_ROWS = 4096  # rows converted at a time (48 MiB)


class MPI3DOptions(GridOptions):
    """The ``dataset`` section for MPI3D (see the module docstring for the files and checks)."""

    variant: Variant = "toy"  # the file downloaded when neither dataset.path nor $MPI3D_PATH is given


def _digests(variant: str) -> dict[str, str]:
    return {"sha256": os.environ["MPI3D_SHA256"]} if os.environ.get("MPI3D_SHA256") else CHECKSUMS[variant]


def _is_hdf5(location: Location) -> bool:
    if is_uri(location) or not Path(location).is_file():
        return name_of(location).lower().endswith((".h5", ".hdf5"))
    import h5py

    return bool(h5py.is_hdf5(location))


@contextlib.contextmanager
def _npz_member(location: Location) -> Iterator:
    """The open ``images.npy`` member of an ``.npz`` (local or at a URI, read by ranged reads).

    Raises:
        DataError: If it is not a zip or has no ``images`` array.
    """
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(BlockCachedFile(str(location)) if is_uri(location) else open(location, "rb"))
        try:
            archive = stack.enter_context(zipfile.ZipFile(raw))
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{location}: not an .npz file ({err})") from None
        if NPZ_MEMBER not in archive.namelist():
            names = sorted(n.removesuffix(".npy") for n in archive.namelist())
            raise DataError(f"{location}: key 'images' missing (found {names}); expected an MPI3D .npz")
        yield stack.enter_context(archive.open(NPZ_MEMBER))


def read_npz_header(member, location: Location, spec: GridSpec | None = None) -> None:
    """Reads and checks the ``.npy`` header of an open member (positions it at the data) against
    ``spec`` (default :data:`SPEC`).

    Raises:
        DataError: If the header is malformed, or the array is not ``(rows, H, W, C)`` uint8 in C
            order (an object array, which would need unpickling, among them).
    """
    spec = spec or SPEC
    expected = (spec.num_rows, *spec.image_shape)
    try:
        version = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(member)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{location}: key 'images' is not a readable .npy array ({err})") from None
    if tuple(shape) != expected or dtype != np.uint8 or fortran:
        order = ", Fortran order" if fortran else ""
        raise DataError(f"{location}: key 'images' must be {expected} uint8 (the full {spec.name} grid), but got "
                        f"{tuple(shape)} {dtype}{order}")


def convert_npz(source: Location, dest: Path, spec: GridSpec | None = None) -> Path:
    """Converts a published ``.npz`` into the factor-grid HDF5 layout, ``READ_ROWS`` rows at a time.

    Args:
        source: The ``.npz`` with ``images (rows, H, W, C)`` uint8 (local path or URI).
        dest: The HDF5 file to write (atomically).
        spec: The grid the array follows (default :data:`SPEC`).

    Returns:
        ``dest``.

    Raises:
        DataError: If the ``.npz`` is not in the expected layout or ends early.
    """
    spec = spec or SPEC
    row_bytes = int(np.prod(spec.image_shape))

    def fill(images) -> None:
        with _npz_member(source) as member:
            read_npz_header(member, source, spec)
            for start in range(0, spec.num_rows, READ_ROWS):
                stop = min(start + READ_ROWS, spec.num_rows)
                data = member.read((stop - start) * row_bytes)
                if len(data) != (stop - start) * row_bytes:
                    raise DataError(f"{source}: key 'images' ends at row {start + len(data) // row_bytes} of "
                                    f"{spec.num_rows}; a truncated file")
                images[start:stop] = np.frombuffer(data, dtype=np.uint8).reshape(stop - start, *spec.image_shape)

    print(f"converting {source} to {dest} (once) ...", flush=True)
    return write_grid_file(dest, spec, fill, source=str(source))


def resolve_path(options: MPI3DOptions) -> tuple[Location, str, int]:
    """``(converted HDF5 file, how it was found, its chunk rows)``, converting or downloading first
    where needed; the file is checked.

    Raises:
        DataError: If a given file is missing or not in the expected layout, or the download fails.
    """
    given = given_location(options.path, "MPI3D_PATH")
    if given is None:
        converted = cache_dir() / "mpi3d" / f"mpi3d_{options.variant}.h5"
        if not converted.exists():
            npz = cache_dir() / "mpi3d" / f"mpi3d_{options.variant}.npz"
            if not npz.exists():
                download(URLS[options.variant], npz, _digests(options.variant), what=f"MPI3D {options.variant}",
                         hint="download it by hand and set dataset.path or MPI3D_PATH")
            convert_npz(npz, converted)
            npz.unlink()  # 12.7 GB; the converted file holds the same pixels
        return converted, f"dataset.variant={options.variant}", check_grid_file(converted, SPEC)
    location, where = given
    if is_uri(location):
        require(location, "object", "an MPI3D .npz or converted .h5", where)
    elif not location.is_file():
        raise DataError(f"{where}: {location}: no such file (expected an MPI3D .npz or converted .h5)")
    if _is_hdf5(location):
        return location, where, check_grid_file(location, SPEC, where=where)
    with _npz_member(location) as member:  # refuse a wrong file before anything is converted
        read_npz_header(member, location)
    if options.checksum:
        check_digests(location, _digests(options.variant), label=f"{where}: {location}")
    converted = converted_path("mpi3d", "mpi3d", file_fingerprint(location))
    if not converted.exists():
        convert_npz(location, converted)
    return converted, f"{where} (converted)", check_grid_file(converted, SPEC)


@register_dataset("mpi3d", MPI3DOptions)
def load_mpi3d(options: MPI3DOptions, seed: int) -> PreparedData:
    """The converted file's streamed splits and held-out ground truth.

    Returns:
        PreparedData of :func:`datasets.factor_grid.prepare_grid`: ``image`` float32 ``(3, 64, 64)``
        in [0, 1] and one float32 class column per factor.

    Raises:
        DataError: If the file is missing or not in the expected layout, or a split would be empty.
    """
    location, chosen_by, chunk_rows = resolve_path(options)
    return prepare_grid(SPEC, location, options, seed, info={"file_chosen_by": chosen_by, "chunk_rows": chunk_rows})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.mpi3d", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="convert a published .npz into the streamable HDF5 layout")
    convert.add_argument("source", help="mpi3d_<variant>.npz (a local path or a URI)")
    convert.add_argument("dest", type=Path, help="the HDF5 file to write")
    args = parser.parse_args(argv)
    try:
        convert_npz(args.source, args.dest)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
