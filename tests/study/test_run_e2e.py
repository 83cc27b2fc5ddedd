"""End to end: a real ``python -m study.run configs/smoke.yaml``, asserting on what it leaves."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_trials_parquet(smoke_study):
    study_dir, proc, _ = smoke_study
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert len(trials) == 2
    assert set(trials["status"]) == {"TERMINATED"}
    assert sorted(trials["beta"]) == [1, 4]
    expected = ["trial_id", "error", "seed", "repeat", "epochs_run", "wall_seconds", "checkpoint_path",
                "val_elbo", "val_recon_loss", "val_kl", "train_loss", "mig", "best_val_elbo",
                "torch_version", "ray_version", "optuna_version", "git_sha"]
    for column in expected:
        assert column in trials, column
    assert (trials["epochs_run"] == 1).all()
    assert trials["val_elbo"].map(math.isfinite).all()
    assert (trials["val_elbo"] < 0).all()
    assert ((trials["mig"] >= 0) & (trials["mig"] <= 1)).all()
    assert ((trials["val_elbo"] + trials["val_recon_loss"] + trials["val_kl"]).abs() < 1e-6).all()
    for path in trials["checkpoint_path"]:
        assert (Path(path) / "checkpoint.pt").is_file()
    assert "best trial by mig" in proc.stdout


def test_epochs_parquet(smoke_study):
    study_dir, _, _ = smoke_study
    epochs = pd.read_parquet(study_dir / "epochs.parquet")
    assert len(epochs) == 2
    assert set(epochs["epoch"]) == {1}
    assert {"trial_id", "train_loss", "val_elbo", "val_recon_loss", "val_kl"} <= set(epochs.columns)


def test_report(smoke_study):
    study_dir, _, _ = smoke_study
    report = study_dir / "report"
    table = pd.read_csv(report / "disentanglement_table.csv")
    assert sorted(table["beta"]) == [1, 4]
    assert table["mig_mean"].notna().all()
    assert (report / "tradeoff.png").stat().st_size > 10_000
    assert "| beta |" in (report / "disentanglement_table.md").read_text()
    index = (report / "index.md").read_text()
    for name in ["tradeoff.png", "metrics_vs_beta.png", "rate_distortion.png", "pareto.png",
                 "metric_correlation.png", "learning_curves.png", "traversals.png", "reconstructions.png",
                 "latent_pca.png"]:
        assert (report / name).stat().st_size > 5_000, name
        assert f"]({name})" in index, name
    assert "<img src='tradeoff.png'" in (report / "index.html").read_text()


def test_rerun_resumes_without_new_trials(smoke_study):
    study_dir, _, run = smoke_study
    before = pd.read_parquet(study_dir / "trials.parquet")
    proc = subprocess.run(run["cmd"], cwd=REPO, env=run["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming study smoke" in proc.stdout
    after = pd.read_parquet(study_dir / "trials.parquet")
    assert sorted(after["trial_id"]) == sorted(before["trial_id"])
    assert after.set_index("trial_id")["mig"].equals(before.set_index("trial_id")["mig"])
