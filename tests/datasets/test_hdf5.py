"""The HDF5 Ray Data datasource: contiguous read tasks, coverage across shards, validation at load."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets.hdf5 import HDF5Datasource, KeySpec, blocks, check_hdf5, read_hdf5
from datasets.registry import DataError

SPECS = {"x": KeySpec(3, "f", (4, 2)), "label": KeySpec(1, "fi")}


def write(path: Path, num: int = 100, **overrides) -> Path:
    """``x (num, 4, 2)`` float32 whose row ``i`` is all ``i``; ``label (num,)`` int64 ``= 10 * i``."""
    arrays = {"x": np.repeat(np.arange(num, dtype=np.float32), 8).reshape(num, 4, 2),
              "label": 10 * np.arange(num, dtype=np.int64)}
    arrays.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def test_blocks_split_ranges_in_order():
    assert blocks([(0, 5), (10, 12)], 2) == [(0, 2), (2, 4), (4, 5), (10, 12)]
    assert blocks([(3, 4)], 100) == [(3, 4)]
    with pytest.raises(ValueError, match="rows must be > 0"):
        blocks([(0, 5)], 0)


def test_check_returns_rows_of_a_valid_file(tmp_path):
    assert check_hdf5(write(tmp_path / "ok.h5", 37), SPECS, chunk_rows=5) == 37


def test_check_refuses_different_lengths(tmp_path):
    path = write(tmp_path / "len.h5", 10, label=np.arange(9))
    with pytest.raises(DataError, match=r"keys 'x' and 'label' have different lengths \(10 vs 9 rows\)") as info:
        check_hdf5(path, SPECS)
    assert str(path) in str(info.value)


def test_check_refuses_a_group_and_a_wrong_trailing_shape(tmp_path):
    path = write(tmp_path / "group.h5", 10)
    with h5py.File(path, "a") as f:
        f.create_group("g")
    with pytest.raises(DataError, match="key 'g' is a group"):
        check_hdf5(path, {"g": KeySpec(1)})
    with pytest.raises(DataError, match=r"key 'x' must be \(N, 4, 3\) float, but got shape \(10, 4, 2\)"):
        check_hdf5(path, {"x": KeySpec(3, "f", (4, 3))})


def test_scan_rows_bounds_the_nan_scan(tmp_path):
    x = np.zeros((50, 4, 2), dtype=np.float32)
    x[41, 3, 1] = np.nan
    path = write(tmp_path / "nan.h5", 50, x=x)
    assert check_hdf5(path, SPECS, scan_rows=41, chunk_rows=7) == 50  # row 41 not scanned
    with pytest.raises(DataError, match=r"key 'x' has NaN or infinite values \(first at row 41\)"):
        check_hdf5(path, SPECS, scan_rows=42, chunk_rows=7)


def test_datasource_tasks_follow_the_ranges(tmp_path):
    source = HDF5Datasource(write(tmp_path / "d.h5"), ["x"], ranges=[(50, 75), (0, 10)], rows_per_task=10)
    tasks = source.get_read_tasks(parallelism=99)
    assert [t.metadata.num_rows for t in tasks] == [10, 10, 5, 10]
    assert source.estimate_inmemory_data_size() == 35 * 8 * 4
    with pytest.raises(ValueError, match=r"row range \(90, 101\)"):
        HDF5Datasource(write(tmp_path / "e.h5"), ["x"], ranges=[(90, 101)])


def test_read_task_blocks_transform_and_row_column(tmp_path):
    def double(columns):
        return {**columns, "x": 2 * columns["x"]}

    source = HDF5Datasource(write(tmp_path / "d.h5"), ["x", "label"], ranges=[(20, 33)], rows_per_task=100,
                            rows_per_block=5, transform=double, row_column=True)
    (task,) = source.get_read_tasks(1)
    tables = list(task())
    assert [t.num_rows for t in tables] == [5, 5, 3]
    rows = np.concatenate([t.column("row").to_numpy() for t in tables])
    np.testing.assert_array_equal(rows, np.arange(20, 33))
    x = np.concatenate([t.column("x").combine_chunks().to_numpy_ndarray() for t in tables])
    assert x.shape == (13, 4, 2)
    np.testing.assert_array_equal(x[:, 2, 1], 2 * np.arange(20, 33))
    np.testing.assert_array_equal(np.concatenate([t.column("label").to_numpy() for t in tables]),
                                  10 * np.arange(20, 33))


def test_read_task_raises_on_inf_it_meets(tmp_path):
    x = np.zeros((30, 4, 2), dtype=np.float32)
    x[17, 0, 0] = -np.inf
    path = write(tmp_path / "inf.h5", 30, x=x)
    (task,) = HDF5Datasource(path, ["x"], rows_per_task=30, rows_per_block=4).get_read_tasks(1)
    with pytest.raises(DataError, match=r"inf.h5: key 'x' has NaN or infinite values \(first at row 17\)"):
        list(task())


def test_streaming_split_covers_every_row_once_per_epoch(tmp_path, local_ray):
    """Two consumers of ``streaming_split(2)`` (Ray Train's sharding) read disjoint rows that
    together are exactly the requested ranges, in each of two epochs."""
    path = write(tmp_path / "cover.h5", 230)
    ranges = [(100, 230), (0, 60)]  # 60..100 excluded (say, validation blocks)
    expected = np.r_[100:230, 0:60]
    ds = read_hdf5(path, ["x", "label"], ranges=ranges, rows_per_task=20, rows_per_block=8, row_column=True,
                   num_cpus=0, concurrency=2)
    shards = ds.streaming_split(2, equal=False)
    for _ in range(2):
        seen: list[list[np.ndarray]] = [[], []]
        errors: list[BaseException] = []

        def consume(rank: int) -> None:
            try:
                for batch in shards[rank].iter_batches(batch_size=16, batch_format="numpy"):
                    np.testing.assert_array_equal(batch["label"], 10 * batch["row"])
                    np.testing.assert_array_equal(batch["x"][:, 0, 0], batch["row"])
                    seen[rank].append(batch["row"])
            except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
                errors.append(err)

        threads = [threading.Thread(target=consume, args=(rank,)) for rank in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)
        first, second = (np.concatenate(parts) for parts in seen)
        assert len(first) > 0 and len(second) > 0
        assert len(np.intersect1d(first, second)) == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([first, second])), np.sort(expected))


def test_tensor_columns_reach_torch_batches(tmp_path, local_ray):
    import torch

    ds = read_hdf5(write(tmp_path / "t.h5", 40), ["x", "label"], rows_per_task=16, num_cpus=0)
    batches = list(ds.iter_torch_batches(batch_size=40, dtypes=torch.float32))
    assert sum(len(b["x"]) for b in batches) == 40
    assert batches[0]["x"].shape[1:] == (4, 2) and batches[0]["x"].dtype == torch.float32


def test_block_and_buffer_bounds_reach_the_dataset(tmp_path, local_ray):
    path = write(tmp_path / "b.h5", 40)
    whole = read_hdf5(path, ["x"], rows_per_task=20, rows_per_block=5, num_cpus=0)
    assert whole.materialize().num_blocks() == 2  # a task gathers its small yields into one block
    bounded = read_hdf5(path, ["x"], rows_per_task=20, rows_per_block=5, num_cpus=0, buffer_bytes=3 << 20,
                        max_block_bytes=5 * 4 * 2 * 4)  # one 5-row yield of x
    assert bounded.context.execution_options.resource_limits.object_store_memory == 3 << 20
    assert bounded.materialize().num_blocks() == 8  # each 5-row yield handed over as it comes
