"""Plots of study results; each function takes the results table and returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["tradeoff_figure"]


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == "TERMINATED"] if "status" in trials else trials


def _metric_vs_param(ax, trials: pd.DataFrame, param: str, metric: str, log_x: bool) -> None:
    """Each trial as a dot, the per-value mean with a +/- std bar over repeats."""
    if metric not in trials or trials[metric].notna().sum() == 0:
        ax.text(0.5, 0.5, f"no {metric} reported", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{metric} vs {param}")
        return
    ax.scatter(trials[param], trials[metric], s=14, alpha=0.5, color="tab:gray", label="trials")
    stats = trials.groupby(param)[metric].agg(["mean", "std"]).reset_index()
    ax.errorbar(stats[param], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3,
                color="tab:blue", label="mean ± std over repeats")
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_title(f"{metric} vs {param}")
    ax.grid(alpha=0.3)


def tradeoff_figure(trials: pd.DataFrame, param: str = "beta") -> Figure:
    """The disentanglement/reconstruction trade-off of a sweep over ``param``.

    Panels: ``param`` vs ``mig``; ``param`` vs ``val_recon_loss``; the rate-distortion plane
    ``val_kl`` (rate, nats) vs ``val_recon_loss`` (distortion, nats) coloured by ``param``.

    Args:
        trials: The trials table; finished trials are plotted.
        param: Numeric configuration column on the x axes (log2 scale when all > 0).

    Returns:
        A 1x3 matplotlib Figure.

    Raises:
        KeyError: If ``param`` is not a column.
    """
    if param not in trials:
        raise KeyError(f"no column {param!r} in the trials table")
    done = _finished(trials)
    numeric = pd.api.types.is_numeric_dtype(done[param])
    log_x = bool(numeric and len(done) and (done[param] > 0).all() and done[param].max() / done[param].min() >= 8)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    _metric_vs_param(axes[0], done, param, "mig", log_x)
    _metric_vs_param(axes[1], done, param, "val_recon_loss", log_x)
    ax = axes[2]
    if {"val_kl", "val_recon_loss"} <= set(done.columns) and len(done):
        colors = np.log2(done[param].astype(float)) if log_x else done[param].astype(float) if numeric else None
        points = ax.scatter(done["val_kl"], done["val_recon_loss"], c=colors, cmap="viridis", s=30)
        if colors is not None:
            bar = fig.colorbar(points, ax=ax)
            bar.set_label(f"log2 {param}" if log_x else param)
    ax.set_xlabel("val_kl (rate, nats)")
    ax.set_ylabel("val_recon_loss (distortion, nats)")
    ax.set_title("rate-distortion")
    ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig
