"""Disentanglement tables: metrics per configuration, mean +/- std over repeats; UDR's ranking and
its agreement with the supervised metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.importance import importance_table  # re-exported for Jupyter
from analysis.metrics import METRICS, resolve_modes
from analysis.variance import variance_table  # re-exported for Jupyter

__all__ = [
    "DEFAULT_METRICS",
    "disentanglement_table",
    "best_configurations",
    "to_markdown",
    "to_latex",
    "write_table",
    "importance_table",
    "variance_table",
    "markdown_table_html",
    "udr_table",
    "udr_correlations",
]

DEFAULT_METRICS = ("mig", "val_elbo", "val_recon_loss", "val_kl")


def _finished_groups(trials: pd.DataFrame, by: Sequence[str]):
    """Finished trials (status ``TERMINATED`` when a status column exists) grouped by ``by``."""
    missing = [c for c in by if c not in trials]
    if missing:
        raise KeyError(f"configuration column(s) {missing} not in the trials table")
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    return done, done.groupby(list(by), dropna=False, sort=True)


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
    done, grouped = _finished_groups(trials, by)
    present = [m for m in metrics if m in done]
    table = grouped.size().rename("n").to_frame()
    for metric in present:
        table[f"{metric}_mean"] = grouped[metric].mean()
        table[f"{metric}_std"] = grouped[metric].std(ddof=1)
    return table.reset_index()


def best_configurations(
    trials: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    modes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """For each metric, the configuration with the best mean over its finished repeats.

    Args:
        trials: The trials table (one row per trial).
        by: Configuration columns that define a configuration (the searched parameters).
        metrics: Metric columns; those absent or never reported are skipped.
        modes: ``"min"``/``"max"`` per metric; by default from the metric's name
            (``study.spec.metric_mode``: losses min, ``val_elbo`` and ``mig`` max).

    Returns:
        One row per reported metric: ``metric``, ``mode``, the ``by`` columns, ``mean``,
        ``std`` (sample std over repeats, NaN for n = 1) and ``n`` (repeats that reported
        the metric). Ties go to the first configuration in ``by`` order.

    Raises:
        KeyError: If a ``by`` column is missing, or ``modes`` is None and a metric has no
            known direction.
        ValueError: If ``modes`` does not hold one of min/max per metric.
    """
    modes = resolve_modes(metrics, modes)
    done, grouped = _finished_groups(trials, by)
    rows = []
    for metric, mode in zip(metrics, modes):
        if metric not in done or done[metric].notna().sum() == 0:
            continue
        stats = grouped[metric].agg(["mean", "std", "count"])
        best = stats["mean"].idxmax() if mode == "max" else stats["mean"].idxmin()
        key = best if isinstance(best, tuple) else (best,)
        rows.append({"metric": metric, "mode": mode, **dict(zip(by, key)), "mean": stats.at[best, "mean"],
                     "std": stats.at[best, "std"], "n": int(stats.at[best, "count"])})
    return pd.DataFrame(rows, columns=["metric", "mode", *by, "mean", "std", "n"])


def udr_table(trials: pd.DataFrame, params: Sequence[str]) -> pd.DataFrame:
    """Configurations ranked by their mean UDR over seeds, best first.

    Args:
        trials: The trials table, with the ``udr`` column (``analysis.metrics.udr.compute_udr``).
        params: Configuration columns (the searched parameters).

    Returns:
        :func:`disentanglement_table` of ``udr`` (the ``params``, ``n`` finished seeds, ``udr_mean``,
        ``udr_std``) sorted by ``udr_mean`` descending (NaN last; ties in ``params`` order), with a
        fresh index.

    Raises:
        KeyError: If ``udr`` or a ``params`` column is missing.
    """
    if "udr" not in trials:
        raise KeyError("no column 'udr' in the trials table (python -m analysis.rescore STUDY --metrics udr)")
    table = disentanglement_table(trials, params, ["udr"])
    return table.sort_values("udr_mean", ascending=False, kind="stable", na_position="last").reset_index(drop=True)


def udr_correlations(trials: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Spearman rank correlation of UDR with each supervised metric over finished trials (the check of
    Duan et al. 2020, arXiv:1905.12614: whether UDR ranks models as the supervised metrics do).

    Args:
        trials: The trials table with ``udr`` and metric columns.
        metrics: Metric columns to correlate with; None: every result key of the ground-truth
            metrics (``mig``, ``dci_disentanglement``, ``sap``, ``factor_vae``, ``beta_vae``, ...)
            present in ``trials``. Absent columns are skipped.

    Returns:
        One row per metric: ``metric``, ``n`` (finished trials with both values), ``spearman_rho``
        in [-1, 1] and ``p_value`` (two-sided; both NaN for fewer than 3 pairs or a constant column).

    Raises:
        KeyError: If ``udr`` is missing.
    """
    from scipy.stats import spearmanr

    if "udr" not in trials:
        raise KeyError("no column 'udr' in the trials table (python -m analysis.rescore STUDY --metrics udr)")
    if metrics is None:
        metrics = [key for metric in METRICS.values() if metric.kind == "ground_truth" for key in metric.keys]
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    rows = []
    for metric in dict.fromkeys(m for m in metrics if m in done and m != "udr"):
        pairs = done[["udr", metric]].apply(pd.to_numeric, errors="coerce").dropna()
        rho = p_value = np.nan
        if len(pairs) >= 3 and pairs["udr"].nunique() > 1 and pairs[metric].nunique() > 1:
            rho, p_value = spearmanr(pairs["udr"], pairs[metric])
        rows.append({"metric": metric, "n": len(pairs), "spearman_rho": float(rho), "p_value": float(p_value)})
    return pd.DataFrame(rows, columns=["metric", "n", "spearman_rho", "p_value"])


def _number(value: float) -> str:
    """3 significant digits for small values, 1-2 decimals for large ones (no exponents)."""
    size = abs(value)
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _layout(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Key columns, and the metric prefixes of each ``<metric>_mean``/``_std`` (or ``mean``/``std``) pair."""
    pairs = [c[:-4] for c in table.columns if isinstance(c, str) and c.endswith("mean") and f"{c[:-4]}std" in table]
    pairs = [p for p in pairs if p == "" or p.endswith("_")]
    paired = {f"{p}{s}" for p in pairs for s in ("mean", "std")}
    return [c for c in table.columns if c not in paired], pairs


def _mean_std(row: dict, prefix: str, pm: str) -> str:
    mean, std = row[f"{prefix}mean"], row[f"{prefix}std"]
    if pd.isna(mean):
        return "n/a"
    return _number(mean) + ("" if pd.isna(std) else f" {pm} {_number(std)}")


def _header(prefix: str) -> str:
    return prefix[:-1] if prefix else "mean ± std"


def _key_cell(value: object) -> str:
    """A configuration value for a table cell: floats to 4 significant digits (searched floats are long)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table with ``mean ± std`` cells for each ``<metric>_mean``/``_std`` pair."""
    keys, pairs = _layout(table)
    header = keys + [_header(p) for p in pairs]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        cells = [_key_cell(row[k]) for k in keys] + [_mean_std(row, p, "±") for p in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(value: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(value))


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs LaTeX ``tabular`` with ``mean $\\pm$ std`` cells for each mean/std pair.

    Works on :func:`disentanglement_table` (``<metric>_mean``/``_std`` pairs, one column
    per metric) and :func:`best_configurations` (``mean``/``std``, one column). Text is
    escaped for LaTeX; the document needs ``\\usepackage{booktabs}``.
    """
    keys, pairs = _layout(table)
    header = [_latex_escape(k) for k in keys] + [_latex_escape(_header(p)).replace("±", r"$\pm$") for p in pairs]
    lines = [r"\begin{tabular}{" + "l" * len(keys) + "r" * len(pairs) + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    for row in table.to_dict("records"):
        cells = [_latex_escape("" if pd.isna(row[k]) else row[k]) for k in keys]
        cells += [_mean_std(row, p, r"$\pm$") for p in pairs]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, directory: Path, stem: str = "disentanglement_table") -> list[Path]:
    """Writes the table as ``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    md, csv, tex = directory / f"{stem}.md", directory / f"{stem}.csv", directory / f"{stem}.tex"
    md.write_text(to_markdown(table))
    table.replace({np.nan: None}).to_csv(csv, index=False)
    tex.write_text(to_latex(table))
    return [md, csv, tex]


def markdown_table_html(markdown: str) -> str:
    """A pipe table (as :func:`to_markdown` and ``analysis.instrument`` write them) as an HTML ``<table>``.

    The first ``|`` row is the header, a ``|---|`` row is skipped, every later ``|`` row is a
    body row; cells are HTML-escaped. Text without a ``|`` row (a one-line note such as "No
    importance computed.") comes back as an escaped ``<p>``.
    """
    import html

    rows = [line.strip() for line in markdown.splitlines() if line.strip().startswith("|")]
    rows = [r for r in rows if set(r) - set("|-: ")]  # drop the |---|---| separator
    if not rows:
        return f"<p>{html.escape(markdown.strip())}</p>"
    cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
