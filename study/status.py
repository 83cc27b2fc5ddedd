"""Tune callbacks of a study: each trial's status as our own JSON, and TensorBoard curves as the
study sees them (imports Ray: import it only after :mod:`study.run` has set up Ray's environment)."""

from __future__ import annotations

import math
import time

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from analysis.results import TUNE_FIELDS, StudyDir, TrialStatus
from study.journal import StudyJournal

__all__ = ["TrialStatusCallback", "EpochTensorBoard", "JournalSync", "ProgressLine"]


class TrialStatusCallback(Callback):
    """Runs in the driver: writes ``trial_status/<trial_id>.json`` as Tune starts, completes or
    errors each trial.

    The record holds ``trial_id``, ``status`` (``RUNNING``; ``TERMINATED``: finished, or stopped
    early by the scheduler; ``ERROR``) and the trial directory's name, so that the result tables
    never need Tune's pickled experiment state.

    Args:
        location: The study directory (a local path or a URI).
    """

    def __init__(self, location: str):
        self.location = location
        self._study: StudyDir | None = None  # opened on first use, in the driver (the callback is pickled)

    def __getstate__(self) -> dict:
        return {"location": self.location, "_study": None}

    def _write(self, trials, trial, status: str) -> None:
        if self._study is None:
            self._study = StudyDir(self.location)
        record = TrialStatus(trial_id=trial.trial_id, status=status, trial_dir=trial.path.rstrip("/").rsplit("/", 1)[-1])
        self._study.write_status(record, [t.trial_id for t in trials])

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trials, trial, "RUNNING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trials, trial, "ERROR")


class JournalSync(Callback):
    """Runs in the driver: copies the live Optuna journal into the study (object storage) as each
    trial ends and when the experiment ends (:class:`study.journal.StudyJournal`).

    Args:
        journal: The study's journal.
    """

    def __init__(self, journal: StudyJournal):
        self.journal = journal

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.journal.push()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.journal.push()

    def on_experiment_end(self, trials, **info):
        self.journal.push()


class ProgressLine(Callback):
    """Runs in the driver: one line of progress every ``interval_s`` seconds, and one at the end, in
    place of Tune's table of every trial (a study of 1,000 trials would print 1,000 rows each time).

    ``progress 00:04:10: 153/1000 trials ended (150 finished, 3 errored), 2 running; best val_elbo -1.23``

    Args:
        total: Trials in the study.
        metric: The metric to quote the best of (the first objective).
        mode: ``"min"`` or ``"max"``.
        interval_s: Seconds between lines.
    """

    def __init__(self, total: int, metric: str, mode: str, interval_s: float = 30.0):
        self.total, self.metric, self.mode, self.interval_s = total, metric, mode, interval_s
        self.started = time.monotonic()
        self.last = self.started
        self.best: float | None = None
        self.ended = {"TERMINATED": 0, "ERROR": 0}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = value if better else self.best

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended["TERMINATED"] += 1

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended["ERROR"] += 1

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last >= self.interval_s:
            self._print(trials)

    def on_experiment_end(self, trials, **info):
        self._print(trials)

    def _print(self, trials) -> None:
        self.last = time.monotonic()
        elapsed = time.strftime("%H:%M:%S", time.gmtime(self.last - self.started))
        running = sum(1 for t in trials if t.status == "RUNNING")
        done, errored = self.ended["TERMINATED"], self.ended["ERROR"]
        best = f"; best {self.metric} {self.best:.4g}" if self.best is not None else ""
        print(f"progress {elapsed}: {done + errored}/{self.total} trials ended ({done} finished, {errored} errored), "
              f"{running} running{best}", flush=True)


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
