"""Turning in-memory columns into Ray Data datasets."""

from __future__ import annotations

import numpy as np

__all__ = ["from_columns"]


def from_columns(columns: dict[str, np.ndarray], block_rows: int = 2048):
    """A materialised Ray dataset with one row per array row and one column per key.

    Blocks of ``block_rows`` rows let Ray Train shard the dataset across workers.
    Multi-dimensional arrays become Arrow tensor columns.

    Args:
        columns: Column name -> array, all with the same first dimension.
        block_rows: Rows per block, > 0.

    Returns:
        (ray.data.MaterializedDataset): The dataset, ``len(columns[key])`` rows.
    """
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    num_rows = len(next(iter(columns.values())))
    tables = []
    for start in range(0, num_rows, block_rows):
        part = {}
        for name, array in columns.items():
            chunk = np.ascontiguousarray(array[start : start + block_rows])
            part[name] = ArrowTensorArray.from_numpy(chunk) if chunk.ndim > 1 else pa.array(chunk)
        tables.append(pa.table(part))
    return ray.data.from_arrow(tables)
