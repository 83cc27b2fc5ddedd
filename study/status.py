"""Tune callbacks of a study: each trial's status as our own JSON, and TensorBoard curves as the
study sees them (imports Ray: import it only after :mod:`study.run` has set up Ray's environment)."""

from __future__ import annotations

import json
from pathlib import Path

import math

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from study.results import CURRENT_FILE, STATUS_DIR, TUNE_FIELDS

__all__ = ["TrialStatusCallback", "EpochTensorBoard"]


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


class EpochTensorBoard(TBXLoggerCallback):
    """TensorBoard event files per trial, as the study sees them (``tensorboard --logdir STUDY_DIR``).

    Each reported metric is a scalar named as its ``epochs.parquet`` column (``val_elbo``, not
    ``ray/tune/val_elbo``), with the epoch as the step (the optimisation step under a
    ``training.steps`` budget); when a trial ends, its sampled hyperparameters and last metrics
    go to the HParams plugin. Being a ``TBXLoggerCallback``, it replaces Tune's default one.

    Args:
        use_steps: Use the reported ``step`` as the x axis instead of the ``epoch``.
    """

    def __init__(self, use_steps: bool = False):
        super().__init__()
        self.use_steps = use_steps

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = int(result.get("step" if self.use_steps else "epoch", iteration))
        metrics = {key: value for key, value in result.items()
                   if key not in TUNE_FIELDS and key not in ("epoch", "step") and isinstance(value, (int, float))
                   and not isinstance(value, bool) and math.isfinite(value)}
        writer = self._trial_writer[trial]
        for key, value in metrics.items():
            writer.add_scalar(key, value, global_step=step)
        self._trial_result[trial] = {**self._trial_result.get(trial, {}), **metrics}
        writer.flush()
