"""End to end on the ground-truth datasets: a real ``python -m study.run`` of one epoch with MIG on colour
dSprites (the shipped grid) and on a generated 3dshapes.h5 streamed through Ray, asserting on the parquet."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, subprocess_env
from tests.datasets.test_shapes3d import write_shapes3d

pytestmark = pytest.mark.slow


def run_study(tmp_path: Path, name: str, dataset: dict, tag: str) -> tuple[Path, subprocess.CompletedProcess]:
    spec = {
        "name": name, "storage_path": str(tmp_path / "studies"), "seed": 0, "dataset": dataset,
        "family": {"name": "conv_vae", "latent_dim": 4, "filters": [8, 8, 16, 16], "hidden_dim": 32},
        "search_space": {"beta": {"type": "categorical", "choices": [1, 4]}},
        "objective": {"metric": "mig", "mode": "max"}, "search": {"algorithm": "grid", "repeats": 1},
        "training": {"epochs": 1, "batch_size": 64}, "resources": {"cpus_per_trial": 1},
        "evaluation": {"metrics": ["mig"], "num_train": 300},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "study.run", str(path), "--num-cpus", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(tag), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return tmp_path / "studies" / name, proc


def assert_scored(study_dir: Path) -> pd.DataFrame:
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}
    assert (trials["epochs_run"] == 1).all()
    assert trials["val_elbo"].map(math.isfinite).all()
    assert ((trials["mig"] >= 0) & (trials["mig"] <= 1)).all()
    return trials


def test_color_dsprites_study(tmp_path):
    study_dir, _ = run_study(tmp_path, "color_smoke", {"name": "color_dsprites", "val_fraction": 0.2, "limit": 3000},
                             "rtc")
    assert_scored(study_dir)
    assert (study_dir / "report" / "latent_pca.png").stat().st_size > 5_000  # observations() of held-out rows


def test_shapes3d_study_streams_the_file(tmp_path):
    path = write_shapes3d(tmp_path / "3dshapes.h5")
    study_dir, _ = run_study(tmp_path, "shapes_smoke", {"name": "shapes3d", "path": str(path), "val_fraction": 0.25,
                                                        "limit": 2400, "task_rows": 400}, "rts3")
    assert_scored(study_dir)
    assert (study_dir / "report" / "latent_pca.png").stat().st_size > 5_000
