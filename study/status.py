"""A Tune callback that records each trial's status as our own JSON (imports Ray: import it only
after :mod:`study.run` has set up Ray's environment)."""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune import Callback

from study.results import STATUS_DIR

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

    def _write(self, trial, status: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"trial_id": trial.trial_id, "status": status, "trial_dir": Path(trial.path).name}
        tmp = self.directory / f".{trial.trial_id}.json.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.directory / f"{trial.trial_id}.json")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trial, "RUNNING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, "ERROR")
