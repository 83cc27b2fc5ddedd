"""A Tune callback that records each trial's status as our own JSON (imports Ray: import it only
after :mod:`study.run` has set up Ray's environment)."""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune import Callback

from study.results import CURRENT_FILE, STATUS_DIR

__all__ = ["TrialStatusCallback"]


class TrialStatusCallback(Callback):
    """Runs in the driver: writes ``trial_status/<trial_id>.json`` as Tune starts, completes or
    errors each trial.

    The record holds ``trial_id``, ``status`` (``RUNNING``; ``TERMINATED``: finished, or stopped
    early by the scheduler; ``ERROR``) and the trial directory's name, so that the result tables
    never need Tune's pickled experiment state.

    Args:
        study_dir: The study directory.
    """

    def __init__(self, study_dir: Path):
        self.directory = Path(study_dir) / STATUS_DIR

    def _write(self, trials, trial, status: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"trial_id": trial.trial_id, "status": status, "trial_dir": Path(trial.path).name}
        _atomic_json(self.directory / f"{trial.trial_id}.json", record)
        # The trials Tune holds now: an errored trial restarted (--restart-errored) is replaced by a
        # new one with a new id, and its old directory must not count.
        _atomic_json(self.directory / CURRENT_FILE, {"trial_ids": [t.trial_id for t in trials]})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trials, trial, "RUNNING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trials, trial, "ERROR")


def _atomic_json(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)
