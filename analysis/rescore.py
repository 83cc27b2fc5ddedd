"""``python -m analysis.rescore STUDY --metrics sap,dci``: metrics from saved checkpoints.

Recomputes the named metrics for every finished trial from its last checkpoint, on the
study's held-out rows (the split is recomputed from the study's seed), without retraining,
and writes them as columns of ``trials.parquet`` (rewritten atomically; other columns and
the study metadata kept). Each trial's metric draws its samples from a generator seeded
with the trial's seed, so rescoring twice gives the same values. ``udr`` compares the seeds of
each configuration (:func:`analysis.metrics.udr.compute_udr`, seeded with the study's seed); it
needs no ground-truth factors. Metrics scored during training only (``sample_mmd``, ``probe``)
are refused.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
from pydantic import ValidationError

from analysis.checkpoints import NoGroundTruth, load_ground_truth, load_trial_model, representation_fn
from analysis.cli import ArgumentParser, one_line
from analysis.metrics import METRICS
from analysis.results import (
    TRIALS_FILE,
    StudyDir,
    StudyFileError,
    StudyLock,
    load_trials,
    require_columns,
    resolve_checkpoint,
)
from datasets.registry import DataError
from datasets.storage import StorageError

__all__ = ["rescore"]


def rescore(study: str | os.PathLike | StudyDir, metrics: list[str], *, num_train: int | None = None,
            num_test: int | None = None, progress=print) -> pd.DataFrame:
    """Adds the named metrics' columns to a study's ``trials.parquet``; returns the new table.

    Args:
        study: The study (a local directory, a URI, or its StudyDir) holding ``trials.parquet``.
        metrics: Names from :data:`analysis.metrics.METRICS`.
        num_train: Samples per metric, > 0; None: the study's ``evaluation.num_train``.
        num_test: Held-out samples of the metrics that score one, > 0; None: the study's
            ``evaluation.num_test``.
        progress (Callable[[str], None]): Called with one line per trial scored.

    Raises:
        KeyError: If a metric name is unknown.
        ValueError: If ``num_train`` or ``num_test`` is not positive.
        FileNotFoundError: If the study has no ``trials.parquet``.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise KeyError(f"--metrics: unknown metric {unknown[0]!r}; expected any of {sorted(METRICS)}")
    trained_only = [m for m in metrics if m not in _rescorable()]
    if trained_only:
        raise ValueError(f"--metrics: {trained_only[0]} is scored during training only; rescore computes "
                         f"{', '.join(_rescorable())}")
    for flag, value in (("--num-train", num_train), ("--num-test", num_test)):
        if value is not None and value < 1:
            raise ValueError(f"{flag}: expected a positive number of samples (got {value}); omit it for the study's")
    study = study if isinstance(study, StudyDir) else StudyDir(study)
    trials = load_trials(study, resolve_checkpoints=False)  # rewritten as stored
    require_columns(trials, ["trial_id", "status", "checkpoint_path"], study.uri(TRIALS_FILE))
    info = study.read_info()
    num_train = num_train if num_train is not None else info.evaluation.num_train
    num_test = num_test if num_test is not None else info.evaluation.num_test
    per_trial = [m for m in metrics if METRICS[m].kind == "ground_truth"]
    ground_truth = load_ground_truth(info) if per_trial else None
    rows = trials.index[(trials["status"] == "TERMINATED") & trials["checkpoint_path"].notna()]
    for index in rows if per_trial else []:
        row = trials.loc[index]
        model, trial = load_trial_model(resolve_checkpoint(study, row["checkpoint_path"]))
        encode = representation_fn(model)
        scores: dict[str, float] = {}
        for name in per_trial:
            rng = np.random.default_rng(int(trial["seed"]))
            scores.update(METRICS[name].score(ground_truth, encode, random_state=rng, num_train=num_train,
                                              num_test=num_test))
        for key, value in scores.items():
            if key not in trials:
                trials[key] = np.nan
            trials.loc[index, key] = value
        progress(f"{row['trial_id']}: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    for name in (m for m in metrics if METRICS[m].kind == "study"):
        trials = METRICS[name].compute(trials, info, study=study, random_state=np.random.default_rng(info.seed))
        progress(f"{name}: " + ", ".join(f"{t}={v:.4g}" for t, v in zip(trials["trial_id"], trials[name]) if pd.notna(v)))
    study.write_table(TRIALS_FILE, trials, info)
    return trials


def _rescorable() -> list[str]:
    """The metrics rescore computes from checkpoints: ground-truth ones per trial, study-level ones (udr)."""
    return sorted(name for name, metric in METRICS.items() if metric.kind in ("ground_truth", "study"))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m analysis.rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="the study directory: a local path or a URI (s3://bucket/studies/NAME)")
    parser.add_argument("--metrics", required=True, help=f"comma-separated, from: {', '.join(_rescorable())}")
    parser.add_argument("--num-train", type=int, default=None, help="samples per metric, > 0 (default: the study's evaluation.num_train)")
    parser.add_argument("--num-test", type=int, default=None,
                        help="held-out samples of beta_vae, factor_vae, dci, sap, modularity, > 0 (default: the study's)")
    args = parser.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        study = StudyDir(args.study)
        with StudyLock(study, "analysis.rescore"):  # trials.parquet is written by one process at a time
            rescore(study, metrics, num_train=args.num_train, num_test=args.num_test)
    except ValidationError as err:  # a spec.json or trial.json whose config no longer validates
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{err.title}: {where}: {first['msg']}"
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 2
    except (KeyError, FileNotFoundError, StudyFileError, StorageError, DataError, NoGroundTruth, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) else str(err)
        print(f"error: {one_line(str(message))}", file=sys.stderr)
        return 2
    print(f"{StudyDir(args.study).uri(TRIALS_FILE)}: rescored {', '.join(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
