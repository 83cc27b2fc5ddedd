"""Registry of datasets: a name maps to an options class and a loader.

A loader validates and loads what a study needs before Ray starts (so a bad file fails
before anything is written) and returns :class:`PreparedData`, which turns into Ray Data
datasets once Ray is up.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from datasets.base import ArrayGroundTruthData
from datasets.storage import is_uri

__all__ = ["DatasetOptions", "PreparedData", "DataDescription", "DataError", "register_dataset", "get_dataset",
           "dataset_names", "file_fingerprint", "uri_fingerprint", "Fingerprint", "Registry", "DATASETS",
           "fraction_rows"]

HASH_WHOLE_BYTES = 1 << 30  # files up to 1 GiB are hashed whole; larger ones by their first and last 64 MiB
HASH_PART_BYTES = 64 << 20
MAX_CLASSES = 10_000  # an integral column with at most this many values counts as class labels


class DataError(ValueError):
    """A data file is missing, unreadable or not in the expected layout; the message names it."""


class DatasetOptions(BaseModel):
    """Options every dataset takes (the ``dataset`` section of a study spec).

    ``path`` is a location: a local path (``~`` expanded) or a URI of object storage
    (``s3://bucket/key``, ``gs://``, ``abfs://``, resolved by :mod:`datasets.storage`; credentials
    from the cloud's standard environment). None: the dataset's own default (its environment
    variable, which takes a URI too, or its cache).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    path: str | None = None  # a local path or a URI; None: the dataset's own default (env variable, cache)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # held out for val_* metrics and MIG
    limit: int | None = Field(None, gt=1)  # use only this many rows (after shuffling)
    # Where a trial's batches come from: device, the arrays placed on the trial's device once and
    # batched by index (datasets.device); stream, Ray Data (streamed HDF5 always is); auto, device
    # when the data is in memory, fits device_budget_mb and the trial has one worker.
    placement: Literal["auto", "device", "stream"] = "auto"
    device_budget_mb: int = Field(4096, gt=0, le=1_048_576)

    # Options a study may search per trial (``search_space: {dataset.<field>: ...}``); the trial
    # applies the sampled value to the rows the loader prepared once (see PreparedData.train_subset).
    searchable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("path", mode="before")
    @classmethod
    def _location(cls, value: Any) -> Any:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if value is None or not isinstance(value, str):
            return value  # None, or a type error pydantic reports
        if not value.strip() or "\0" in value:
            raise ValueError(f"expected a local path or a URI such as s3://bucket/key (got {value!r})")
        return value.rstrip("/") if is_uri(value) else os.path.expanduser(value)

    def extra_metrics(self) -> tuple[str, ...]:
        """Per-epoch metric names (``val_...``) that :attr:`PreparedData.validation_metrics` adds."""
        return ()


class Fingerprint(BaseModel):
    """What a study read, to tell a resumed study's data from another.

    Attributes:
        path: The file or folder read (absolute), the URI of an object or prefix, or a description
            of generated data.
        size: Bytes read (every file below a folder or prefix), or None for generated rows.
        sha256: Hex digest of the bytes (``scope`` says which) or of the rows themselves; for
            ``scope: "etag"`` the object's ETag (a prefix: the sha256 of its objects' keys, sizes
            and ETags).
        scope: ``file`` (whole files), ``head+tail`` (files over 1 GiB: size, first and last 64 MiB),
            ``etag`` (objects in storage whose store gives an ETag, which changes with the content)
            or ``rows`` (generated data: the arrays).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str
    size: int | None
    sha256: str
    scope: Literal["file", "head+tail", "etag", "rows"]

    def differs(self, other: Fingerprint) -> list[str]:
        """The fields (path, size, sha256) in which ``other`` differs from this one."""
        return [key for key in ("path", "size", "sha256") if getattr(self, key) != getattr(other, key)]


@dataclass(frozen=True)
class DataDescription:
    """What a family may check its config against before Ray starts (``check_setup``).

    Attributes:
        input_shape: Shape of one observation, e.g. ``(C, H, W)`` or ``(2,)``.
        columns: Column name -> per-row shape (``()`` for a scalar column).
        classes: Column name -> number of classes, for columns holding integral labels
            ``0 .. classes - 1`` (e.g. ``label``, ``y``, ``shape``).
        has_factors: Whether the held-out rows carry ground-truth factors (MIG and the other
            disentanglement metrics need them).
        num_train: Training rows.
        num_val: Held-out rows.
        factor_sizes: Distinct values each ground-truth factor takes among the held-out rows (the
            rows the disentanglement metrics score), in the dataset's factor order; a factor of size
            1 is constant there. Empty when the data has no factors.
    """

    input_shape: tuple[int, ...]
    columns: dict[str, tuple[int, ...]]
    classes: dict[str, int]
    has_factors: bool
    num_train: int
    num_val: int
    factor_sizes: tuple[int, ...] = ()

    @property
    def varying_factors(self) -> int:
        """Factors that take more than one value among the held-out rows (0 without factors)."""
        return sum(size > 1 for size in self.factor_sizes)


@dataclass
class PreparedData:
    """A dataset split into train and validation columns, ready to become Ray datasets.

    Attributes:
        train: Column name -> array ``(N_train, ...)``; ``image`` holds ``(N, C, H, W)``.
        val: Column name -> array ``(N_val, ...)``, same columns.
        input_shape: ``(C, H, W)`` of one observation.
        ground_truth: The validation rows as a ground-truth dataset, for disentanglement
            metrics; None when the dataset has no factors.
        source: The file or folder read (a local Path, or a URI string), or a Path describing
            generated data.
        info: Facts about the data for the study directory's ``data.json`` (row counts,
            preprocessing statistics computed on train rows, column names...); JSON values.
        ray_datasets: For data too large to hold in memory: a function returning
            ``{"train": ray.data.Dataset, "val": ray.data.Dataset}`` (streamed, e.g. from HDF5)
            that :meth:`to_ray` calls instead of building datasets from ``train``/``val``,
            which may then be empty.
        column_shapes: For streamed data (empty ``train``): column name -> per-row shape.
        column_classes: For streamed data: label column -> number of classes.
        channel_names: Names of the image channels (jets: tracks, ECAL, HCAL), or None.
        validation_metrics: Data-aware metrics the loop adds once per validation epoch:
            called with the model's per-sample ``predictions`` of the whole pass (CPU tensors
            ``(N_val, ...)`` by name), returns ``{name: value}`` reported as ``val_<name>``
            (declared by :meth:`DatasetOptions.extra_metrics`). Must pickle (it goes to the workers).
        read_val: For streamed data: ``read_val(num)`` -> the first ``num`` validation rows by
            column, as the streamed datasets serve them, read without Ray (:meth:`val_rows`).
    """

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    input_shape: tuple[int, ...]
    ground_truth: ArrayGroundTruthData | None
    source: Path | str
    info: dict[str, Any] = field(default_factory=dict)
    ray_datasets: Callable[[], dict[str, Any]] | None = None
    column_shapes: dict[str, tuple[int, ...]] | None = None  # streamed data: per-row column shapes
    column_classes: dict[str, int] | None = None  # streamed data: label columns and their class counts
    channel_names: tuple[str, ...] | None = None
    validation_metrics: Callable[[dict[str, Any]], dict[str, float]] | None = None
    read_val: Callable[[int], dict[str, np.ndarray]] | None = None  # streamed data: first val rows, no Ray
    _fingerprint: Fingerprint | None = field(default=None, init=False, repr=False)  # computed once

    def describe(self) -> DataDescription:
        """The :class:`DataDescription` of this data: shapes from the columns (or the loader's
        ``column_shapes``), label columns found as integral values ``0 .. k - 1`` in the train rows,
        and the values each factor takes in the held-out rows (:attr:`ground_truth`)."""
        if self.column_shapes is not None:
            columns = dict(self.column_shapes)
        else:
            columns = {name: tuple(int(d) for d in np.shape(array)[1:]) for name, array in self.train.items()}
        classes = dict(self.column_classes or {})
        for name, array in self.train.items():
            if name in classes or np.ndim(array) != 1 or not len(array):
                continue
            values = np.asarray(array)
            low, high = values.min(), values.max()
            if low >= 0 and high < MAX_CLASSES and np.array_equal(values, np.round(values)):
                classes[name] = int(high) + 1
        factors = self.ground_truth.factors if self.ground_truth is not None else np.zeros((0, 0), dtype=np.int64)
        return DataDescription(
            input_shape=tuple(self.input_shape), columns=columns, classes=classes,
            has_factors=self.ground_truth is not None,
            num_train=int(self.info.get("num_train", len(next(iter(self.train.values()), ())))),
            num_val=int(self.info.get("num_val", len(next(iter(self.val.values()), ())))),
            factor_sizes=tuple(len(np.unique(factors[:, i])) for i in range(factors.shape[1])),
        )

    def val_rows(self, num: int) -> dict[str, np.ndarray]:
        """Up to the first ``num`` validation rows by column (``image`` float32 ``(num, C, H, W)``, ...),
        from memory or, for streamed data, read from the source without Ray (analysis after a study).

        Raises:
            DataError: If the data streams and its loader gives no way to read rows without Ray.
        """
        if self.ray_datasets is None:
            return {name: np.asarray(array[:num]) for name, array in self.val.items()}
        if self.read_val is None:
            raise DataError(f"{self.source}: the validation rows stream through Ray Data, and the loader reads none "
                            "without Ray")
        return self.read_val(num)

    def fingerprint(self) -> Fingerprint:
        """What was read, to tell a resumed study's data from another: the source path or URI, its
        size and a digest (of the file or folder; an object's ETag; of the rows themselves for
        generated data). Computed once per PreparedData.

        Raises:
            DataError: If a URI source can no longer be read.
        """
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> Fingerprint:
        if is_uri(self.source):
            return file_fingerprint(self.source)
        source = Path(self.source)
        if source.is_file() or source.is_dir():
            return file_fingerprint(source)
        digest = hashlib.sha256()
        for split in (self.train, self.val):
            for name in sorted(split):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(split[name]).tobytes())
        return Fingerprint(path=str(source), size=None, sha256=digest.hexdigest(), scope="rows")

    def placement(self, options: DatasetOptions, torch_trainer: bool) -> Literal["device", "stream"]:
        """Where the trials' batches come from (see :attr:`DatasetOptions.placement`).

        Args:
            options: The dataset section.
            torch_trainer: Whether trials train in a Ray Train ``TorchTrainer`` (several workers),
                which shards Ray datasets.

        Raises:
            DataError: If ``device`` is asked of streamed data or of a ``TorchTrainer`` trial.
        """
        in_memory = self.ray_datasets is None
        size_mb = sum(np.asarray(a).nbytes for split in (self.train, self.val) for a in split.values()) / 2**20
        if options.placement == "device":
            if not in_memory:
                raise DataError(f"dataset.placement: device needs data in memory, but {options.name} streams "
                                "from its file; use auto or stream")
            if torch_trainer:
                raise DataError("dataset.placement: device serves a trial that trains in-process (one worker); "
                                "a TorchTrainer trial (resources.num_workers > 1) shards Ray Data: use auto or stream")
            return "device"
        if options.placement == "auto" and in_memory and not torch_trainer and size_mb <= options.device_budget_mb:
            return "device"
        return "stream"

    def to_device(self) -> dict[str, Any]:
        """``{"train", "val"}`` as :class:`~datasets.device.DeviceData` (train shuffled every epoch)."""
        from datasets.device import DeviceData

        return {"train": DeviceData(self.train, shuffle=True), "val": DeviceData(self.val, shuffle=False)}

    def to_ray(self, block_rows: int = 2048) -> dict[str, Any]:
        """``{"train": ray.data.Dataset, "val": ray.data.Dataset}``: streamed when the loader gave
        :attr:`ray_datasets`, else materialised in the object store from the columns."""
        from datasets.ray_data import from_columns

        if self.ray_datasets is not None:
            return self.ray_datasets()
        return {"train": from_columns(self.train, block_rows), "val": from_columns(self.val, block_rows)}


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    options_cls: type[DatasetOptions]
    load: Callable[[DatasetOptions, int], PreparedData]


T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries of one kind (datasets, model families), each registered by its own module.

    The one lookup routine of the project's registries. An entry named ``x`` lives in the module
    ``<package>.x`` and registers itself when that module is imported: :meth:`get` imports only
    the module it needs (validating a spec imports the dataset and families it names, nothing
    else), :meth:`names` imports every module of the package.

    Args:
        kind: What the entries are, for messages (``"dataset"``, ``"family"``).
        package: The package whose modules register the entries (``"datasets"``).
    """

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        """Registers ``entry`` under ``name``.

        Raises:
            ValueError: If ``name`` is already registered.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry registered under ``name``, importing its module on first use.

        Raises:
            KeyError: If no entry of that name exists; the message lists the known names.
        """
        if not isinstance(name, str):
            raise KeyError(f"expected a {self.kind} name, got a {type(name).__name__}; "
                           f"expected one of {self.names()}")
        if name not in self._entries and name.isidentifier() and importlib.util.find_spec(
                f"{self.package}.{name}") is not None:
            importlib.import_module(f"{self.package}.{name}")
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; expected one of {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted (imports every module of the package)."""
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        return sorted(self._entries)


DATASETS: Registry[DatasetEntry] = Registry("dataset", "datasets")


def register_dataset(name: str, options_cls: type[DatasetOptions]) -> Callable:
    """Function decorator registering ``load(options, seed) -> PreparedData`` under ``name``
    (the dataset's module is ``datasets/<name>.py``)."""

    def decorate(load: Callable[[DatasetOptions, int], PreparedData]) -> Callable:
        DATASETS.add(name, DatasetEntry(name, options_cls, load))
        return load

    return decorate


def dataset_names() -> list[str]:
    """Names of the registered datasets, sorted."""
    return DATASETS.names()


def get_dataset(name: str) -> DatasetEntry:
    """Looks up a dataset.

    Raises:
        KeyError: If ``name`` is not registered; the message lists the known names.
    """
    return DATASETS.get(name)


def file_fingerprint(path: Path | str) -> Fingerprint:
    """The :class:`Fingerprint` of a file or a folder (every file below it), or of an object or
    prefix at a URI (:func:`uri_fingerprint`: its ETag when the store gives one).

    Files up to 1 GiB are hashed whole (``scope: "file"``); a larger one by its size and its first
    and last 64 MiB (``scope: "head+tail"``), so an 8 GB jets file costs no more than a small one.

    Raises:
        DataError: If a URI names nothing or cannot be read.
    """
    if is_uri(path):
        return uri_fingerprint(str(path))
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    total, scope = 0, "file"
    for file in files:
        size = file.stat().st_size
        total += size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{size}".encode())
        with open(file, "rb") as handle:
            if size <= HASH_WHOLE_BYTES:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            else:
                scope = "head+tail"
                digest.update(handle.read(HASH_PART_BYTES))
                handle.seek(size - HASH_PART_BYTES)
                digest.update(handle.read(HASH_PART_BYTES))
    return Fingerprint(path=str(path), size=total, sha256=digest.hexdigest(), scope=scope)


def uri_fingerprint(uri: str) -> Fingerprint:
    """The :class:`Fingerprint` of an object, or of every object below a prefix, at a URI.

    ``path`` is the URI and ``size`` the object's bytes (summed over a prefix). ``sha256`` is the
    object's ETag when the store gives one (``scope: "etag"``; for a prefix, the sha256 of every
    object's relative key, size and ETag), else a sha256 of the content as for local files: whole
    objects up to 1 GiB (``file``), larger ones by size and their first and last 64 MiB (``head+tail``).
    An ETag changes with the content; re-uploading the same bytes in other multipart pieces changes
    it too, and a resume is then refused: on the safe side.

    Raises:
        DataError: If nothing exists at ``uri`` or it cannot be read (one line naming the URI).
    """
    import pyarrow.fs as pafs

    from datasets.storage import StorageError, first_line, open_location

    try:
        fs, path, uri = open_location(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            objects = [(path.rsplit("/", 1)[-1], info.size, path)]
        elif info.type == pafs.FileType.Directory:
            found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            objects = sorted((f.path[len(path) + 1:], f.size, f.path) for f in found if f.type == pafs.FileType.File)
        else:
            raise DataError(f"{uri}: no such object or prefix")
        etags = [_etag(fs, full) for _, _, full in objects]
        if objects and all(etags):
            if info.type == pafs.FileType.File:
                return Fingerprint(path=uri, size=info.size, sha256=etags[0], scope="etag")
            listing = "".join(f"{key}:{size}:{etag}\n" for (key, size, _), etag in zip(objects, etags))
            return Fingerprint(path=uri, size=sum(size for _, size, _ in objects),
                               sha256=hashlib.sha256(listing.encode()).hexdigest(), scope="etag")
        return _content_fingerprint(fs, uri, objects)
    except StorageError as err:
        raise DataError(str(err)) from None
    except OSError as err:
        raise DataError(f"{uri}: cannot be read ({first_line(err)})") from None


def _etag(fs, path: str) -> str | None:
    """The object's ETag as its store reports it (quotes removed), or None when the filesystem gives
    none (pyarrow's S3 input files carry the HeadObject response in ``metadata()``)."""
    with fs.open_input_file(path) as handle:
        try:
            metadata = handle.metadata()
        except NotImplementedError:
            return None
    value = next((v for k, v in metadata.items() if str(k).lower() == "etag"), None) if metadata else None
    if not value:
        return None
    return (value.decode() if isinstance(value, bytes) else str(value)).strip('"')


def _content_fingerprint(fs, uri: str, objects: list[tuple[str, int, str]]) -> Fingerprint:
    """A sha256 of ``(relative key, size, path)`` objects' names, sizes and content, as
    :func:`file_fingerprint` hashes local files (whole up to 1 GiB, else head and tail)."""
    digest, scope = hashlib.sha256(), "file"
    for key, size, full in objects:
        digest.update(f"{key}:{size}".encode())
        with fs.open_input_file(full) as handle:
            if size <= HASH_WHOLE_BYTES:
                for start in range(0, size, 1 << 24):
                    digest.update(handle.read_at(min(1 << 24, size - start), start))
            else:
                scope = "head+tail"
                digest.update(handle.read_at(HASH_PART_BYTES, 0))
                digest.update(handle.read_at(HASH_PART_BYTES, size - HASH_PART_BYTES))
    return Fingerprint(path=uri, size=sum(size for _, size, _ in objects), sha256=digest.hexdigest(), scope=scope)


def fraction_rows(fraction: float, num_rows: int) -> int:
    """Rows a ``train_fraction`` keeps of ``num_rows``: ``round(fraction * num_rows)`` (Python's
    rounding, halves to even), the one rule of the loaders, the spec's check and the trial driver.

    Args:
        fraction: In (0, 1].
        num_rows: Train rows before the fraction.

    Returns:
        Rows kept, 0 to ``num_rows`` (0: the fraction keeps none, which the callers refuse).
    """
    return round(fraction * num_rows)


def split_rows(num_rows: int, val_fraction: float, seed: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled train/val row indices.

    Args:
        num_rows: Rows in the file.
        val_fraction: Fraction held out, in (0, 1).
        seed: Study seed; the same seed gives the same split.
        limit: Keep only this many rows of the shuffled order, or None for all.

    Returns:
        ``(train_rows, val_rows)``, disjoint int64 arrays, each non-empty, in shuffled order
        (files such as dSprites are stored sorted by factor; training reads rows in this order).

    Raises:
        DataError: If a split would be empty.
    """
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(num_rows)
    if limit is not None:
        order = order[:limit]
    num_val = int(round(len(order) * val_fraction))
    if num_val < 1 or num_val >= len(order):
        raise DataError(
            f"dataset.val_fraction={val_fraction} of {len(order)} rows leaves an empty train or val split"
        )
    return order[num_val:], order[:num_val]
