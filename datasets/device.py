"""Device-resident data: an in-memory dataset placed on the trial's device once, batched there.

Ray Data earns its keep by streaming and sharding data larger than memory; a dataset that fits
(dSprites is 3 GB as uint8, the toy sets and MNIST far less) pays for it in per-batch copies
and Arrow conversions. :class:`DeviceData` holds the columns as tensors on the trial's device,
in their stored dtype (uint8 stays uint8), and yields batches by index: a fresh random
permutation every training epoch (drawn from torch's generator, which the loop seeds with the
trial seed), the stored order for validation. It offers the two methods the loop uses of a Ray
Data shard (``iter_torch_batches``, ``iter_batches``), so the loop does not know which it has.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
import torch

__all__ = ["DeviceData"]


class DeviceData:
    """Columns held as tensors on one device and batched there.

    Args:
        columns: Column name -> array ``(N, ...)``, all with the same first dimension.
        shuffle: Draw a new permutation of the rows each pass (training); else keep their order.

    Raises:
        ValueError: If the columns are empty or disagree in length.
    """

    def __init__(self, columns: dict[str, np.ndarray], *, shuffle: bool):
        lengths = {name: len(array) for name, array in columns.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"DeviceData needs columns of one length, got {lengths}")
        self.columns = columns
        self.shuffle = shuffle
        self.num_rows = next(iter(lengths.values()))
        self._tensors: dict[str, torch.Tensor] | None = None
        self._device: torch.device | None = None

    @property
    def nbytes(self) -> int:
        """Bytes the columns take (as stored)."""
        return int(sum(np.asarray(a).nbytes for a in self.columns.values()))

    def limit(self, num_rows: int) -> DeviceData:
        """The first ``num_rows`` rows (a searched ``train_fraction`` keeps a prefix of the stored order)."""
        return DeviceData({k: v[:num_rows] for k, v in self.columns.items()}, shuffle=self.shuffle)

    def iterator(self) -> DeviceData:
        """This object: it iterates itself (as a Ray dataset's ``iterator()`` would)."""
        return self

    def _on(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        device = torch.device(device)
        if self._tensors is None or self._device != device:
            with warnings.catch_warnings():  # arrays from Ray's object store are read-only; they are only read
                warnings.simplefilter("ignore", UserWarning)
                self._tensors = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in self.columns.items()}
            self._device = device
        return self._tensors

    def iter_torch_batches(self, *, batch_size: int, dtypes: torch.dtype = torch.float32,
                           device: torch.device | str = "cpu") -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``{column: (B, ...) dtypes}`` on ``device``; the last batch may be smaller."""
        tensors = self._on(device)
        if self.shuffle:
            order = torch.randperm(self.num_rows).to(tensors[next(iter(tensors))].device)  # (N,)
        for start in range(0, self.num_rows, batch_size):
            if self.shuffle:
                rows = order[start : start + batch_size]
                yield {k: t.index_select(0, rows).to(dtypes) for k, t in tensors.items()}
            else:
                yield {k: t[start : start + batch_size].to(dtypes) for k, t in tensors.items()}

    def iter_batches(self, *, batch_size: int, batch_format: str = "numpy") -> Iterator[dict[str, np.ndarray]]:
        """Batches of the stored arrays in stored order (numpy), e.g. held-out images for metrics."""
        if batch_format != "numpy":
            raise ValueError(f"DeviceData yields numpy batches, not {batch_format!r}")
        for start in range(0, self.num_rows, batch_size):
            yield {k: np.asarray(v[start : start + batch_size]) for k, v in self.columns.items()}
