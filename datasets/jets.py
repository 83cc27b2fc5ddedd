"""Quark/gluon jet images in the ML4SCI HDF5 schema, streamed through Ray Data.

The file holds ``X_jets (N, H, H, 3)`` float (125x125 in the ML4SCI and demo files) whose
channels are the transverse momentum pT (GeV) in each pixel seen by the tracker, the ECAL
and the HCAL; ``y (N,)`` (1 quark, 0 gluon); ``m0 (N,)`` jet mass and ``pt (N,)`` jet pT in GeV.

Loading validates the file (one-line :class:`DataError` naming file and key), assigns whole
contiguous blocks of ``block_rows`` rows to validation at random with the study seed (reads stay
contiguous; the train blocks are read in a random order), computes the per-channel scaling
statistics once on a sample of *train* rows, and returns a loader that streams both splits
from the file through :class:`datasets.hdf5.HDF5Datasource`; the preprocessing runs in the
read tasks. Preprocessing of one jet: channels first, pad/crop/resize to ``image_size``
(resizing conserves each channel's total pT), ``log1p``, then per-channel
``(x - offset) / divisor`` from the train statistics (max, a quantile of the non-zero pixels,
or z-score), clipped to [0, 1] unless z-scored.

Memory stays bounded whatever the file size: the load-time scan and the statistics read
``rows_per_block`` rows at a time; an epoch runs at most ``read_concurrency`` read tasks, each
holding ``rows_per_block`` raw rows and its preprocessed output (adjacent train blocks merged
into tasks of about ``task_mb``), with at most ``read_buffer_mb`` of blocks read ahead in the
object store. The read tasks' order is drawn once per study (the same each epoch, up to Ray
Data interleaving concurrent tasks).

``python -m datasets.jets synth OUT.h5 --n 5000`` writes synthetic jets in the same schema
(see :func:`write_synthetic`): a stand-in for tests and benchmarks, not physics.

References:
    Andrews et al. 2020, "End-to-end jet classification of quarks and gluons with the CMS Open
    Data", NIM A 977, 164304 (the 125x125x3 Tracks/ECAL/HCAL image schema of ML4SCI).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from datasets.hdf5 import KeySpec, blocks, check_hdf5, iter_rows, open_hdf5, read_hdf5
from datasets.registry import DataError, DatasetOptions, PreparedData, register_dataset
from datasets.remote import Location, given_location, require
from datasets.storage import is_uri

__all__ = ["JetsOptions", "JetPreprocessor", "load_jets", "resolve_path", "split_blocks", "write_synthetic",
           "CHANNELS", "KEYS"]

CHANNELS = ("tracks", "ecal", "hcal")
IMAGE_KEY = "X_jets"
SCALAR_KEYS = ("y", "m0", "pt")
KEYS = {
    IMAGE_KEY: KeySpec(4, "f", (None, None, len(CHANNELS))),
    "y": KeySpec(1, "fiub"),
    "m0": KeySpec(1, "fiu"),
    "pt": KeySpec(1, "fiu"),
}
PIXEL_RAD = 0.0174  # pixel pitch in (eta, phi) of the ML4SCI images (one ECAL crystal)


class JetsOptions(DatasetOptions):
    """The ``dataset`` section for jets.

    ``path`` (else ``$JETS_PATH``) is the HDF5 file: a local path or a URI (``s3://bucket/jets.h5``,
    ``gs://...``), streamed by the read tasks, which open the object themselves and read only their
    rows (:mod:`datasets.remote`): a file larger than any node's disk streams from the bucket.
    """

    # 128: the 125-pixel images padded to a size the stride-2 conv stacks divide (2**5 | 128).
    image_size: int = Field(128, ge=4, le=1024)
    image_mode: Literal["pad", "crop", "resize"] = "pad"  # pad: image_size >= H; crop: <= H; resize: any
    log1p: bool = True  # pixel pT spans four decades; log1p tames it and keeps 0 at 0
    scale: Literal["max", "quantile", "zscore"] = "max"
    quantile: float = Field(0.99, gt=0.0, le=1.0)  # scale="quantile": of the non-zero pixels (>95% are 0)
    clip: bool = True  # max/quantile: clip to [0, 1] (rows beyond the train sample's range, Bernoulli targets)
    stats_rows: int = Field(2048, ge=1, le=1_000_000)  # train rows sampled for the scaling statistics
    block_rows: int = Field(512, ge=1, le=1_000_000)  # contiguous rows per train/val split unit
    # Rows per read task: adjacent train blocks are merged into tasks of about task_mb of preprocessed
    # output (never fewer rows than block_rows). Per-task overhead: at 32x32, 512-row tasks streamed
    # at 0.71 of a plain h5py reader, 2,048-row tasks at 0.96 (benchmarks/data_path.py).
    task_mb: float = Field(16.0, gt=0.0, le=1024.0)
    rows_per_block: int = Field(128, ge=1, le=65_536)  # rows a read task reads and preprocesses at a time
    # CPUs a read task reserves. 0: Train workers and concurrent trials hold every CPU of a small
    # cluster, and reads that reserve any then never start (RAY_NOTES.md); read_concurrency bounds them.
    read_cpus: float = Field(0.0, ge=0.0, le=64.0)
    # Read tasks at once per dataset; 2 keeps both cores of a small machine busy (more only
    # contend with training and each holds a worker process); raise it on larger nodes.
    read_concurrency: int = Field(2, ge=1, le=1024)
    # Object-store MiB of blocks read ahead of the consumer: bounds memory whatever the file size.
    read_buffer_mb: int = Field(512, ge=8, le=1 << 20)
    scan_rows: int | None = Field(None, ge=0)  # rows scanned for NaN/inf at load (None: all; else reads check too)


def resolve_path(path: str | Path | None) -> Location:
    """``dataset.path``, else ``$JETS_PATH``: a local :class:`~pathlib.Path` or a URI string.

    Raises:
        DataError: If neither is set, or the file or object does not exist (for a URI: its bucket,
            or the scheme is unknown).
    """
    given = given_location(path, "JETS_PATH")
    if given is None:
        raise DataError("dataset.path: no jets file given; set dataset.path or JETS_PATH to an HDF5 file "
                        "with X_jets (N, 125, 125, 3), y, m0, pt (a local path or a URI such as s3://bucket/jets.h5)")
    location, where = given
    if is_uri(location):
        return require(location, "object", "an HDF5 jets file", where)
    if not location.is_file():
        raise DataError(f"{where}: {location}: no such file (expected an HDF5 jets file)")
    return location


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Weights ``(n_out, n_in)`` float32 of a pT-conserving resize along one axis.

    ``A[i, j]`` is the fraction of input pixel ``j`` that falls in output pixel ``i`` (output
    pixels tile the same extent), so every column sums to 1 and ``A @ X @ A.T`` keeps the total.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)  # output pixel edges in input-pixel units
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
    return np.clip(hi - lo, 0.0, None).astype(np.float32)


@dataclass(frozen=True)
class JetPreprocessor:
    """Turns raw rows into model inputs; picklable, applied in the Ray Data read tasks.

    Attributes:
        in_size: H of the stored ``(N, H, H, 3)`` images.
        size: Output side S.
        mode: ``pad`` (centred zeros, S >= H), ``crop`` (centred, S <= H) or ``resize``
            (pT-conserving area resize).
        log1p: Apply ``log1p`` after the geometry.
        offset: Per-channel offset, 3 floats.
        divisor: Per-channel divisor, 3 floats > 0.
        clip: Clip the scaled pixels to [0, 1].
    """

    in_size: int
    size: int
    mode: str
    log1p: bool = True
    offset: tuple[float, ...] = (0.0, 0.0, 0.0)
    divisor: tuple[float, ...] = (1.0, 1.0, 1.0)
    clip: bool = False

    def unscaled(self, x: np.ndarray) -> np.ndarray:
        """Geometry and log1p: ``(B, H, H, 3)`` pT in GeV -> ``(B, 3, S, S)`` float32."""
        x = np.moveaxis(np.asarray(x, dtype=np.float32), -1, 1)  # (B, 3, H, H)
        h, s = self.in_size, self.size
        if self.mode == "resize" and s != h:
            a = area_matrix(h, s)
            x = a @ x @ a.T  # (B, 3, S, S), total pT kept
        elif self.mode == "pad" and s > h:
            before = (s - h) // 2
            x = np.pad(x, ((0, 0), (0, 0), (before, s - h - before), (before, s - h - before)))
        elif self.mode == "crop" and s < h:
            start = (h - s) // 2
            x = x[:, :, start : start + s, start : start + s]
        if self.log1p:
            x = np.log1p(np.maximum(x, 0.0))  # pT >= 0; resizing may leave -1e-7 rounding
        return np.ascontiguousarray(x, dtype=np.float32)

    def images(self, x: np.ndarray) -> np.ndarray:
        """Model inputs ``(B, 3, S, S)`` float32 from raw ``(B, H, H, 3)`` images."""
        x = self.unscaled(x)
        x -= np.asarray(self.offset, dtype=np.float32)[:, None, None]
        x /= np.asarray(self.divisor, dtype=np.float32)[:, None, None]
        return np.clip(x, 0.0, 1.0, out=x) if self.clip else x

    def __call__(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw columns (``X_jets``, ``y``, ``m0``, ``pt``, maybe ``row``) -> ``image`` ``(B, 3, S, S)``,
        ``y``, ``m0``, ``pt`` float32 ``(B,)`` (and ``row`` int64 unchanged)."""
        out = {"image": self.images(columns[IMAGE_KEY])}
        for key in SCALAR_KEYS:
            out[key] = np.asarray(columns[key], dtype=np.float32)
        if "row" in columns:
            out["row"] = columns["row"]
        return out


def split_blocks(num_rows: int, block_rows: int, val_fraction: float, seed: int
                 ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Assigns whole contiguous blocks of rows to train and validation, at random with the seed.

    Args:
        num_rows: Rows used (the first ``num_rows`` of the file).
        block_rows: Rows per block (the last block may be shorter).
        val_fraction: Fraction of blocks held out, in (0, 1); at least one block.
        seed: Study seed; the same seed gives the same split and order.

    Returns:
        ``(train_ranges, val_ranges)``: half-open ``(start, stop)`` row ranges; train blocks in a
        random order, validation blocks in file order.

    Raises:
        DataError: If a split would be empty.
    """
    num_blocks = math.ceil(num_rows / block_rows)
    num_val = max(1, int(round(num_blocks * val_fraction)))
    if num_val >= num_blocks:
        raise DataError(f"dataset.block_rows={block_rows}: {num_rows} rows make {num_blocks} block(s), too few "
                        f"for a train and a val split (val_fraction={val_fraction}); lower block_rows")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1E75]))
    is_val = np.zeros(num_blocks, dtype=bool)
    is_val[rng.choice(num_blocks, size=num_val, replace=False)] = True
    ranges = [(i * block_rows, min((i + 1) * block_rows, num_rows)) for i in range(num_blocks)]
    train = [ranges[i] for i in rng.permutation(np.flatnonzero(~is_val))]
    val = [ranges[i] for i in np.flatnonzero(is_val)]
    return train, val


def task_ranges(ranges: Sequence[tuple[int, int]], task_rows: int, seed: int | None = None
                ) -> list[tuple[int, int]]:
    """Read-task ranges: adjacent ``ranges`` merged, cut into pieces of at most ``task_rows`` rows.

    Args:
        ranges: Half-open ``(start, stop)`` row ranges (whole split blocks), any order.
        task_rows: Rows per piece, > 0.
        seed: Shuffle the pieces with this seed (the train order); None keeps file order.

    Returns:
        Disjoint ``(start, stop)`` pieces covering exactly the rows of ``ranges``.
    """
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    pieces = blocks(merged, task_rows)
    if seed is None:
        return pieces
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x7A5C])).permutation(len(pieces))
    return [pieces[i] for i in order]


def channel_statistics(path: Location, ranges: Sequence[tuple[int, int]], pre: JetPreprocessor, *, scale: str,
                       quantile: float, rows: int, chunk_rows: int, seed: int) -> dict[str, Any]:
    """Per-channel offset and divisor from the first ``rows`` rows of ``ranges`` (train rows).

    The rows are streamed ``chunk_rows`` at a time through ``pre.unscaled``; for the quantile
    the non-zero pixels are kept, thinned at random to at most 2**22 per channel.

    Returns:
        ``{"offset": [3 floats], "divisor": [3 floats], "rows": rows read, "max": [...],
        "mean": [...], "std": [...], "nonzero_fraction": [...]}`` (JSON values).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57A7]))
    cap = 1 << 22
    keep = 1.0  # probability a non-zero pixel is kept for the quantile
    kept: list[list[np.ndarray]] = [[] for _ in CHANNELS]
    total = np.zeros(3)
    total_sq = np.zeros(3)
    nonzero = np.zeros(3)
    peak = np.zeros(3)
    count = 0  # pixels per channel
    num_rows = 0
    for columns in _sample(path, ranges, rows, chunk_rows):
        x = pre.unscaled(columns[IMAGE_KEY])  # (B, 3, S, S)
        flat = x.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
        total += flat.sum(axis=1)
        total_sq += (flat**2).sum(axis=1)
        nonzero += (flat != 0).sum(axis=1)
        peak = np.maximum(peak, flat.max(axis=1))
        count += flat.shape[1]
        num_rows += len(x)
        if scale == "quantile":
            for c in range(3):
                values = flat[c][flat[c] != 0]
                kept[c].append(values[rng.random(len(values)) < keep] if keep < 1 else values)
            while max(sum(len(v) for v in parts) for parts in kept) > cap:
                keep /= 2
                kept = [[v[rng.random(len(v)) < 0.5] for v in parts] for parts in kept]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    if scale == "max":
        offset, divisor = np.zeros(3), peak
    elif scale == "quantile":
        offset = np.zeros(3)
        divisor = np.array([np.quantile(np.concatenate(parts), quantile) if sum(map(len, parts)) else 0.0
                            for parts in kept])
    else:
        offset, divisor = mean, std
    divisor = np.where(divisor > 0, divisor, 1.0)  # an empty channel stays 0
    return {"offset": offset.tolist(), "divisor": divisor.tolist(), "rows": num_rows,
            "max": peak.tolist(), "mean": mean.tolist(), "std": std.tolist(),
            "nonzero_fraction": (nonzero / count).tolist()}


def _sample(path: Location, ranges: Sequence[tuple[int, int]], rows: int, chunk_rows: int) -> Iterator[dict]:
    """The first ``rows`` rows of ``ranges``, in order, ``chunk_rows`` at a time."""
    left = rows
    for start, stop in ranges:
        if left <= 0:
            return
        stop = min(stop, start + left)
        for columns in iter_rows(path, [IMAGE_KEY], start, stop, rows_per_block=chunk_rows):
            yield columns
        left -= stop - start


def load_jets(options: JetsOptions, seed: int) -> PreparedData:
    """Validates the file, splits it into blocks, computes the train statistics; streams the rest.

    Args:
        options: The ``dataset`` section.
        seed: Study seed (the split and the statistics sample).

    Returns:
        PreparedData with empty ``train``/``val``, ``ray_datasets`` building the streamed
        ``{"train", "val"}`` datasets (columns ``image`` ``(3, S, S)`` float32, ``y``, ``m0``, ``pt``
        float32; ``ray_datasets(row=True)`` adds the int64 source ``row``), ``input_shape``
        ``(3, S, S)``, no ground truth, and ``info`` with ``num_train``, ``num_val``, ``keys``,
        ``preprocessing`` and the ``val_ranges``.

    Raises:
        DataError: If the path is not given or the file is invalid (one line naming file and key),
            the image size does not fit the mode, or a split would be empty.
    """
    path = resolve_path(options.path)
    num_file_rows, h, keys = _checked_file(path, options)
    size = options.image_size
    num_rows = min(num_file_rows, options.limit or num_file_rows)
    train, val = split_blocks(num_rows, options.block_rows, options.val_fraction, seed)
    row_bytes = 4 * (3 * options.image_size**2 + len(SCALAR_KEYS))  # one preprocessed row, float32
    task_rows = max(options.block_rows, int(options.task_mb * 2**20) // row_bytes)
    train_tasks = task_ranges(train, task_rows, seed)
    geometry = JetPreprocessor(in_size=h, size=size, mode=options.image_mode, log1p=options.log1p)
    stats = channel_statistics(path, train, geometry, scale=options.scale, quantile=options.quantile,
                               rows=options.stats_rows, chunk_rows=options.rows_per_block, seed=seed)
    pre = JetPreprocessor(in_size=h, size=size, mode=options.image_mode, log1p=options.log1p,
                          offset=tuple(stats["offset"]), divisor=tuple(stats["divisor"]),
                          clip=options.clip and options.scale != "zscore")
    preprocessing = _preprocessing_record(options, h, pre.clip, stats)
    info = {
        "num_train": sum(b - a for a, b in train), "num_val": sum(b - a for a, b in val), "num_file_rows": num_file_rows,
        "keys": keys, "columns": ["image", *SCALAR_KEYS], "block_rows": options.block_rows, "task_rows": task_rows,
        "val_ranges": [list(r) for r in val], "preprocessing": preprocessing,
    }
    # The load scanned every row for NaN/inf unless scan_rows limited it: only then do reads check again.
    build = functools.partial(_datasets, path, train_tasks, task_ranges(val, task_rows), pre, task_rows,
                              options.rows_per_block,
                              options.read_cpus, options.read_concurrency, options.read_buffer_mb,
                              check_finite=options.scan_rows is not None)
    return PreparedData(train={}, val={}, input_shape=(3, size, size), ground_truth=None, source=path, info=info,
                        ray_datasets=build, column_shapes={"image": (3, size, size), **{k: () for k in SCALAR_KEYS}},
                        column_classes={"y": 2}, channel_names=tuple(CHANNELS),  # y: 1 quark, 0 gluon
                        read_val=functools.partial(_val_rows, path, val, pre, options.rows_per_block))


def _checked_file(path: Location, options: JetsOptions) -> tuple[int, int, dict[str, dict[str, Any]]]:
    """Checks the file's keys, rows and images against ``options``.

    Returns:
        ``(rows in the file, input image size H, {key: {"shape", "dtype"}})``.

    Raises:
        DataError: If the file is invalid (:func:`~datasets.hdf5.check_hdf5`), its images are
            not square, or ``image_size`` cannot be reached from H by ``image_mode``.
    """
    num_file_rows = check_hdf5(path, KEYS, scan_rows=options.scan_rows, chunk_rows=options.rows_per_block)
    with open_hdf5(path) as f:
        shape = f[IMAGE_KEY].shape
        keys = {key: {"shape": list(f[key].shape), "dtype": str(f[key].dtype)} for key in KEYS}
    if shape[1] != shape[2]:
        raise DataError(f"{path}: key {IMAGE_KEY!r} must hold square images (N, H, H, 3), but got shape {shape}")
    h, size = shape[1], options.image_size
    if (options.image_mode == "pad" and size < h) or (options.image_mode == "crop" and size > h):
        raise DataError(f"dataset.image_size: {size} cannot be reached from {h}-pixel images by "
                        f"image_mode={options.image_mode!r}; use {'crop' if size < h else 'pad'} or resize")
    return num_file_rows, h, keys


def _preprocessing_record(options: JetsOptions, input_size: int, clip: bool, stats: dict[str, Any]) -> dict[str, Any]:
    """``info["preprocessing"]``: the options, the formula and the train statistics
    (:func:`channel_statistics`; its ``rows`` becomes ``stats_rows``), as JSON values."""
    stats = dict(stats)
    return {
        "channels": list(CHANNELS), "image_mode": options.image_mode, "image_size": options.image_size,
        "input_size": input_size, "log1p": options.log1p, "scale": options.scale, "clip": clip,
        **({"quantile": options.quantile} if options.scale == "quantile" else {}),
        "formula": "clip((log1p(geometry(x)) - offset) / divisor)" if options.log1p else
                   "clip((geometry(x) - offset) / divisor)",
        "stats_rows": stats.pop("rows"), "stats_split": "train", **stats,
    }


def _datasets(path: Location, train: list[tuple[int, int]], val: list[tuple[int, int]], pre: JetPreprocessor,
              rows_per_task: int, rows_per_block: int, read_cpus: float, read_concurrency: int, buffer_mb: int, *,
              row: bool = False, check_finite: bool = True) -> dict[str, Any]:
    """``{"train", "val"}`` lazy Ray datasets streamed from ``path`` (needs Ray initialised)."""
    keys = [IMAGE_KEY, *SCALAR_KEYS]
    # Blocks stay whole tasks (Ray Data's 128 MiB block target): handing over every rows_per_block
    # yield instead cost ~30% of the throughput at 32x32 for no memory a task does not already bound.
    common = {"rows_per_task": rows_per_task, "rows_per_block": rows_per_block, "transform": pre, "row_column": row,
              "check_finite": check_finite,
              "num_cpus": read_cpus, "concurrency": read_concurrency, "buffer_bytes": buffer_mb * 2**20}
    return {"train": read_hdf5(path, keys, ranges=train, **common), "val": read_hdf5(path, keys, ranges=val, **common)}


def _val_rows(path: Location, ranges: list[tuple[int, int]], pre: JetPreprocessor, rows_per_block: int,
              num: int) -> dict[str, np.ndarray]:
    """The first ``num`` validation rows (blocks in file order), preprocessed as the streamed
    datasets serve them: ``image`` ``(num, 3, S, S)`` float32, ``y``, ``m0``, ``pt`` float32; no Ray."""
    parts, left = [], num
    for start, stop in ranges:
        if left <= 0:
            break
        stop = min(stop, start + left)
        parts += [pre(columns) for columns in iter_rows(path, [IMAGE_KEY, *SCALAR_KEYS], start, stop,
                                                        rows_per_block=rows_per_block)]
        left -= stop - start
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}


@register_dataset("jets", JetsOptions)
def _load(options: JetsOptions, seed: int) -> PreparedData:
    return load_jets(options, seed)


# The synthetic generator.


def synthetic_jets(num: int, rng: np.random.Generator, size: int = 125) -> dict[str, np.ndarray]:
    """``num`` synthetic jets: a stand-in with the real schema's layout and rough q/g contrasts, not physics.

    Per jet: label ``y`` (1 quark, 0 gluon, p=1/2); ``pt`` from a falling spectrum
    ``250 GeV * u**(-1/4)`` capped at 2 TeV; a Poisson number of constituents (mean 20 for quarks,
    32 for gluons, growing slowly with pt) sharing the pt (Dirichlet, alpha 0.6); positions
    Gaussian around the axis with width 0.05 rad (quark) or 0.08 rad (gluon) times
    ``(500 GeV / pt)**0.3``, harder constituents closer in; 60% charged (tracks), 25% photons
    (ECAL), 15% neutral hadrons; the HCAL channel holds all hadron pT on a 5x coarser grid
    spread back. ``m0`` is the small-angle invariant mass of the constituents,
    ``m**2 = sum_i<j pt_i pt_j dR_ij**2`` (so it grows with the jet width).

    Returns:
        ``X_jets (num, size, size, 3)`` float32 pT in GeV, ``y``, ``m0``, ``pt`` ``(num,)`` float32.
    """
    y = (rng.random(num) < 0.5).astype(np.float32)
    pt = np.minimum(250.0 * rng.random(num) ** -0.25, 2000.0)
    quark = y == 1
    mean_n = np.where(quark, 20.0, 32.0) * (1 + 0.15 * np.log(pt / 250.0))
    n = np.maximum(rng.poisson(mean_n), 2)
    jet = np.repeat(np.arange(num), n)  # jet index of each constituent
    share = rng.gamma(0.6, size=len(jet))
    share /= np.bincount(jet, share, minlength=num)[jet]
    c_pt = share * pt[jet]
    width = np.where(quark, 0.05, 0.08) * (500.0 / pt) ** 0.3
    mean_share = 1.0 / n[jet]
    radius = width[jet] * np.clip((share / mean_share) ** -0.25, 0.3, 3.0)
    pos = rng.normal(size=(len(jet), 2)) * radius[:, None]  # (eta, phi) offsets in rad
    kind = rng.choice(3, size=len(jet), p=[0.6, 0.25, 0.15])  # charged, photon, neutral hadron
    # Small-angle mass: m^2 = P * sum p_i r_i^2 - |sum p_i r_i|^2 over each jet's constituents.
    p_sum = np.bincount(jet, c_pt, minlength=num)
    pr2 = np.bincount(jet, c_pt * (pos**2).sum(axis=1), minlength=num)
    prx = np.bincount(jet, c_pt * pos[:, 0], minlength=num)
    pry = np.bincount(jet, c_pt * pos[:, 1], minlength=num)
    m0 = np.sqrt(np.maximum(p_sum * pr2 - prx**2 - pry**2, 0.0))
    pix = np.floor(pos / PIXEL_RAD + size / 2).astype(np.int64)
    inside = ((pix >= 0) & (pix < size)).all(axis=1)
    images = np.zeros((num, size, size, 3), dtype=np.float32)
    hadron = np.zeros((num, size, size), dtype=np.float32)
    j, r, c = jet[inside], pix[inside, 0], pix[inside, 1]
    for channel, mask in ((0, kind[inside] == 0), (1, kind[inside] == 1)):
        np.add.at(images, (j[mask], r[mask], c[mask], channel), c_pt[inside][mask])
    np.add.at(hadron, (j[kind[inside] != 1], r[kind[inside] != 1], c[kind[inside] != 1]),
              c_pt[inside][kind[inside] != 1])
    coarse = size // 5 * 5
    blocks = hadron[:, :coarse, :coarse].reshape(num, coarse // 5, 5, coarse // 5, 5).sum(axis=(2, 4)) / 25
    images[:, :coarse, :coarse, 2] = np.repeat(np.repeat(blocks, 5, axis=1), 5, axis=2)
    return {"X_jets": images, "y": y, "m0": m0.astype(np.float32), "pt": pt.astype(np.float32)}


def write_synthetic(path: str | Path, num: int, *, seed: int = 0, chunk_rows: int = 256, size: int = 125,
                    compression: str | None = "gzip") -> Path:
    """Writes ``num`` synthetic jets (:func:`synthetic_jets`) to an HDF5 file in the ML4SCI schema.

    Written ``chunk_rows`` jets at a time, so memory stays at one chunk (~48 MB for 256 jets)
    whatever ``num`` is; chunk ``k`` is drawn from ``SeedSequence([seed, k])``.

    Args:
        path: Output file (overwritten).
        num: Jets, > 0.
        seed: Random seed.
        chunk_rows: Jets generated and written at a time; also the HDF5 chunk size (rows).
        size: Image side in pixels.
        compression: ``"gzip"`` (as the demo file), ``"lzf"`` or None (file size = data size).

    Returns:
        ``path``.
    """
    import h5py

    if num <= 0:
        raise ValueError(f"num must be > 0, but got {num}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdf5_chunk = min(chunk_rows, 32) if compression else None
    with h5py.File(path, "w") as f:
        f.attrs["source"] = ("Synthetic stand-in written by `python -m datasets.jets synth`: quark jets narrower "
                             "with fewer constituents than gluon jets, falling pt spectrum. Not physics.")
        f.attrs["y_meaning"] = "1 = quark jet, 0 = gluon jet"
        out = {
            "X_jets": f.create_dataset("X_jets", (num, size, size, 3), dtype=np.float32, compression=compression,
                                       chunks=(hdf5_chunk, size, size, 3) if hdf5_chunk else None),
            **{key: f.create_dataset(key, (num,), dtype=np.float32) for key in SCALAR_KEYS},
        }
        for k, start in enumerate(range(0, num, chunk_rows)):
            stop = min(start + chunk_rows, num)
            jets = synthetic_jets(stop - start, np.random.default_rng(np.random.SeedSequence([seed, k])), size)
            for key, values in jets.items():
                out[key][start:stop] = values
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.jets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write synthetic jets (a stand-in, not physics) in the ML4SCI schema")
    synth.add_argument("out", type=Path)
    synth.add_argument("--n", type=int, default=5000, help="number of jets")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip")
    synth.add_argument("--chunk-rows", type=int, default=256, help="jets generated at a time (memory)")
    args = parser.parse_args(argv)
    if args.n <= 0:
        parser.error(f"--n must be > 0, but got {args.n}")
    write_synthetic(args.out, args.n, seed=args.seed, chunk_rows=args.chunk_rows,
                    compression=None if args.compression == "none" else args.compression)
    print(f"wrote {args.n} synthetic jets to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
