"""analysis/prediction_grid.py on synthetic snapshots: layout, colour limits, task titles, the report hook."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis.prediction_grid import FILENAME, prediction_grid, prediction_grid_figure  # noqa: E402
from analysis.results import StudyDir

K = 4


def jet_snapshots(epochs=(1, 2, 5)) -> dict[str, np.ndarray]:
    """3-channel 8x8 'jets' with channel c scaled by 10**c, y/m0 targets, and predictions per epoch."""
    rng = np.random.default_rng(0)
    inputs = (rng.random((K, 3, 8, 8)) * (10.0 ** np.arange(3))[None, :, None, None]).astype(np.float32)
    snapshots = {"inputs": inputs, "column_y": np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32),
                 "column_m0": np.array([52.25, 10.0, 33.0, 70.0], dtype=np.float32)}
    for e in epochs:
        snapshots[f"epoch_{e:04d}"] = (inputs * 2.0).astype(np.float16)  # beyond the truth's range: clipped
        snapshots[f"epoch_{e:04d}_y"] = np.tile([[0.17, 0.83]], (K, 1)).astype(np.float32)
        snapshots[f"epoch_{e:04d}_m0"] = np.full(K, 47.0 + e, dtype=np.float32)
    return snapshots


TASKS = {"y": {"kind": "classify", "classes": 2, "column": None}, "m0": {"kind": "regress", "column": "m0"}}


def test_jets_grid_has_a_block_per_channel_with_shared_limits_and_task_titles():
    snapshots = jet_snapshots()
    fig = prediction_grid_figure(snapshots, tasks=TASKS, channel_names=["tracks", "ecal", "hcal"])
    axes = np.array(fig.axes).reshape(3 * 4, K)  # 3 blocks of (truth + 3 epochs) rows
    labels = [ax.get_ylabel() for ax in axes[:, 0]]
    assert labels[0] == "Tracks\ntruth" and labels[3] == "Tracks\nepoch 5"
    assert labels[4] == "ECAL\ntruth" and labels[9] == "HCAL\nepoch 1"
    for block in range(3):
        lo, hi = snapshots["inputs"][:, block].min(), snapshots["inputs"][:, block].max()
        for ax in axes[4 * block : 4 * block + 4].ravel():
            assert ax.images[0].get_clim() == pytest.approx((lo, hi))  # truth and epochs share the channel's limits
    assert axes[0, 0].get_title() == "y=1\nm0=52.2"
    assert axes[0, 1].get_title() == "y=0\nm0=10"
    assert axes[1, 0].get_title() == "P(y=1)=0.83\nm0=48"
    assert axes[3, 2].get_title() == "P(y=1)=0.83\nm0=52"
    assert axes[4, 0].get_title() == ""  # task texts only above the first block


def test_single_channel_grid_is_one_grey_block_and_tasks_are_inferred():
    rng = np.random.default_rng(1)
    inputs = (rng.random((K, 1, 6, 6)) < 0.5).astype(np.float32)
    snapshots = {"inputs": inputs, "epoch_0003": inputs.astype(np.float16), "column_shape": np.arange(K) % 3,
                 "epoch_0003_shape": np.eye(3)[np.arange(K) % 3] * 0.9 + 0.1 / 3}
    fig = prediction_grid_figure(snapshots)
    axes = np.array(fig.axes).reshape(2, K)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["truth", "epoch 3"]
    assert axes[0, 0].images[0].get_cmap().name == "gray"
    assert axes[0, 2].get_title() == "shape=2"
    assert axes[1, 2].get_title() == "shape=2 (0.93)"


def test_many_epochs_are_thinned_keeping_first_and_last():
    snapshots = jet_snapshots(epochs=range(1, 21))
    fig = prediction_grid_figure(snapshots, channel_names=["a", "b", "c"], max_epochs=5)
    labels = [ax.get_ylabel() for ax in np.array(fig.axes).reshape(-1, K)[:, 0]]
    assert labels[:6] == ["a\ntruth", "a\nepoch 1", "a\nepoch 6", "a\nepoch 11", "a\nepoch 15", "a\nepoch 20"]


@pytest.mark.parametrize(("snapshots", "match"), [
    ({"inputs": np.zeros((4, 2)), "epoch_0001": np.zeros((4, 2))}, "inputs"),
    ({"inputs": np.zeros((4, 1, 4, 4))}, "epoch_NNNN"),
])
def test_unusable_snapshots_are_refused(snapshots, match):
    with pytest.raises(ValueError, match=match):
        prediction_grid_figure(snapshots)


def checkpoint_dir(tmp_path, snapshots: dict | None, tasks: dict | None = TASKS):
    ckpt = tmp_path / "trial" / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    if snapshots is not None:
        np.savez(ckpt / "snapshots.npz", **snapshots)
    (ckpt / "trial.json").write_text(json.dumps({"family": "multitask_vae", "family_config": {"tasks": tasks}}))
    return ckpt


def test_report_hook_draws_the_best_trials_grid(tmp_path):
    ckpt = checkpoint_dir(tmp_path, jet_snapshots())
    (tmp_path / "data.json").write_text(json.dumps({"source": "jets.h5", "channels": ["tracks", "ecal", "hcal"]}))
    out = tmp_path / "report"
    out.mkdir()
    best = pd.Series({"trial_id": "abc", "checkpoint_path": str(ckpt)})
    [(title, path)] = prediction_grid(StudyDir(tmp_path), None, pd.DataFrame([best]), best, out)
    assert path == out / FILENAME and path.stat().st_size > 10_000
    assert "predictions" in title


def test_report_hook_has_nothing_to_show_without_snapshots_or_images(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    study = StudyDir(tmp_path)
    assert prediction_grid(study, None, pd.DataFrame(), None, out) == []
    empty = pd.Series({"trial_id": "a", "checkpoint_path": str(checkpoint_dir(tmp_path / "a", None))})
    assert prediction_grid(study, None, pd.DataFrame(), empty, out) == []
    points = {"inputs": np.zeros((4, 2), dtype=np.float32), "epoch_0001": np.zeros((4, 2), dtype=np.float16)}
    toy = pd.Series({"trial_id": "b", "checkpoint_path": str(checkpoint_dir(tmp_path / "b", points, None))})
    assert prediction_grid(study, None, pd.DataFrame(), toy, out) == []
    assert not (out / FILENAME).exists()
