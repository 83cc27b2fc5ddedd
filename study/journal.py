"""The study's Optuna journal: live in a local file, kept in the study directory.

Optuna's ``JournalFileBackend`` appends to a local file under a file lock, which object storage
cannot give. For a study in a local directory the live journal is the study's own
``optuna.journal``. For a study in object storage the live journal is a local working copy,
``$VAE_STUDY_WORKDIR`` (default ``<system temp dir>/vae-study-<uid>``) ``/<digest of the study
location>/optuna.journal``: the same path for the same study on every run, which the searcher's
saved state names. :meth:`StudyJournal.prepare` makes the working copy before the Tuner starts (a
new study: none; a resume: the stored journal, or the working copy when it holds the stored one
and more, as after the driver was killed); :meth:`StudyJournal.push` copies it to the study each
time Tune saves the searcher's state (``study.space.RepeatSearcher.save``, so the stored journal
always holds every trial the saved search state knows), as every trial ends
(:class:`study.status.JournalSync`) and when the study ends, so ``optuna.load_study`` works on the
stored copy and a resume continues it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from analysis.results import JOURNAL_FILE, StudyDir, StudyFileError
from trainables.trial import REPEAT_KEY

__all__ = ["StudyJournal", "JournalError", "working_dir"]

RECOVER = ("the search cannot resume from it: put back a good copy of the journal, or run with --overwrite to "
           "start the study afresh")


class JournalError(StudyFileError):
    """The study's Optuna journal cannot serve a resume (missing, corrupt, truncated, foreign)."""

WORKDIR_ENV = "VAE_STUDY_WORKDIR"


def working_dir(location: str) -> Path:
    """The driver's local working directory for the study at ``location`` (not created)."""
    root = os.environ.get(WORKDIR_ENV) or Path(tempfile.gettempdir()) / f"vae-study-{os.getuid()}"
    return Path(root).expanduser() / hashlib.sha256(location.encode()).hexdigest()[:16]


class StudyJournal:
    """Where the study's Optuna journal lives while the study runs, and its copy in the study.

    Args:
        study: The study directory.
    """

    def __init__(self, study: StudyDir):
        self.study = study
        self.local = working_dir(study.location) / JOURNAL_FILE if study.remote else Path(study.path(JOURNAL_FILE))

    def prepare(self, *, resume: bool) -> None:
        """Makes the live local journal (object storage only): none for a new study; for a resume
        the stored journal, or the working copy when it continues the stored one (it is
        append-only, so the longer of the two holds the other).

        Raises:
            analysis.results.StudyFileError: If the working copy and the stored journal differ in
                what both hold (another study's working copy); the message says how to recover.
        """
        if not self.study.remote:
            return
        self.local.parent.mkdir(parents=True, exist_ok=True)
        stored = self.study.read_bytes(JOURNAL_FILE) if resume and self.study.is_file(JOURNAL_FILE) else None
        local = self.local.read_bytes() if resume and self.local.is_file() else None
        if stored is None or (local is not None and local.startswith(stored)):
            if local is None:
                self.local.unlink(missing_ok=True)
            return  # the working copy is as new as the stored one, or newer
        if local is not None and not stored.startswith(local):
            raise StudyFileError(f"{self.local}: this driver's working copy of the Optuna journal and "
                                 f"{self.study.uri(JOURNAL_FILE)} differ; delete the working copy to resume from "
                                 "the stored journal")
        tmp = self.local.with_name(f".{self.local.name}.tmp")
        tmp.write_bytes(stored)
        tmp.replace(self.local)

    def push(self) -> None:
        """Copies the local working copy to the study (object storage only; one PUT)."""
        if self.study.remote and self.local.is_file():
            self.study.write_bytes(JOURNAL_FILE, data=self.local.read_bytes())

    def check(self, name: str) -> None:
        """Refuses to resume on a journal that would give wrong results: missing while Tune's state
        is there, not UTF-8 JSON lines, cut short, of another Optuna study, or without the
        configuration of one of the study's trials.

        Args:
            name: The study's name (its Optuna study's name).

        Raises:
            JournalError: One line saying what is wrong and how to recover.
        """
        where = self.study.uri(JOURNAL_FILE)
        if not self.local.is_file():
            if self.study.has_tune_state():
                raise JournalError(f"{where}: missing, but the study has trials; {RECOVER}")
            return
        records = _records(self.local.read_bytes(), where)
        names = sorted({str(r.get("study_name")) for r in records if r.get("op_code") == 0})
        if names != [name]:
            raise JournalError(f"{where}: holds the Optuna study {names or 'of no name'}, not {name!r} (another "
                               f"study's journal); {RECOVER}")
        known = {_config_key(params) for params in _journal_params(self.local, name)}
        for trial in self.study.trials():
            config = {k: v for k, v in trial.params.items() if k != REPEAT_KEY}
            if _config_key(config) not in known:
                raise JournalError(f"{where}: does not hold the configuration {config} of trial {trial.trial_id} "
                                   f"(another run's journal?); {RECOVER}")


def _records(data: bytes, where: str) -> list[dict[str, Any]]:
    """The journal's JSON lines.

    Raises:
        JournalError: On bytes that are not UTF-8, a line that is not a JSON object, or a last
            line cut short.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JournalError(f"{where}: corrupt (not UTF-8 at byte {err.start}); {RECOVER}") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            last = number == len(lines) and not text.endswith("\n")
            what = "truncated (its last line is cut short)" if last else f"corrupt (line {number} is not JSON)"
            raise JournalError(f"{where}: {what}; {RECOVER}") from None
        if not isinstance(record, dict) or "op_code" not in record:
            raise JournalError(f"{where}: corrupt (line {number} is not a journal record); {RECOVER}")
        records.append(record)
    return records


def _journal_params(path: Path, name: str) -> list[dict[str, Any]]:
    """The parameters of every trial of Optuna study ``name`` in the journal at ``path``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))
    return [trial.params for trial in study.trials]


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)
