"""A checkpoint holding a pickled object is refused without running it (``weights_only=True``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from analysis.checkpoints import load_trial_model
from trainables.checkpoint import CHECKPOINT_FILE, TRIAL_FILE, load_checkpoint


class Payload:
    """Unpickling this would create a marker file: the test checks that never happens."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def plant(directory: Path, marker: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "optimizers": [], "epoch": Payload(marker)}, directory / CHECKPOINT_FILE)
    (directory / TRIAL_FILE).write_text(
        '{"family": "conv_vae", "family_config": {}, "input_shape": [1, 64, 64], "training": {}, "seed": 0}'
    )
    return directory


def test_load_checkpoint_refuses_pickle_payload(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = plant(tmp_path / "ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_rescore_model_loader_refuses_pickle_payload(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = plant(tmp_path / "ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):
        load_trial_model(ckpt)
    assert not marker.exists()


def test_plain_torch_load_would_have_run_it(tmp_path):
    """The payload is real: without weights_only it executes (so the tests above can fail)."""
    marker = tmp_path / "pwned"
    ckpt = plant(tmp_path / "ckpt", marker)
    torch.load(ckpt / CHECKPOINT_FILE, weights_only=False)
    assert marker.exists()
