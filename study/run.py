"""Run or resume a study: ``python -m study.run CONFIG [--set KEY=VALUE ...] [--address ADDR]``.

Validates the spec, the storage location, the data and every family's config against the data
before anything is written and before Ray starts (bad input exits with code 2 and one line on
stderr), starts Ray on this machine bound to loopback, or joins the cluster named by
``--address`` / ``RAY_ADDRESS``, runs the trials with Ray Tune and Optuna, then writes
``trials.parquet``, ``epochs.parquet`` and the report into ``storage_path/name`` and prints the
best trial. Run again on the same study directory, it resumes an interrupted study.

Exit codes: 0 every trial finished with every requested number; 1 the study ran but left a
hole (an errored trial, a finished trial without the objective), with a one-line summary on
stderr; 2 bad input; 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (what Kubernetes, Slurm
and cloud pre-emption send): the trials are stopped, the tables of what finished are written,
and the same command resumes the study. A second signal during that shutdown exits at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from analysis.cli import ArgumentParser, int_in, one_line
from analysis.results import LOCK_FILE, SPEC_FILE, DataRecord, StudyDir, StudyLock, best_trial
from datasets.registry import PreparedData
from study.checks import (
    BAD_INPUT,
    check_address,
    check_local_gpus,
    check_same_data,
    check_same_place,
    check_study_dir,
    check_trusted,
    load_data,
    open_study,
)
from study.journal import StudyJournal
from study.spec import StudySpec, load_spec

__all__ = ["main", "run_study", "Interrupts"]

RESUME_LINE = "interrupted: run the same command to resume"


class Interrupts:
    """SIGINT and SIGTERM in the driver. The first stops the study the way Ctrl-C stops Tune
    (through Tune's own SIGUSR1 interruption while trials run; a KeyboardInterrupt otherwise), so
    that the tables of what finished are written; a second one, during that shutdown, exits at
    once with the resume line and no traceback (the reaper, :mod:`study.reaper`, ends the local Ray).

    Attributes:
        first: The first signal received, or None.
        fitting: Whether Tune is running the trials (set by the driver around ``Tuner.fit``).
    """

    def __init__(self):
        self.first: int | None = None
        self.fitting = False
        self.exit_code: int | None = None  # set once the run is over: a signal then ends the exit at once

    def install(self) -> dict[int, object]:
        """Handles SIGINT and SIGTERM from now on (again after ``ray.init``, which installs its own);
        returns the handlers it replaced."""
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @property
    def code(self) -> int:
        """The exit code of an interrupted study: 128 + the first signal (130 SIGINT, 143 SIGTERM)."""
        return 128 + (self.first if self.first is not None else signal.SIGINT)

    def _on_signal(self, signum: int, frame) -> None:
        if self.exit_code is not None:  # during Python's exit (Ray's shutdown): finish it now, quietly
            os._exit(self.exit_code)
        if self.first is None:
            self.first = signum
            if self.fitting:
                signal.raise_signal(signal.SIGUSR1)  # Tune stops the trials and saves its state
                return
            raise KeyboardInterrupt
        print(RESUME_LINE, file=sys.stderr, flush=True)
        os._exit(self.code)


INTERRUPTS = Interrupts()


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m study.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="study spec (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field, e.g. --set training.epochs=1 (repeatable)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on loopback)")
    parser.add_argument("--num-cpus", type=int_in(1), default=None, help="CPUs of the local Ray, >= 1 (default: all)")
    parser.add_argument("--num-gpus", type=int_in(0), default=None,
                        help="GPUs of the local Ray (default: those torch sees; more are logical GPUs, for tests)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing study directory of the same name instead of resuming it")
    parser.add_argument("--restart-errored", action="store_true",
                        help="when resuming, run errored trials again from scratch")
    parser.add_argument("--resume-errored", action="store_true",
                        help="when resuming, continue errored trials from their last checkpoint")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.add_argument("--dashboard", action="store_true",
                        help="start the Ray dashboard on 127.0.0.1:8265 (always on when trials use a TorchTrainer)")
    return parser


def _prepare_study(spec: StudySpec, study: StudyDir, prepared: PreparedData, *, resume: bool,
                   overwrite: bool) -> None:
    """Writes ``spec.json`` and, for a new study, ``data.json`` (a resume keeps the record of what
    the study started on); with ``overwrite``, the earlier study is deleted first."""
    if overwrite:
        study.clear(keep=(LOCK_FILE,))  # check_study_dir made sure it holds a study; this driver's lock stays
    study.write_text(SPEC_FILE, text=spec.model_dump_json(indent=2))
    if not resume or study.read_data_record() is None:
        channels = list(prepared.channel_names) if prepared.channel_names else None
        study.write_data_record(DataRecord(source=str(prepared.source), fingerprint=prepared.fingerprint(),
                                           started_in=study.location, channels=channels, **prepared.info))


def _announce(spec: StudySpec, study: StudyDir, prepared: PreparedData, placement: str) -> None:
    from study.space import num_trials

    described = prepared.describe()
    print(f"study {spec.name}: {num_trials(spec)} trials of {' | '.join(spec.family_names)} on {spec.dataset.name} "
          f"({prepared.source}, {described.num_train} train / {described.num_val} val rows); writing to {study}",
          flush=True)
    where = "on each trial device, batched by index" if placement == "device" else "Ray Data"
    print(f"data placement: {placement} ({where})", flush=True)


def run_study(spec: StudySpec, args: argparse.Namespace) -> int:
    """Runs (or resumes) a validated study; returns the exit code (see the module docstring).

    The cluster address and the data are checked first, then the storage (a write probe); the
    study is locked for this driver before its directory is read or anything is written, and stays
    locked until the end.
    """
    address = args.address or os.environ.get("RAY_ADDRESS")
    check_address(address)
    check_local_gpus(spec, address)
    prepared = load_data(spec)
    study = open_study(spec)
    study.probe()
    with StudyLock(study, "study.run", create=True):
        return _run_locked(spec, study, prepared, args)


def _check_resume(spec: StudySpec, study: StudyDir, prepared: PreparedData, overwrite: bool) -> bool:
    """Whether the run resumes the study, after the resume checks (same spec, data, place; trusted)."""
    resume = check_study_dir(spec, study, overwrite)
    if resume:
        check_same_data(study, prepared.fingerprint())
        check_same_place(study)
        check_trusted(study)
        if study.remote:
            print(f"resuming from {study}: Tune's saved state there is unpickled; the bucket prefix is trusted like "
                  "code (see the security page)", flush=True)
    return resume


def _run_locked(spec: StudySpec, study: StudyDir, prepared: PreparedData, args: argparse.Namespace) -> int:
    from study.driver import TrialData
    from study.tuning import build_tuner, check_cluster, init_ray

    resume = _check_resume(spec, study, prepared, args.overwrite)
    journal = StudyJournal(study)
    journal.prepare(resume=resume)
    if resume:
        journal.check(spec.name)
    in_process = spec.resources.in_process
    placement = prepared.placement(spec.dataset, torch_trainer=not in_process)
    init_ray(args.address or os.environ.get("RAY_ADDRESS"), args.num_cpus, args.num_gpus,
             dashboard=not in_process or args.dashboard)
    INTERRUPTS.install()
    cluster = check_cluster(spec)
    _prepare_study(spec, study, prepared, resume=resume, overwrite=args.overwrite)
    _announce(spec, study, prepared, placement)
    start = time.perf_counter()
    tuner = build_tuner(spec, TrialData.place(prepared, placement), journal, resume=resume, cluster=cluster,
                        errored={"resume_errored": args.resume_errored, "restart_errored": args.restart_errored})
    INTERRUPTS.fitting = True
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass  # the tables of what finished are still written; the exit code says interrupted
    finally:
        INTERRUPTS.fitting = False
        journal.push()
    return _finish(spec, study, args, time.perf_counter() - start)


def _summary(spec: StudySpec, trials, seconds: float) -> None:
    """Prints the trials' statuses and the best trial by the first objective."""
    import pandas as pd

    from analysis.metrics import metric_mode

    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    print(f"\nstudy {spec.name} ended after {seconds:.0f} s: {counts}")
    metric = spec.objective.metrics[0]
    best = best_trial(trials, metric, spec.objective.modes[0])
    if best is None:
        return
    params = ", ".join(f"{k}={best[k]}" for k in spec.searched_params if k in best)
    shown = [m for m in dict.fromkeys([*spec.objective.metrics, "val_elbo", "val_recon_loss", "val_kl", "mig"])
             if m in best and pd.notna(best[m])]
    values = ", ".join(f"{m}={best[m]:.4g}" for m in shown)
    print(f"best trial by {metric} ({metric_mode(metric)}): {best['trial_id']} ({params}, repeat {best['repeat']}): "
          f"{values}")


def _finish(spec: StudySpec, study: StudyDir, args: argparse.Namespace, seconds: float) -> int:
    """Writes the tables (and the report when every trial ended); returns the exit code."""
    from analysis.results import load_trials
    from study.results import write_results
    from study.space import num_trials

    trials_path, epochs_path = write_results(study, spec)
    trials = load_trials(study, resolve_checkpoints=False)
    _summary(spec, trials, seconds)
    print(f"trials:  {trials_path}\nepochs:  {epochs_path}")
    expected = num_trials(spec)
    finished = trials[trials["status"].isin(["TERMINATED", "ERROR"])] if len(trials) else trials
    if len(finished) < expected:
        print(f"{RESUME_LINE} ({len(finished)} of {expected} trials ended)", file=sys.stderr)
        return INTERRUPTS.code
    trials = _study_metrics(spec, study, trials)
    if not args.no_report:
        from analysis.report import write_report

        print(f"report:  {write_report(study)}")
    return _holes(trials, spec, trials_path.rsplit("/", 1)[-1])


def _study_metrics(spec: StudySpec, study: StudyDir, trials):
    """The trials table with the study-level metrics asked for (``udr``: each trial against the other
    seeds of its configuration) added and written to ``trials.parquet``; one that cannot be computed
    leaves its column empty (a hole, see :func:`_holes`) and says why on one line."""
    import numpy as np

    from analysis.metrics import METRICS
    from analysis.results import TRIALS_FILE

    names = [name for name in spec.evaluation.metrics if METRICS[name].kind == "study"]
    if not names:
        return trials
    info = spec.info()
    for name in names:
        try:
            trials = METRICS[name].compute(trials, info, study=study, random_state=np.random.default_rng(spec.seed))
        except (ValueError, OSError) as err:  # data, checkpoints or storage unreadable here
            print(f"{name}: not computed: {one_line(str(err))}", file=sys.stderr)
    study.write_table(TRIALS_FILE, trials, info)
    print(f"{', '.join(names)}: written to {study.uri(TRIALS_FILE)}")
    return trials


def _holes(trials, spec: StudySpec, table: str) -> int:
    """1 with a one-line summary on stderr when a trial errored or a finished trial lacks an
    objective metric or a study-level metric asked for (udr); else 0."""
    import pandas as pd

    from analysis.metrics import METRICS

    errored = int((trials["status"] == "ERROR").sum())
    done = trials[trials["status"] == "TERMINATED"]
    # A trial the scheduler stopped early never reached the end-of-trial evaluation: not a hole.
    if spec.scheduler.name != "asha":
        early = done["status"] != done["status"]  # all False
    elif spec.training.steps:
        early = done["step"] < spec.training.steps if "step" in done else done["status"] == done["status"]
    else:
        early = done["epochs_run"] < spec.training.epochs
    lacking = [i for i in done.index if not early[i]
               and any(m not in done or pd.isna(done.loc[i, m]) for m in spec.objective.metrics)]
    after = [key for name in spec.evaluation.metrics if METRICS[name].kind == "study" for key in METRICS[name].keys]
    unscored = [i for i in done.index if any(k not in done or pd.isna(done.loc[i, k]) for k in after)]
    problems = []
    if errored:
        problems.append(f"{errored} trial(s) errored (see the error column of {table})")
    if lacking:
        ids = ", ".join(str(done.loc[i, "trial_id"]) for i in lacking[:5])
        problems.append(f"{len(lacking)} finished trial(s) lack the objective {spec.objective.metrics} ({ids})")
    if unscored:
        problems.append(f"{len(unscored)} finished trial(s) lack {after} (compared across seeds after the trials)")
    if not len(done):
        problems.append("no trial finished")
    if problems:
        print(f"study {spec.name} left holes: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, *, keep_handlers: bool = False) -> int:
    """The command line; returns the exit code.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        keep_handlers: Keep handling SIGINT and SIGTERM after returning (the script does, so that a
            signal during Ray's shutdown at exit ends it quietly); else the previous handlers return.
    """
    args = _parser().parse_args(argv)
    INTERRUPTS.first = INTERRUPTS.exit_code = None
    previous = INTERRUPTS.install()  # a SIGTERM before Ray starts ends the run like Ctrl-C
    code = 1
    try:
        spec = load_spec(args.config, args.overrides)
        code = run_study(spec, args)
    except BAD_INPUT as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(RESUME_LINE, file=sys.stderr)
        code = INTERRUPTS.code
    finally:
        INTERRUPTS.exit_code = code
        if not keep_handlers:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code


if __name__ == "__main__":
    sys.exit(main(keep_handlers=True))
