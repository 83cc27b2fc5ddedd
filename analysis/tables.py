"""Disentanglement tables: metrics per configuration, mean +/- std over repeats; UDR's ranking and
its agreement with the supervised metrics.

The best configuration per metric is judged against seed noise: it is named best only when its
mean beats the runner-up's by more than :data:`NOISE_SE` standard errors of the difference of the
two means, the standard error coming from the seed standard deviation pooled within
configurations (:func:`pooled_seed_std`, the within-configuration mean square of
:func:`analysis.variance.variance_table`).
"""

from __future__ import annotations

import re
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
    "markdown_cell",
    "pooled_seed_std",
    "NOISE_SE",
]

DEFAULT_METRICS = ("mig", "val_elbo", "val_recon_loss", "val_kl")
# A best configuration is named only when its margin over the runner-up exceeds this many standard
# errors of the difference of the two means (2: about a two-sided 95% normal interval). A screen
# against seed noise, not a test: the best is picked after looking, and no multiplicity is corrected.
NOISE_SE = 2.0
# Columns of best_configurations(..., margins=True), written after the mean ± std cell.
_MARGIN_COLUMNS = ("runner_up", "margin", "seed_noise", "verdict")
_NUMBER_COLUMNS = ("margin", "seed_noise")  # metric values: formatted as the means are


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
    *,
    margins: bool = False,
) -> pd.DataFrame:
    """For each metric, the configuration with the best mean over its finished repeats.

    With ``margins``, each row also says whether that best stands out from seed noise: its
    ``margin`` over the runner-up (the configuration with the second-best mean) against
    ``seed_noise = NOISE_SE * s * sqrt(1 / n_best + 1 / n_runner_up)``, where ``s`` is the
    metric's seed standard deviation pooled within configurations (:func:`pooled_seed_std`) and
    ``n`` the repeats behind each mean. ``verdict`` is ``"beyond seed noise"`` when
    ``margin > seed_noise``, ``"within seed noise"`` when not (the best is then not a winner),
    ``"seed noise unknown (one repeat each)"`` when no configuration has two repeats of the metric,
    and ``"single configuration"`` when there is no runner-up.

    Args:
        trials: The trials table (one row per trial).
        by: Configuration columns that define a configuration (the searched parameters).
        metrics: Metric columns; those absent or never reported are skipped.
        modes: ``"min"``/``"max"`` per metric; by default from the metric's name
            (``study.spec.metric_mode``: losses min, ``val_elbo`` and ``mig`` max).
        margins: Add ``runner_up`` (its ``by`` values as ``"beta=4"``), ``margin`` (>= 0, the
            metric's unit), ``seed_noise`` (same unit; NaN when unknown) and ``verdict``.

    Returns:
        One row per reported metric: ``metric``, ``mode``, the ``by`` columns, ``mean``,
        ``std`` (sample std over repeats, NaN for n = 1) and ``n`` (repeats that reported
        the metric), then the margin columns when asked for. Ties go to the first
        configuration in ``by`` order.

    Raises:
        KeyError: If a ``by`` column is missing, or ``modes`` is None and a metric has no
            known direction.
        ValueError: If ``modes`` does not hold one of min/max per metric.

    References:
        Locatello et al. 2019, arXiv:1811.12359 (seed variance of disentanglement metrics).
    """
    modes = resolve_modes(metrics, modes)
    done, grouped = _finished_groups(trials, by)
    rows = []
    for metric, mode in zip(metrics, modes):
        if metric not in done or done[metric].notna().sum() == 0:
            continue
        stats = grouped[metric].agg(["mean", "std", "count"])
        order = stats["mean"].dropna().sort_values(ascending=mode == "min", kind="stable")  # best first, ties by `by`
        best = order.index[0]
        key = best if isinstance(best, tuple) else (best,)
        row = {"metric": metric, "mode": mode, **dict(zip(by, key)), "mean": stats.at[best, "mean"],
               "std": stats.at[best, "std"], "n": int(stats.at[best, "count"])}
        rows.append({**row, **_margin(stats, order, list(by))} if margins else row)
    return pd.DataFrame(rows, columns=["metric", "mode", *by, "mean", "std", "n",
                                       *(_MARGIN_COLUMNS if margins else ())])


def pooled_seed_std(counts: pd.Series, stds: pd.Series) -> float:
    """The seed standard deviation of a metric pooled within configurations.

    ``sqrt(sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1))`` over configurations with ``n_i >= 2``: the
    square root of the within-configuration mean square (``s_w^2 = MSW``) of
    :func:`analysis.variance.variance_table`.

    Args:
        counts: Repeats per configuration (``n_i``).
        stds: Sample standard deviation per configuration (``s_i``, ddof 1; NaN for ``n_i = 1``).

    Returns:
        The pooled standard deviation in the metric's unit; NaN when no configuration has 2 repeats.

    References:
        Searle, Casella & McCulloch 1992, "Variance Components", Wiley, ch. 3 (MSW).
    """
    repeated = counts.to_numpy(float) >= 2
    dof = counts.to_numpy(float)[repeated] - 1
    if dof.sum() == 0:
        return float("nan")
    return float(np.sqrt((dof * stds.to_numpy(float)[repeated] ** 2).sum() / dof.sum()))


def _margin(stats: pd.DataFrame, order: pd.Series, by: list[str]) -> dict:
    """The margin columns of :func:`best_configurations` for one metric: ``stats`` has ``mean``,
    ``std`` and ``count`` per configuration, ``order`` the means best first."""
    if len(order) < 2:
        return {"runner_up": None, "margin": np.nan, "seed_noise": np.nan, "verdict": "single configuration"}
    best, second = order.index[0], order.index[1]
    key = second if isinstance(second, tuple) else (second,)
    runner_up = ", ".join(f"{k}={_key_cell(v)}" for k, v in zip(by, key))
    margin = abs(float(order.iloc[0] - order.iloc[1]))
    s = pooled_seed_std(stats["count"], stats["std"])
    noise = NOISE_SE * s * np.sqrt(1 / stats.at[best, "count"] + 1 / stats.at[second, "count"])
    if np.isnan(noise):
        verdict = "seed noise unknown (one repeat each)"
    else:
        verdict = "beyond seed noise" if margin > noise else "within seed noise"
    return {"runner_up": runner_up, "margin": margin, "seed_noise": float(noise), "verdict": verdict}


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


def _layout(table: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """Key columns, the metric prefixes of each ``<metric>_mean``/``_std`` (or ``mean``/``std``) pair,
    and the margin columns of :func:`best_configurations` (written after the pairs)."""
    pairs = [c[:-4] for c in table.columns if isinstance(c, str) and c.endswith("mean") and f"{c[:-4]}std" in table]
    pairs = [p for p in pairs if p == "" or p.endswith("_")]
    paired = {f"{p}{s}" for p in pairs for s in ("mean", "std")}
    trailing = [c for c in _MARGIN_COLUMNS if c in table] if pairs == [""] else []
    return [c for c in table.columns if c not in paired and c not in trailing], pairs, trailing


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


def _cell(column: str, value: object) -> str:
    """A key or margin cell: ``n/a`` for a missing value, metric values as the means, others by :func:`_key_cell`."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return _number(value) if column in _NUMBER_COLUMNS else _key_cell(value)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|])|(?<!\w)_|_(?!\w)")


def markdown_cell(text: object) -> str:
    """``text`` escaped for a markdown table cell or paragraph: a backslash before ``\\ ` * [ ] |`` and
    before an ``_`` that could open or close emphasis (one inside a word, as in ``val_kl``, cannot)."""
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), str(text))


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table with ``mean ± std`` cells for each ``<metric>_mean``/``_std`` pair.

    Cells are formatted once, here: means and standard deviations (and the margin columns of
    :func:`best_configurations`) to 3 significant digits below 1, 2 decimals below 100, 1 above;
    configuration floats to 4 significant digits; missing values as ``n/a``; text escaped with
    :func:`markdown_cell`. Any markdown renderer then shows the same cells.
    """
    keys, pairs, trailing = _layout(table)
    header = keys + [_header(p) for p in pairs] + trailing
    lines = ["| " + " | ".join(markdown_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        cells = [_cell(k, row[k]) for k in keys] + [_mean_std(row, p, "±") for p in pairs]
        cells += [_cell(c, row[c]) for c in trailing]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(value: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(value))


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs LaTeX ``tabular`` with ``mean $\\pm$ std`` cells for each mean/std pair.

    Works on :func:`disentanglement_table` (``<metric>_mean``/``_std`` pairs, one column
    per metric) and :func:`best_configurations` (``mean``/``std``, one column; the margin
    columns after it). Text is escaped for LaTeX; the document needs ``\\usepackage{booktabs}``.
    """
    keys, pairs, trailing = _layout(table)
    header = [_latex_escape(k) for k in keys] + [_latex_escape(_header(p)).replace("±", r"$\pm$") for p in pairs]
    header += [_latex_escape(c) for c in trailing]
    align = "".join("r" if c in _NUMBER_COLUMNS else "l" for c in trailing)
    lines = [r"\begin{tabular}{" + "l" * len(keys) + "r" * len(pairs) + align + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    for row in table.to_dict("records"):
        cells = [_latex_escape("" if pd.isna(row[k]) else row[k]) for k in keys]
        cells += [_mean_std(row, p, r"$\pm$") for p in pairs]
        cells += [_latex_escape(_cell(c, row[c])) for c in trailing]
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
