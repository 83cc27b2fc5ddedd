"""Report figures of toy 2-D studies (``dataset.name: toy``): models seen in the data space.

* ``toy_data_space.png``: for a few trials spanning the study's betas (the best trial of each
  beta quantile), the held-out points' reconstructions (top row) and samples from the prior
  (bottom row) over the held-out points, so that the rate-distortion trade-off shows as
  geometry: small beta reconstructs well but its prior samples miss the data, large beta
  reconstructs towards the mean.
* ``toy_samples_per_class.png`` (conditional families, e.g. ``mlp_cvae``): the same trials'
  samples of each class (rows) over that class's held-out points.

Registered in :data:`analysis.report.EXTRA_FIGURES` as ``analysis.toy_figures:toy_figures``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plots import save_figure
from trainables.protocol import supports

if TYPE_CHECKING:
    from analysis.results import StudyDir, StudyInfo

__all__ = ["toy_figures", "pick_trials", "data_space_figure", "samples_per_class_figure"]

MAX_COLUMNS = 4  # trials shown side by side
MAX_POINTS = 2000  # held-out points drawn (a random subset beyond this)
MAX_CLASSES = 8  # class rows of the per-class figure
_DATA_COLOUR = "0.82"  # held-out points behind every panel
_CLASS_COLOURS = plt.get_cmap("tab10").colors
_SAMPLE_COLOUR = "black"  # unconditional prior samples (no class)


def toy_figures(study: StudyDir | None, info: StudyInfo, trials: pd.DataFrame, best: pd.Series | None,
                out: Path) -> list[tuple[str, Path]]:
    """The toy figures of a study, for the report (``EXTRA_FIGURES`` signature).

    Args:
        study: The study directory (unused).
        info: The study's :class:`~analysis.results.StudyInfo` (whether the data are toy).
        trials: ``trials.parquet``'s table.
        best: The best trial's row (unused: the figures pick one trial per beta quantile).
        out: The report directory the PNGs are written to.

    Returns:
        ``[(title, path), ...]``; ``[]`` when the study's dataset is not ``toy`` or no finished
        trial has a checkpoint.
    """
    from analysis.checkpoints import load_prepared, load_trial_model

    if info.dataset["name"] != "toy":
        return []
    metric, mode = info.objective.metric[0], info.objective.mode[0]
    if metric not in trials:
        metric, mode = "val_elbo", "max"
    rows = pick_trials(trials, metric, mode)
    if not rows:
        return []
    options = info.dataset_options()
    val = load_prepared(info).val
    keep = np.random.default_rng(0).permutation(len(val["image"]))[:MAX_POINTS]
    points, labels = val["image"][keep], val["label"][keep].astype(np.int64)  # (N, 2), (N,)
    loaded = [load_trial_model(row["checkpoint_path"]) for row in rows]  # (model, trial.json) each
    models = [model for model, _ in loaded]
    titles = [_title(model, trial["family_config"], row, metric) for (model, trial), row in zip(loaded, rows)]
    unit = " (standardised)" if options.standardize else ""
    figures: list[tuple[str, Path]] = []
    fig = data_space_figure(models, titles, points, labels, axis_unit=unit)
    fig.suptitle(f"{options.kind}: reconstructions and prior samples over the held-out points (grey)\n"
                 f"best trial by {metric} in each beta quantile", fontsize=10)
    figures.append(("Toy data space: reconstructions and prior samples across beta",
                    save_figure(fig, Path(out) / "toy_data_space.png")))
    conditional = [(m, t) for m, t in zip(models, titles) if supports(m, "num_classes")]
    if conditional:
        fig = samples_per_class_figure([m for m, _ in conditional], [t for _, t in conditional], points, labels,
                                       axis_unit=unit)
        fig.suptitle(f"{options.kind}: samples given each class (colour)\nover that class's held-out points (grey)",
                     fontsize=10)
        figures.append(("Toy data space: samples per class", save_figure(fig, Path(out) / "toy_samples_per_class.png")))
    return figures


def pick_trials(trials: pd.DataFrame, metric: str, mode: str, columns: int = MAX_COLUMNS) -> list[pd.Series]:
    """Finished trials with a checkpoint that span the study's betas: the best of each beta quantile.

    The finished trials (status ``TERMINATED``, a ``checkpoint_path`` directory, ``metric``
    reported) are sorted by ``beta`` and cut into ``min(columns, distinct betas)`` groups of
    about equal size; the best trial by ``metric`` of each group is kept. Without a ``beta``
    column, or with one beta, the single best trial.

    Args:
        trials: The trials table.
        metric: Column ranking trials within a group, e.g. ``val_elbo``.
        mode: ``"max"`` or ``"min"``: which end of ``metric`` is best.
        columns: Most trials returned, >= 1.

    Returns:
        The chosen rows, by increasing beta; ``[]`` when no trial qualifies.
    """
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    if metric not in done or "checkpoint_path" not in done:
        return []
    done = done[done[metric].notna() & done["checkpoint_path"].map(lambda p: isinstance(p, str) and Path(p).is_dir())]
    if done.empty:
        return []
    best = (lambda group: group[metric].idxmax()) if mode == "max" else (lambda group: group[metric].idxmin())
    if "beta" not in done or done["beta"].nunique() < 2:
        return [done.loc[best(done)]]
    ordered = done.sort_values("beta", kind="stable")
    groups = np.array_split(np.arange(len(ordered)), min(columns, done["beta"].nunique()))
    return [ordered.loc[best(ordered.iloc[group])] for group in groups if len(group)]


def data_space_figure(models: Sequence[torch.nn.Module], titles: Sequence[str], points: np.ndarray,
                      labels: np.ndarray, *, axis_unit: str = "", seed: int = 0) -> Figure:
    """Reconstructions (top row) and prior samples (bottom row) of each model, one column each.

    Every panel shows the held-out ``points`` in grey. Top: each point's mean reconstruction,
    coloured by its class, joined to the point by a faint line. Bottom: as many prior samples
    (likelihood means of decoded ``z ~ N(0, I)``); a conditional model (one with the ability
    ``num_classes``, :func:`trainables.protocol.supports`) samples given the held-out labels, coloured by them.

    Args:
        models: Trained VAEs in eval mode with ``reconstruct(batch)`` and ``sample(num, generator)``.
        titles: One column title per model.
        points: Held-out points float32 ``(N, 2)``.
        labels: Their classes int ``(N,)``.
        axis_unit: Appended to the axis labels (e.g. ``" (standardised)"``).
        seed: Seeds the prior draws.

    Returns:
        The figure, ``2 x len(models)`` panels with shared limits (those of ``points``).
    """
    batch = {"image": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
             "label": torch.from_numpy(labels.astype(np.float32))}
    fig, axes = plt.subplots(2, len(models), figsize=_figsize(points, 2, len(models)), squeeze=False,
                             sharex=True, sharey=True, constrained_layout=True)
    for column, (model, title) in enumerate(zip(models, titles)):
        with torch.no_grad():
            recon = model.reconstruct(batch).reshape(len(points), -1).float().numpy()  # (N, 2)
            generator = torch.Generator().manual_seed(seed)
            if supports(model, "num_classes"):
                samples = model.sample(len(points), generator, labels=batch["label"])
                sample_labels = labels
            else:
                samples, sample_labels = model.sample(len(points), generator), None
        samples = samples.reshape(len(points), -1).float().numpy()  # (N, 2)
        top, bottom = axes[0, column], axes[1, column]
        _background(top, points)
        top.add_collection(LineCollection(np.stack([points, recon], axis=1), colors="0.5", linewidths=0.4,
                                          alpha=0.35, zorder=1))
        top.scatter(recon[:, 0], recon[:, 1], s=7, c=_colours(labels), linewidths=0, zorder=2)
        top.set_title(title, fontsize=9)
        _background(bottom, points)
        colour = _colours(sample_labels) if sample_labels is not None else _SAMPLE_COLOUR
        bottom.scatter(samples[:, 0], samples[:, 1], s=7, c=colour, linewidths=0, zorder=2)
        _note_outside(bottom, samples, points)
        _note_outside(top, recon, points)
    _limits_and_labels(axes, points, axis_unit, ["reconstruction", "prior sample"])
    handles = [Line2D([], [], ls="", marker="o", color=_DATA_COLOUR, label="held-out point")]
    handles += [Line2D([], [], ls="", marker="o", color=_CLASS_COLOURS[c % 10], label=f"class {c}")
                for c in np.unique(labels)]
    if not all(supports(model, "num_classes") for model in models):
        handles.append(Line2D([], [], ls="", marker="o", color=_SAMPLE_COLOUR, label="prior sample"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


def samples_per_class_figure(models: Sequence[torch.nn.Module], titles: Sequence[str], points: np.ndarray,
                             labels: np.ndarray, *, axis_unit: str = "", seed: int = 0) -> Figure:
    """Samples of each class (rows) from each conditional model (columns) over that class's points.

    Args:
        models: Conditional VAEs with ``num_classes`` and ``sample(num, generator, labels=...)``.
        titles: One column title per model.
        points: Held-out points float32 ``(N, 2)``.
        labels: Their classes int ``(N,)``; the first :data:`MAX_CLASSES` classes get a row.
        axis_unit: Appended to the axis labels.
        seed: Seeds the prior draws.

    Returns:
        The figure, ``classes x len(models)`` panels; each holds as many samples as the class
        has held-out points (at least 200).
    """
    classes = np.unique(labels)[:MAX_CLASSES]
    fig, axes = plt.subplots(len(classes), len(models), figsize=_figsize(points, len(classes), len(models)),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    for column, (model, title) in enumerate(zip(models, titles)):
        generator = torch.Generator().manual_seed(seed)
        for row, c in enumerate(classes):
            own = points[labels == c]
            num = max(200, len(own))
            with torch.no_grad():
                samples = model.sample(num, generator, labels=torch.full((num,), int(c))).reshape(num, -1).numpy()
            ax = axes[row, column]
            _background(ax, own)
            ax.scatter(samples[:, 0], samples[:, 1], s=7, color=_CLASS_COLOURS[int(c) % 10], linewidths=0, zorder=2)
            _note_outside(ax, samples, points)
        axes[0, column].set_title(title, fontsize=9)
    _limits_and_labels(axes, points, axis_unit, [f"class {c}" for c in classes])
    return fig


def _title(model: torch.nn.Module, family_config: dict, row: pd.Series, metric: str) -> str:
    """``β = 0.012, latent_dim 2`` / ``val_elbo = -1.23 nats`` / the trial id.

    Args:
        model: The trial's model; its ``latent_dim`` ability gives the code width (``?`` without).
        family_config: The trial's family config (``trial.json``'s ``family_config``): its
            ``beta`` when the row has none (a beta that was not searched); NaN for a family
            without a beta.
        row: The trial's row of the trials table.
        metric: The objective ranking the trials; shown unless it is ``val_elbo``.
    """
    if "beta" in row and pd.notna(row["beta"]):
        beta = row["beta"]
    else:
        beta = family_config["beta"] if "beta" in family_config else float("nan")
    latent_dim = model.latent_dim if supports(model, "latent_dim") else "?"
    lines = [f"β = {beta:.3g}, latent_dim {latent_dim}"]
    elbo = row.get("val_elbo")
    if elbo is not None and pd.notna(elbo):
        lines.append(f"val_elbo = {elbo:.3f} nats")
    if metric != "val_elbo" and pd.notna(row.get(metric)):
        lines.append(f"{metric} = {row[metric]:.4g}")
    lines.append(f"trial {row.get('trial_id', '?')}")
    return "\n".join(lines)


def _colours(labels: np.ndarray) -> list:
    return [_CLASS_COLOURS[int(c) % 10] for c in labels]


def _background(ax, points: np.ndarray) -> None:
    ax.scatter(points[:, 0], points[:, 1], s=6, color=_DATA_COLOUR, linewidths=0, zorder=0)


def _figsize(points: np.ndarray, rows: int, columns: int, width: float = 3.4) -> tuple[float, float]:
    """Inches for ``rows x columns`` equal-aspect panels of ``width`` showing ``points``' bounds."""
    low, high = _bounds(points)
    # The axes get ~0.3 in less than ``width`` (tick labels); equal aspect sets their height.
    height = float(np.clip((width - 0.3) * (high[1] - low[1]) / (high[0] - low[0]), 0.4 * width, 1.6 * width))
    return width * columns + 0.6, (height + 0.1) * rows + 1.9  # titles, x labels, legend, suptitle once


def _bounds(points: np.ndarray, margin: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    low, high = points.min(axis=0), points.max(axis=0)
    pad = margin * np.maximum(high - low, 1e-6)
    return low - pad, high + pad


def _note_outside(ax, shown: np.ndarray, points: np.ndarray) -> None:
    """Writes how many of ``shown`` fall outside the view (the held-out points' bounds)."""
    low, high = _bounds(points)
    outside = int(np.sum(np.any((shown < low) | (shown > high), axis=1)))
    if outside:
        ax.text(0.02, 0.02, f"{outside} outside the view", transform=ax.transAxes, fontsize=7, color="0.3")


def _limits_and_labels(axes: np.ndarray, points: np.ndarray, axis_unit: str, row_names: Sequence[str]) -> None:
    low, high = _bounds(points)
    for ax in axes.flat:
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(f"$x_1${axis_unit}", fontsize=8)
    for ax, name in zip(axes[:, 0], row_names):
        ax.set_ylabel(f"{name}\n$x_2${axis_unit}", fontsize=8)
