"""Reading a study directory: checkpoint paths resolved wherever the study is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.results import TRIALS_FILE, StudyDir, load_trials, resolve_checkpoint
from study.spec import load_spec
from tests.conftest import REPO


def make_study(root: Path, checkpoints: list) -> Path:
    study = root / "smoke"
    (study / "trial_a" / "checkpoint_000002").mkdir(parents=True)
    info = load_spec(REPO / "configs" / "smoke.yaml").info()
    StudyDir(study).write_table(TRIALS_FILE, pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(checkpoints))],
                                                           "checkpoint_path": checkpoints}), info)
    return study


def test_relative_checkpoints_resolve_against_the_study_directory_and_stay_relative_on_disk(tmp_path):
    study = make_study(tmp_path, ["trial_a/checkpoint_000002", None])
    trials = load_trials(study)
    assert trials["checkpoint_path"][0] == str(study / "trial_a" / "checkpoint_000002")
    assert pd.isna(trials["checkpoint_path"][1])
    assert load_trials(study / "trials.parquet")["checkpoint_path"][0] == str(study / "trial_a" / "checkpoint_000002")
    assert load_trials(study, resolve_checkpoints=False)["checkpoint_path"][0] == "trial_a/checkpoint_000002"


def test_an_absolute_path_from_another_machine_is_found_under_the_study_directory(tmp_path):
    gone = "/cluster/scratch/studies/smoke/trial_a/checkpoint_000002"
    study = make_study(tmp_path, [gone, "/cluster/scratch/studies/smoke/trial_b/checkpoint_000001"])
    resolved = load_trials(study)["checkpoint_path"].tolist()
    assert resolved == [str(study / "trial_a" / "checkpoint_000002"),
                        "/cluster/scratch/studies/smoke/trial_b/checkpoint_000001"]  # missing everywhere: kept


def test_an_absolute_path_that_exists_is_kept_and_missing_values_are_none(tmp_path):
    other = tmp_path / "other" / "checkpoint_000001"
    other.mkdir(parents=True)
    assert resolve_checkpoint(tmp_path / "smoke", str(other)) == str(other)
    assert resolve_checkpoint(tmp_path, None) is None and resolve_checkpoint(tmp_path, np.nan) is None
