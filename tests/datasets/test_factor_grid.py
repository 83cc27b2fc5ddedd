"""The factor-grid layout: row <-> factor arithmetic, random-access reads, the held-out ground truth,
the block split and its streamed read tasks, converted files, downloads and digests."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from analysis.metrics.factor_vae import FixedFactorSampler
from datasets.factor_grid import (
    GridGroundTruth,
    GridOptions,
    GridSpec,
    ImageRows,
    _groups,
    check_digests,
    check_grid_file,
    check_grid_images,
    download,
    grid_datasets,
    prepare_grid,
    split_grid,
    write_grid_file,
)
from datasets.registry import DataError

SPEC = GridSpec("toygrid", ("a", "b", "c"), (3, 4, 5), (4, 4, 3))  # 60 rows of 4x4 RGB
NUISANCE = GridSpec("toygrid", ("a", "b", "c"), (3, 4, 5), (4, 4, 3), latent=(0, 2))


def pixels(rows: np.ndarray) -> np.ndarray:
    """The image the test files hold at each row: every pixel and channel of row r equals r."""
    return np.broadcast_to(np.asarray(rows, dtype=np.uint8)[:, None, None, None], (len(rows), 4, 4, 3)).copy()


def grid_file(path: Path, spec: GridSpec = SPEC, chunk_rows: int = 7) -> Path:
    return write_grid_file(path, spec, lambda data: data.__setitem__(slice(None), pixels(np.arange(spec.num_rows))),
                           source="test", chunk_rows=chunk_rows)


def test_rows_follow_the_strides_last_factor_fastest():
    factors = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [2, 3, 4]])
    assert SPEC.rows_of(factors).tolist() == [0, 1, 5, 20, 59]
    assert SPEC.factors_of(np.array([0, 1, 5, 20, 59])).tolist() == factors.tolist()
    with pytest.raises(ValueError, match="'b' must be in \\[0, 4\\)"):
        SPEC.rows_of(np.array([[0, 4, 0]]))
    with pytest.raises(ValueError, match=r"\(num, 3\)"):
        SPEC.rows_of(np.zeros((2, 2), dtype=int))


def test_image_rows_read_any_order_with_repeats(tmp_path):
    reader = ImageRows(grid_file(tmp_path / "g.h5"))
    rows = np.array([59, 3, 3, 0, 8, 7, 58, 21])
    got = reader.read(rows)
    assert got.shape == (8, 4, 4, 3) and got.dtype == np.uint8
    assert np.array_equal(got[:, 0, 0, 0], rows)
    assert reader.read(np.array([], dtype=int)).shape == (0, 4, 4, 3)
    with pytest.raises(IndexError, match="\\[0, 60\\)"):
        reader.read(np.array([60]))


def test_image_rows_read_each_touched_chunk_once(tmp_path, monkeypatch):
    """Rows of one chunk (7 rows) come from one slice, whatever their order."""
    reader = ImageRows(grid_file(tmp_path / "g.h5", chunk_rows=7))
    data = reader._open()
    slices = []
    original = type(data).__getitem__

    def spy(self, key):
        slices.append(key)
        return original(self, key)

    monkeypatch.setattr(type(data), "__getitem__", spy)
    reader.read(np.array([15, 1, 3, 40, 2, 44]))  # chunks 0 (1, 2, 3), 2 (15), 5 (40), 6 (44)
    assert slices == [slice(1, 4), slice(15, 16), slice(40, 41), slice(44, 45)]


def test_image_rows_pickle_without_the_open_file(tmp_path):
    reader = ImageRows(grid_file(tmp_path / "g.h5"))
    reader.read(np.array([1]))
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._dataset is None
    assert clone.read(np.array([5]))[0, 0, 0, 0] == 5
    reader.close()


def test_ground_truth_observes_the_file_row_of_each_factor_row(tmp_path):
    path = grid_file(tmp_path / "g.h5")
    held_out = np.array([2, 7, 13, 30, 41, 59])
    data = pickle.loads(pickle.dumps(GridGroundTruth(SPEC, ImageRows(path), held_out)))
    assert data.num_factors == 3 and data.factors_num_values == [3, 4, 5] and len(data) == 6
    rng = np.random.default_rng(0)
    factors = data.sample_factors(200, rng)
    assert set(SPEC.rows_of(factors).tolist()) == set(held_out.tolist())  # drawn from the held-out rows
    x = data.sample_observations_from_factors(np.array([[0, 0, 1], [2, 3, 4], [1, 2, 3]]), rng)
    assert x.shape == (3, 3, 4, 4) and x.dtype == np.float32
    assert np.allclose(x[:, :, 0, 0] * 255, [[1] * 3, [59] * 3, [33] * 3])  # any grid row, held out or not
    assert np.allclose(data.observations(np.array([1, 0])) * 255, pixels(np.array([7, 2])).transpose(0, 3, 1, 2))
    assert data.subset(np.array([3])).file_rows.tolist() == [30]
    with pytest.raises(ValueError, match="'c' must be in"):
        data.sample_observations_from_factors(np.array([[0, 0, 5]]), rng)


def test_non_latent_factors_are_drawn_from_the_random_state(tmp_path):
    data = GridGroundTruth(NUISANCE, ImageRows(grid_file(tmp_path / "g.h5")), np.arange(60))
    assert data.factor_names == ["a", "c"] and data.factors_num_values == [3, 5]
    x = data.sample_observations_from_factors(np.array([[1, 2]] * 400), np.random.default_rng(0))
    rows = np.round(x[:, 0, 0, 0] * 255).astype(int)
    assert set(rows.tolist()) == {20 + 5 * b + 2 for b in range(4)}  # a=1, c=2, every b
    again = data.sample_observations_from_factors(np.array([[1, 2]] * 400), np.random.default_rng(0))
    assert np.array_equal(x, again)


def test_fixed_factor_draws_stay_in_the_held_out_rows(tmp_path):
    """The metrics' fixed-factor sampler treats the ground truth as a subset of the grid."""
    held_out = np.array([0, 6, 12, 33, 47])
    data = GridGroundTruth(SPEC, ImageRows(grid_file(tmp_path / "g.h5")), held_out)
    rng = np.random.default_rng(1)
    fixed = FixedFactorSampler(data).fix(data.sample_factors(50, rng), 0, 0, rng)
    assert set(SPEC.rows_of(fixed).tolist()) <= {0, 6, 12}


def test_split_holds_out_whole_blocks_at_random():
    train, val = split_grid(100, 10, 0.2, seed=3)
    assert len(val) == 2 and len(train) == 8 and val == sorted(val)
    assert sorted(train + val) == [(i, i + 10) for i in range(0, 100, 10)]
    assert split_grid(100, 10, 0.2, seed=3) == (train, val)
    assert split_grid(100, 10, 0.2, seed=4) != (train, val)
    small_train, small_val = split_grid(100, 10, 0.5, seed=3, limit=35)  # 4 blocks of the seeded order
    assert len(small_train) + len(small_val) == 4 and len(small_val) == 2
    assert split_grid(95, 10, 0.2, seed=0)[0][-1][1] <= 95
    with pytest.raises(DataError, match="block_rows=100: 100 rows make 1 block"):
        split_grid(100, 100, 0.5, seed=0)


def test_read_tasks_take_whole_train_blocks_and_merged_val_pieces():
    train_groups, val_groups = _groups([(40, 50), (0, 10), (70, 80)], [(10, 20), (20, 30), (60, 70)], 20)
    assert train_groups == [[(40, 50), (0, 10)], [(70, 80)]]
    assert val_groups == [[(10, 30)], [(60, 70)]]


def test_prepare_aligns_blocks_with_chunks_and_describes_the_columns(tmp_path):
    path = grid_file(tmp_path / "g.h5", chunk_rows=4)
    options = GridOptions(name="toygrid", block_rows=3, task_rows=8, val_fraction=0.25)
    prepared = prepare_grid(SPEC, path, options, seed=0, info={"chunk_rows": check_grid_images(path, SPEC)})
    assert prepared.info["block_rows"] == 4  # 3 rounded up to the chunk rows
    assert prepared.info["num_train"] + prepared.info["num_val"] == 60
    assert prepared.ground_truth.file_rows.tolist() == sorted(prepared.ground_truth.file_rows.tolist())
    description = prepared.describe()
    assert description.input_shape == (3, 4, 4) and description.has_factors
    assert description.classes == {"a": 3, "b": 4, "c": 5}
    assert description.num_val == len(prepared.ground_truth)


def test_streamed_splits_cover_their_rows_once_in_a_seeded_order(tmp_path, local_ray):
    path = grid_file(tmp_path / "g.h5", chunk_rows=2)
    train, val = split_grid(60, 4, 0.25, seed=0)
    train_groups, val_groups = _groups(train, val, 16)
    # One read task at a time, so that the output order is the tasks' (concurrent tasks interleave).
    splits = grid_datasets(path, SPEC, train_groups, val_groups, seed=0, rows_per_block=5, read_cpus=0,
                           read_concurrency=1, read_buffer_mb=64)

    def rows_of(ds) -> np.ndarray:
        batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
        image = np.concatenate([b["image"] for b in batches])
        factors = np.stack([np.concatenate([b[n] for b in batches]) for n in ("a", "b", "c")], axis=1)
        rows = SPEC.rows_of(factors.astype(int))
        assert image.dtype == np.float32 and image.shape[1:] == (3, 4, 4)
        assert np.allclose(image[:, 0, 0, 0] * 255, rows)  # each image is its row's
        return rows

    train_rows, val_rows = rows_of(splits["train"]), rows_of(splits["val"])
    assert sorted(train_rows.tolist()) == sorted(r for a, b in train for r in range(a, b))
    assert val_rows.tolist() == [r for a, b in val for r in range(a, b)]  # file order
    first_task = sorted(r for a, b in train_groups[0] for r in range(a, b))
    assert sorted(train_rows[:16].tolist()) == first_task and train_rows[:16].tolist() != first_task  # shuffled
    assert np.array_equal(rows_of(splits["train"]), train_rows)  # the same order every epoch


def test_converted_files_are_checked_by_their_attributes_and_shape(tmp_path):
    path = grid_file(tmp_path / "g.h5")
    assert check_grid_file(path, SPEC) == 7
    other = GridSpec("other", ("a",), (60,), (4, 4, 3))
    with pytest.raises(DataError, match="not a converted other file"):
        check_grid_file(path, other)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.attrs.update({"format": "vae-study factor grid 1", "dataset": "toygrid"})
        f.create_dataset("images", (60, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(DataError, match=r"key 'images' must be \(60, 4, 4, 3\) uint8") as info:
        check_grid_file(tmp_path / "bad.h5", SPEC, where="dataset.path")
    assert str(info.value).startswith(f"dataset.path: {tmp_path / 'bad.h5'}:") and "\n" not in str(info.value)


def test_write_grid_file_leaves_nothing_when_fill_fails(tmp_path):
    def fail(data):
        raise DataError("boom")

    with pytest.raises(DataError, match="boom"):
        write_grid_file(tmp_path / "x.h5", SPEC, fail, source="test")
    assert list(tmp_path.iterdir()) == []


def test_download_checks_the_published_digest(tmp_path):
    source = tmp_path / "published.bin"
    source.write_bytes(b"grid" * 1000)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = download(source.as_uri(), tmp_path / "cache" / "file.bin", {"md5": md5}, what="test", hint="h", size=4000)
    assert dest.read_bytes() == source.read_bytes()
    with pytest.raises(DataError, match=f"md5 {md5} does not match the published 0+; .*; set it by hand") as info:
        download(source.as_uri(), tmp_path / "cache" / "bad.bin", {"md5": "0" * 32}, what="test",
                 hint="set it by hand")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache" / "bad.bin").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["file.bin"]  # no partial file left
    with pytest.raises(DataError, match="downloading test from .* failed"):
        download((tmp_path / "absent").as_uri(), tmp_path / "cache" / "x", {}, what="test", hint="h")


def test_check_digests_names_the_file_and_both_values(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    check_digests(path, {"sha256": hashlib.sha256(b"abc").hexdigest()}, size=3)
    with pytest.raises(DataError, match=f"{path}: 3 bytes, but the published file has 4"):
        check_digests(path, {}, size=4)
    with pytest.raises(DataError, match="label: sha256 [0-9a-f]+ does not match the published ff"):
        check_digests(path, {"sha256": "ff"}, label="label")
