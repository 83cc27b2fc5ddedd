"""Reading a study's files: parquet tables and JSON, usable from Jupyter with nothing else.

A study directory is data: everything here reads parquet and JSON only, never a pickle (Ray
Tune's ``tuner.pkl`` and experiment-state blobs are left alone; only a resume loads them, see
``study.run``). File names of a study directory are defined here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SPEC_FILE", "DATA_FILE", "StudyFileError", "load_trials", "load_epochs", "load_metadata", "read_json",
           "read_spec", "best_trial", "write_parquet", "resolve_checkpoint"]

SPEC_FILE = "spec.json"  # the validated spec a study ran with; also marks a directory as a vae-study study
DATA_FILE = "data.json"  # the data source, its fingerprint, row counts and preprocessing statistics


class StudyFileError(ValueError):
    """A file of a study directory is missing, unreadable or corrupt; the message names it."""


def _table_path(study: str | Path, name: str) -> Path:
    path = Path(study)
    return path / name if path.is_dir() else path


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run the study, or python -m study.results)")
    try:
        return pd.read_parquet(path)
    except (OSError, pa.ArrowException, ValueError) as err:
        raise StudyFileError(f"{path}: not a readable parquet table ({type(err).__name__}: {err})") from None


def load_trials(study: str | Path, *, resolve_checkpoints: bool = True) -> pd.DataFrame:
    """``trials.parquet`` of a study directory (or the parquet file itself): one row per trial.

    Args:
        study: The study directory or its ``trials.parquet``.
        resolve_checkpoints: Turn ``checkpoint_path`` (stored relative to the study directory)
            into a path that exists where the table is read (see :func:`resolve_checkpoint`);
            False keeps the stored values (for rewriting the table).

    Raises:
        FileNotFoundError: If the file does not exist.
        StudyFileError: If it is not a readable parquet file.
    """
    path = _table_path(study, "trials.parquet")
    trials = _read_parquet(path)
    if resolve_checkpoints and "checkpoint_path" in trials:
        trials["checkpoint_path"] = [resolve_checkpoint(path.parent, value) for value in trials["checkpoint_path"]]
    return trials


def resolve_checkpoint(study_dir: Path, stored: Any) -> str | None:
    """A trial's checkpoint directory as found under ``study_dir``.

    ``stored`` is ``TRIAL_DIR/checkpoint_NNNNNN`` relative to the study directory; tables from
    before that was so hold an absolute path, which is kept when it exists and otherwise looked
    for as its last two parts under ``study_dir`` (a study copied from a cluster).

    Returns:
        The path as a string; the stored value (None, NaN) when there is none; an absolute path
        that exists nowhere is returned unchanged, so readers skip it as missing.
    """
    if not isinstance(stored, str):
        return None
    path = Path(stored)
    if not path.is_absolute():
        return str(study_dir / path)
    rebased = study_dir.joinpath(*path.parts[-2:])
    return str(rebased) if not path.exists() and rebased.is_dir() else stored


def load_epochs(study: str | Path) -> pd.DataFrame:
    """``epochs.parquet`` of a study directory: one row per trial and epoch.

    Raises:
        FileNotFoundError: If the file does not exist.
        StudyFileError: If it is not a readable parquet file.
    """
    return _read_parquet(_table_path(study, "epochs.parquet"))


def load_metadata(study: str | Path) -> dict[str, Any]:
    """The study metadata stored in the parquet schema: name, searched params, objective.

    Raises:
        StudyFileError: If the table or its metadata cannot be read.
    """
    path = _table_path(study, "trials.parquet")
    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"vae_study")
        return json.loads(raw) if raw else {}
    except (OSError, pa.ArrowException, ValueError) as err:
        raise StudyFileError(f"{path}: metadata not readable ({type(err).__name__}: {err})") from None


def read_json(path: str | Path) -> Any:
    """A JSON file of a study directory.

    Raises:
        FileNotFoundError: If it does not exist.
        StudyFileError: If it is not UTF-8 JSON.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        raise StudyFileError(f"{path}: not readable ({type(err).__name__}: {err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise StudyFileError(f"{path}: not valid JSON ({err})") from None


def read_spec(study_dir: str | Path) -> dict[str, Any]:
    """The spec a study ran with (``spec.json``), as plain JSON values.

    Raises:
        FileNotFoundError: If the directory holds no ``spec.json`` (not a vae-study study).
        StudyFileError: If the file is corrupt or not a spec mapping.
    """
    path = Path(study_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{Path(study_dir)}: no {SPEC_FILE}; not a vae-study study directory")
    spec = read_json(path)
    if not isinstance(spec, dict) or not isinstance(spec.get("dataset"), dict) or "name" not in spec:
        raise StudyFileError(f"{path}: not a study spec (expected a mapping with name and dataset)")
    return spec


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The finished trial with the best ``metric``, or None when no finished trial reported it."""
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    if metric not in done or done[metric].notna().sum() == 0:
        return None
    index = done[metric].idxmax() if mode == "max" else done[metric].idxmin()
    return done.loc[index]


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
