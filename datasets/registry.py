"""Registry of datasets: a name maps to an options class and a loader.

A loader validates and loads what a study needs before Ray starts (so a bad file fails
before anything is written) and returns :class:`PreparedData`, which turns into Ray Data
datasets once Ray is up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from datasets.base import ArrayGroundTruthData

__all__ = ["DatasetOptions", "PreparedData", "DataError", "register_dataset", "get_dataset", "dataset_names"]


class DataError(ValueError):
    """A data file is missing, unreadable or not in the expected layout; the message names it."""


class DatasetOptions(BaseModel):
    """Options every dataset takes (the ``dataset`` section of a study spec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    path: Path | None = None  # None: the dataset's own default (env variable, cache)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # held out for val_* metrics and MIG
    limit: int | None = Field(None, gt=1)  # use only this many rows (after shuffling)


@dataclass
class PreparedData:
    """A dataset split into train and validation columns, ready to become Ray datasets.

    Attributes:
        train: Column name -> array ``(N_train, ...)``; ``image`` holds ``(N, C, H, W)``.
        val: Column name -> array ``(N_val, ...)``, same columns.
        input_shape: ``(C, H, W)`` of one observation.
        ground_truth: The validation rows as a ground-truth dataset, for disentanglement
            metrics; None when the dataset has no factors.
        source: Path of the file read.
        info: Facts about the data for the study directory's ``data.json`` (row counts,
            preprocessing statistics computed on train rows, column names...); JSON values.
        ray_datasets: For data too large to hold in memory: a function returning
            ``{"train": ray.data.Dataset, "val": ray.data.Dataset}`` (streamed, e.g. from HDF5)
            that :meth:`to_ray` calls instead of building datasets from ``train``/``val``,
            which may then be empty.
    """

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    input_shape: tuple[int, ...]
    ground_truth: ArrayGroundTruthData | None
    source: Path
    info: dict[str, Any] = field(default_factory=dict)
    ray_datasets: Callable[[], dict[str, Any]] | None = None

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


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, options_cls: type[DatasetOptions]) -> Callable:
    """Function decorator registering ``load(options, seed) -> PreparedData`` under ``name``."""

    def decorate(load: Callable[[DatasetOptions, int], PreparedData]) -> Callable:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = DatasetEntry(name, options_cls, load)
        return load

    return decorate


def dataset_names() -> list[str]:
    """Names of the registered datasets, sorted."""
    _load()
    return sorted(_DATASETS)


def get_dataset(name: str) -> DatasetEntry:
    """Looks up a dataset.

    Raises:
        KeyError: If ``name`` is not registered; the message lists the known names.
    """
    _load()
    try:
        return _DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(_DATASETS)}") from None


def _load() -> None:
    """Imports every module of the :mod:`datasets` package; dataset modules register themselves."""
    import importlib
    import pkgutil

    import datasets as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


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
