"""HDF5 files as streamed Ray Data datasets, and their validation at load time.

Ray Data has no HDF5 reader. :class:`HDF5Datasource` splits the requested row ranges of named
HDF5 datasets into contiguous read tasks; each task opens the file itself (``h5py``, never
in the driver) and yields blocks of a few hundred rows, optionally transformed (preprocessing
runs in the read tasks, in parallel). An epoch therefore streams a file larger than memory
with bounded memory: Ray Data's streaming executor holds only the blocks in flight.

The file is a local path or a URI (``s3://bucket/jets.h5``): an object in storage is opened
through :class:`datasets.remote.BlockCachedFile` (h5py reads a seekable file object), inside each
read task, so only the rows a task reads cross the network and a file larger than any node's
disk streams from the bucket.

:func:`check_hdf5` validates a file before Ray starts, raising :class:`DataError` with one
line naming the file and key.

Example:
    >>> rows = check_hdf5("jets.h5", {"X_jets": KeySpec(4), "y": KeySpec(1)})  # doctest: +SKIP
    >>> ds = read_hdf5("jets.h5", ["X_jets", "y"], ranges=[(0, rows)])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.registry import DataError
from datasets.remote import BlockCachedFile, Location, location_of, require
from datasets.storage import is_uri

__all__ = ["KeySpec", "check_hdf5", "open_hdf5", "HDF5Source", "read_hdf5", "blocks", "ROW_COLUMN"]

ROW_COLUMN = "row"  # int64 source row of each output row (coverage checks)

Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class KeySpec:
    """What one HDF5 dataset of a file must look like.

    Attributes:
        ndim: Rank including the row axis (1 for a per-row scalar).
        kinds: Accepted numpy dtype kinds: ``"f"`` floating, ``"i"``/``"u"`` integers, ``"b"`` bool.
        shape: Required sizes of the non-row axes (``None`` entries accept any size), or None.
        finite: Scan the values for NaN and inf (floating keys only).
    """

    ndim: int
    kinds: str = "f"
    shape: tuple[int | None, ...] | None = None
    finite: bool = True

    def describe(self) -> str:
        dims = ", ".join(["N", *("?" if s is None else str(s) for s in (self.shape or (None,) * (self.ndim - 1)))])
        names = {"f": "float", "i": "int", "u": "uint", "b": "bool"}
        return f"({dims}) {'/'.join(names[k] for k in self.kinds)}"


@contextlib.contextmanager
def open_hdf5(location: str | Location) -> Iterator:
    """``h5py.File(location, "r")`` of a local file, or of an object at a URI read through a
    :class:`~datasets.remote.BlockCachedFile`; closed (with its file object) on exit.

    Raises:
        DataError: One line naming the file or URI, when it is missing or not HDF5.
    """
    import h5py

    if is_uri(location):
        uri = str(location)
        try:
            handle = BlockCachedFile(uri)
        except DataError:
            require(uri, "object", "an HDF5 file")  # names a missing bucket or a prefix
            raise
        with handle:
            try:
                f = h5py.File(handle, "r")
            except OSError as err:
                raise DataError(f"{uri}: not a readable HDF5 file ({str(err).splitlines()[0][:200]})") from None
            with f:
                yield f
        return
    path = Path(location)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected an HDF5 file)")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: unreadable HDF5 file ({err})") from None
    with f:
        yield f


def check_hdf5(path: str | Location, keys: Mapping[str, KeySpec], *, scan_rows: int | None = None,
               chunk_rows: int = 256) -> int:
    """Validates the layout and values of an HDF5 file; returns its number of rows.

    Non-finite values are looked for in chunks of ``chunk_rows`` rows, so memory stays at one
    chunk per key whatever the file's size (a full scan reads the whole file once).

    Args:
        path: The HDF5 file: a local path or a URI (``s3://bucket/jets.h5``).
        keys: Dataset name -> what it must be.
        scan_rows: Rows scanned for NaN/inf, from the start; None scans all (the read tasks of
            :class:`HDF5Datasource` also check every block they read); 0 scans none.
        chunk_rows: Rows read at a time during the scan, > 0.

    Returns:
        The common number of rows N (> 0).

    Raises:
        DataError: One line naming the file and key, if the file is missing or not HDF5, a key
            is missing or not a dataset, has the wrong rank, shape or dtype, is empty, the keys'
            lengths differ, or a scanned value is NaN or infinite.
    """
    path = location_of(path)
    with open_hdf5(path) as f:
        lengths: dict[str, int] = {}
        for key, spec in keys.items():
            if key not in f:
                raise DataError(f"{path}: key {key!r} missing (found {sorted(f.keys())}); expected {spec.describe()}")
            data = f[key]
            if not hasattr(data, "shape"):
                raise DataError(f"{path}: key {key!r} is a group, expected a dataset {spec.describe()}")
            if data.ndim != spec.ndim:
                raise DataError(f"{path}: key {key!r} must have rank {spec.ndim} {spec.describe()}, "
                                f"but got shape {data.shape}")
            if spec.shape is not None and any(s is not None and s != d for s, d in zip(spec.shape, data.shape[1:])):
                raise DataError(f"{path}: key {key!r} must be {spec.describe()}, but got shape {data.shape}")
            if data.dtype.kind not in spec.kinds:
                raise DataError(f"{path}: key {key!r} must be {spec.describe()}, but got dtype {data.dtype}")
            if data.shape[0] == 0 or data.size == 0:
                raise DataError(f"{path}: key {key!r} is empty (shape {data.shape})")
            lengths[key] = data.shape[0]
        if len(set(lengths.values())) > 1:
            first, other = next(iter(lengths)), next(k for k, n in lengths.items() if n != next(iter(lengths.values())))
            raise DataError(f"{path}: keys {first!r} and {other!r} have different lengths "
                            f"({lengths[first]} vs {lengths[other]} rows)")
        num_rows = next(iter(lengths.values()))
        stop = num_rows if scan_rows is None else min(num_rows, scan_rows)
        for key, spec in keys.items():
            if spec.finite and f[key].dtype.kind == "f":
                for start in range(0, stop, chunk_rows):
                    _check_finite(path, key, f[key][start : min(start + chunk_rows, stop)], start)
    return num_rows


def _check_finite(path: Location, key: str, values: np.ndarray, start: int) -> None:
    """DataError naming the first row of ``values`` (rows from ``start``) holding NaN or inf."""
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        row = start + int(np.argmax(bad))
        raise DataError(f"{path}: key {key!r} has NaN or infinite values (first at row {row})")


def blocks(ranges: Sequence[tuple[int, int]], rows: int) -> list[tuple[int, int]]:
    """Splits row ranges into consecutive pieces of at most ``rows`` rows, keeping their order.

    Example:
        >>> blocks([(0, 5), (10, 12)], 2)
        [(0, 2), (2, 4), (4, 5), (10, 12)]
    """
    if rows <= 0:
        raise ValueError(f"rows must be > 0, but got {rows}")
    return [(s, min(s + rows, stop)) for start, stop in ranges for s in range(start, stop, rows)]


class HDF5Source:
    """Contiguous row ranges of named HDF5 datasets, read in parallel Ray Data read tasks.

    One read task per piece of at most ``rows_per_task`` rows of ``ranges`` (in the given
    order); a task opens the file, reads ``rows_per_block`` rows at a time, checks floating
    values for NaN/inf, applies ``transform`` and yields an Arrow block. Columns of rank > 1
    become Arrow tensor columns.

    Args:
        path: The HDF5 file: a local path (readable at the same path where the tasks run) or a
            URI (each task opens the object itself, with the credentials of its node).
        keys: Names of the HDF5 datasets to read; each becomes a column of that name (before
            ``transform``).
        ranges: ``[(start, stop), ...]`` half-open row ranges, in reading order; None: all rows.
        rows_per_task: Rows per read task, > 0 (the unit Ray Data schedules and shards).
        rows_per_block: Rows read, transformed and yielded at a time, > 0 (Ray Data joins yields
            into blocks of up to its ``target_max_block_size``; see ``read_hdf5(max_block_bytes=)``).
        transform: ``columns -> columns`` applied to each block of numpy arrays ``(B, ...)``
            (preprocessing); must be picklable. It sees the ``row`` column too, when present.
        row_column: Add an int64 ``row`` column with each row's index in the file.
        check_finite: Raise on NaN/inf in floating columns (before ``transform``).

    Raises:
        DataError: From a read task (wrapped by Ray in a ``RayTaskError``) when a block holds
            NaN or inf; the message names the file, key and row.

    ``HDF5Datasource``, the Ray Data ``Datasource`` itself, is this class with Ray's base added,
    made on first use (``from datasets.hdf5 import HDF5Datasource``): importing this module, as
    validating a study spec does, imports no Ray.
    """

    def __init__(self, path: str | Location, keys: Sequence[str], *, ranges: Sequence[tuple[int, int]] | None = None,
                 rows_per_task: int = 1024, rows_per_block: int = 128, transform: Transform | None = None,
                 row_column: bool = False, check_finite: bool = True):
        super().__init__()
        if rows_per_task <= 0 or rows_per_block <= 0:
            raise ValueError(f"rows_per_task and rows_per_block must be > 0, but got ({rows_per_task}, {rows_per_block})")
        self.path = str(path) if is_uri(path) else str(Path(path).expanduser().resolve())
        self.keys = list(keys)
        with open_hdf5(self.path) as f:
            for key in self.keys:
                if key not in f:
                    raise DataError(f"{self.path}: key {key!r} missing (found {sorted(f.keys())})")
            num_rows = f[self.keys[0]].shape[0]
            self._row_bytes = sum(f[k].dtype.itemsize * int(np.prod(f[k].shape[1:])) for k in self.keys)
        ranges = [(0, num_rows)] if ranges is None else [(int(a), int(b)) for a, b in ranges]
        for start, stop in ranges:
            if not 0 <= start < stop <= num_rows:
                raise ValueError(f"row range ({start}, {stop}) must satisfy 0 <= start < stop <= {num_rows}")
        self.ranges = ranges
        self.rows_per_task = rows_per_task
        self.rows_per_block = rows_per_block
        self.transform = transform
        self.row_column = row_column
        self.check_finite = check_finite

    @property
    def num_rows(self) -> int:
        return sum(stop - start for start, stop in self.ranges)

    def get_name(self) -> str:
        return "HDF5"  # Ray Data shows "ReadHDF5"

    def estimate_inmemory_data_size(self) -> int:
        return self.num_rows * self._row_bytes

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list:
        """One task per piece of ``rows_per_task`` rows; ``parallelism`` is not used (the pieces
        are set by the options so that reads stay contiguous and shards reproducible)."""
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        tasks = []
        for start, stop in blocks(self.ranges, self.rows_per_task):
            meta = BlockMetadata(num_rows=stop - start, size_bytes=(stop - start) * self._row_bytes,
                                 input_files=[self.path], exec_stats=None)
            tasks.append(ReadTask(lambda a=start, b=stop: self._read(a, b), meta,
                                  per_task_row_limit=per_task_row_limit))
        return tasks

    def _read(self, start: int, stop: int) -> Iterator:
        """Blocks of rows ``[start, stop)`` (runs inside a Ray read task)."""
        for columns in iter_rows(location_of(self.path), self.keys, start, stop, rows_per_block=self.rows_per_block,
                                 row_column=self.row_column, check_finite=self.check_finite):
            if self.transform is not None:
                columns = self.transform(columns)
            yield _to_arrow(columns)


def __getattr__(name: str):
    """``HDF5Datasource``: :class:`HDF5Source` with Ray Data's ``Datasource`` base, built on first use."""
    if name != "HDF5Datasource":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _datasource_class()


def _datasource_class() -> type:
    if "HDF5Datasource" in globals():
        return globals()["HDF5Datasource"]
    from ray.data import Datasource

    cls = type("HDF5Datasource", (HDF5Source, Datasource), {"__module__": __name__, "__doc__": HDF5Source.__doc__})
    globals()["HDF5Datasource"] = cls  # cloudpickle finds it by name in the read tasks
    return cls


def iter_rows(path: Location, keys: Sequence[str], start: int, stop: int, *, rows_per_block: int,
              row_column: bool = False, check_finite: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Rows ``[start, stop)`` of ``keys`` as dicts of numpy arrays, ``rows_per_block`` at a time.

    The file (a local path or a URI, see :func:`open_hdf5`) is opened here, once per call.

    Raises:
        DataError: If a floating value is NaN or infinite (with ``check_finite``).
    """
    with open_hdf5(path) as f:
        for a in range(start, stop, rows_per_block):
            b = min(a + rows_per_block, stop)
            columns = {key: f[key][a:b] for key in keys}
            if check_finite:
                for key, values in columns.items():
                    if values.dtype.kind == "f":
                        _check_finite(path, key, values, a)
            if row_column:
                columns[ROW_COLUMN] = np.arange(a, b, dtype=np.int64)
            yield columns


def _to_arrow(columns: dict[str, np.ndarray]):
    """A ``pyarrow.Table``; arrays of rank > 1 become Arrow tensor columns."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    return pa.table({name: ArrowTensorArray.from_numpy(np.ascontiguousarray(a)) if a.ndim > 1 else pa.array(a)
                     for name, a in columns.items()})


def read_hdf5(path: str | Location, keys: Sequence[str], *, num_cpus: float | None = None,
              concurrency: int | None = None, buffer_bytes: int | None = None,
              max_block_bytes: int | None = None, **options):
    """``ray.data.read_datasource(HDF5Datasource(path, keys, **options))``, memory-bounded.

    Args:
        path: The HDF5 file: a local path or a URI.
        keys: The HDF5 datasets to read, one column each.
        num_cpus: CPUs each read task reserves (None: Ray Data's default of 1).
        concurrency: At most this many read tasks at once (None: as resources allow).
        buffer_bytes: Object-store bytes this dataset's execution may hold (blocks read ahead
            of the consumer); None: Ray Data's default, a fraction of the object store.
        max_block_bytes: A read task hands a block over once it holds this many bytes, instead
            of gathering its whole output (Ray Data's default target is 128 MiB); None: default.
        **options (Any): :class:`HDF5Datasource` keyword options (``ranges``, ``rows_per_task``,
            ``rows_per_block``, ``transform``, ``row_column``, ``check_finite``).

    Returns:
        (ray.data.Dataset): A lazy dataset streamed from the file on each iteration. Ray Train's
            ``DataConfig`` replaces the dataset's execution options (``buffer_bytes``) with its own.
    """
    import ray.data

    source = _datasource_class()(path, keys, **options)
    num_tasks = len(blocks(source.ranges, source.rows_per_task))
    if concurrency is not None:  # Ray Data warns when the cap exceeds the number of tasks
        concurrency = min(concurrency, num_tasks)
    # One output block stream per task: by default Ray Data would cut every block into pieces
    # until the dataset has 200 blocks (read_op_min_num_blocks), tiny blocks at a per-block cost.
    ds = ray.data.read_datasource(source, num_cpus=num_cpus, concurrency=concurrency, override_num_blocks=num_tasks)
    if buffer_bytes is not None:
        limits = ds.context.execution_options.resource_limits
        ds.context.execution_options.resource_limits = limits.copy(object_store_memory=float(buffer_bytes))
    if max_block_bytes is not None:
        ds.context.target_max_block_size = int(max_block_bytes)
    return ds
