"""analysis/toy_figures.py on a tiny fake toy study: spec.json and trial checkpoints in the loop's format."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from matplotlib.image import imread

from analysis.results import StudyInfo
from analysis.toy_figures import pick_trials, toy_figures
from study.spec import load_spec
from trainables.checkpoint import CHECKPOINT_FILE, TRIAL_FILE
from trainables.registry import get_family

REPO = Path(__file__).resolve().parents[2]


def fake_study(tmp_path: Path, config: str, family: str, betas: list[float]) -> tuple[Path, pd.DataFrame, StudyInfo]:
    """A study directory with one untrained checkpoint per beta, its trials table and its information."""
    spec = load_spec(REPO / "configs" / config, ["dataset.n=200", f"storage_path={tmp_path}"])
    study_dir = tmp_path / spec.name
    study_dir.mkdir()
    rows = []
    for i, beta in enumerate(betas):
        config_obj, training = spec.trial_settings({"beta": beta, "latent_dim": 2})
        torch.manual_seed(i)
        model = get_family(family).model_cls(config_obj, (2,))
        checkpoint = study_dir / f"trial_{i}" / "checkpoint_000000"
        checkpoint.mkdir(parents=True)
        torch.save({"model": model.state_dict(), "optimizers": [], "epoch": 1}, checkpoint / CHECKPOINT_FILE)
        (checkpoint / TRIAL_FILE).write_text(json.dumps({
            "family": family, "family_config": config_obj.model_dump(mode="json"),
            "training": training.model_dump(mode="json"), "input_shape": [2], "seed": 0}))
        rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "beta": beta, "val_elbo": -float(i),
                     "checkpoint_path": str(checkpoint)})
    return study_dir, pd.DataFrame(rows), spec.info()


def test_pick_trials_takes_the_best_of_each_beta_quantile(tmp_path):
    for i in range(8):
        (tmp_path / f"c{i}").mkdir()
    trials = pd.DataFrame({
        "trial_id": [f"t{i}" for i in range(8)],
        "status": ["TERMINATED"] * 7 + ["ERROR"],
        "beta": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 0.03],
        "val_elbo": [-5.0, -4.0, -3.0, -6.0, -2.0, -1.0, -1.5, 100.0],  # the errored trial's value is ignored
        "checkpoint_path": [str(tmp_path / f"c{i}") for i in range(8)],
    })
    chosen = pick_trials(trials, "val_elbo", "max", columns=3)
    # Groups by beta: [0.01, 0.02, 0.05], [0.1, 0.2], [0.5, 1.0]; best val_elbo in each.
    assert [row["trial_id"] for row in chosen] == ["t2", "t4", "t5"]
    assert [row["trial_id"] for row in pick_trials(trials, "val_elbo", "min", columns=3)] == ["t0", "t3", "t6"]
    one_beta = trials.assign(beta=0.5)
    assert [row["trial_id"] for row in pick_trials(one_beta, "val_elbo", "max")] == ["t5"]
    assert pick_trials(trials.assign(checkpoint_path=None), "val_elbo", "max") == []


def test_toy_figures_of_a_vae_study(tmp_path):
    study_dir, trials, info = fake_study(tmp_path, "toy_beta_sweep.yaml", "mlp_vae", [0.01, 0.1, 1.0])
    out = study_dir / "report"
    out.mkdir()
    figures = toy_figures(None, info, trials, None, out)
    assert [path.name for _, path in figures] == ["toy_data_space.png"]  # unconditional: no per-class figure
    image = imread(figures[0][1])
    assert image.shape[0] > 300 and image.shape[1] > 900  # 3 columns side by side


def test_toy_figures_of_a_cvae_study_add_samples_per_class(tmp_path):
    study_dir, trials, info = fake_study(tmp_path, "toy_cvae.yaml", "mlp_cvae", [0.01, 1.0])
    out = study_dir / "report"
    out.mkdir()
    figures = toy_figures(None, info, trials, None, out)
    assert [path.name for _, path in figures] == ["toy_data_space.png", "toy_samples_per_class.png"]
    assert all(path.is_file() and path.stat().st_size > 10_000 for _, path in figures)


def test_toy_figures_skip_other_datasets(tmp_path, dsprites_file):
    spec = load_spec(REPO / "configs" / "smoke.yaml", [f"dataset.path={dsprites_file}"])
    trials = pd.DataFrame({"trial_id": ["a"], "status": ["TERMINATED"], "beta": [1.0], "mig": [0.1],
                           "checkpoint_path": [str(tmp_path)]})
    assert toy_figures(None, spec.info(), trials, None, tmp_path) == []


def test_toy_figures_are_registered_with_the_report():
    from analysis.report import EXTRA_FIGURES

    assert "analysis.toy_figures:toy_figures" in EXTRA_FIGURES
