"""The Optuna journal is part of a study's integrity: a resume on a damaged one is refused before Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import study.run as run_module
import study.tuning as tuning
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # the damaged journals are copies of a real smoke study's

SMOKE = REPO / "configs" / "smoke.yaml"


class RayStarted(AssertionError):
    pass


@pytest.fixture
def copied_study(smoke_study, tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    """A copy of the session's smoke study, set to resume where it now lies; and the study.run arguments."""
    source, _, context = smoke_study
    storage = tmp_path / "studies"
    study = storage / "smoke"
    shutil.copytree(source, study, symlinks=True)
    record = json.loads((study / "data.json").read_text())
    (study / "data.json").write_text(json.dumps({**record, "started_in": str(study)}))
    spec = json.loads((study / "spec.json").read_text())
    (study / "spec.json").write_text(json.dumps({**spec, "storage_path": str(storage)}))

    def tripwire(*args, **kwargs):
        raise RayStarted("Ray was started on a damaged journal")

    monkeypatch.setattr(tuning, "init_ray", tripwire)
    for key in ("DSPRITES_PATH", "RAY_TMPDIR"):
        monkeypatch.setenv(key, context["env"][key])
    args = [str(SMOKE), "--num-cpus", "2", "--set", f"storage_path={storage}"]
    return study, args


def refused(capsys, args: list[str], *fragments: str) -> None:
    code = run_module.main(args)
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in [*fragments, "optuna.journal", "--overwrite"]:
        assert fragment in lines[0], (fragment, lines[0])


def test_a_missing_journal_is_refused(copied_study, capsys):
    study, args = copied_study
    (study / "optuna.journal").unlink()
    refused(capsys, args, "missing, but the study has trials")


def test_a_corrupt_journal_is_refused(copied_study, capsys):
    study, args = copied_study
    journal = study / "optuna.journal"
    data = bytearray(journal.read_bytes())
    data[40:44] = b"\xff\xfe\xff\xfe"
    journal.write_bytes(bytes(data))
    refused(capsys, args, "corrupt (not UTF-8")
    journal.write_text(journal.read_text(errors="replace").replace("\ufffd", "") + "not json\n{}\n")
    refused(capsys, args, "corrupt")


def test_a_truncated_journal_is_refused(copied_study, capsys):
    study, args = copied_study
    journal = study / "optuna.journal"
    text = journal.read_text()
    journal.write_text(text[: len(text) - 25])  # cut inside the last record
    refused(capsys, args, "truncated")


def test_another_studys_journal_is_refused(copied_study, capsys, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, args = copied_study
    journal = study / "optuna.journal"
    journal.unlink()
    optuna.create_study(study_name="someone_else", storage=JournalStorage(JournalFileBackend(str(journal))))
    refused(capsys, args, "holds the Optuna study ['someone_else'], not 'smoke'")
    journal.unlink()
    optuna.create_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(str(journal))))
    refused(capsys, args, "does not hold the configuration")


def test_the_undamaged_copy_passes_the_check(copied_study, capsys):
    study, args = copied_study
    with pytest.raises(RayStarted):  # every check before Ray passed
        run_module.main(args)
