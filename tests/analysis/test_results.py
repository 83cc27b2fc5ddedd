"""Reading a study directory: checkpoint paths resolved wherever the study is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


# ---- one writer per study -------------------------------------------------------------------------


def test_a_local_study_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    import os

    from analysis.results import StudyDir, StudyLock, StudyLocked

    study = StudyDir(tmp_path / "studies" / "smoke")
    with StudyLock(study, "study.run", create=True):
        assert (tmp_path / "studies" / "smoke" / ".vae-study.lock").is_file()
        try:
            StudyLock(study, "study.results").acquire()
        except StudyLocked as err:
            message = str(err)
        else:
            raise AssertionError("a second holder got the lock")
        assert f"in use by study.run (pid {os.getpid()} on " in message and "smoke" in message
    assert not (tmp_path / "studies" / "smoke").exists()  # a lock taken and given back leaves nothing
    with StudyLock(study, "study.results", create=True):  # free again
        pass


def test_a_missing_study_is_not_created_by_a_reader_taking_its_lock(tmp_path):
    import pytest

    from analysis.results import StudyDir, StudyLock

    with pytest.raises(FileNotFoundError, match="no such study"):
        StudyLock(StudyDir(tmp_path / "nowhere"), "analysis.report").acquire()
    assert not (tmp_path / "nowhere").exists()


def test_an_object_storage_lock_refuses_a_live_holder_and_takes_over_a_dead_or_silent_one(s3_bucket, monkeypatch):
    import json
    import subprocess
    import sys
    import time

    import pytest

    import analysis.results as results
    from analysis.results import StudyDir, StudyLock, StudyLocked

    monkeypatch.setattr(results, "LOCK_SETTLE_S", 0.05)
    study = StudyDir(f"{s3_bucket.uri}/studies/smoke")
    first = StudyLock(study, "study.run", create=True)
    first.acquire()
    with pytest.raises(StudyLocked, match=r"in use by study.run \(pid"):
        StudyLock(study, "study.results").acquire()
    first.release()
    assert "studies/smoke/.vae-study.lock" not in s3_bucket.keys()
    # A holder whose process on this host is gone (a SIGKILLed driver) is taken over at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = json.loads(first.holder.model_dump_json()) | {"pid": int(dead.stdout), "token": "dead"}
    study.write_text(".vae-study.lock", text=json.dumps(holder))
    with StudyLock(study, "study.run"):
        pass
    # A holder on another host without a heartbeat for LOCK_STALE_S is taken over; with one, it is not.
    now = time.time()
    elsewhere = holder | {"host": "elsewhere", "pid": 1, "token": "other"}
    study.write_text(".vae-study.lock", text=json.dumps(elsewhere | {"heartbeat_at": now}))
    with pytest.raises(StudyLocked, match="on elsewhere"):
        StudyLock(study, "study.run").acquire()
    study.write_text(".vae-study.lock", text=json.dumps(elsewhere | {"heartbeat_at": now - results.LOCK_STALE_S - 1}))
    with StudyLock(study, "study.run"):
        pass


def test_a_holder_in_object_storage_keeps_its_lock_alive(s3_bucket, monkeypatch):
    import json
    import time

    import analysis.results as results
    from analysis.results import StudyDir, StudyLock

    monkeypatch.setattr(results, "LOCK_SETTLE_S", 0.05)
    monkeypatch.setattr(results, "LOCK_HEARTBEAT_S", 0.2)
    study = StudyDir(f"{s3_bucket.uri}/studies/smoke")
    with StudyLock(study, "study.run", create=True):
        before = json.loads(study.read_text(".vae-study.lock"))["heartbeat_at"]
        time.sleep(1.0)
        after = json.loads(study.read_text(".vae-study.lock"))["heartbeat_at"]
    assert after > before


def test_table_rebuilds_are_refused_while_a_driver_holds_the_study(tmp_path, capsys):
    from analysis.results import StudyDir, StudyLock
    from study.results import main

    study = make_study(tmp_path, ["trial_a/checkpoint_000002"])
    with StudyLock(StudyDir(study), "study.run"):
        assert main([str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by study.run" in err[0]


def test_an_epoch_run_again_counts_once_the_later_run_kept():
    from analysis.results import _current_lineage

    reports = [{"epoch": 1, "loss": 5.0}, {"epoch": 2, "loss": 4.0}, {"epoch": 1, "loss": 4.9},
               {"epoch": 2, "loss": 3.9}, {"epoch": 3, "loss": 3.0}]
    assert _current_lineage(reports) == [{"epoch": 1, "loss": 4.9}, {"epoch": 2, "loss": 3.9},
                                         {"epoch": 3, "loss": 3.0}]
    assert _current_lineage([{"loss": 1.0}]) == [{"loss": 1.0}]


def test_a_lock_given_back_removes_the_directories_it_made(tmp_path):
    from analysis.results import StudyDir, StudyLock

    with StudyLock(StudyDir(tmp_path / "a" / "b" / "smoke"), "study.run", create=True):
        assert (tmp_path / "a" / "b" / "smoke").is_dir()
    assert list(tmp_path.iterdir()) == []


def test_table_rebuild_flags_are_refused_in_one_line(capsys):
    from study.results import main

    with pytest.raises(SystemExit) as info:
        main(["a", "b"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: unrecognized arguments: b"), err
