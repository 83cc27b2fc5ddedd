"""``python -m analysis.rescore STUDY_DIR --metrics sap,dci``: metrics from saved checkpoints.

Recomputes the named metrics for every finished trial from its last checkpoint, on the
study's held-out rows (the split is recomputed from the spec's seed), without retraining,
and writes them as columns of ``trials.parquet`` (rewritten atomically; other columns and
the study metadata kept). Each trial's metric draws its samples from a generator seeded
with the trial's seed, so rescoring twice gives the same values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pydantic import ValidationError

from analysis.checkpoints import NoGroundTruth, load_ground_truth, load_trial_model, representation_fn
from analysis.cli import one_line
from analysis.metrics import METRICS
from analysis.results import (SPEC_FILE, StudyFileError, load_metadata, load_trials, read_spec, resolve_checkpoint,
                              write_parquet)
from datasets.registry import DataError

__all__ = ["rescore"]


def rescore(study_dir: str | Path, metrics: list[str], *, num_train: int | None = None, num_test: int | None = None,
            progress=print) -> pd.DataFrame:
    """Adds the named metrics' columns to a study's ``trials.parquet``; returns the new table.

    Args:
        study_dir: Study directory holding ``trials.parquet`` and ``spec.json``.
        metrics: Names from :data:`analysis.metrics.METRICS`.
        num_train: Samples per metric; None: the spec's ``evaluation.num_train``.
        num_test: Held-out samples of the metrics that score one; None: the spec's
            ``evaluation.num_test`` (studies from before that field: the metric's default, 5,000).
        progress (Callable[[str], None]): Called with one line per trial scored.

    Raises:
        KeyError: If a metric name is unknown.
        FileNotFoundError: If the study has no ``trials.parquet``.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise KeyError(f"--metrics: unknown metric {unknown[0]!r}; expected any of {sorted(METRICS)}")
    study_dir = Path(study_dir)
    trials = load_trials(study_dir, resolve_checkpoints=False)  # rewritten as stored
    meta = load_metadata(study_dir)
    spec = read_spec(study_dir)
    evaluation = spec.get("evaluation")
    if not isinstance(evaluation, dict) or "num_train" not in evaluation:
        raise StudyFileError(f"{study_dir / SPEC_FILE}: no evaluation.num_train; pass --num-train")
    num_train = num_train or int(evaluation["num_train"])
    num_test = num_test or evaluation.get("num_test")  # absent from studies before the field: metric default
    ground_truth = load_ground_truth(study_dir)
    rows = trials.index[(trials["status"] == "TERMINATED") & trials["checkpoint_path"].notna()]
    for index in rows:
        row = trials.loc[index]
        model, trial = load_trial_model(resolve_checkpoint(study_dir, row["checkpoint_path"]))
        encode = representation_fn(model)
        scores: dict[str, float] = {}
        for name in metrics:
            rng = np.random.default_rng(int(trial["seed"]))
            scores.update(METRICS[name].score(ground_truth, encode, random_state=rng, num_train=num_train,
                                              num_test=num_test))
        for key, value in scores.items():
            if key not in trials:
                trials[key] = np.nan
            trials.loc[index, key] = value
        progress(f"{row['trial_id']}: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    write_parquet(trials, study_dir / "trials.parquet", meta)
    return trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--metrics", required=True, help=f"comma-separated, from: {', '.join(sorted(METRICS))}")
    parser.add_argument("--num-train", type=int, default=None, help="samples per metric (default: the spec's)")
    parser.add_argument("--num-test", type=int, default=None,
                        help="held-out samples of beta_vae, factor_vae, dci, sap, modularity (default: the spec's)")
    args = parser.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        rescore(args.study_dir, metrics, num_train=args.num_train, num_test=args.num_test)
    except ValidationError as err:  # a spec.json or trial.json whose config no longer validates
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{err.title}: {where}: {first['msg']}"
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 2
    except (KeyError, FileNotFoundError, StudyFileError, DataError, NoGroundTruth, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) else str(err)
        print(f"error: {one_line(str(message))}", file=sys.stderr)
        return 2
    print(f"{args.study_dir / 'trials.parquet'}: rescored {', '.join(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
