"""Ray and Tune for a study: start or join Ray, check the cluster, build the Tuner (new or restored).

Ray is imported here, inside the functions, only after :func:`init_ray` has set its environment:
validating a spec and the checks before Ray import no Ray at all.
"""

from __future__ import annotations

import logging
import os

from study.checks import UsageError
from study.driver import TrialData
from study.journal import StudyJournal
from study.spec import StudySpec

__all__ = ["init_ray", "check_cluster", "max_concurrent", "build_tuner"]

TABLE_MAX_TRIALS = 20  # above this many trials, one progress line per 30 s replaces Tune's table of every trial
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0" before `import ray`: every listener on 127.0.0.1


def init_ray(address: str | None, num_cpus: int | None, num_gpus: int | None, dashboard: bool) -> None:
    """Joins the cluster at ``address``, or starts a local Ray bound to loopback.

    The one place that sets Ray's loopback variable: a local Ray keeps every listener and the
    node address on 127.0.0.1; a cluster run (``address``) must not set it.
    """
    if not address:
        os.environ[LOOPBACK] = "0"  # read once, when ray is imported (just below)
    # The objective (e.g. mig) is computed after the last epoch only; Tune would otherwise
    # reject every earlier epoch's report for lacking it.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # study.run.Interrupts handles SIGINT (and SIGTERM) itself, stopping Tune through SIGUSR1.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Checkpointing every epoch with num_to_keep=1 snapshots the experiment state often; that is cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    import ray.data

    if not ray.is_initialized():
        # Ray's start-up chatter (token warning, "Started a local Ray instance") would precede a
        # one-line error about the cluster (e.g. too few GPUs); quiet during init only. The
        # dashboard (with its agents) costs CPU all along; only Train's placement-group cleanup
        # needs its State API, so a study whose trials all train in-process runs without it.
        local = {} if address else {"num_cpus": num_cpus, "num_gpus": num_gpus, "include_dashboard": dashboard,
                                    "dashboard_host": "127.0.0.1"}
        ray.init(address=address or None, log_to_driver=True, logging_level=logging.ERROR, **local)
        if not address:
            from study.reaper import start

            start()  # the local Ray ends with this driver, even when it is killed
    logging.getLogger("ray").setLevel(logging.INFO)  # Tune's messages from here on
    # Datasets carry a copy of the context they were made with, into every trial: no per-epoch
    # progress bars or "execution finished" lines there (Tune's status table shows progress).
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def check_cluster(spec: StudySpec) -> dict[str, float]:
    """Checks that one trial fits the cluster; returns the cluster's resources.

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


def _trainable(spec: StudySpec, data: TrialData):
    from ray import tune

    from study.driver import train_driver_fn

    res = spec.resources
    fn = tune.with_parameters(train_driver_fn, spec_json=spec.model_dump_json(), data=data)
    if res.in_process:
        return tune.with_resources(fn, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})
    return tune.with_resources(fn, {"cpu": 0, "memory": 256 * 2**20})  # the workers hold the CPUs


def _scheduler(spec: StudySpec):
    """ASHA on the scheduler's metric (epochs, or steps under a step budget), or None."""
    if spec.scheduler.name != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    from analysis.metrics import metric_mode

    s = spec.scheduler
    metric = s.metric or spec.objective.metrics[0]
    return ASHAScheduler(
        # A step budget makes the reported optimisation step ASHA's time; else the epoch.
        time_attr="step" if spec.training.steps else "training_iteration", metric=metric,
        mode=s.mode or metric_mode(metric), max_t=s.max_t or spec.training.steps or spec.training.epochs,
        grace_period=s.grace_period, reduction_factor=s.reduction_factor,
    )


def build_tuner(spec: StudySpec, data: TrialData, journal: StudyJournal, *, resume: bool,
                cluster: dict[str, float], errored: dict[str, bool]):
    """The study's ``tune.Tuner``: restored from the study directory when ``resume`` (and Tune's
    state is there), else new, with the seeded searcher, the scheduler and the study's callbacks.

    Args:
        spec: The study spec.
        data: The data every trial is handed.
        journal: The study's Optuna journal (its live local file is the searcher's storage).
        resume: Whether the study directory holds an earlier run of this study.
        cluster: The cluster's resources (:func:`check_cluster`).
        errored: ``{"resume_errored": bool, "restart_errored": bool}`` for a restored Tuner.
    """
    from ray import tune

    from study.space import build_searcher, num_trials, param_space
    from study.status import EpochTensorBoard, JournalSync, TrialStatusCallback

    location = spec.study_location
    trainable = _trainable(spec, data)
    if resume and not tune.Tuner.can_restore(location):
        print(f"{location} holds no Tune experiment state yet: starting the study afresh", flush=True)
        resume = False
    if resume:
        print(f"resuming study {spec.name} at {location}", flush=True)
        return tune.Tuner.restore(location, trainable=trainable, param_space=param_space(spec), resume_unfinished=True,
                                  **errored)
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(spec, journal), scheduler=_scheduler(spec), num_samples=num_trials(spec),
            max_concurrent_trials=spec.search.max_concurrent_trials or max_concurrent(spec, cluster),
            # A trial that trains in-process runs in an actor the next trial of the same resources
            # reuses: the imports, torch's start-up and the data hand-over are paid once per actor.
            reuse_actors=spec.resources.in_process,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=location.rsplit("/", 1)[0],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=spec.training.max_failures),
            callbacks=[TrialStatusCallback(location), JournalSync(journal),
                       EpochTensorBoard(use_steps=spec.training.steps is not None), *_progress(spec)],
            verbose=0 if _progress(spec) else None,
        ),
    )


def _progress(spec: StudySpec) -> list:
    """One line of progress per interval in place of Tune's trial table, for studies of more than
    :data:`TABLE_MAX_TRIALS` trials."""
    from study.space import num_trials
    from study.status import ProgressLine

    total = num_trials(spec)
    if total <= TABLE_MAX_TRIALS:
        return []
    return [ProgressLine(total, spec.objective.metrics[0], spec.objective.modes[0])]
