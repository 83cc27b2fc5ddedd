"""Loading a study's result tables: usable from Jupyter with nothing but the parquet files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

__all__ = ["load_trials", "load_epochs", "load_metadata"]


def _table_path(study: str | Path, name: str) -> Path:
    path = Path(study)
    return path / name if path.is_dir() else path


def load_trials(study: str | Path) -> pd.DataFrame:
    """``trials.parquet`` of a study directory (or the parquet file itself): one row per trial.

    Raises:
        FileNotFoundError: If the file does not exist.
    """
    return pd.read_parquet(_table_path(study, "trials.parquet"))


def load_epochs(study: str | Path) -> pd.DataFrame:
    """``epochs.parquet`` of a study directory: one row per trial and epoch."""
    return pd.read_parquet(_table_path(study, "epochs.parquet"))


def load_metadata(study: str | Path) -> dict[str, Any]:
    """The study metadata stored in the parquet schema: name, searched params, objective."""
    schema = pq.read_schema(_table_path(study, "trials.parquet"))
    raw = (schema.metadata or {}).get(b"vae_study")
    return json.loads(raw) if raw else {}
