"""Run or resume a study: ``python -m study.run CONFIG [--set KEY=VALUE ...] [--address ADDR]``.

Validates the spec, the storage path, the data and every family's config against the data
before anything is written and before Ray starts (bad input exits with code 2 and one line on
stderr), starts Ray on this machine bound to loopback, or joins the cluster named by
``--address`` / ``RAY_ADDRESS``, runs the trials with Ray Tune and Optuna, then writes
``trials.parquet``, ``epochs.parquet`` and the report into ``storage_path/name`` and prints the
best trial. Run again on the same study directory, it resumes an interrupted study.

Exit codes: 0 every trial finished with every requested number; 1 the study ran but left a
hole (an errored trial, a finished trial without the objective), with a one-line summary on
stderr; 2 bad input; 130 interrupted (run the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from analysis.cli import shorten
from analysis.results import DATA_FILE, SPEC_FILE, StudyFileError, read_json
from datasets.registry import DataError, PreparedData, get_dataset
from study.spec import SpecError, StudySpec, load_spec, one_line

__all__ = ["main", "run_study"]


class UsageError(ValueError):
    """Bad input found after the spec itself validated (storage, cluster resources)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="study spec (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field, e.g. --set training.epochs=1 (repeatable)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on loopback)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--num-gpus", type=int, default=None,
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


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def check_storage(spec: StudySpec) -> Path:
    """Checks that the study directory can be created and written; returns it (absolute).

    Probes by creating and removing a temporary directory in the nearest existing ancestor (or
    the study directory itself), so nothing is left behind.

    Raises:
        UsageError: If the path is malformed (NUL byte, too long, a symlink loop), a part of it is
            a file, or the nearest existing directory cannot be written.
    """
    try:
        if "\0" in str(spec.storage_path):
            raise ValueError("a NUL byte in the path")
        study_dir = spec.study_dir
        probe = study_dir
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            what = "study directory" if probe == study_dir else "directory"
            raise UsageError(f"storage_path: {probe} is a file; expected a {what}")
        os.rmdir(tempfile.mkdtemp(prefix=".vae-study-probe-", dir=probe))
    except UsageError:
        raise
    except (OSError, RuntimeError, ValueError) as err:  # EACCES, EROFS, ENAMETOOLONG, ELOOP, NUL byte
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        where = shorten(spec.storage_path / spec.name, 120)
        raise UsageError(f"storage_path: {where} cannot be created or written ({shorten(reason, 120)})") from None
    return study_dir


def _is_study(study_dir: Path) -> bool:
    """Whether ``study_dir`` holds a vae-study study (its ``spec.json`` is a study spec)."""
    try:
        saved = read_json(study_dir / SPEC_FILE)
    except (FileNotFoundError, StudyFileError):
        return False
    return isinstance(saved, dict) and isinstance(saved.get("dataset"), dict) and "name" in saved


def _as_now(saved: Any) -> Any:
    """A saved ``spec.json`` read by today's spec model: fields added since it was written take
    their defaults (which keep the behaviour the study ran with). A spec today's model refuses
    (a field removed or renamed since) is returned unchanged and so differs."""
    try:
        return json.loads(StudySpec.model_validate(saved).model_dump_json())
    except ValueError:  # pydantic's ValidationError
        return saved


def check_study_dir(spec: StudySpec, overwrite: bool) -> bool:
    """Checks where the study will be written; returns True when it resumes an earlier run.

    Raises:
        UsageError: If the study directory holds something other than a vae-study study (with or
            without ``overwrite``: only a study is ever deleted), a study with another spec
            (unless ``overwrite``), or a corrupt ``spec.json``.
    """
    study_dir = check_storage(spec)
    if not study_dir.exists() or not any(study_dir.iterdir()):
        return False
    saved = study_dir / SPEC_FILE
    if not saved.is_file() or not _is_study(study_dir):
        if saved.is_file():
            try:
                read_json(saved)
            except StudyFileError as err:
                raise UsageError(f"{err}; the study directory cannot be resumed or overwritten") from None
        raise UsageError(f"storage_path: {study_dir} exists and is not a vae-study study; choose another name "
                         "(--overwrite deletes only a study)")
    if overwrite:
        return False
    old = _flatten(_as_now(read_json(saved)))
    new = _flatten(json.loads(spec.model_dump_json()))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise UsageError(
            f"{study_dir} holds a study with another spec (differs in {', '.join(changed[:5])}); "
            "use another name, or --overwrite to discard it"
        )
    return True


def check_trusted(study_dir: Path) -> None:
    """Refuses to resume from a study directory someone else could have planted code in.

    Resuming loads Ray Tune's pickled state (``tuner.pkl``, the searcher's state, the trials'
    state), which runs code: like ssh with a private key, the directory and every such file must
    be owned by this user and not writable by group or others.

    Raises:
        UsageError: Naming the first file or directory that fails.
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    paths = [study_dir, *sorted(p for p in study_dir.rglob("*") if p.is_dir() or p.suffix in (".pkl", ".json"))]
    for path in paths:
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise UsageError(f"{path}: a symbolic link in the study directory; resume trusts the directory like "
                             "code and refuses it")
        if uid is not None and info.st_uid != uid:
            raise UsageError(f"{path}: owned by uid {info.st_uid}, not by you ({uid}); resume loads pickled state "
                             "from the study directory and trusts it like code")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UsageError(f"{path}: writable by group or others (mode {stat.filemode(info.st_mode)}); resume "
                             "loads pickled state from the study directory and trusts it like code (chmod go-w)")


def check_same_data(study_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Refuses to resume a study on other data than it started with (path, size, digest).

    Raises:
        UsageError: If ``data.json`` records another source, size or digest, or cannot be read.
    """
    path = study_dir / DATA_FILE
    if not path.is_file():
        return
    try:
        saved = read_json(path).get("fingerprint")
    except (StudyFileError, AttributeError) as err:
        raise UsageError(f"{path}: cannot be read ({err}); use --overwrite to start afresh") from None
    if saved is None:
        return
    changed = [key for key in ("path", "size", "sha256") if saved.get(key) != fingerprint.get(key)]
    if changed:
        raise UsageError(
            f"dataset: the study started on {saved.get('path')} ({saved.get('size')} bytes, sha256 "
            f"{str(saved.get('sha256'))[:12]}) but the data now read is {fingerprint.get('path')} "
            f"({fingerprint.get('size')} bytes, sha256 {str(fingerprint.get('sha256'))[:12]}); "
            "resume on the same data, or --overwrite to start afresh"
        )


def check_same_place(study_dir: Path) -> None:
    """Refuses to resume a study from another directory than it started in.

    Tune's saved searcher state names the study's Optuna journal by its absolute path: resumed
    from a copy, the search would write into the original's journal (or fail where that is gone).
    Reading a moved study (report, rescore, ``load_trials``) works anywhere.

    Raises:
        UsageError: If ``data.json`` records another ``started_in`` directory.
    """
    path = study_dir / DATA_FILE
    if not path.is_file():
        return
    started_in = read_json(path).get("started_in")
    if started_in is not None and Path(started_in) != study_dir.resolve():
        raise UsageError(f"{study_dir}: the study was started in {started_in}, and its saved search state names "
                         "files there; resume it from that directory, or --overwrite to start afresh")


def load_data(spec: StudySpec) -> PreparedData:
    """Loads and checks the data, and checks every family's configs against it (before Ray).

    Raises:
        DataError: If the data cannot be read (including a corrupt HDF5 chunk or a dangling
            external link).
        UsageError: If a family's config does not fit the data or a metric cannot be computed.
    """
    options = spec.dataset_options()
    try:
        prepared = get_dataset(spec.dataset["name"]).load(options, spec.seed)
    except (OSError, RuntimeError, KeyError) as err:  # h5py/numpy read errors the loader did not name
        where = options.path or f"dataset {spec.dataset['name']!r}"
        raise DataError(f"{where}: cannot be read ({type(err).__name__}: {err})") from None
    try:
        spec.check_data(prepared.describe())
    except ValueError as err:
        raise UsageError(str(err)) from None
    return prepared


def _init_ray(address: str | None, num_cpus: int | None, dashboard: bool, num_gpus: int | None = None) -> None:
    if not address:
        # Must precede `import ray`: keeps every listener and the node address on 127.0.0.1.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # The objective (e.g. mig) is computed after the last epoch only; Tune would otherwise
    # reject every earlier epoch's report for lacking it.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Checkpointing every epoch with num_to_keep=1 snapshots the experiment state often; that is cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():
        return
    # Ray's start-up chatter (token warning, "Started a local Ray instance") would precede a one-line
    # error about the cluster (e.g. too few GPUs); quiet during init only.
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=logging.ERROR)
    else:
        # The dashboard (with its agents) costs CPU all along; only Train's placement-group cleanup
        # needs its State API, so a study whose trials all train in-process runs without it.
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=True,
                 logging_level=logging.ERROR)
    logging.getLogger("ray").setLevel(logging.INFO)  # Tune's messages from here on
    # Datasets carry a copy of the context they were made with, into every trial: no per-epoch
    # progress bars or "execution finished" lines there (Tune's status table shows progress).
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def check_cluster(spec: StudySpec) -> dict[str, float]:
    """Checks that one trial fits the cluster.

    Raises:
        UsageError: If a trial asks for more CPUs or GPUs than the cluster has.
    """
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    res = spec.resources
    if res.gpus_per_trial > gpus:
        raise UsageError(f"resources.gpus_per_trial: {res.gpus_per_trial} requested, but the cluster has {gpus:g} GPUs")
    if res.cpus_per_trial > cpus:
        raise UsageError(f"resources.cpus_per_trial: {res.cpus_per_trial} requested, but the cluster has {cpus:g} CPUs")
    return total


def max_concurrent(spec: StudySpec, cluster: dict[str, float]) -> int:
    """Trials that fit the cluster at once: its CPUs (and GPUs) over one trial's.

    Set explicitly because Tune keeps only one trial pending when a searcher is used,
    and because multi-worker trials' drivers hold no CPU of their own.
    """
    res = spec.resources
    fits = int(cluster.get("CPU", 1) // res.cpus_per_trial)
    if res.gpus_per_trial:
        fits = min(fits, int(cluster.get("GPU", 0) // res.gpus_per_trial))
    return max(1, fits)


def _trainable(spec: StudySpec, data: dict[str, Any]):
    from ray import tune

    from study.driver import train_driver_fn

    res = spec.resources
    fn = tune.with_parameters(train_driver_fn, spec_json=spec.model_dump_json(), data=data)
    if res.num_workers == 1 and res.trainer == "auto":
        return tune.with_resources(fn, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})
    return tune.with_resources(fn, {"cpu": 0, "memory": 256 * 2**20})  # the workers hold the CPUs


def _tuner(spec: StudySpec, trainable, resume: bool, args, cluster: dict[str, float]):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from study.space import JOURNAL_FILE, build_searcher, num_trials, param_space
    from study.status import EpochTensorBoard, TrialStatusCallback

    study_dir = spec.study_dir
    if resume and not tune.Tuner.can_restore(str(study_dir)):
        print(f"{study_dir} holds no Tune experiment state yet: starting the study afresh", flush=True)
        resume = False
    if resume:
        print(f"resuming study {spec.name} at {study_dir}", flush=True)
        return tune.Tuner.restore(
            str(study_dir), trainable=trainable, param_space=param_space(spec), resume_unfinished=True,
            resume_errored=args.resume_errored, restart_errored=args.restart_errored,
        )
    scheduler = None
    if spec.scheduler.name == "asha":
        s = spec.scheduler
        metric = s.metric or spec.objective.metrics[0]
        from study.spec import metric_mode

        scheduler = ASHAScheduler(
            # A step budget makes the reported optimisation step ASHA's time; else the epoch.
            time_attr="step" if spec.training.steps else "training_iteration", metric=metric,
            mode=s.mode or metric_mode(metric), max_t=s.max_t or spec.training.steps or spec.training.epochs, grace_period=s.grace_period, reduction_factor=s.reduction_factor,
        )
    concurrent = spec.search.max_concurrent_trials or max_concurrent(spec, cluster)
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(spec, study_dir / JOURNAL_FILE), scheduler=scheduler, num_samples=num_trials(spec),
            max_concurrent_trials=concurrent,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(spec.storage_path.resolve()),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=spec.training.max_failures),
            callbacks=[TrialStatusCallback(study_dir), EpochTensorBoard(use_steps=spec.training.steps is not None)],
        ),
    )


def run_study(spec: StudySpec, args: argparse.Namespace) -> int:
    """Runs (or resumes) a validated study; returns the exit code (see the module docstring)."""
    resume = check_study_dir(spec, args.overwrite)
    prepared = load_data(spec)
    fingerprint = prepared.fingerprint()
    study_dir = spec.study_dir
    if resume:
        check_same_data(study_dir, fingerprint)
        check_same_place(study_dir)
        check_trusted(study_dir)
    uses_train = spec.resources.num_workers > 1 or spec.resources.trainer == "torch_trainer"
    placement = prepared.placement(spec.dataset_options(), torch_trainer=uses_train)
    _init_ray(args.address or os.environ.get("RAY_ADDRESS"), args.num_cpus, dashboard=uses_train or args.dashboard,
              num_gpus=args.num_gpus)
    cluster = check_cluster(spec)

    if args.overwrite and study_dir.exists():
        shutil.rmtree(study_dir)  # check_study_dir made sure it holds a study
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / SPEC_FILE).write_text(spec.model_dump_json(indent=2))
    if not (study_dir / DATA_FILE).is_file():  # a resume keeps the record of what the study started on
        (study_dir / DATA_FILE).write_text(json.dumps(
            {"source": str(prepared.source), "fingerprint": fingerprint, "started_in": str(study_dir.resolve()),
             **prepared.info}, indent=2, default=str))

    from study.space import num_trials

    print(
        f"study {spec.name}: {num_trials(spec)} trials of {' | '.join(spec.family_names)} on {spec.dataset['name']} "
        f"({prepared.source}, {prepared.info.get('num_train')} train / {prepared.info.get('num_val')} val rows); "
        f"writing to {study_dir}",
        flush=True,
    )
    start = time.perf_counter()
    splits = prepared.to_device() if placement == "device" else prepared.to_ray()
    print(f"data placement: {placement} ({'on each trial device, batched by index' if placement == 'device' else 'Ray Data'})",
          flush=True)
    data = {**splits, "input_shape": prepared.input_shape, "ground_truth": prepared.ground_truth,
            "num_train": prepared.describe().num_train, "validation_metrics": prepared.validation_metrics}
    tuner = _tuner(spec, _trainable(spec, data), resume, args, cluster)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass  # the tables of what finished are still written; the exit code says interrupted
    return _finish(spec, args, time.perf_counter() - start)


def _finish(spec: StudySpec, args: argparse.Namespace, seconds: float) -> int:
    import pandas as pd

    from analysis.results import best_trial
    from study.results import write_results
    from study.space import num_trials
    from study.spec import metric_mode

    trials_path, epochs_path = write_results(spec.study_dir)
    trials = pd.read_parquet(trials_path)
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    print(f"\nstudy {spec.name} ended after {seconds:.0f} s: {counts}")
    metric = spec.objective.metrics[0]
    best = best_trial(trials, metric, spec.objective.modes[0])
    if best is not None:
        params = ", ".join(f"{k}={best[k]}" for k in spec.searched_params if k in best)
        shown = [m for m in dict.fromkeys([*spec.objective.metrics, "val_elbo", "val_recon_loss", "val_kl", "mig"])
                 if m in best and pd.notna(best[m])]
        values = ", ".join(f"{m}={best[m]:.4g}" for m in shown)
        print(f"best trial by {metric} ({metric_mode(metric)}): {best['trial_id']} ({params}, repeat {best['repeat']}): {values}")
    print(f"trials:  {trials_path}\nepochs:  {epochs_path}")
    expected = num_trials(spec)
    finished = trials[trials["status"].isin(["TERMINATED", "ERROR"])] if len(trials) else trials
    if len(finished) < expected:
        print(f"interrupted: run the same command to resume ({len(finished)} of {expected} trials ended)",
              file=sys.stderr)
        return 130
    if not args.no_report:
        from analysis.report import write_report

        index = write_report(spec.study_dir)
        print(f"report:  {index}")
    return _holes(trials, spec, trials_path.name)


def _holes(trials, spec: StudySpec, table: str) -> int:
    """1 with a one-line summary on stderr when a trial errored or a finished trial lacks an
    objective metric; else 0."""
    import pandas as pd

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
    problems = []
    if errored:
        problems.append(f"{errored} trial(s) errored (see the error column of {table})")
    if lacking:
        ids = ", ".join(str(done.loc[i, "trial_id"]) for i in lacking[:5])
        problems.append(f"{len(lacking)} finished trial(s) lack the objective {spec.objective.metrics} ({ids})")
    if not len(done):
        problems.append("no trial finished")
    if problems:
        print(f"study {spec.name} left holes: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        # Before anything imports ray (validating the spec imports the dataset modules, and the
        # HDF5 datasource subclasses Ray Data's): Ray reads this once, at import, and then keeps
        # every listener and the node address on 127.0.0.1.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        spec = load_spec(args.config, args.overrides)
        return run_study(spec, args)
    except (SpecError, DataError, UsageError, StudyFileError) as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
