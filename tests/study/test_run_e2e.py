"""End to end: a real ``python -m study.run configs/smoke.yaml``, asserting on what it leaves."""

from __future__ import annotations

import math
import subprocess
import sys
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
    for path in trials["checkpoint_path"]:  # relative to the study directory
        assert not Path(path).is_absolute() and (study_dir / path / "checkpoint.pt").is_file()
    assert "best trial by mig" in proc.stdout


def test_epochs_parquet(smoke_study):
    study_dir, _, _ = smoke_study
    epochs = pd.read_parquet(study_dir / "epochs.parquet")
    assert len(epochs) == 2
    assert set(epochs["epoch"]) == {1}
    assert {"trial_id", "train_loss", "val_elbo", "val_recon_loss", "val_kl"} <= set(epochs.columns)


def test_report(smoke_study):
    from tests.analysis.test_report import check_page

    study_dir, _, _ = smoke_study
    report = study_dir / "report"
    table = pd.read_csv(report / "disentanglement_table.csv")
    assert sorted(table["beta"]) == [1, 4]
    assert table["mig_mean"].notna().all()
    assert (report / "tradeoff.png").stat().st_size > 10_000
    assert "| beta |" in (report / "disentanglement_table.md").read_text()
    index = (report / "index.md").read_text()
    for name in ["tradeoff.png", "metrics_vs_beta.png", "pareto.png", "metric_correlation.png", "learning_curves.png",
                 "parallel_coordinates.png", "traversals.png", "reconstructions.png", "latent_pca.png"]:
        assert (report / name).stat().st_size > 5_000, name
        assert f"]({name})" in index, name
    assert not (report / "rate_distortion.png").exists()  # a panel of tradeoff.png: not drawn twice
    counts = check_page(report)  # every link and image a file of report/, each table's HTML twin, no figure twice
    assert counts.tables == 3 and counts.links == 7 and counts.images >= 9
    assert "Importance is not informative with a single searched parameter (beta)" in counts.text
    best = pd.read_csv(report / "best_configurations.csv")
    assert set(best["verdict"]) == {"seed noise unknown (one repeat each)"}  # repeats: 1


def test_rerun_resumes_without_new_trials(smoke_study):
    study_dir, _, run = smoke_study
    before = pd.read_parquet(study_dir / "trials.parquet")
    proc = subprocess.run(run["cmd"], cwd=REPO, env=run["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming study smoke" in proc.stdout
    after = pd.read_parquet(study_dir / "trials.parquet")
    assert sorted(after["trial_id"]) == sorted(before["trial_id"])
    assert after.set_index("trial_id")["mig"].equals(before.set_index("trial_id")["mig"])


class Payload:
    """Unpickling this writes a marker file: proof that a pickle in the study directory ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle ran"))


def plant_pickles(study_dir: Path, marker: Path) -> list[Path]:
    """Replaces every pickle and every experiment-state JSON blob of a study directory by a payload."""
    import json
    import pickle

    payload = pickle.dumps(Payload(marker))
    planted = []
    for path in [*study_dir.glob("*.pkl"), *study_dir.glob("*/*.pkl")]:
        path.write_bytes(payload)
        planted.append(path)
    for path in study_dir.glob("experiment_state-*.json"):
        state = json.loads(path.read_text())
        state["planted"] = {"_type": "CLOUDPICKLE_FALLBACK", "value": payload.hex()}
        path.write_text(json.dumps(state))
        planted.append(path)
    return planted


def test_reading_a_study_directory_never_unpickles(smoke_study, tmp_path, monkeypatch):
    import shutil
    import sys

    from analysis.report import write_report
    from analysis.results import StudyDir, load_epochs, load_trials
    from study.results import write_results

    study_dir = tmp_path / "smoke"
    shutil.copytree(smoke_study[0], study_dir, symlinks=True)
    marker = tmp_path / "marker"
    assert plant_pickles(study_dir, marker)
    unpickled = []

    def audit(event, args):  # every pickle that resolves a class or function passes here
        if event == "pickle.find_class":
            unpickled.append(args)

    sys.addaudithook(audit)
    write_results(StudyDir(study_dir))
    load_trials(study_dir), load_epochs(study_dir)
    write_report(study_dir)
    assert not marker.exists() and unpickled == []
    # The audit hook does see a pickle when one is loaded (the check can fail).
    import pickle

    pickle.loads(pickle.dumps(Payload(tmp_path / "control")))
    assert unpickled and (tmp_path / "control").exists()


def test_provenance_is_the_trials_and_survives_a_rebuild(smoke_study, tmp_path, monkeypatch):
    import json
    import shutil

    import torch

    from analysis.results import StudyDir
    from study.results import write_results
    from trainables.precision import resolve_precision

    study_dir = tmp_path / "smoke"
    shutil.copytree(smoke_study[0], study_dir, symlinks=True)
    before = pd.read_parquet(study_dir / "trials.parquet")
    for _, row in before.iterrows():
        stamped = json.loads((study_dir / row["checkpoint_path"] / "trial.json").read_text())["provenance"]
        for key in ("torch_version", "ray_version", "optuna_version", "numpy_version", "git_sha", "git_dirty",
                    "hostname", "device", "precision", "threads", "started_at", "ended_at"):
            assert row[key] == stamped[key] or (row[key] is None and stamped[key] is None), key
        assert row["device"] == "cpu" and row["started_at"] <= row["ended_at"]
        assert row["precision"] == resolve_precision("auto", "cpu")  # the smoke spec leaves precision at auto
    monkeypatch.setattr(torch, "__version__", "99.0-rebuilt-elsewhere")
    write_results(StudyDir(study_dir))
    after = pd.read_parquet(study_dir / "trials.parquet")
    assert (after["torch_version"] == before["torch_version"]).all()
    assert (after["started_at"] == before["started_at"]).all()


def test_a_copied_study_finds_its_own_checkpoints(smoke_study, tmp_path):
    import shutil

    from analysis.results import load_trials

    study_dir, _, _ = smoke_study
    copy = tmp_path / "elsewhere" / "smoke"
    shutil.copytree(study_dir, copy, ignore=shutil.ignore_patterns("report"))
    for path in load_trials(copy)["checkpoint_path"]:
        assert Path(path).is_relative_to(copy) and (Path(path) / "checkpoint.pt").is_file()


def test_udr_and_probe_fill_their_columns(tmp_path):
    """search.repeats 2 with evaluation.metrics [mig, udr, probe]: every finished trial gets a finite
    udr (written after the trials) and a probe of dSprites' shape label (during the trial)."""
    from tests.conftest import dsprites_data, subprocess_env

    env = subprocess_env("rtu", DSPRITES_PATH=str(dsprites_data(tmp_path)))
    cmd = [sys.executable, "-m", "study.run", "configs/smoke.yaml", "--num-cpus", "2", "--no-report",
           "--set", f"storage_path={tmp_path / 'studies'}", "--set", "search.repeats=2",
           "--set", "evaluation.metrics=[mig, udr, probe]", "--set", "evaluation.probe_label=shape"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    trials = pd.read_parquet(tmp_path / "studies" / "smoke" / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"}
    assert sorted(zip(trials["beta"], trials["repeat"])) == [(1, 0), (1, 1), (4, 0), (4, 1)]
    assert trials["udr"].map(math.isfinite).all() and trials["udr"].between(0, 1).all()
    assert trials["probe_auc"].between(0, 1).all() and trials["probe_accuracy"].between(0, 1).all()
    assert "udr: written to" in proc.stdout

    from analysis.results import load_info

    assert load_info(tmp_path / "studies" / "smoke").evaluation.metrics == ["mig", "udr", "probe"]  # metadata kept
