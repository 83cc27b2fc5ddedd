"""The checkpoint directory's format: trial.json's provenance, and what a resumed trial reads back."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.trainables.test_loop import trial
from trainables.checkpoint import (
    CHECKPOINT_FILE,
    PROVENANCE_FIELDS,
    TRIAL_FILE,
    load_saved_trial,
    provenance,
    save_checkpoint,
)
from trainables.trial import build_model


def test_provenance_fields_are_trial_jsons_provenance_keys_in_order(tmp_path):
    config = trial(epochs=1)
    stamp = provenance(torch.device("cpu"), 2, "node-a", gpu_ids=["0", "3"], precision="bf16").ended()
    save_checkpoint(tmp_path, build_model(config), [], 1, config, {}, stamp)
    written = json.loads((tmp_path / TRIAL_FILE).read_text())["provenance"]
    assert tuple(written) == PROVENANCE_FIELDS
    assert written["gpu_ids"] == ["0", "3"] and written["node_id"] == "node-a" and written["threads"] == 2
    assert written["precision"] == "bf16"
    assert written["ended_at"] >= written["started_at"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stamp.threads = 3


def test_a_resumed_trial_reads_back_what_was_saved(tmp_path):
    config = trial(epochs=1)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters())
    snapshots = {"inputs": np.zeros((2, 1, 16, 16), np.float32), "epoch_0001": np.ones((2, 1, 16, 16), np.float16)}
    stamp = provenance(torch.device("cpu"), 1, started_at="2024-01-02T03:04:05.000+00:00", precision="fp32")
    save_checkpoint(tmp_path, model, [optimizer], 3, config, snapshots, stamp, step=12, skipped=5,
                    scaler={"scale": 8.0})
    saved = load_saved_trial(tmp_path)
    assert (saved.epoch, saved.step, saved.skipped, saved.scaler) == (3, 12, 5, {"scale": 8.0})
    assert saved.started_at == "2024-01-02T03:04:05.000+00:00"
    assert sorted(saved.snapshots) == ["epoch_0001", "inputs"]
    assert saved.snapshots["epoch_0001"].dtype == np.float16
    assert all(torch.equal(saved.model[k], v) for k, v in model.state_dict().items())
    assert len(saved.optimizers) == 1


def test_defaults_of_a_checkpoint_without_step_scaler_snapshots_or_stamp(tmp_path):
    config = trial(epochs=1)
    save_checkpoint(tmp_path, build_model(config), [], 1, config, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_FILE, TRIAL_FILE])  # no SNAPSHOT_FILE
    saved = load_saved_trial(tmp_path)
    assert (saved.epoch, saved.step, saved.skipped, saved.scaler, saved.snapshots, saved.started_at) == \
        (1, 0, 0, {}, {}, None)
    assert set(torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)) == {"model", "optimizers", "epoch"}
