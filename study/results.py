"""Result tables of a study, built from its Ray Tune experiment directory.

``trials.parquet``: one row per trial: ``trial_id``, ``status``, ``error``, each config
value as its own column, ``repeat`` and ``seed``, final metrics (as last reported), best
metrics over epochs (``best_<metric>``), ``epochs_run``, ``wall_seconds``,
``checkpoint_path``, the torch/ray/optuna versions and the git sha. ``epochs.parquet``:
one row per trial and epoch with every reported metric. Both are rebuilt from the
experiment directory alone (``python -m study.results STUDY_DIR``) and written atomically.
The parquet schema metadata key ``vae_study`` holds the study's name, searched
parameters and objective as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from study.spec import StudySpec, metric_mode
from trainables.loop import REPEAT_KEY, trial_seed

__all__ = ["SPEC_FILE", "build_tables", "write_results", "write_parquet", "best_trial"]

SPEC_FILE = "spec.json"
DATA_FILE = "data.json"  # the data source, row counts and preprocessing statistics of a study
# Columns Tune adds to every result; not metrics of ours.
_TUNE_FIELDS = {
    "timestamp", "date", "hostname", "node_ip", "pid", "time_this_iter_s", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "done", "trial_id", "should_checkpoint",
    "experiment_tag", "config", "training_iteration", "time_total_s",
}  # fmt: skip


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    import optuna
    import ray
    import torch

    return {"torch_version": torch.__version__, "ray_version": ray.__version__,
            "optuna_version": optuna.__version__, "git_sha": _git_sha()}


def _cell(value: Any) -> Any:
    """Config values as parquet-friendly scalars (lists and dicts as JSON text)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _error_line(trial) -> str | None:
    path = Path(trial.path, "error.txt")
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    causes = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and ":" in ln]
    return (causes[-1] if causes else lines[-1] if lines else "error")[:500]


def build_tables(study_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, StudySpec]:
    """Reads a study's experiment directory into the trials and epochs tables.

    Args:
        study_dir: ``storage_path/name`` of a study run by :mod:`study.run`.

    Returns:
        ``(trials, epochs, spec)``.

    Raises:
        FileNotFoundError: If the directory holds no study.
    """
    from ray.tune import ExperimentAnalysis

    study_dir = Path(study_dir).resolve()
    if not (study_dir / SPEC_FILE).is_file():
        raise FileNotFoundError(f"{study_dir}: no {SPEC_FILE}; not a vae-study study directory")
    spec = StudySpec.model_validate_json((study_dir / SPEC_FILE).read_text())
    analysis = ExperimentAnalysis(str(study_dir))
    frames = analysis.trial_dataframes
    versions = _versions()
    trial_rows, epoch_frames = [], []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        config = dict(trial.config)
        repeat = int(config.pop(REPEAT_KEY, 0))
        row: dict[str, Any] = {"trial_id": trial.trial_id, "status": trial.status, "error": _error_line(trial)}
        row.update({k: _cell(v) for k, v in config.items()})
        row.update({"repeat": repeat, "seed": trial_seed(spec.seed, repeat)})
        history = frames.get(trial.trial_id, pd.DataFrame())
        metric_cols = [c for c in history.columns if c not in _TUNE_FIELDS and not c.startswith("config/")]
        last = trial.last_result or {}
        for col in metric_cols:
            if col in last and col != "epoch":
                row[col] = last[col]
        for col in metric_cols:
            try:
                mode = metric_mode(col)
            except KeyError:
                continue
            values = pd.to_numeric(history[col], errors="coerce")
            if values.notna().any():
                row[f"best_{col}"] = values.max() if mode == "max" else values.min()
        row["epochs_run"] = int(last.get("epoch", 0)) if last else 0
        row["wall_seconds"] = float(last.get("time_total_s", float("nan"))) if last else float("nan")
        checkpoint = trial.checkpoint
        row["checkpoint_path"] = checkpoint.path if checkpoint is not None else None
        row.update(versions)
        trial_rows.append(row)
        if len(history) and "epoch" in history:
            epochs = history[["epoch"] + [c for c in metric_cols if c != "epoch"]].copy()
            epochs.insert(0, "trial_id", trial.trial_id)
            epoch_frames.append(epochs)
    trials = pd.DataFrame(trial_rows)
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame(columns=["trial_id", "epoch"])
    return trials, epochs, spec


def study_metadata(spec: StudySpec) -> dict[str, Any]:
    """What the analysis package needs to know of a study besides its tables."""
    return {
        "name": spec.name,
        "searched_params": spec.searched_params,
        "search_params": list(spec.search_space),
        "objective": {"metric": spec.objective.metrics, "mode": spec.objective.modes},
        "family": " | ".join(spec.family_names),
        "dataset": spec.dataset["name"],
    }


def write_parquet(frame: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Writes ``frame`` to ``path`` atomically (temporary file, then rename), with metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"vae_study": json.dumps(metadata)})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_results(study_dir: str | Path) -> tuple[Path, Path]:
    """Builds and writes ``trials.parquet`` and ``epochs.parquet`` in the study directory."""
    trials, epochs, spec = build_tables(study_dir)
    study_dir = Path(study_dir).resolve()
    meta = study_metadata(spec)
    paths = study_dir / "trials.parquet", study_dir / "epochs.parquet"
    write_parquet(trials, paths[0], meta)
    write_parquet(epochs, paths[1], meta)
    return paths


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The finished trial with the best ``metric``, or None when no trial reported it."""
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    if metric not in done or done[metric].notna().sum() == 0:
        return None
    index = done[metric].idxmax() if mode == "max" else done[metric].idxmin()
    return done.loc[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.results", description="Rebuild a study's parquet tables.")
    parser.add_argument("study_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        paths = write_results(args.study_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
