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
import os
import tempfile
from pathlib import Path

from analysis.results import JOURNAL_FILE, StudyDir, StudyFileError

__all__ = ["StudyJournal", "working_dir"]

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
