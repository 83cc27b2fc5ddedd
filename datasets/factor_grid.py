"""Ground-truth datasets stored as a full factor grid in one HDF5 file (shapes3d, mpi3d, smallnorb, cars3d).

The file holds ``images (N, H, W, C) uint8`` ordered as the full grid of the factors, the last
factor fastest: the image with factors ``(f_1, ..., f_K)`` is row ``sum_i f_i * stride_i`` with
``stride_i = prod_{j > i} size_j`` (disentanglement_lib's ``factor_bases``). Nothing else is
needed to know an image's factors, so the file is never read whole:

* **Training** streams it through Ray Data (:class:`GridSource`, built on
  :class:`datasets.hdf5.HDF5Source`): the rows are cut into contiguous blocks of ``block_rows``;
  a seeded draw holds out ``val_fraction`` of the blocks; each read task reads ``task_rows`` rows
  of randomly drawn train blocks (contiguous slices, so each HDF5 chunk is decompressed once an
  epoch) and yields them in a seeded random order, so batches mix many parts of the grid although
  the file is sorted. The order is fixed by the study seed: a resumed study sees the same data.
* **Metrics** get a :class:`GridGroundTruth` of the held-out rows: ``sample_factors`` draws
  held-out rows' factors; ``sample_observations_from_factors`` maps factor rows to file rows by the
  strides and reads just those rows by random access (:class:`ImageRows`: sorted, deduplicated,
  each touched chunk read once per call; a URI through :class:`datasets.remote.BlockCachedFile`).
  Factors that are not latent (smallNORB's instance) are drawn with the metric's ``random_state``,
  as disentanglement_lib does. The ground truth pickles without an open file (it travels to the Ray
  workers) and opens the file on first use in each process.

Published formats that cannot be streamed (the mpi3d ``.npz``, smallNORB's binary matrices,
the Cars3D ``.mat`` files) are converted once into this layout (:func:`write_grid_file`) in the
cache (:func:`cache_dir`); downloads are checked against their published digests (:func:`download`).

References:
    Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations", ICML (disentanglement_lib, ``data/ground_truth/util.py``:
    ``SplitDiscreteStateSpace``, ``StateSpaceAtomIndex``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from datasets.base import ArrayGroundTruthData
from datasets.dsprites import cache_dir
from datasets.hdf5 import HDF5Source, blocks, open_hdf5
from datasets.registry import DataError, DatasetOptions, Fingerprint, PreparedData
from datasets.remote import Location, location_of
from datasets.storage import StorageError, first_line, is_uri, open_location

__all__ = ["GridSpec", "GridOptions", "ImageRows", "GridImages", "GridGroundTruth", "GridSource", "split_grid",
           "grid_columns", "grid_datasets", "prepare_grid", "check_grid_images", "write_grid_file",
           "check_grid_file", "converted_path", "download", "check_digests", "location_digest", "cache_dir",
           "IMAGES_KEY", "GRID_FORMAT"]

IMAGES_KEY = "images"
GRID_FORMAT = "vae-study factor grid 1"  # the ``format`` attribute of files written by write_grid_file
CONVERTED_CHUNK_ROWS = 8  # rows per HDF5 chunk of converted files (96 KiB at 64x64x3): cheap random access


@dataclass(frozen=True)
class GridSpec:
    """The factor grid a file is ordered by, and which factors the metrics see.

    Attributes:
        name: The dataset's name (``"shapes3d"``), for messages.
        factor_names: Every factor of the file's grid, in file order (the last varies fastest).
        factor_sizes: Number of values of each factor.
        image_shape: ``(H, W, C)`` of one stored image.
        latent: Indices of the factors the metrics see; the others (e.g. smallNORB's instance) are
            drawn at random per observation. None: all.
    """

    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    image_shape: tuple[int, int, int]
    latent: tuple[int, ...] | None = None

    @property
    def num_rows(self) -> int:
        """Rows of the full grid, ``prod(factor_sizes)``."""
        return int(np.prod(self.factor_sizes))

    @property
    def latent_indices(self) -> tuple[int, ...]:
        return tuple(range(len(self.factor_sizes))) if self.latent is None else self.latent

    @property
    def latent_names(self) -> list[str]:
        return [self.factor_names[i] for i in self.latent_indices]

    @property
    def latent_sizes(self) -> list[int]:
        return [self.factor_sizes[i] for i in self.latent_indices]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one observation as the models see it."""
        h, w, c = self.image_shape
        return (c, h, w)

    def rows_of(self, factors: np.ndarray) -> np.ndarray:
        """File rows of full factor rows.

        Args:
            factors: int ``(num, len(factor_sizes))``, each column in ``[0, size)``.

        Returns:
            int64 ``(num,)``, ``factors @ strides``.

        Raises:
            ValueError: If the shape is wrong or a factor is out of its range.
        """
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != len(self.factor_sizes):
            raise ValueError(f"{self.name}: factors must be (num, {len(self.factor_sizes)}), but got {factors.shape}")
        sizes = np.asarray(self.factor_sizes)
        bad = (factors < 0) | (factors >= sizes)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"{self.name}: factor {self.factor_names[col]!r} must be in [0, {sizes[col]}), "
                             f"but got {factors[row, col]}")
        return np.ravel_multi_index(tuple(factors.T.astype(np.int64)), self.factor_sizes).astype(np.int64)

    def factors_of(self, rows: np.ndarray) -> np.ndarray:
        """Full factor rows, int64 ``(num, len(factor_sizes))``, of file rows ``(num,)``."""
        return np.stack(np.unravel_index(np.asarray(rows, dtype=np.int64), self.factor_sizes), axis=1).astype(np.int64)


class GridOptions(DatasetOptions):
    """The ``dataset`` section of a factor-grid dataset: where its file is and how it streams.

    ``block_rows`` is rounded up to a multiple of the file's HDF5 chunk rows (``data.json`` records
    both), so that an epoch decompresses each chunk once.
    """

    block_rows: int = Field(32, ge=1, le=1_000_000)  # contiguous rows per train/val split unit
    # Rows a read task reads (whole train blocks drawn at random) and shuffles together: batches mix
    # about task_rows / block_rows parts of the sorted grid.
    task_rows: int = Field(2048, ge=1, le=1_000_000)
    rows_per_block: int = Field(256, ge=1, le=65_536)  # rows a read task hands over at a time
    # CPUs a read task reserves; 0 because trials hold every CPU of a small cluster (RAY_NOTES.md).
    read_cpus: float = Field(0.0, ge=0.0, le=64.0)
    read_concurrency: int = Field(2, ge=1, le=1024)  # read tasks at once per dataset
    read_buffer_mb: int = Field(512, ge=8, le=1 << 20)  # object-store MiB of blocks read ahead
    # Also check a given published file's digests (downloads are always checked); slow on large files.
    checksum: bool = False


class ImageRows:
    """Rows of an HDF5 image dataset read by random access; the file opens lazily, once per process.

    Args:
        location: The HDF5 file: a local path or a URI.
        key: The dataset of images ``(N, H, W, C)``.

    Pickles without its open file (a Ray worker opens its own on first read).
    """

    def __init__(self, location: Location | str, key: str = IMAGES_KEY):
        self.location = location_of(location)
        self.key = key
        self._stack: contextlib.ExitStack | None = None
        self._dataset = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stack": None, "_dataset": None, "_pid": None}

    def _open(self):
        if self._dataset is None or self._pid != os.getpid():
            stack = contextlib.ExitStack()
            handle = stack.enter_context(open_hdf5(self.location))
            self._dataset, self._stack, self._pid = handle[self.key], stack, os.getpid()
        return self._dataset

    def close(self) -> None:
        """Closes the file (a later read opens it again)."""
        if self._stack is not None and self._pid == os.getpid():
            self._stack.close()
        self._stack = self._dataset = self._pid = None

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The images at ``rows``, in the given order (repeats allowed).

        The distinct rows are read sorted, in spans: rows in one HDF5 chunk (or adjacent rows) are
        one slice, so each touched chunk is read and decompressed once per call.

        Args:
            rows: int ``(num,)`` file rows.

        Returns:
            ``(num, H, W, C)`` in the file's dtype.

        Raises:
            IndexError: If a row is outside the file.
            DataError: If the file cannot be opened.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        data = self._open()
        if not len(rows):
            return np.empty((0, *data.shape[1:]), dtype=data.dtype)
        if rows.min() < 0 or rows.max() >= data.shape[0]:
            raise IndexError(f"{self.location}: rows must be in [0, {data.shape[0]}), but got "
                             f"{rows.min() if rows.min() < 0 else rows.max()}")
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), *data.shape[1:]), dtype=data.dtype)
        chunk = data.chunks[0] if data.chunks else 1
        for lo, hi in _spans(unique, chunk):
            first = unique[lo]
            out[lo:hi] = data[first : unique[hi - 1] + 1][unique[lo:hi] - first]
        return out[inverse.reshape(-1)]


def _spans(unique: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` index ranges of sorted distinct rows, one per run of rows sharing an HDF5 chunk or adjacent."""
    starts = [0]
    for i in range(1, len(unique)):
        if unique[i] // chunk != unique[i - 1] // chunk and unique[i] != unique[i - 1] + 1:
            starts.append(i)
    return list(zip(starts, starts[1:] + [len(unique)]))


class GridImages:
    """Images at some file rows as a lazy array ``(num, C, H, W)`` uint8: indexing reads the file.

    Args:
        reader: The file's images.
        file_rows: int ``(num,)`` file row of each entry.
        image_shape: ``(H, W, C)`` of one stored image.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, reader: ImageRows, file_rows: np.ndarray, image_shape: tuple[int, int, int]):
        self.reader = reader
        self.file_rows = np.asarray(file_rows, dtype=np.int64)
        h, w, c = image_shape
        self.shape = (len(self.file_rows), c, h, w)

    def __len__(self) -> int:
        return len(self.file_rows)

    def __getitem__(self, index) -> np.ndarray:
        """``(n, C, H, W)`` uint8 for an index array or slice; ``(C, H, W)`` for an int."""
        rows = self.file_rows[index]
        x = self.reader.read(np.atleast_1d(rows)).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x[0] if np.ndim(rows) == 0 else x)


class GridGroundTruth(ArrayGroundTruthData):
    """Held-out rows of a factor-grid file as ground-truth data, read by random access.

    ``factors`` (the latent factors of the held-out rows) sit in memory; ``images`` is a
    :class:`GridImages` that reads the file. ``sample_factors`` draws held-out rows (so do the
    metrics' fixed-factor draws, :class:`ArrayGroundTruthData` being a subset of a grid); any factor
    row of the grid has an observation.

    Args:
        spec: The file's grid.
        reader: The file's images.
        file_rows: int ``(num,)`` the held-out file rows.
    """

    def __init__(self, spec: GridSpec, reader: ImageRows, file_rows: np.ndarray):
        file_rows = np.asarray(file_rows, dtype=np.int64)
        factors = spec.factors_of(file_rows)[:, list(spec.latent_indices)]
        super().__init__(GridImages(reader, file_rows, spec.image_shape), factors, spec.latent_sizes,
                         spec.latent_names, scale=1.0 / 255.0)
        self.spec = spec
        self.reader = reader
        self.file_rows = file_rows

    def subset(self, rows: np.ndarray) -> GridGroundTruth:
        """The same file restricted to ``rows`` (indices into this dataset's rows)."""
        return GridGroundTruth(self.spec, self.reader, self.file_rows[rows])

    def sample_observations_from_factors(self, factors: np.ndarray, random_state: np.random.Generator) -> np.ndarray:
        """The file's image for each factor row; non-latent factors drawn from ``random_state``.

        Args:
            factors: int ``(num, num_factors)`` latent factor rows, each in ``[0, size)``.
            random_state: Draws the non-latent factors (one ``integers`` call per such factor).

        Returns:
            float32 ``(num, C, H, W)`` in ``[0, 1]``.

        Raises:
            ValueError: If ``factors`` has the wrong shape or a value out of range.
        """
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"{self.spec.name}: factors must be (num, {self.num_factors}), but got {factors.shape}")
        full = np.empty((len(factors), len(self.spec.factor_sizes)), dtype=np.int64)
        full[:, list(self.spec.latent_indices)] = factors
        for k, size in enumerate(self.spec.factor_sizes):
            if k not in self.spec.latent_indices:
                full[:, k] = random_state.integers(0, size, size=len(factors))
        images = self.reader.read(self.spec.rows_of(full))  # (num, H, W, C)
        return images.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(self.scale)


def grid_columns(spec: GridSpec, images: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Training columns of rows read from a grid file.

    Args:
        spec: The file's grid.
        images: ``(B, H, W, C)`` uint8.
        rows: int ``(B,)`` their file rows.

    Returns:
        ``image`` float32 ``(B, C, H, W)`` in ``[0, 1]``, and one float32 ``(B,)`` column per latent
        factor (named after it) holding its class index.
    """
    columns = {"image": images.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)}
    factors = spec.factors_of(rows)
    for k in spec.latent_indices:
        columns[spec.factor_names[k]] = factors[:, k].astype(np.float32)
    return columns


def split_grid(num_rows: int, block_rows: int, val_fraction: float, seed: int, limit: int | None = None
               ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Holds out whole contiguous blocks of a grid file, drawn at random with the seed.

    Args:
        num_rows: Rows of the file.
        block_rows: Rows per block (the last may be shorter), > 0.
        val_fraction: Fraction of the blocks held out, in (0, 1); at least one block.
        seed: Study seed; the same seed gives the same split and order.
        limit: Use only about this many rows: the first ``ceil(limit / block_rows)`` blocks of the
            seeded order (the file is sorted, so a prefix of it would fix the leading factors).

    Returns:
        ``(train_blocks, val_blocks)``: half-open ``(start, stop)`` ranges, train in a random order,
        validation in file order.

    Raises:
        DataError: If a split would be empty.
    """
    num_blocks = math.ceil(num_rows / block_rows)
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x6121D])).permutation(num_blocks)
    if limit is not None:
        order = order[: max(2, math.ceil(limit / block_rows))]
    num_val = max(1, int(round(len(order) * val_fraction)))
    if num_val >= len(order):
        raise DataError(f"dataset.block_rows={block_rows}: {min(num_rows, len(order) * block_rows)} rows make "
                        f"{len(order)} block(s), too few for a train and a val split (val_fraction={val_fraction}); "
                        f"lower block_rows or raise limit")
    ranges = [(int(i) * block_rows, min((int(i) + 1) * block_rows, num_rows)) for i in order]
    return ranges[num_val:], sorted(ranges[:num_val])


def _groups(train: Sequence[tuple[int, int]], val: Sequence[tuple[int, int]], task_rows: int
            ) -> tuple[list[list[tuple[int, int]]], list[list[tuple[int, int]]]]:
    """Read tasks: train blocks in their random order, ``task_rows`` rows a task (whole blocks);
    validation blocks merged where adjacent and cut into contiguous pieces of ``task_rows``."""
    train_groups: list[list[tuple[int, int]]] = [[]]
    for block in train:
        if train_groups[-1] and sum(b - a for a, b in train_groups[-1]) + block[1] - block[0] > task_rows:
            train_groups.append([])
        train_groups[-1].append(block)
    merged: list[tuple[int, int]] = []
    for start, stop in val:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return train_groups, [[piece] for piece in blocks(merged, task_rows)]


class GridSource(HDF5Source):
    """Read tasks over groups of row ranges of a grid file, each task's rows in a seeded random order.

    Args:
        path: The grid file: a local path or a URI.
        spec: Its grid.
        groups: One list of ``(start, stop)`` ranges per read task.
        shuffle_seed: Seed of the per-task row order (task ``i`` draws from ``SeedSequence([seed,
            0x5AFE, i])``); None keeps file order.
        rows_per_block: Rows handed over at a time, > 0.

    Yields blocks of :func:`grid_columns`. ``GridDatasource`` is this class with Ray Data's
    ``Datasource`` base, made on first use.
    """

    def __init__(self, path: Location | str, spec: GridSpec, groups: Sequence[Sequence[tuple[int, int]]], *,
                 shuffle_seed: int | None, rows_per_block: int = 256):
        ranges = [(int(a), int(b)) for group in groups for a, b in group]
        super().__init__(path, [IMAGES_KEY], ranges=ranges, rows_per_block=rows_per_block, check_finite=False)
        self.spec = spec
        self.groups = [[(int(a), int(b)) for a, b in group] for group in groups]
        self.shuffle_seed = shuffle_seed

    def get_name(self) -> str:
        return "Grid"  # Ray Data shows "ReadGrid"

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list:
        """One read task per group (``parallelism`` is not used: the groups fix the order)."""
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        tasks = []
        for index, group in enumerate(self.groups):
            rows = sum(b - a for a, b in group)
            meta = BlockMetadata(num_rows=rows, size_bytes=rows * self._row_bytes * 4, input_files=[self.path],
                                 exec_stats=None)
            # The task carries its own group only (not the whole source): a split has thousands of blocks.
            read = functools.partial(_read_group, self.path, self.spec, group, index, self.shuffle_seed,
                                     self.rows_per_block)
            tasks.append(ReadTask(read, meta, per_task_row_limit=per_task_row_limit))
        return tasks


def _read_group(path: str, spec: GridSpec, group: Sequence[tuple[int, int]], index: int, shuffle_seed: int | None,
                rows_per_block: int) -> Iterator:
    """Arrow blocks of a read task's rows (runs inside a Ray read task); see :class:`GridSource`."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    with open_hdf5(location_of(path)) as handle:
        data = handle[IMAGES_KEY]
        images = np.concatenate([data[a:b] for a, b in sorted(group)])
    rows = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in sorted(group)])
    if shuffle_seed is not None:
        order = np.random.default_rng(np.random.SeedSequence([shuffle_seed, 0x5AFE, index])).permutation(len(rows))
        images, rows = images[order], rows[order]
    for start in range(0, len(rows), rows_per_block):
        columns = grid_columns(spec, images[start : start + rows_per_block], rows[start : start + rows_per_block])
        yield pa.table({name: ArrowTensorArray.from_numpy(np.ascontiguousarray(a)) if a.ndim > 1 else pa.array(a)
                        for name, a in columns.items()})


def __getattr__(name: str):
    """``GridDatasource``: :class:`GridSource` with Ray Data's ``Datasource`` base, built on first use."""
    if name != "GridDatasource":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _datasource_class()


def _datasource_class() -> type:
    if "GridDatasource" in globals():
        return globals()["GridDatasource"]
    from ray.data import Datasource

    cls = type("GridDatasource", (GridSource, Datasource), {"__module__": __name__, "__doc__": GridSource.__doc__})
    globals()["GridDatasource"] = cls  # cloudpickle finds it by name in the read tasks
    return cls


def grid_datasets(path: Location | str, spec: GridSpec, train_groups: Sequence[Sequence[tuple[int, int]]],
                  val_groups: Sequence[Sequence[tuple[int, int]]], seed: int, *, rows_per_block: int,
                  read_cpus: float, read_concurrency: int, read_buffer_mb: int) -> dict[str, Any]:
    """``{"train", "val"}`` lazy Ray datasets streamed from a grid file (needs Ray initialised).

    Train tasks yield their rows shuffled (seeded by ``seed``); validation rows come in file order.
    """
    import ray.data

    out = {}
    for split, groups, shuffle in (("train", train_groups, seed), ("val", val_groups, None)):
        source = _datasource_class()(path, spec, groups, shuffle_seed=shuffle, rows_per_block=rows_per_block)
        ds = ray.data.read_datasource(source, num_cpus=read_cpus, concurrency=min(read_concurrency, len(groups)),
                                      override_num_blocks=len(groups))
        limits = ds.context.execution_options.resource_limits
        ds.context.execution_options.resource_limits = limits.copy(object_store_memory=float(read_buffer_mb * 2**20))
        out[split] = ds
    return out


def check_grid_images(location: Location | str, spec: GridSpec, *, where: str | None = None) -> int:
    """Checks that a file's ``images`` is the full grid of ``spec``; returns its HDF5 chunk rows.

    Raises:
        DataError: One line naming the file, if it is missing, not HDF5, lacks ``images``, or
            ``images`` is not ``(prod(factor_sizes), H, W, C)`` uint8.
    """
    expected = (spec.num_rows, *spec.image_shape)
    prefix = f"{where}: " if where else ""
    with open_hdf5(location) as handle:
        if IMAGES_KEY not in handle or not hasattr(handle[IMAGES_KEY], "shape"):
            raise DataError(f"{prefix}{location}: key {IMAGES_KEY!r} missing (found {sorted(handle.keys())}); "
                            f"expected a {spec.name} file with images {expected} uint8")
        data = handle[IMAGES_KEY]
        if data.shape != expected or data.dtype != np.uint8:
            raise DataError(f"{prefix}{location}: key {IMAGES_KEY!r} must be {expected} uint8 (the full {spec.name} "
                            f"grid {dict(zip(spec.factor_names, spec.factor_sizes))}), but got {data.shape} {data.dtype}")
        return int(data.chunks[0]) if data.chunks else 1


def prepare_grid(spec: GridSpec, location: Location | str, options: GridOptions, seed: int, *,
                 info: Mapping[str, Any]) -> PreparedData:
    """PreparedData of a checked grid file: streamed splits and the held-out ground truth.

    Args:
        spec: The file's grid.
        location: The file (a local path or a URI), already checked (:func:`check_grid_images`).
        options: The ``dataset`` section.
        seed: Study seed (the split and the train order).
        info: Facts for ``data.json`` (how the file was found, its chunk rows...); must hold
            ``chunk_rows``.

    Returns:
        PreparedData with empty ``train``/``val``, ``ray_datasets`` building ``{"train", "val"}``
        (columns ``image`` float32 ``(C, H, W)`` in [0, 1] and one float32 class column per latent
        factor), ``ground_truth`` the held-out rows (:class:`GridGroundTruth`).

    Raises:
        DataError: If a split would be empty.
    """
    chunk = max(1, int(info["chunk_rows"]))
    block_rows = chunk * math.ceil(options.block_rows / chunk)
    train, val = split_grid(spec.num_rows, block_rows, options.val_fraction, seed, options.limit)
    train_groups, val_groups = _groups(train, val, max(options.task_rows, block_rows))
    val_rows = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in val])
    location = location_of(location)
    ground_truth = GridGroundTruth(spec, ImageRows(location), val_rows)
    build = functools.partial(grid_datasets, location, spec, train_groups, val_groups, seed,
                              rows_per_block=options.rows_per_block, read_cpus=options.read_cpus,
                              read_concurrency=options.read_concurrency, read_buffer_mb=options.read_buffer_mb)
    names = spec.latent_names
    return PreparedData(
        train={}, val={}, input_shape=spec.input_shape, ground_truth=ground_truth, source=location,
        info={**info, "num_train": sum(b - a for a, b in train), "num_val": len(val_rows),
              "block_rows": block_rows, "train_tasks": len(train_groups), "factor_names": names,
              "factors_num_values": spec.latent_sizes, "columns": ["image", *names]},
        ray_datasets=build, column_shapes={"image": spec.input_shape, **{name: () for name in names}},
        column_classes=dict(zip(names, spec.latent_sizes)),
    )


# Converted files.


def write_grid_file(dest: Path, spec: GridSpec, fill: Callable[[Any], None], *, source: str,
                    chunk_rows: int = CONVERTED_CHUNK_ROWS) -> Path:
    """Writes a grid file (``images`` chunked ``chunk_rows`` rows, lzf-compressed) atomically.

    Args:
        dest: The file; written beside it under a temporary name and renamed once complete.
        spec: The grid (sets the shape and the ``dataset`` attribute).
        fill: ``fill(images_dataset)`` writes the rows (h5py dataset ``(N, H, W, C)`` uint8);
            rows it leaves unwritten read as 0.
        source: What was converted, stored in the ``source`` attribute.
        chunk_rows: Rows per HDF5 chunk, > 0.

    Returns:
        ``dest``.
    """
    import h5py

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".h5.part")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as handle:
            handle.attrs.update({"format": GRID_FORMAT, "dataset": spec.name, "source": source,
                                 "factor_names": list(spec.factor_names), "factor_sizes": list(spec.factor_sizes)})
            data = handle.create_dataset(IMAGES_KEY, (spec.num_rows, *spec.image_shape), dtype=np.uint8,
                                         chunks=(chunk_rows, *spec.image_shape), compression="lzf")
            fill(data)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def check_grid_file(location: Location | str, spec: GridSpec, *, where: str | None = None) -> int:
    """Checks a file written by :func:`write_grid_file` for ``spec``; returns its chunk rows.

    Raises:
        DataError: One line naming the file, if it is not such a file or not for ``spec.name``.
    """
    prefix = f"{where}: " if where else ""
    with open_hdf5(location) as handle:
        found = (handle.attrs.get("format"), handle.attrs.get("dataset"))
    if found != (GRID_FORMAT, spec.name):
        raise DataError(f"{prefix}{location}: not a converted {spec.name} file (attributes format/dataset are "
                        f"{found}, expected {(GRID_FORMAT, spec.name)}); give the published files instead")
    return check_grid_images(location, spec, where=where)


def converted_path(subdir: str, stem: str, fingerprint: Fingerprint) -> Path:
    """``cache_dir()/subdir/stem-<first 16 hex of the source's fingerprint>.h5``: one conversion per source."""
    return cache_dir() / subdir / f"{stem}-{fingerprint.sha256[:16]}.h5"


# Downloads and digests.


def _digests_of(stream_chunks: Iterator[bytes], algorithms: Sequence[str]) -> dict[str, str]:
    hashes = {name: hashlib.new(name) for name in algorithms}
    for chunk in stream_chunks:
        for h in hashes.values():
            h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def location_digest(location: Location | str, algorithms: Sequence[str]) -> dict[str, str]:
    """Hex digests (``"md5"``, ``"sha256"``...) of a whole local file or object at a URI, read once.

    Raises:
        DataError: If it cannot be read.
    """
    def chunks(read) -> Iterator[bytes]:
        while block := read(1 << 20):
            yield block

    try:
        if is_uri(location):
            fs, path, _ = open_location(str(location))
            with fs.open_input_stream(path) as stream:
                return _digests_of(chunks(stream.read), algorithms)
        with open(location, "rb") as handle:
            return _digests_of(chunks(handle.read), algorithms)
    except StorageError as err:
        raise DataError(str(err)) from None
    except OSError as err:
        raise DataError(f"{location}: cannot be read ({first_line(err)})") from None


def check_digests(location: Location | str, digests: Mapping[str, str], *, size: int | None = None,
                  label: str | None = None) -> None:
    """Checks a file's size and digests against published values.

    Args:
        location: The file (local path or URI).
        digests: Algorithm -> expected hex digest; may be empty.
        size: Expected bytes, or None.
        label: Names the file in the message (default: ``location``).

    Raises:
        DataError: One line naming the file, the algorithm and both values, on the first mismatch.
    """
    label = label or str(location)
    if size is not None:
        actual = _size_of(location)
        if actual != size:
            raise DataError(f"{label}: {actual} bytes, but the published file has {size}; a different or "
                            f"truncated file")
    if digests:
        actual_digests = location_digest(location, list(digests))
        for algorithm, expected in digests.items():
            if actual_digests[algorithm] != expected.lower():
                raise DataError(f"{label}: {algorithm} {actual_digests[algorithm]} does not match the published "
                                f"{expected}; a different or damaged file")


def _size_of(location: Location | str) -> int:
    if not is_uri(location):
        return Path(location).stat().st_size
    fs, path, _ = open_location(str(location))
    return fs.get_file_info(path).size


def download(url: str, dest: Path, digests: Mapping[str, str], *, what: str, hint: str,
             size: int | None = None, timeout: float = 60.0) -> Path:
    """Downloads ``url`` to ``dest`` (written beside it, renamed once its size and digests match).

    Args:
        url: Where the published file is (``https://...``; ``file://`` works too).
        dest: The cache file.
        digests: Algorithm -> published hex digest (``{}`` where none is published: then ``size``
            or the loader's schema checks are all that guard the file).
        what: The dataset, for messages (``"3dshapes.h5"``).
        hint: What to do instead, ending the error line (``"set dataset.path to a local copy"``).
        size: Published bytes, or None.
        timeout: Seconds to wait for the server.

    Raises:
        DataError: When offline, on an HTTP error, or when the size or a digest differs.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {what} ({url}) to {dest} ...", flush=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        check_digests(Path(tmp), digests, size=size, label=f"{url} (downloaded)")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise DataError(f"{err}; {hint}") from None
        raise DataError(f"downloading {what} from {url} failed ({getattr(err, 'reason', err)}); {hint}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
