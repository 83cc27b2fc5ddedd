"""Result tables of a study, built from its directory's JSON files alone (never a pickle).

``trials.parquet``: one row per trial: ``trial_id``, ``status``, ``error``, each config value as
its own column, ``repeat`` and ``seed``, final metrics (as last reported), best metrics over
epochs (``best_<metric>``), ``epochs_run``, ``wall_seconds``, ``checkpoint_path`` (relative to the
study directory), and the provenance the trial stamped in its checkpoint's ``trial.json``
(torch/ray/optuna/numpy versions, git sha and dirty flag, hostname, node, device, threads, start
and end time; a rebuild never restamps them). ``epochs.parquet``: one row per trial and epoch with every reported metric.

What is read: each Tune trial directory's ``params.json`` (the sampled configuration),
``result.json`` (one JSON line per report) and ``error.txt``; the trial's latest checkpoint's
``trial.json``; and ``trial_status/<trial_id>.json``, which ``study.status.TrialStatusCallback`` writes
from the driver as Tune starts, completes or errors each trial. A trial directory without a final
status was interrupted (``INCOMPLETE``). Rebuild with ``python -m study.results STUDY_DIR``; both
tables are written atomically. The parquet schema metadata key ``vae_study`` holds the study's
name, searched parameters and objective as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.cli import one_line
from analysis.metrics import metric_mode
from analysis.results import (DATA_FILE, SPEC_FILE, StudyFileError, best_trial, read_json, read_spec,
                              write_parquet)
from trainables.checkpoint import PROVENANCE_FIELDS, TRIAL_FILE
from trainables.trial import REPEAT_KEY, trial_seed

__all__ = ["SPEC_FILE", "DATA_FILE", "STATUS_DIR", "CURRENT_FILE", "TUNE_FIELDS", "FINAL_STATUSES", "build_tables", "write_results",
           "write_parquet", "best_trial", "study_metadata", "trial_statuses"]

STATUS_DIR = "trial_status"  # trial_status/<trial_id>.json: written by the driver as Tune reports
CURRENT_FILE = "current.json"  # trial_status/current.json: the ids of the trials Tune holds
FINAL_STATUSES = ("TERMINATED", "ERROR")
# Keys Tune adds to every result; not metrics of ours.
TUNE_FIELDS = {
    "timestamp", "date", "hostname", "node_ip", "pid", "time_this_iter_s", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "done", "trial_id", "should_checkpoint",
    "experiment_tag", "config", "training_iteration", "time_total_s",
}  # fmt: skip
_PROVENANCE = tuple(key for key in PROVENANCE_FIELDS if key != "node_id")  # node_id: the reports' own column


def trial_statuses(study_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``trial_id -> {"status", "trial_dir"}`` from ``trial_status/*.json``."""
    directory = Path(study_dir) / STATUS_DIR
    statuses = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if path.name == CURRENT_FILE:
            continue
        record = read_json(path)
        if isinstance(record, dict) and isinstance(record.get("trial_id"), str):
            statuses[record["trial_id"]] = record
    return statuses


def _cell(value: Any) -> Any:
    """Config values as parquet-friendly scalars (lists and dicts as JSON text)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _error_line(trial_dir: Path) -> str | None:
    path = trial_dir / "error.txt"
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    causes = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and ":" in ln]
    return (causes[-1] if causes else lines[-1] if lines else "error")[:500]


def _results(trial_dir: Path) -> list[dict[str, Any]]:
    """The reports of a trial (``result.json``: one JSON object per line; a torn last line is skipped)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def current_trials(study_dir: str | Path) -> set[str] | None:
    """The ids of the trials Tune holds (``trial_status/current.json``), or None when not recorded."""
    path = Path(study_dir) / STATUS_DIR / CURRENT_FILE
    if not path.is_file():
        return None
    ids = read_json(path).get("trial_ids") if isinstance(read_json(path), dict) else None
    return set(ids) if isinstance(ids, list) else None


def _trial_dirs(study_dir: Path) -> dict[str, Path]:
    """Tune trial directories (holding ``params.json``) by trial id (from their reports or status);
    a directory of a trial Tune replaced (an errored trial restarted) is left out."""
    by_name = {path.parent.name: path.parent for path in study_dir.glob("*/params.json")}
    found: dict[str, Path] = {}
    for record in trial_statuses(study_dir).values():
        if record.get("trial_dir") in by_name:
            found[record["trial_id"]] = by_name[record["trial_dir"]]
    for name, path in by_name.items():
        if path in found.values():
            continue
        reports = _results(path)
        trial_id = reports[-1].get("trial_id") if reports else None
        found[str(trial_id) if trial_id else name] = path
    current = current_trials(study_dir)
    return found if current is None else {k: v for k, v in found.items() if k in current}


def _checkpoint(trial_dir: Path) -> Path | None:
    """The trial's latest checkpoint directory (``checkpoint_NNNNNN``), or None."""
    checkpoints = sorted(trial_dir.glob("checkpoint_*"))
    return checkpoints[-1] if checkpoints else None


def _provenance(checkpoint: Path | None) -> dict[str, Any]:
    """What the trial stamped in its checkpoint's ``trial.json``; None for each field when absent."""
    stamp: dict[str, Any] = {}
    if checkpoint is not None and (checkpoint / TRIAL_FILE).is_file():
        try:
            stamp = read_json(checkpoint / TRIAL_FILE).get("provenance") or {}
        except (StudyFileError, AttributeError):
            stamp = {}
    row = {key: stamp.get(key) for key in _PROVENANCE}
    if isinstance(row["gpu_ids"], list):
        row["gpu_ids"] = ",".join(str(i) for i in row["gpu_ids"])  # "" on the CPU
    return row


def build_tables(study_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Reads a study directory into the trials and epochs tables.

    Args:
        study_dir: ``storage_path/name`` of a study run by :mod:`study.run`.

    Returns:
        ``(trials, epochs, spec)`` with ``spec`` the ``spec.json`` mapping.

    Raises:
        FileNotFoundError: If the directory holds no study.
        analysis.results.StudyFileError: If ``spec.json`` or a status file is corrupt.
    """
    study_dir = Path(study_dir).resolve()
    spec = read_spec(study_dir)
    seed = int(spec.get("seed", 0))
    statuses = trial_statuses(study_dir)
    trial_rows, epoch_frames = [], []
    for trial_id, trial_dir in sorted(_trial_dirs(study_dir).items()):
        config = read_json(trial_dir / "params.json")
        config = dict(config) if isinstance(config, dict) else {}
        repeat = int(config.pop(REPEAT_KEY, 0))
        reports = _results(trial_dir)
        error = _error_line(trial_dir)
        status = statuses.get(trial_id, {}).get("status")
        if status not in FINAL_STATUSES:
            # Not ended in Tune's eyes: errored (and the driver died before recording it), or
            # interrupted. A trial restarted after a failure keeps its error.txt but ends TERMINATED.
            status = "ERROR" if error is not None else "INCOMPLETE"
        row: dict[str, Any] = {"trial_id": trial_id, "status": status, "error": error}
        row.update({k: _cell(v) for k, v in config.items()})
        row.update({"repeat": repeat, "seed": trial_seed(seed, repeat)})
        history = pd.DataFrame(reports)
        metric_cols = [c for c in history.columns if c not in TUNE_FIELDS]
        last = reports[-1] if reports else {}
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
        checkpoint = _checkpoint(trial_dir)
        # Relative to the study directory, so a copied or moved study still finds its checkpoints
        # (analysis.results.load_trials resolves it against wherever the table is read).
        row["checkpoint_path"] = f"{trial_dir.name}/{checkpoint.name}" if checkpoint is not None else None
        row.update(_provenance(checkpoint))
        trial_rows.append(row)
        if len(history) and "epoch" in history:
            epochs = history[["epoch"] + [c for c in metric_cols if c != "epoch"]].copy()
            epochs.insert(0, "trial_id", trial_id)
            epoch_frames.append(epochs)
    current = current_trials(study_dir)
    for trial_id, record in statuses.items():  # errored before Tune made its directory
        if trial_id not in {r["trial_id"] for r in trial_rows} and (current is None or trial_id in current):
            trial_rows.append({"trial_id": trial_id, "status": record.get("status"), "error": None})
    trials = pd.DataFrame(trial_rows)
    if trials.empty:
        trials = pd.DataFrame(columns=["trial_id", "status", "error"])
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame(columns=["trial_id", "epoch"])
    return trials, epochs, spec


def study_metadata(spec: dict[str, Any]) -> dict[str, Any]:
    """What the analysis package needs to know of a study besides its tables (from ``spec.json``)."""
    space = spec.get("search_space", {})
    objective = spec.get("objective", {})
    metric, mode = objective.get("metric", "mig"), objective.get("mode", "max")
    family = spec.get("family", {})
    families = space.get("family", {}).get("choices") if "family" in space else [family.get("name")]
    return {
        "name": spec.get("name"),
        "searched_params": [k for k, p in space.items() if p.get("type") != "fixed"],
        "search_params": list(space),
        "objective": {"metric": metric if isinstance(metric, list) else [metric],
                      "mode": mode if isinstance(mode, list) else [mode]},
        "family": " | ".join(str(f) for f in families or []),
        "dataset": spec.get("dataset", {}).get("name"),
    }


def write_results(study_dir: str | Path) -> tuple[Path, Path]:
    """Builds and writes ``trials.parquet`` and ``epochs.parquet`` in the study directory."""
    trials, epochs, spec = build_tables(study_dir)
    study_dir = Path(study_dir).resolve()
    meta = study_metadata(spec)
    paths = study_dir / "trials.parquet", study_dir / "epochs.parquet"
    write_parquet(trials, paths[0], meta)
    write_parquet(epochs, paths[1], meta)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.results", description="Rebuild a study's parquet tables.")
    parser.add_argument("study_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        paths = write_results(args.study_dir)
    except (FileNotFoundError, StudyFileError) as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
