"""Plots of study results; each function returns a matplotlib Figure.

Result plots take the trials table (``trials.parquet``) or the epochs table
(``epochs.parquet``); only finished trials (status ``TERMINATED``) are plotted from the
trials table. Model plots take a trained model (``analysis.checkpoints.load_trial_model``)
and observations or codes.

Missing data is handled one way throughout: a configuration column that is asked for and
absent raises ``KeyError``; a metric that no finished trial reported (absent, or all NaN)
leaves its panel empty with a note saying so, since a study whose trials all failed
reports nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib import ticker as mticker
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.metrics import resolve_modes
from analysis.tables import DEFAULT_METRICS

__all__ = [
    "LEARNING_CURVES_MAX_TRIALS",
    "CURVE_BINS",
    "PARALLEL_MAX_LINES",
    "SCATTER_MAX_POINTS",
    "PARAM_MAX_VALUES",
    "PARAM_BINS",
    "save_figure",
    "tradeoff_figure",
    "metric_vs_param_figure",
    "rate_distortion_figure",
    "pareto_mask",
    "pareto_figure",
    "spearman_matrix",
    "metric_correlation_figure",
    "learning_curves_figure",
    "traversal_figure",
    "reconstructions_figure",
    "latent_pca_figure",
    "parallel_coordinates_figure",
    "importance_figure",
]

_LOG_SPAN = 8  # a positive colour/x range spanning this factor or more is drawn on a log scale

# Large studies: above these counts a figure draws a summary instead of one element per trial or
# value (the report lists each switch it made, analysis.report.large_study_notes).
LEARNING_CURVES_MAX_TRIALS = 50  # more curves are a tangle: the median and a 10-90% band per colour bin instead
CURVE_BINS = 5  # colour bins of summarised curves: equal-count bins of the colour column (its values when fewer)
PARALLEL_MAX_LINES = 100  # parallel coordinates: the best 100 trials as lines, every trial as a density per axis
SCATTER_MAX_POINTS = 500  # rate-distortion, Pareto, metric vs parameter: hexagonal bins (or none) above this
PARAM_MAX_VALUES = 20  # a parameter axis with more distinct values (a continuous search) is binned ...
PARAM_BINS = 10  # ... into this many equal-count bins: the median and 10-90% band of the metric per bin
BAND = (0.1, 0.9)  # the quantiles bounding every summary band


# ----------------------------------------------------------------------------- shared helpers


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Writes ``fig`` to ``path`` (PNG at 110 dpi, the report's figures) and closes it; returns the path."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == "TERMINATED"] if "status" in trials else trials


def _require(frame: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    """Raises KeyError naming the absent columns and the ones present."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise KeyError(f"column(s) {missing} not in the {table} table; it has {list(frame.columns)}")


def _reported(frame: pd.DataFrame, metric: str) -> bool:
    return metric in frame and frame[metric].notna().any()


def _note(ax, text: str, title: str | None = None) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)


def _is_log_range(values: pd.Series) -> bool:
    """Numeric, all > 0, and max / min >= ``_LOG_SPAN``."""
    values = values.dropna()
    if not len(values) or not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    values = values.astype(float)
    return bool((values > 0).all() and values.max() / values.min() >= _LOG_SPAN)


def _panels(n: int, *, ncols: int = 3, size: tuple[float, float] = (4.8, 3.9)) -> tuple[Figure, list]:
    """A figure with ``n`` axes on a grid of at most ``ncols`` columns (unused cells removed)."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), constrained_layout=True,
                             squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


@dataclass
class _Colours:
    """Colours of a column's values: RGBA per row, plus a colourbar or legend to explain them."""

    rgba: np.ndarray  # (N, 4)
    mappable: ScalarMappable | None  # numeric values: for a colourbar
    legend: list[Line2D] | None  # categorical values: legend handles
    label: str


def _colours(values: pd.Series, label: str, cmap: str = "viridis") -> _Colours:
    """Numeric values on ``cmap`` (log-normed when they span >= 8x), others as categories; NaN grey."""
    missing = values.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype(float)
        known = numbers[~missing]
        low, high = (known.min(), known.max()) if len(known) else (0.0, 1.0)
        if high == low:
            low, high = low - 0.5, high + 0.5
        log = _is_log_range(numbers)
        norm = mcolors.LogNorm(low, high) if log else mcolors.Normalize(low, high)
        mappable = ScalarMappable(norm=norm, cmap=cmap)
        rgba = mappable.to_rgba(numbers.fillna(low).to_numpy())
        rgba[missing] = mcolors.to_rgba("0.6")
        return _Colours(rgba, mappable, None, label + (" (log scale)" if log else ""))
    names = values.astype(str).where(~values.isna(), "n/a")
    categories = sorted(names.unique())
    palette = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20")
    lookup = {c: palette(i % palette.N) for i, c in enumerate(categories)}
    rgba = np.array([lookup[n] for n in names]).reshape(len(names), 4)
    handles = [Line2D([], [], marker="o", ls="", color=lookup[c], label=c) for c in categories]
    return _Colours(rgba, None, handles, label)


def _explain(fig: Figure, ax, colours: _Colours) -> None:
    """Adds the colourbar (numeric) or legend (categorical) that explains ``colours``."""
    if colours.mappable is not None:
        bar = fig.colorbar(colours.mappable, ax=ax)
        bar.set_label(colours.label)
        if isinstance(colours.mappable.norm, mcolors.LogNorm):
            bar.ax.yaxis.set_major_locator(mticker.LogLocator(base=2))
            bar.ax.yaxis.set_major_formatter(mticker.LogFormatterSciNotation(base=2))
            bar.ax.yaxis.set_minor_locator(mticker.NullLocator())
    elif colours.legend:
        ax.legend(handles=colours.legend, title=colours.label, fontsize=8, title_fontsize=8)


# ----------------------------------------------------------------------------- result plots


def _metric_vs_param(ax, trials: pd.DataFrame, param: str, metric: str, log_x: bool) -> None:
    """Each trial as a dot (up to ``SCATTER_MAX_POINTS`` finished trials), and the per-value mean
    with a +/- std bar over repeats; a parameter with more than ``PARAM_MAX_VALUES`` distinct
    numeric values gets the median and 10-90% band per equal-count bin instead."""
    ax.set_title(f"{metric} vs {param}")
    if not _reported(trials, metric):
        _note(ax, f"no {metric} reported")
        return
    binned = _numeric(trials[param]) and trials[param].nunique() > PARAM_MAX_VALUES
    dots = len(trials) <= SCATTER_MAX_POINTS
    trials = trials.dropna(subset=[param, metric])
    if dots:
        ax.scatter(trials[param], trials[metric], s=6 if binned else 14, alpha=0.3 if binned else 0.5,
                   color="tab:gray", label="trials")
    if binned:
        _binned_band(ax, trials, param, metric)
    else:
        stats = trials.groupby(param)[metric].agg(["mean", "std"]).reset_index()
        ax.errorbar(stats[param], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3,
                    color="tab:blue", label="mean ± std over repeats")
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _binned_band(ax, points: pd.DataFrame, param: str, metric: str) -> None:
    """The median of ``metric`` and its 10-90% band in ``PARAM_BINS`` equal-count bins of ``param``,
    each drawn at the bin's median ``param`` value."""
    bins = pd.qcut(points[param].rank(method="first"), min(PARAM_BINS, len(points)), labels=False)
    grouped = points.groupby(bins)
    x, metric_values = grouped[param].median(), grouped[metric]
    low, high = metric_values.quantile(BAND[0]), metric_values.quantile(BAND[1])
    ax.fill_between(x, low, high, color="tab:blue", alpha=0.2,
                    label=f"{round(100 * BAND[0])}-{round(100 * BAND[1])}% of trials per bin")
    ax.plot(x, metric_values.median(), "-o", color="tab:blue", ms=4,
            label=f"median per bin ({len(x)} equal-count bins of {param})")


def _rate_distortion(fig: Figure, ax, trials: pd.DataFrame, color_by: str | None) -> None:
    """``val_kl`` against ``val_recon_loss`` of each trial, coloured by ``color_by``; hexagonal bins
    (coloured by the median of a numeric ``color_by``, else by count) above ``SCATTER_MAX_POINTS`` trials."""
    ax.set_title("rate-distortion")
    absent = [m for m in ("val_kl", "val_recon_loss") if not _reported(trials, m)]
    if absent:
        _note(ax, f"no {' or '.join(absent)} reported")
        return
    dense = len(trials) > SCATTER_MAX_POINTS
    points = trials.dropna(subset=["val_kl", "val_recon_loss"])
    colours = _colours(points[color_by], color_by) if color_by is not None else None
    if dense:
        _hexbin(fig, ax, points["val_kl"], points["val_recon_loss"],
                points[color_by] if colours is not None and colours.mappable is not None else None, colours)
    elif colours is None:
        ax.scatter(points["val_kl"], points["val_recon_loss"], s=30, color="tab:blue")
    else:
        ax.scatter(points["val_kl"], points["val_recon_loss"], s=30, c=colours.rgba)
        _explain(fig, ax, colours)
    ax.set_xlabel("val_kl (rate, nats)")
    ax.set_ylabel("val_recon_loss (distortion, nats)")
    ax.grid(alpha=0.3)


def _hexbin(fig: Figure, ax, x: pd.Series, y: pd.Series, values: pd.Series | None, colours: _Colours | None) -> None:
    """Points as hexagonal bins: coloured by the median of numeric ``values`` on ``colours``' scale,
    or by the number of trials (log scale) when ``values`` is None; with its colourbar."""
    if values is not None:
        image = ax.hexbin(x, y, C=values.astype(float), reduce_C_function=np.median, gridsize=30, mincnt=1,
                          cmap=colours.mappable.get_cmap(), norm=colours.mappable.norm)
        fig.colorbar(image, ax=ax).set_label(f"{colours.label}, median per bin")
    else:
        image = ax.hexbin(x, y, gridsize=30, mincnt=1, bins="log", cmap="Blues")
        fig.colorbar(image, ax=ax).set_label("trials per bin")


def metric_vs_param_figure(
    trials: pd.DataFrame, param: str, metrics: Sequence[str] = DEFAULT_METRICS
) -> Figure:
    """Each metric against one configuration column: trials as dots, mean ± std over repeats.

    Large studies: no dots above ``SCATTER_MAX_POINTS`` finished trials; a numeric column with more
    than ``PARAM_MAX_VALUES`` distinct values (a continuous search) is cut into ``PARAM_BINS``
    equal-count bins, each drawn as the median of the metric with its 10-90% band.

    Args:
        trials: The trials table; finished trials are plotted.
        param: Configuration column on the x axes: a log2 axis when its values are all > 0
            and span >= 8x, a linear one for other numbers, categories for other values.
        metrics: Metric columns, one panel each (at most 3 per row).

    Returns:
        A Figure with ``len(metrics)`` axes.

    Raises:
        KeyError: If ``param`` is not a column.
        ValueError: If ``metrics`` is empty.
    """
    if not metrics:
        raise ValueError("`metrics` must name at least one metric, but got none")
    _require(trials, [param], "trials")
    done = _finished(trials)
    fig, axes = _panels(len(metrics))
    log_x = _is_log_range(done[param])
    for ax, metric in zip(axes, metrics):
        _metric_vs_param(ax, done, param, metric, log_x)
    drawn = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if drawn:
        drawn[0].legend(fontsize=8)
    return fig


def rate_distortion_figure(trials: pd.DataFrame, color_by: str | None = "beta") -> Figure:
    """The rate-distortion plane: ``val_kl`` (rate, nats) vs ``val_recon_loss`` (distortion, nats).

    Args:
        trials: The trials table; finished trials are plotted.
        color_by: Configuration column colouring the points (a log colour scale when its
            values are all > 0 and span >= 8x; a legend for non-numeric columns), or None.
            Above ``SCATTER_MAX_POINTS`` finished trials the points become hexagonal bins,
            coloured by the median ``color_by`` when numeric, else by the number of trials.

    Returns:
        A Figure with one axes (plus a colourbar axes for a numeric ``color_by`` or bins).

    Raises:
        KeyError: If ``color_by`` is not a column.

    References:
        Alemi et al. 2018, "Fixing a Broken ELBO", ICML, arXiv:1711.00464 (fig. 1).
    """
    if color_by is not None:
        _require(trials, [color_by], "trials")
    fig, ax = plt.subplots(figsize=(5.6, 4.4), constrained_layout=True)
    _rate_distortion(fig, ax, _finished(trials), color_by)
    return fig


def tradeoff_figure(trials: pd.DataFrame, param: str = "beta") -> Figure:
    """The disentanglement/reconstruction trade-off of a sweep over ``param``.

    Panels: ``param`` vs ``mig``; ``param`` vs ``val_recon_loss``; the rate-distortion plane
    ``val_kl`` (rate, nats) vs ``val_recon_loss`` (distortion, nats) coloured by ``param``. Large
    studies get the summaries of :func:`metric_vs_param_figure` and :func:`rate_distortion_figure`.

    Args:
        trials: The trials table; finished trials are plotted.
        param: Configuration column on the x axes (log2 scale when all > 0 and spanning >= 8x).

    Returns:
        A 1x3 matplotlib Figure.

    Raises:
        KeyError: If ``param`` is not a column.
    """
    _require(trials, [param], "trials")
    done = _finished(trials)
    log_x = _is_log_range(done[param])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    _metric_vs_param(axes[0], done, param, "mig", log_x)
    _metric_vs_param(axes[1], done, param, "val_recon_loss", log_x)
    _rate_distortion(fig, axes[2], done, param)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    return fig


def pareto_mask(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Which rows are not dominated: no other row is as good in every objective and better in one.

    Rows with a NaN are never on the front and never dominate. Equal rows do not
    dominate each other, so tied points on the front are all kept.

    Args:
        values: float ``(N, M)``, ``M`` objectives per row.
        modes: ``M`` entries, ``"min"`` or ``"max"``, the better direction of each objective.

    Returns:
        bool ``(N,)``, True for rows on the Pareto front.

    Raises:
        ValueError: If ``values`` is not 2-D or ``modes`` does not match its columns.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"`values` must be (N, M), but got shape {values.shape}")
    modes = list(modes)
    if len(modes) != values.shape[1] or any(m not in ("min", "max") for m in modes):
        raise ValueError(f"`modes` must hold {values.shape[1]} of 'min'/'max', but got {modes}")
    cost = values * np.where(np.array(modes) == "max", -1.0, 1.0)  # (N, M), lower is better
    valid = ~np.isnan(cost).any(axis=1)
    mask = np.zeros(len(cost), dtype=bool)
    others = cost[valid]  # (V, M)
    for i in np.flatnonzero(valid):
        dominated = (others <= cost[i]).all(axis=1) & (others < cost[i]).any(axis=1)  # (V,)
        mask[i] = not dominated.any()
    return mask


def _direction(mode: str) -> str:
    return "higher is better" if mode == "max" else "lower is better"


def pareto_figure(
    trials: pd.DataFrame, metrics: Sequence[str] = ("mig", "val_recon_loss"), modes: Sequence[str] | None = None
) -> Figure:
    """Two objectives of the finished trials with their Pareto front.

    Non-dominated trials are drawn solid and joined in order of the first objective;
    dominated ones are faded (alpha 0.25), or drawn as a density (grey hexagonal bins) when
    there are more than ``SCATTER_MAX_POINTS`` finished trials.

    Args:
        trials: The trials table.
        metrics: Exactly two metric columns.
        modes: ``"min"``/``"max"`` per metric; by default from the metric's name
            (``study.spec.metric_mode``: losses min, ``val_elbo`` and ``mig`` max).

    Returns:
        A Figure with one axes.

    Raises:
        ValueError: If ``metrics`` does not hold two names or ``modes`` does not match.
        KeyError: If ``modes`` is None and a metric has no known direction.
    """
    metrics = list(metrics)
    if len(metrics) != 2:
        raise ValueError(f"`metrics` must name 2 objectives, but got {metrics}")
    modes = resolve_modes(metrics, modes)
    fig, ax = plt.subplots(figsize=(5.6, 4.4), constrained_layout=True)
    ax.set_title(f"Pareto front: {metrics[0]} vs {metrics[1]}")
    absent = [m for m in metrics if not _reported(_finished(trials), m)]
    if absent:
        _note(ax, f"no {' or '.join(absent)} reported by a finished trial")
        return fig
    dense = len(_finished(trials)) > SCATTER_MAX_POINTS
    points = _finished(trials).dropna(subset=metrics)
    values = points[metrics].to_numpy(dtype=float)  # (N, 2)
    front = pareto_mask(values, modes)
    handles = []
    if dense and (~front).any():  # a density of the dominated trials; the front stays points
        ax.hexbin(values[~front, 0], values[~front, 1], gridsize=30, mincnt=1, bins="log", cmap="Greys", alpha=0.6)
        handles.append(Patch(color="0.55", label=f"dominated ({int((~front).sum()):,}, density)"))
    else:
        handles += [ax.scatter(values[~front, 0], values[~front, 1], s=24, color="tab:gray", alpha=0.25,
                               label="dominated")]
    order = np.argsort(values[front, 0], kind="stable")
    handles += ax.plot(values[front, 0][order], values[front, 1][order], "-o", color="tab:red", ms=6,
                       label=f"non-dominated ({int(front.sum()):,} of {len(front):,})")
    ax.set_xlabel(f"{metrics[0]} ({_direction(modes[0])})")
    ax.set_ylabel(f"{metrics[1]} ({_direction(modes[1])})")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8)
    return fig


def spearman_matrix(trials: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """Spearman rank correlations between the metrics over finished trials.

    Args:
        trials: The trials table.
        metrics: Metric columns; absent or never-reported ones are left out.

    Returns:
        Square DataFrame indexed by the reported metrics, values in ``[-1, 1]`` (NaN where
        a metric is constant or two metrics share fewer than 2 trials).
    """
    done = _finished(trials)
    present = [m for m in metrics if _reported(done, m)]
    return done[present].astype(float).corr(method="spearman", min_periods=2)


def metric_correlation_figure(trials: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS) -> Figure:
    """Spearman rank correlation between metrics over finished trials, as an annotated heatmap.

    Args:
        trials: The trials table.
        metrics: Metric columns; absent or never-reported ones are left out.

    Returns:
        A Figure with the heatmap axes and its colourbar, or one annotated axes when fewer
        than two metrics were reported.
    """
    corr = spearman_matrix(trials, metrics)
    n = len(corr)
    fig, ax = plt.subplots(figsize=(1.3 * n + 3, 1.1 * n + 2), constrained_layout=True)
    ax.set_title("Spearman rank correlation over trials")
    if n < 2:
        _note(ax, f"fewer than 2 metrics reported (of {list(metrics)})")
        return fig
    matrix = corr.to_numpy()  # (n, n)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")  # NaN (a constant metric) in grey
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=-1, vmax=1, cmap=cmap)
    for i in range(n):
        for j in range(n):
            value = matrix[i, j]
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if not np.isnan(value) and abs(value) > 0.6 else "black")
    ax.set_xticks(range(n), corr.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), corr.index)
    fig.colorbar(image, ax=ax).set_label("Spearman ρ")
    return fig


def learning_curves_figure(
    epochs: pd.DataFrame,
    metrics: Sequence[str] = ("train_loss", "val_elbo"),
    color_by: str | None = None,
    trials: pd.DataFrame | None = None,
    *,
    max_trials: int = LEARNING_CURVES_MAX_TRIALS,
) -> Figure:
    """Each trial's metrics over epochs, one panel per metric.

    Above ``max_trials`` trials the curves are summarised: the trials are grouped by ``color_by``
    (its values, or ``CURVE_BINS`` equal-count bins of a numeric column with more values; one
    group without it), and each group is drawn as its median over epochs with a 10-90% band.

    Args:
        epochs: The epochs table (``trial_id``, ``epoch`` and metric columns). All trials
            are drawn, including those that failed or were stopped early.
        metrics: Metric columns, one panel each.
        color_by: Configuration column of ``trials`` colouring the lines (joined on
            ``trial_id``); None gives each trial its own colour.
        trials: The trials table; needed with ``color_by``.
        max_trials: The most trials drawn one line each (>= 1).

    Returns:
        A Figure with ``len(metrics)`` axes (plus a colourbar axes for a numeric ``color_by``
        when every trial is drawn).

    Raises:
        KeyError: If ``trial_id``/``epoch`` are missing from ``epochs``, or ``color_by`` or
            ``trial_id`` from ``trials``.
        ValueError: If ``metrics`` is empty, or ``color_by`` is given without ``trials``.
    """
    if not metrics:
        raise ValueError("`metrics` must name at least one metric, but got none")
    _require(epochs, ["trial_id", "epoch"], "epochs")
    trial_ids = list(dict.fromkeys(epochs["trial_id"]))
    config = None
    if color_by is not None:
        if trials is None:
            raise ValueError(f"color_by={color_by!r} needs the trials table, but got trials=None")
        _require(trials, ["trial_id", color_by], "trials")
        config = trials.drop_duplicates("trial_id").set_index("trial_id")[color_by].reindex(trial_ids)
    fig, axes = _panels(len(metrics))
    if len(trial_ids) > max_trials:
        _curve_bands(axes, epochs, metrics, _curve_groups(trial_ids, config, color_by))
        return fig
    colours = _colours(config, color_by) if config is not None else None
    _curve_lines(axes, epochs, metrics, trial_ids, colours)
    drawn = [ax for ax in axes if ax.lines]
    if colours is not None and drawn:
        _explain(fig, drawn[-1], colours)
    elif drawn and len(trial_ids) <= 10:
        drawn[0].legend(title="trial", fontsize=7, title_fontsize=7)
    return fig


def _curve_lines(axes: list, epochs: pd.DataFrame, metrics: Sequence[str], trial_ids: list,
                 colours: _Colours | None) -> None:
    """One line per trial and metric, coloured by ``colours`` (in ``trial_ids`` order) or a cycle."""
    cycle = plt.get_cmap("tab10" if len(trial_ids) <= 10 else "tab20")
    curves = {tid: frame.sort_values("epoch") for tid, frame in epochs.groupby("trial_id", sort=False)}
    for ax, metric in zip(axes, metrics):
        if not _curve_axes(ax, epochs, metric):
            continue
        for i, tid in enumerate(trial_ids):
            curve = curves[tid].dropna(subset=[metric])
            colour = colours.rgba[i] if colours is not None else cycle(i % cycle.N)
            ax.plot(curve["epoch"], curve[metric], color=colour, lw=1.3, alpha=0.85,
                    marker="o" if len(curve) <= 30 else None, ms=3, label=str(tid))


def _curve_axes(ax, epochs: pd.DataFrame, metric: str) -> bool:
    """Title and labels of one learning-curve panel; False (with a note) when ``metric`` was never reported."""
    ax.set_title(f"{metric} over epochs")
    if not _reported(epochs, metric):
        _note(ax, f"no {metric} reported")
        return False
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    return True


def _curve_groups(trial_ids: list, config: pd.Series | None, label: str | None) -> list[tuple[str, list, tuple]]:
    """``(legend label, trial ids, colour)`` per group of summarised curves: one group without a
    colour column, else one per value, or ``CURVE_BINS`` equal-count bins of a numeric column with more."""
    if config is None:
        return [(f"all {len(trial_ids)} trials", trial_ids, mcolors.to_rgba("tab:blue"))]
    colours = _colours(config, label)
    known = config.dropna()
    if colours.mappable is not None and known.nunique() > CURVE_BINS:
        keys = pd.qcut(known.rank(method="first"), CURVE_BINS, labels=False)
        groups = [known[keys == k] for k in range(CURVE_BINS)]
        named = [(f"{label} {g.min():.3g}-{g.max():.3g}", g) for g in groups]
    else:
        named = [(f"{label} = {_short(v)}", known[known == v]) for v in sorted(known.unique(), key=str)]
    result = []
    for name, group in named:
        colour = (colours.mappable.to_rgba(float(group.median())) if colours.mappable is not None
                  else colours.rgba[config.index.get_loc(group.index[0])])
        result.append((f"{name} ({len(group)})", list(group.index), tuple(colour)))
    missing = config[config.isna()]
    if len(missing):
        result.append((f"{label} = n/a ({len(missing)})", list(missing.index), mcolors.to_rgba("0.6")))
    return result


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _curve_bands(axes: list, epochs: pd.DataFrame, metrics: Sequence[str],
                 groups: list[tuple[str, list, tuple]]) -> None:
    """Each group of trials as its median curve over epochs with the 10-90% band, one panel per metric."""
    for ax, metric in zip(axes, metrics):
        if not _curve_axes(ax, epochs, metric):
            continue
        for name, ids, colour in groups:
            per_epoch = epochs[epochs["trial_id"].isin(ids)].dropna(subset=[metric]).groupby("epoch")[metric]
            if not len(per_epoch):
                continue
            ax.fill_between(per_epoch.median().index, per_epoch.quantile(BAND[0]), per_epoch.quantile(BAND[1]),
                            color=colour, alpha=0.2)
            ax.plot(per_epoch.median().index, per_epoch.median(), color=colour, lw=1.6, label=name)
    drawn = [ax for ax in axes if ax.lines]
    if drawn:
        drawn[0].legend(title=f"median, {round(100 * BAND[0])}-{round(100 * BAND[1])}% band (trials)",
                        fontsize=7, title_fontsize=7)


# ----------------------------------------------------------------------------- the study as an instrument


def _axis_positions(values: pd.Series) -> tuple[np.ndarray, list[float], list[str], str]:
    """One parallel-coordinates axis: values -> positions in [0, 1], with ticks.

    Numeric values are placed linearly, or on log10 when they span >= ``_LOG_SPAN`` (all > 0);
    others (strings, booleans, tuples) at evenly spaced ordinal positions in sorted order. A
    single distinct value sits at 0.5.

    Returns:
        ``(positions (N,) float, tick positions, tick labels, scale)`` with scale one of
        ``"linear"``, ``"log"``, ``"categorical"``.
    """
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        names = values.astype(str)
        categories = sorted(names.unique())
        step = 1 / (len(categories) - 1) if len(categories) > 1 else 0.0
        lookup = {c: (i * step if len(categories) > 1 else 0.5) for i, c in enumerate(categories)}
        return names.map(lookup).to_numpy(float), list(lookup.values()), categories, "categorical"
    log = _is_log_range(values)
    raw = values.astype(float).to_numpy()
    scaled = np.log10(raw) if log else raw
    low, high = scaled.min(), scaled.max()
    span = high - low
    positions = (scaled - low) / span if span > 0 else np.full(len(scaled), 0.5)
    distinct = np.unique(raw)
    if len(distinct) <= 8:
        ticks = distinct
    else:
        ticks = 10 ** np.linspace(low, high, 5) if log else np.linspace(low, high, 5)
    tick_scaled = np.log10(ticks) if log else ticks
    tick_positions = (tick_scaled - low) / span if span > 0 else np.full(len(ticks), 0.5)
    return positions, tick_positions.tolist(), [f"{t:.3g}" for t in ticks], "log" if log else "linear"


def parallel_coordinates_figure(
    trials: pd.DataFrame, params: Sequence[str], metric: str, mode: str, *, max_lines: int = PARALLEL_MAX_LINES
) -> Figure:
    """Each finished trial as one line across an axis per parameter and a last one for the metric.

    Every axis is scaled to its own range: numeric parameters linearly, or on a log scale
    when they span a factor of 8 or more; categorical parameters (strings, booleans) at
    evenly spaced ordinal positions in sorted order. Lines are coloured by the metric, the
    best trials brightest and drawn on top, so the paths that lead to good values stand out.

    Args:
        trials: The trials table; finished trials (status ``TERMINATED``) with a non-NaN
            metric and non-NaN numeric parameters are drawn.
        params: Searched parameter columns, one axis each, left to right.
        metric: The metric column colouring the lines (the last axis).
        mode: ``"max"`` if higher is better, ``"min"`` if lower is.
        max_lines: The most trials drawn as lines: above it, the best ``max_lines`` by the
            metric, and every drawn trial as a grey histogram beside each axis (>= 1).

    Returns:
        A Figure with the plot axes (one ``LineCollection`` holding one polyline of
        ``len(params) + 1`` points per drawn trial) and the metric's colourbar; without a
        reported metric, one annotated axes.

    Raises:
        KeyError: If a parameter column is missing.
        ValueError: If ``params`` is empty or ``mode`` is not min/max.

    References:
        Inselberg 1985, "The plane with parallel coordinates", The Visual Computer 1(2).
    """
    from matplotlib.collections import LineCollection

    params = list(params)
    if not params or mode not in ("min", "max"):
        raise ValueError(f"`params` non-empty and `mode` in ('min', 'max') must hold, but got "
                         f"(params={params}, mode={mode!r})")
    _require(trials, params, "trials")
    done = _finished(trials)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * (len(params) + 1) + 1.5), 4.6), constrained_layout=True)
    ax.set_title(f"parallel coordinates, coloured by {metric} ({_direction(mode)})")
    if not _reported(done, metric):
        _note(ax, f"no {metric} reported")
        return fig
    dense = len(done) > max_lines
    done = _worst_first(done, params, metric, mode)
    columns = [*params, metric]
    axes_info = [_axis_positions(done[c]) for c in columns]
    ys = np.column_stack([info[0] for info in axes_info])  # (N, len(params) + 1) in [0, 1]
    xs = np.arange(len(columns), dtype=float)
    values = done[metric].to_numpy(float)
    low, high = values.min(), values.max()
    norm = mcolors.Normalize(low, high) if high > low else mcolors.Normalize(low - 0.5, high + 0.5)
    mappable = ScalarMappable(norm=norm, cmap="viridis" if mode == "max" else "viridis_r")
    shown = slice(-max_lines, None) if dense else slice(None)  # best last: the best max_lines
    ax.add_collection(LineCollection([np.column_stack([xs, y]) for y in ys[shown]],
                                     colors=mappable.to_rgba(values[shown]), linewidths=1.2, alpha=0.8))
    _draw_parallel_axes(ax, columns, axes_info)
    if dense:
        _draw_densities(ax, xs, ys)
        ax.set_title(f"parallel coordinates: the best {len(ys[shown]):,} of {len(ys):,} trials by {metric} "
                     f"({_direction(mode)});\ngrey: all {len(ys):,} trials per axis")
    fig.colorbar(mappable, ax=ax).set_label(f"{metric} ({_direction(mode)})")
    return fig


def _worst_first(done: pd.DataFrame, params: list[str], metric: str, mode: str) -> pd.DataFrame:
    """The rows of ``done`` with ``metric`` and every numeric parameter reported, best last (drawn on top)."""
    numeric = [p for p in params if pd.api.types.is_numeric_dtype(done[p]) and not pd.api.types.is_bool_dtype(done[p])]
    done = done.dropna(subset=[*numeric, metric])
    return done.iloc[np.argsort(done[metric].to_numpy(float) * (1 if mode == "max" else -1), kind="stable")]


def _draw_densities(ax, xs: np.ndarray, ys: np.ndarray, bins: int = 20, width: float = 0.35) -> None:
    """Beside each axis ``x``, a grey horizontal histogram of the positions ``ys[:, i]`` (all in
    [0, 1]) of every trial: the density the best trials' lines are drawn over."""
    edges = np.linspace(0, 1, bins + 1)
    for x, column in zip(xs, ys.T):
        counts, _ = np.histogram(column, bins=edges)
        ax.barh(edges[:-1], -width * counts / max(counts.max(), 1), height=1 / bins, left=x, align="edge",
                color="0.6", alpha=0.45, zorder=0)
    ax.set_xlim(-width - 0.05, ax.get_xlim()[1])


def _draw_parallel_axes(ax, columns: list[str], axes_info: list[tuple]) -> None:
    """The vertical axes of a parallel-coordinates plot at x = 0, 1, ..., with their ticks
    (:func:`_axis_positions` per column) and names (with the scale when it is not linear)."""
    xs = np.arange(len(columns), dtype=float)
    for x, (_, tick_pos, tick_labels, _scale) in zip(xs, axes_info):
        ax.axvline(x, color="0.3", lw=0.8, zorder=0)
        for pos, label in zip(tick_pos, tick_labels):
            ax.text(x + 0.03, pos, label, fontsize=7, va="center", ha="left", color="0.2",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    names = [f"{c}\n({info[3]})" if info[3] != "linear" else c for c, info in zip(columns, axes_info)]
    ax.set_xticks(xs, names)
    ax.set_xlim(-0.1, xs[-1] + 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def importance_figure(table: pd.DataFrame) -> Figure:
    """Horizontal bars of each parameter's importance, one panel per objective.

    Args:
        table: ``analysis.importance.importance_table`` output (``objective``, ``mode``,
            ``param``, ``importance`` in [0, 1], ``rank``, ``evaluator``).

    Returns:
        A Figure with one axes per objective, bars sorted most important on top; with an
        empty table, one annotated axes giving the reasons in ``table.attrs["skipped"]``.

    Raises:
        KeyError: If a column of the importance table is missing.
    """
    _require(table, ["objective", "mode", "param", "importance", "rank", "evaluator"], "importance")
    objectives = list(dict.fromkeys(table["objective"]))
    if not objectives:
        fig, ax = plt.subplots(figsize=(6, 2.5), constrained_layout=True)
        skipped = table.attrs.get("skipped", {})
        _note(ax, "no importance computed" + "".join(f"\n{k}: {v}" for k, v in skipped.items()),
              "hyperparameter importance")
        return fig
    height = 0.45 * table.groupby("objective").size().max() + 1.4
    fig, axes = _panels(len(objectives), size=(4.6, height))
    for ax, objective in zip(axes, objectives):
        rows = table[table["objective"] == objective].sort_values("rank", ascending=False)
        ax.barh(rows["param"].astype(str), rows["importance"], color="tab:blue")
        for y, value in enumerate(rows["importance"]):
            ax.text(value + 0.01, y, f"{value:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, 1.12)
        ax.set_xlabel(f"importance ({rows['evaluator'].iloc[0]})")
        ax.set_title(f"{objective} ({_direction(rows['mode'].iloc[0])})")
        ax.grid(axis="x", alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- model plots


def _check_images(x, what: str, rows: int | None = None) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if x.ndim != 4 or (rows is not None and x.shape[0] != rows) or x.shape[0] < 1:
        shape = f"({rows}, C, H, W)" if rows is not None else "(N, C, H, W) with N >= 1"
        raise ValueError(f"`{what}` must be {shape}, but got shape {x.shape}")
    return x


def _displayable(images: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N, H, W)`` gray (C = 1), ``(N, H, W, 3)`` RGB (C = 3), or the
    channels side by side ``(N, H, C * W)`` gray (other C)."""
    n, c, h, w = images.shape
    if c == 1:
        return images[:, 0]
    if c == 3:
        return images.transpose(0, 2, 3, 1)
    return images.transpose(0, 2, 1, 3).reshape(n, h, c * w)


def _mosaic(cells: np.ndarray, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Cells ``(R, K, h, w[, 3])`` -> one image ``(R*(h+pad)-pad, K*(w+pad)-pad[, 3])``."""
    rows, cols, h, w = cells.shape[:4]
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad) + cells.shape[4:], fill, dtype=np.float32)
    for r in range(rows):
        for k in range(cols):
            out[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = cells[r, k]
    return out


def _show(ax, mosaic: np.ndarray) -> None:
    ax.imshow(np.clip(mosaic, 0, 1), cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest")


def traversal_figure(model, x: np.ndarray, *, span: float = 2.0, steps: int = 9) -> Figure:
    """Latent traversals of one observation: each latent swept, the others held at their mean.

    ``x`` is encoded to its posterior mean ``mu``; latent ``d`` takes the values
    ``mu[d] + t`` for ``steps`` values of ``t`` evenly spaced in ``[-span, span]``, in units of
    the prior's standard deviation (1 for the N(0, I) prior); each code is decoded to its
    mean image by the model's ``generate(z)`` (sigmoid of the logits for a Bernoulli likelihood).

    Args:
        model (torch.nn.Module): A VAE with the abilities ``encode`` and ``generate``
            (:class:`trainables.protocol.ModelAbilities`), on the CPU.
        x: float32 ``(1, C, H, W)`` in ``[0, 1]``.
        span: Half-width of the sweep, in prior standard deviations (> 0).
        steps: Number of values per latent (>= 2).

    Returns:
        A Figure with one axes holding one image: the grid of ``latent_dim`` rows by ``steps``
        columns of ``H x W`` cells, 1-pixel white separators (shape
        ``(latent_dim * (H + 1) - 1, steps * (W + 1) - 1)``, RGB for 3 channels, other
        channel counts side by side). Row labels give each latent's posterior mean and its
        KL to the prior (nats) for ``x``; a near-zero KL marks an inactive latent.

    Raises:
        ValueError: If ``x`` is not ``(1, C, H, W)``, ``span <= 0`` or ``steps < 2``.

    References:
        Higgins et al. 2017, "beta-VAE", ICLR (fig. 7); disentanglement_lib's
        ``visualize_model`` traversals.
    """
    import torch

    if span <= 0 or steps < 2:
        raise ValueError(f"`span > 0` and `steps >= 2` must hold, but got (span={span}, steps={steps})")
    x = _check_images(x, "x", rows=1)
    with torch.no_grad():
        mu, logvar = model.encode(torch.from_numpy(x))  # (1, D), (1, D)
        dims = mu.shape[1]
        offsets = torch.linspace(-span, span, steps)  # (S,)
        z = mu.repeat(dims * steps, 1).reshape(dims, steps, dims)  # (D, S, D)
        z[torch.arange(dims), :, torch.arange(dims)] += offsets  # sweep latent d in row d
        images = model.generate(z.reshape(dims * steps, dims)).numpy()  # (D*S, C, H, W)
    kl = (0.5 * (mu**2 + logvar.exp() - logvar - 1))[0].numpy()  # (D,) nats
    cells = _displayable(images)
    mosaic = _mosaic(cells.reshape((dims, steps) + cells.shape[1:]))
    h, w = cells.shape[1:3]
    fig, ax = plt.subplots(figsize=(min(0.9 * steps + 2, 16), min(0.9 * dims + 1, 20)), constrained_layout=True)
    _show(ax, mosaic)
    ax.set_yticks([r * (h + 1) + h / 2 for r in range(dims)],
                  [f"z{d} (μ={mu[0, d]:.2f}, KL={kl[d]:.2f})" for d in range(dims)], fontsize=8)
    ax.set_xticks([k * (w + 1) + w / 2 for k in range(steps)], [f"{t:+.1f}" for t in offsets.tolist()], fontsize=8)
    ax.set_xlabel("offset from μ (prior standard deviations)")
    ax.set_title("latent traversals")
    return fig


def reconstructions_figure(model, x: np.ndarray) -> Figure:
    """Observations above their reconstructions (decoded posterior means).

    Args:
        model (torch.nn.Module): A VAE with the abilities ``encode`` and ``generate`` (and ``decode`` with
            ``reconstruction_nll`` for the title), on the CPU.
        x: float32 ``(N, C, H, W)`` in ``[0, 1]``; a dozen or so reads best.

    Returns:
        A Figure with one axes holding one image of 2 rows by ``N`` cells (shape
        ``(2 * (H + 1) - 1, N * (W + 1) - 1)``, RGB for 3 channels); the title gives the mean
        reconstruction NLL (nats per sample) when the model has ``decode`` and ``reconstruction_nll``.

    Raises:
        ValueError: If ``x`` is not ``(N, C, H, W)``.
    """
    import torch

    from trainables.protocol import supports

    x = _check_images(x, "x")
    with torch.no_grad():
        inputs = torch.from_numpy(x)
        mu = model.encode(inputs)[0]  # (N, latent_dim)
        recon = model.generate(mu).numpy()  # (N, C, H, W)
        scored = supports(model, "decode") and supports(model, "reconstruction_nll")
        nll = model.reconstruction_nll(model.decode(mu), inputs).mean().item() if scored else None
    cells = np.stack([_displayable(x), _displayable(recon)])  # (2, N, h, w[, 3])
    h, w = cells.shape[2:4]
    fig, ax = plt.subplots(figsize=(min(0.8 * len(x) + 1.5, 18), 2.6), constrained_layout=True)
    _show(ax, _mosaic(cells))
    ax.set_yticks([h / 2, h + 1 + h / 2], ["original", "reconstruction"], fontsize=8)
    ax.set_xticks([])
    ax.set_title("reconstructions" + (f" (mean NLL {nll:.1f} nats)" if nll is not None else ""))
    return fig


def latent_pca_figure(codes: np.ndarray, factors: np.ndarray, factor_names: Sequence[str]) -> Figure:
    """Latent means projected to their first two principal components, coloured by each factor.

    Args:
        codes: float ``(N, latent_dim)`` posterior means (``analysis.checkpoints.representation_fn``).
        factors: int ``(N, num_factors)`` ground-truth factor classes of the same observations.
        factor_names: ``num_factors`` names, one panel each.

    Returns:
        A Figure with one scatter axes per factor, each with its colourbar. With
        ``latent_dim == 1`` the y axis is 0.

    Raises:
        ValueError: If the shapes disagree or ``N < 2``.
    """
    from sklearn.decomposition import PCA

    codes, factors = np.asarray(codes, dtype=float), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise ValueError(f"`codes` (N, latent_dim) and `factors` (N, num_factors) with N >= 2 must hold, "
                         f"but got shapes {codes.shape} and {factors.shape}")
    if len(factor_names) != factors.shape[1]:
        raise ValueError(f"`factor_names` must name {factors.shape[1]} factors, but got {list(factor_names)}")
    pca = PCA(n_components=min(2, codes.shape[1]))
    projected = pca.fit_transform(codes)  # (N, <=2)
    if projected.shape[1] == 1:
        projected = np.column_stack([projected, np.zeros(len(projected))])
    ratios = list(pca.explained_variance_ratio_) + [0.0]
    fig, axes = _panels(len(factor_names), size=(4.6, 3.8))
    for ax, name, values in zip(axes, factor_names, factors.T):
        low, high = values.min(), values.max()
        if np.issubdtype(values.dtype, np.integer) and high - low < 20:  # classes: one colour each
            cmap, norm = plt.get_cmap("viridis", high - low + 1), mcolors.Normalize(low - 0.5, high + 0.5)
        else:
            cmap, norm = plt.get_cmap("viridis"), None
        points = ax.scatter(projected[:, 0], projected[:, 1], c=values, cmap=cmap, norm=norm, s=5, alpha=0.7)
        bar = fig.colorbar(points, ax=ax)
        bar.set_label(name)
        if norm is not None:
            bar.ax.yaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        ax.set_title(f"latent PCA coloured by {name}")
        ax.set_xlabel(f"PC1 ({100 * ratios[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC2 ({100 * ratios[1]:.0f}% of variance)")
    return fig
