"""Disentanglement tables: metrics per configuration, mean +/- std over repeats."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_METRICS", "disentanglement_table", "to_markdown", "write_table"]

DEFAULT_METRICS = ("mig", "val_elbo", "val_recon_loss", "val_kl")


def disentanglement_table(
    trials: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS
) -> pd.DataFrame:
    """Mean and standard deviation of each metric per configuration, over its repeats.

    Only finished trials (status ``TERMINATED``, when a status column exists) count.

    Args:
        trials: The trials table (one row per trial).
        by: Configuration columns to group by (the searched parameters).
        metrics: Metric columns; those absent from ``trials`` are skipped.

    Returns:
        One row per configuration, sorted by ``by``: the ``by`` columns, ``n`` (finished
        repeats), then ``<metric>_mean`` and ``<metric>_std`` (sample std, NaN for n = 1).

    Raises:
        KeyError: If a ``by`` column is missing.
    """
    missing = [c for c in by if c not in trials]
    if missing:
        raise KeyError(f"configuration column(s) {missing} not in the trials table")
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    present = [m for m in metrics if m in done]
    grouped = done.groupby(list(by), dropna=False, sort=True)
    table = grouped.size().rename("n").to_frame()
    for metric in present:
        table[f"{metric}_mean"] = grouped[metric].mean()
        table[f"{metric}_std"] = grouped[metric].std(ddof=1)
    return table.reset_index()


def _number(value: float) -> str:
    """3 significant digits for small values, 1-2 decimals for large ones (no exponents)."""
    size = abs(value)
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table with ``mean ± std`` cells for each ``<metric>_mean``/``_std`` pair."""
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    keys = [c for c in table.columns if not c.endswith(("_mean", "_std"))]
    header = keys + metrics
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        cells = [str(row[k]) for k in keys]
        for m in metrics:
            mean, std = row[f"{m}_mean"], row[f"{m}_std"]
            cell = "n/a" if pd.isna(mean) else _number(mean) + ("" if pd.isna(std) else f" ± {_number(std)}")
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, directory: Path, stem: str = "disentanglement_table") -> list[Path]:
    """Writes the table as ``<stem>.md`` and ``<stem>.csv``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    md, csv = directory / f"{stem}.md", directory / f"{stem}.csv"
    md.write_text(to_markdown(table))
    table.replace({np.nan: None}).to_csv(csv, index=False)
    return [md, csv]
