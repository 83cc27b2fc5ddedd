"""Jets: options, validation of bad files, block split, train-only statistics, preprocessing known
answers, the synthetic generator, streamed datasets, and a two-worker study end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from pydantic import ValidationError

from datasets.jets import (
    JetPreprocessor,
    JetsOptions,
    area_matrix,
    load_jets,
    main,
    resolve_path,
    split_blocks,
    synthetic_jets,
    write_synthetic,
)
from datasets.registry import DataError, get_dataset
from tests.conftest import REPO, SHARED_DATA, subprocess_env

REAL_FILE = SHARED_DATA / "qg_jets_pythia.h5"


def write_jets(path: Path, num: int = 40, size: int = 25, **overrides) -> Path:
    """A jets file with images ``(num, size, size, 3)`` float32 = 1 + row index, y/m0/pt float32."""
    arrays = {
        "X_jets": np.broadcast_to(1 + np.arange(num, dtype=np.float32)[:, None, None, None], (num, size, size, 3)),
        "y": (np.arange(num) % 2).astype(np.float32),
        "m0": np.full(num, 30.0, dtype=np.float32),
        "pt": np.full(num, 500.0, dtype=np.float32),
    }
    arrays.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return path


def options(path: Path, **kw) -> JetsOptions:
    base = {"name": "jets", "path": path, "image_size": 25, "image_mode": "pad", "block_rows": 10, "stats_rows": 1000}
    return JetsOptions(**{**base, **kw})


# Options and paths.


def test_options_are_bounded_and_closed(tmp_path):
    with pytest.raises(ValidationError, match="image_size"):
        JetsOptions(name="jets", image_size=2)
    with pytest.raises(ValidationError, match="scale"):
        JetsOptions(name="jets", scale="minmax")
    with pytest.raises(ValidationError, match="resize_to"):
        JetsOptions(name="jets", resize_to=32)


def test_path_from_option_env_or_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("JETS_PATH", raising=False)
    with pytest.raises(DataError, match="dataset.path: no jets file given; set dataset.path or JETS_PATH") as info:
        resolve_path(None)
    assert "\n" not in str(info.value)
    monkeypatch.setenv("JETS_PATH", str(tmp_path / "absent.h5"))
    with pytest.raises(DataError, match=r"JETS_PATH: .*absent.h5: no such file"):
        resolve_path(None)
    path = write_jets(tmp_path / "j.h5")
    monkeypatch.setenv("JETS_PATH", str(path))
    assert resolve_path(None) == path


# Bad files: one line naming the file and the key.


def _nan_pixels(num=40, size=25):
    x = np.ones((num, size, size, 3), dtype=np.float32)
    x[33, 4, 5, 1] = np.nan
    return x


def _inf_pixels(num=40, size=25):
    x = np.ones((num, size, size, 3), dtype=np.float32)
    x[7, 0, 0, 2] = np.inf
    return x


BAD_FILES = {
    "missing key": ({"m0": None}, "'m0' missing"),
    "wrong rank": ({"X_jets": np.ones((40, 25, 25), dtype=np.float32)}, "'X_jets' must have rank 4"),
    "wrong dtype": ({"X_jets": np.ones((40, 25, 25, 3), dtype=np.int16)}, "'X_jets' must be (N, ?, ?, 3) float, but got dtype int16"),
    "wrong channels": ({"X_jets": np.ones((40, 25, 25, 2), dtype=np.float32)}, "'X_jets' must be (N, ?, ?, 3)"),
    "label dtype": ({"y": np.array([b"q"] * 40)}, "'y' must be (N) float/int/uint/bool"),
    "nan pixels": ({"X_jets": _nan_pixels()}, "'X_jets' has NaN or infinite values (first at row 33)"),
    "inf pixels": ({"X_jets": _inf_pixels()}, "'X_jets' has NaN or infinite values (first at row 7)"),
    "nan mass": ({"m0": np.r_[np.zeros(39), np.nan].astype(np.float32)}, "'m0' has NaN or infinite values"),
    "empty": ({k: np.zeros((0, 25, 25, 3) if k == "X_jets" else 0, dtype=np.float32)
               for k in ("X_jets", "y", "m0", "pt")}, "'X_jets' is empty"),
    "lengths": ({"pt": np.ones(39, dtype=np.float32)}, "keys 'X_jets' and 'pt' have different lengths (40 vs 39 rows)"),
    "not square": ({"X_jets": np.ones((40, 25, 24, 3), dtype=np.float32)}, "'X_jets' must hold square images"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_file_fails_with_one_line_naming_file_and_key(tmp_path, case):
    overrides, expected = BAD_FILES[case]
    path = write_jets(tmp_path / "bad.h5", **overrides)
    with pytest.raises(DataError) as info:
        get_dataset("jets").load(options(path), 0)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_not_hdf5_fails_with_one_line_naming_the_file(tmp_path):
    path = tmp_path / "jets.h5"
    path.write_text("X_jets,y\n1,2\n")
    with pytest.raises(DataError, match=r"jets.h5: not an HDF5 file$") as info:
        load_jets(options(path), 0)
    assert str(path) in str(info.value)


def test_image_size_that_the_mode_cannot_reach(tmp_path):
    path = write_jets(tmp_path / "j.h5")
    with pytest.raises(DataError, match=r"dataset.image_size: 16 cannot be reached from 25-pixel images by "
                                        r"image_mode='pad'; use crop or resize"):
        load_jets(options(path, image_size=16), 0)


# The block split.


def test_split_blocks_known_answer():
    train, val = split_blocks(95, 10, 0.25, seed=3)
    assert len(val) == 2  # round(10 blocks * 0.25) = 2 (rounds half to even)
    everything = sorted(train + val)
    assert everything == [(s, min(s + 10, 95)) for s in range(0, 95, 10)]  # whole blocks, each once
    assert val == sorted(val)
    assert split_blocks(95, 10, 0.25, seed=3) == (train, val)
    orders = {tuple(split_blocks(95, 10, 0.25, seed=s)[0]) for s in range(5)}
    assert len(orders) == 5  # the seed picks the val blocks and the train order
    assert split_blocks(95, 10, 0.01, seed=0)[1].__len__() == 1  # at least one val block
    with pytest.raises(DataError, match="dataset.block_rows=100: 95 rows make 1 block"):
        split_blocks(95, 100, 0.1, seed=0)


# Preprocessing known answers.


def test_area_matrix_conserves_and_averages():
    a = area_matrix(125, 25)
    np.testing.assert_allclose(a.sum(axis=0), 1.0, rtol=1e-6)  # every input pixel fully assigned
    np.testing.assert_allclose(a[3, 15:20], 1.0)
    assert a[3].sum() == pytest.approx(5.0)
    b = area_matrix(3, 2)  # output pixels cover 1.5 input pixels each
    np.testing.assert_allclose(b, [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])


def test_pad_crop_resize_geometry():
    x = np.zeros((2, 125, 125, 3), dtype=np.float32)
    x[0, 62, 62, 0] = 7.0  # the centre pixel
    x[1, 10:15, 20:25, 2] = 1.0  # one 5x5 block of the 25x25 coarse grid

    padded = JetPreprocessor(125, 128, "pad", log1p=False).images(x)
    assert padded.shape == (2, 3, 128, 128) and padded.dtype == np.float32
    assert padded[0, 0, 63, 63] == 7.0  # 1 zero row/column before, 2 after
    assert padded[:, :, 0].sum() == 0 and padded[:, :, 126:].sum() == 0

    cropped = JetPreprocessor(125, 64, "crop", log1p=False).images(x)
    assert cropped.shape == (2, 3, 64, 64)
    assert cropped[0, 0, 32, 32] == 7.0  # rows 30..93 kept

    resized = JetPreprocessor(125, 25, "resize", log1p=False).images(x)
    assert resized.shape == (2, 3, 25, 25)
    assert resized[1, 2, 2, 4] == pytest.approx(25.0)  # the 5x5 block's total pT in one pixel
    np.testing.assert_allclose(resized.sum(axis=(2, 3)), x.sum(axis=(1, 2)), rtol=1e-5)  # pT conserved
    small = JetPreprocessor(125, 32, "resize", log1p=False).images(x)
    np.testing.assert_allclose(small.sum(axis=(2, 3)), x.sum(axis=(1, 2)), rtol=1e-5)


def test_log1p_then_per_channel_scaling_and_clip():
    x = np.zeros((1, 4, 4, 3), dtype=np.float32)
    x[0, 0, 0] = [np.e - 1, np.e**2 - 1, 0.0]  # log1p -> 1, 2, 0
    pre = JetPreprocessor(4, 4, "pad", log1p=True, offset=(0.0, 0.0, 0.0), divisor=(2.0, 1.0, 4.0), clip=True)
    out = pre.images(x)
    np.testing.assert_allclose(out[0, :, 0, 0], [0.5, 1.0, 0.0], rtol=1e-6)  # 2 / 1 = 2 clipped to 1
    zscore = JetPreprocessor(4, 4, "pad", log1p=True, offset=(1.0, 1.0, 1.0), divisor=(2.0, 2.0, 2.0))
    np.testing.assert_allclose(zscore.images(x)[0, :, 0, 0], [0.0, 0.5, -0.5], rtol=1e-6)
    columns = pre({"X_jets": x, "y": np.array([1]), "m0": np.array([2.0]), "pt": np.array([3.0], dtype=np.float64),
                   "row": np.array([9])})
    assert set(columns) == {"image", "y", "m0", "pt", "row"}
    assert columns["pt"].dtype == np.float32 and columns["y"].dtype == np.float32


# Statistics: computed on train rows only.


def test_statistics_come_from_train_rows_only(tmp_path):
    path = write_jets(tmp_path / "j.h5", num=100)
    opts = options(path, scale="max", stats_rows=1000)
    before = load_jets(opts, 0).info
    val_rows = np.concatenate([np.arange(a, b) for a, b in before["val_ranges"]])
    train_rows = np.setdiff1d(np.arange(100), val_rows)
    pre = before["preprocessing"]
    assert pre["stats_split"] == "train" and pre["stats_rows"] == len(train_rows) == before["num_train"]
    np.testing.assert_allclose(pre["divisor"], np.log1p(1 + train_rows.max()), rtol=1e-6)  # images hold 1 + row

    with h5py.File(path, "a") as f:  # extreme validation rows
        for row in val_rows:
            f["X_jets"][row] = 1e6
    after = load_jets(opts, 0).info["preprocessing"]
    assert after == pre
    other_seed = load_jets(opts, 1).info  # another split puts some of those rows in train
    assert not set(map(tuple, other_seed["val_ranges"])) >= set(map(tuple, before["val_ranges"]))
    assert other_seed["preprocessing"]["divisor"][0] == pytest.approx(np.log1p(1e6), rel=1e-6)


def test_stats_rows_samples_the_first_train_blocks_in_split_order(tmp_path):
    path = write_jets(tmp_path / "j.h5", num=100)
    info = load_jets(options(path, stats_rows=15, scale="zscore"), 0).info
    train, _ = split_blocks(100, 10, 0.1, 0)
    rows = np.r_[train[0][0]:train[0][1], train[1][0]:train[1][0] + 5]
    values = np.log1p(1 + rows)
    pre = info["preprocessing"]
    assert pre["stats_rows"] == 15 and pre["clip"] is False
    np.testing.assert_allclose(pre["offset"], values.mean(), rtol=1e-5)
    np.testing.assert_allclose(pre["divisor"], values.std(), rtol=1e-4)


def test_quantile_of_nonzero_pixels(tmp_path):
    x = np.zeros((40, 25, 25, 3), dtype=np.float32)
    x[:, 0, :4, :] = np.array([np.e - 1, np.e - 1, np.e - 1, np.e**3 - 1], dtype=np.float32)[None, :, None]
    path = write_jets(tmp_path / "q.h5", X_jets=x)
    info = load_jets(options(path, scale="quantile", quantile=0.5), 0).info
    np.testing.assert_allclose(info["preprocessing"]["divisor"], 1.0, rtol=1e-6)  # median of {1, 1, 1, 3}


def test_limit_and_info(tmp_path):
    path = write_jets(tmp_path / "j.h5", num=100)
    prepared = get_dataset("jets").load(options(path, limit=60, image_size=32, image_mode="resize"), 0)
    info = prepared.info
    assert info["num_train"] + info["num_val"] == 60 and info["num_file_rows"] == 100
    assert all(b <= 60 for _, b in info["val_ranges"])
    assert prepared.input_shape == (3, 32, 32) and prepared.ground_truth is None
    assert prepared.train == {} and prepared.val == {}
    assert info["keys"]["X_jets"] == {"shape": [100, 25, 25, 3], "dtype": "float32"}
    json.dumps(info)  # goes to data.json


# The synthetic generator.


def test_generator_writes_the_real_schema(tmp_path):
    path = write_synthetic(tmp_path / "s.h5", 70, seed=1, chunk_rows=32)
    reference = {"X_jets": ((125, 125, 3), "float32"), "y": ((), "float32"), "m0": ((), "float32"),
                 "pt": ((), "float32")}
    if REAL_FILE.is_file():
        with h5py.File(REAL_FILE, "r") as real:
            reference = {k: (real[k].shape[1:], str(real[k].dtype)) for k in real}
    with h5py.File(path, "r") as f:
        assert {k: (f[k].shape[1:], str(f[k].dtype)) for k in f} == reference
        assert f["X_jets"].shape[0] == 70
        assert "Not physics" in f.attrs["source"]
        assert set(np.unique(f["y"][:])) == {0.0, 1.0}
        assert (f["X_jets"][:] >= 0).all()
    prepared = load_jets(JetsOptions(name="jets", path=path, block_rows=10), 0)
    assert prepared.input_shape == (3, 128, 128)


def test_generator_cli(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    assert main(["synth", str(out), "--n", "12", "--seed", "3", "--compression", "none"]) == 0
    assert "wrote 12 synthetic jets" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f["X_jets"].shape == (12, 125, 125, 3) and f["X_jets"].compression is None
        first = f["X_jets"][:]
    np.testing.assert_array_equal(synthetic_jets(12, np.random.default_rng(np.random.SeedSequence([3, 0])))["X_jets"],
                                  first)


def test_quarks_are_narrower_with_fewer_constituents_than_gluons():
    jets = synthetic_jets(600, np.random.default_rng(0))
    x, y, m0, pt = jets["X_jets"], jets["y"], jets["m0"], jets["pt"]
    grid = np.arange(125) - 62.0
    r2 = grid[:, None] ** 2 + grid[None, :] ** 2
    total = x.sum(axis=(1, 2, 3))
    width = (x.sum(axis=-1) * r2).sum(axis=(1, 2)) / total  # pT-weighted mean r^2, pixels^2
    tracks = (x[..., 0] > 0).sum(axis=(1, 2))
    quark, gluon = y == 1, y == 0
    assert 200 < quark.sum() < 400
    assert width[quark].mean() < 0.7 * width[gluon].mean()
    assert tracks[quark].mean() < 0.8 * tracks[gluon].mean()
    assert m0[quark].mean() < m0[gluon].mean()
    assert np.corrcoef(m0, np.sqrt(width))[0, 1] > 0.3  # mass grows with width
    counts, _ = np.histogram(pt, bins=[250, 350, 450, 550, 650])
    assert pt.min() >= 250 and (np.diff(counts) < 0).all()  # a falling spectrum


# Streamed datasets.


def test_streamed_splits_hold_preprocessed_rows(jets_file, local_ray):
    prepared = load_jets(JetsOptions(name="jets", path=jets_file, image_size=16, image_mode="resize",
                                     block_rows=20, rows_per_block=8, val_fraction=0.2), 7)
    info = prepared.info
    datasets = prepared.ray_datasets(row=True)
    with h5py.File(jets_file, "r") as f:
        raw = {k: f[k][:] for k in f}
    pre = JetPreprocessor(25, 16, "resize", offset=tuple(info["preprocessing"]["offset"]),
                          divisor=tuple(info["preprocessing"]["divisor"]), clip=True)
    val_rows = np.concatenate([np.arange(a, b) for a, b in info["val_ranges"]])
    for split, rows in (("train", np.setdiff1d(np.arange(200), val_rows)), ("val", val_rows)):
        batch = datasets[split].take_batch(batch_size=1000, batch_format="numpy")
        assert set(batch) == {"image", "y", "m0", "pt", "row"}
        np.testing.assert_array_equal(np.sort(batch["row"]), rows)
        assert batch["image"].shape == (len(rows), 3, 16, 16) and batch["image"].dtype == np.float32
        assert 0 <= batch["image"].min() and batch["image"].max() <= 1
        np.testing.assert_allclose(batch["image"], pre.images(raw["X_jets"][batch["row"]]), atol=1e-6)
        for key in ("y", "m0", "pt"):
            assert batch[key].dtype == np.float32
            np.testing.assert_array_equal(batch[key], raw[key][batch["row"]])
    assert len(val_rows) == info["num_val"] == 40
    assert set(prepared.to_ray()["train"].columns()) == {"image", "y", "m0", "pt"}


def test_val_rows_read_the_first_validation_rows_without_ray(jets_file, monkeypatch):
    from datasets import jets

    monkeypatch.setattr(jets, "read_hdf5", None)  # the Ray Data reader must not be involved
    prepared = load_jets(JetsOptions(name="jets", path=jets_file, image_size=16, image_mode="resize",
                                     block_rows=20, rows_per_block=8, val_fraction=0.2), 7)
    info = prepared.info
    with h5py.File(jets_file, "r") as f:
        raw = {k: f[k][:] for k in f}
    pre = JetPreprocessor(25, 16, "resize", offset=tuple(info["preprocessing"]["offset"]),
                          divisor=tuple(info["preprocessing"]["divisor"]), clip=True)
    first = np.concatenate([np.arange(a, b) for a, b in info["val_ranges"]])[:27]  # validation blocks in file order
    rows = prepared.val_rows(27)
    assert set(rows) == {"image", "y", "m0", "pt"}
    assert rows["image"].shape == (27, 3, 16, 16) and rows["image"].dtype == np.float32
    np.testing.assert_allclose(rows["image"], pre.images(raw["X_jets"][first]), atol=1e-6)
    np.testing.assert_array_equal(rows["y"], raw["y"][first])
    assert len(prepared.val_rows(1000)["y"]) == info["num_val"] == 40  # up to num: all there are


# End to end: two Train workers share the streamed train split.


@pytest.mark.slow
def test_two_worker_study_reads_each_train_row_once(tmp_path):
    data = write_synthetic(tmp_path / "jets.h5", 400, seed=0, size=125, chunk_rows=100)
    config = tmp_path / "jets.yaml"
    config.write_text(f"""
name: jets_e2e
dataset: {{name: jets, path: {data}, image_size: 32, image_mode: resize, block_rows: 50, stats_rows: 100,
           val_fraction: 0.25}}
family: {{name: conv_vae, latent_dim: 4, filters: [8, 8, 16], hidden_dim: 32}}
search_space: {{beta: {{type: categorical, choices: [1]}}}}
objective: {{metric: val_elbo, mode: max}}
search: {{algorithm: grid, repeats: 1}}
training: {{epochs: 1, batch_size: 32}}
resources: {{cpus_per_trial: 2, num_workers: 2}}
evaluation: {{metrics: []}}
""")
    env = subprocess_env("rj")
    cmd = [sys.executable, "-m", "study.run", str(config), "--num-cpus", "2", "--no-report",
           "--set", f"storage_path={tmp_path / 'studies'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]

    import pandas as pd

    study_dir = tmp_path / "studies" / "jets_e2e"
    data_info = json.loads((study_dir / "data.json").read_text())
    num_train = data_info["num_train"]
    assert num_train == 300 and data_info["preprocessing"]["stats_split"] == "train"
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert list(trials["status"]) == ["TERMINATED"]
    epochs = pd.read_parquet(study_dir / "epochs.parquet")
    # Only rank 0's report reaches Tune; Train shards with streaming_split(2, equal=True), so rank 0
    # reads exactly half of the train rows and rank 1 the other half.
    assert list(epochs["train_rows"]) == [num_train // 2]
    assert np.isfinite(trials["val_elbo"]).all()


@pytest.mark.slow
def test_one_epoch_study_streams_jets_from_a_bucket(tmp_path, s3_bucket):
    data = write_synthetic(tmp_path / "jets.h5", 200, seed=0, size=25, chunk_rows=50)
    uri = s3_bucket.put("data/jets.h5", data)
    config = tmp_path / "jets.yaml"
    config.write_text(f"""
name: jets_s3
dataset: {{name: jets, path: "{uri}", image_size: 24, image_mode: crop, block_rows: 20, stats_rows: 100,
           val_fraction: 0.2}}
family: {{name: conv_vae, latent_dim: 2, filters: [4, 4], hidden_dim: 8, likelihood: gaussian}}
search_space: {{beta: {{type: categorical, choices: [1]}}}}
objective: {{metric: val_elbo, mode: max}}
search: {{algorithm: grid, repeats: 1}}
training: {{epochs: 1, batch_size: 32}}
evaluation: {{metrics: []}}
""")
    env = subprocess_env("rjs", **s3_bucket.env)  # the trials' read tasks reach the bucket with these
    cmd = [sys.executable, "-m", "study.run", str(config), "--num-cpus", "2", "--no-report",
           "--set", f"storage_path={tmp_path / 'studies'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]

    import pandas as pd

    study_dir = tmp_path / "studies" / "jets_s3"
    record = json.loads((study_dir / "data.json").read_text())
    assert record["source"] == uri and record["num_train"] == 160 and record["num_val"] == 40
    assert {k: record["fingerprint"][k] for k in ("path", "size", "scope")} == {
        "path": uri, "size": data.stat().st_size, "scope": "etag"}
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert list(trials["status"]) == ["TERMINATED"] and np.isfinite(trials["val_elbo"]).all()
    assert list(pd.read_parquet(study_dir / "epochs.parquet")["train_rows"]) == [160]  # every train row, once


def test_task_ranges_merge_adjacent_blocks_and_cover_each_row_once():
    from datasets.jets import task_ranges

    train = [(40, 50), (0, 10), (10, 20), (60, 70), (20, 30)]  # blocks of 10; 30-40 and 50-60 are val
    pieces = task_ranges(train, 25, seed=3)
    rows = sorted(r for a, b in pieces for r in range(a, b))
    assert rows == sorted(r for a, b in train for r in range(a, b))  # every train row exactly once
    assert all(b - a <= 25 for a, b in pieces)
    assert sorted(pieces) == [(0, 25), (25, 30), (40, 50), (60, 70)]  # 0-30 merged, then cut at 25
    assert task_ranges(train, 25, seed=3) == pieces  # the order is the seed's
    assert task_ranges(train, 25) == [(0, 25), (25, 30), (40, 50), (60, 70)]  # no seed: file order
