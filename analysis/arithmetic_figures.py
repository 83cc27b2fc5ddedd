"""Report figures of arithmetic studies (``dataset.name: arithmetic``, family ``seq2seq``).

* ``arithmetic_accuracy.png``: the objective (``val_sequence_accuracy``, or
  ``val_readback_accuracy`` for image answers) against ``dataset.train_fraction``, one line per
  encoder depth (``encoder_layers``): the mean over repeats with a band of one standard deviation,
  each trial a dot. How much data each depth needs.
* ``arithmetic_examples.png``: the best trial's fixed validation rows (its checkpoint's
  ``snapshots.npz``) after its last snapshot epoch: the query (text, or its row of digit images),
  the true answer and the prediction (text, coloured right/wrong; or the generated answer
  glyphs beside real digits of the same answer).

Registered in :data:`analysis.report.EXTRA_FIGURES` as ``analysis.arithmetic_figures:arithmetic_figures``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.plots import save_figure

if TYPE_CHECKING:
    from analysis.results import StudyDir, StudyInfo

__all__ = ["arithmetic_figures", "accuracy_table", "accuracy_figure", "examples_figure", "FRACTION", "DEPTH"]

FRACTION = "dataset.train_fraction"  # the trials table's column of a searched train fraction
DEPTH = "encoder_layers"
ACCURACY_FILE = "arithmetic_accuracy.png"
EXAMPLES_FILE = "arithmetic_examples.png"
MAX_EXAMPLES = 8
_EPOCH = re.compile(r"epoch_(\d+)")
_RIGHT, _WRONG = "tab:green", "tab:red"


def accuracy_table(trials: pd.DataFrame, metric: str, *, fraction: float | None = None,
                   depth: int | None = None) -> pd.DataFrame:
    """Mean and spread of ``metric`` per (depth, train fraction) over the finished trials.

    Args:
        trials: The trials table; ``dataset.train_fraction`` and ``encoder_layers`` columns when
            they were searched.
        metric: The accuracy column, values in [0, 1].
        fraction: The study's fixed train fraction, used when the table has no fraction column.
        depth: The study's fixed encoder depth, used when the table has no depth column.

    Returns:
        One row per (``depth``, ``fraction``), sorted: ``mean``, ``std`` (0 for one trial), ``min``,
        ``max`` and ``count`` of ``metric``.

    Raises:
        KeyError: If ``metric`` is not a column, or a column is absent and no fixed value is given.
    """
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    if metric not in done:
        raise KeyError(f"column {metric!r} not in the trials table; it has {list(trials.columns)}")
    frame = pd.DataFrame({"value": done[metric].astype(float)})
    for name, column, fixed in (("depth", DEPTH, depth), ("fraction", FRACTION, fraction)):
        if column in done:
            frame[name] = done[column].to_numpy()
        elif fixed is not None:
            frame[name] = fixed
        else:
            raise KeyError(f"column {column!r} not in the trials table and no fixed value given")
    frame = frame.dropna(subset=["value"])
    grouped = frame.groupby(["depth", "fraction"])["value"]
    table = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table.sort_values(["depth", "fraction"]).reset_index(drop=True)


def accuracy_figure(trials: pd.DataFrame, metric: str, *, fraction: float | None = None,
                    depth: int | None = None) -> Figure:
    """``metric`` against the train fraction, one line per depth (mean, ±1 std band, every trial a dot).

    Args: as :func:`accuracy_table`.
    """
    table = accuracy_table(trials, metric, fraction=fraction, depth=depth)
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    fig, ax = plt.subplots(figsize=(5.6, 3.8), constrained_layout=True)
    colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, max(1, table["depth"].nunique())))
    for colour, (value, rows) in zip(colours, table.groupby("depth")):
        ax.plot(rows["fraction"], rows["mean"], "o-", color=colour, label=f"{DEPTH}={value}")
        ax.fill_between(rows["fraction"], rows["mean"] - rows["std"], rows["mean"] + rows["std"], color=colour,
                        alpha=0.2, linewidth=0)
        if DEPTH in done and FRACTION in done:
            mine = done[done[DEPTH] == value]
            ax.scatter(mine[FRACTION], mine[metric], s=10, color=colour, alpha=0.6, zorder=3)
    ax.set_xlabel("train fraction (of the training queries)")
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    counts = sorted(set(table["count"].astype(int)))
    ax.set_title(f"{metric}: mean ± std over {'/'.join(map(str, counts))} repeat(s)", fontsize=9)
    return fig


def _decode(ids: np.ndarray) -> list[str]:
    from datasets.arithmetic import decode

    return decode(np.rint(np.asarray(ids, dtype=np.float32)).astype(np.int64))


def _last_epoch(snapshots: Mapping[str, np.ndarray]) -> int | None:
    epochs = [int(m.group(1)) for key in snapshots if (m := _EPOCH.fullmatch(key))]
    return max(epochs) if epochs else None


def examples_figure(snapshots: Mapping[str, np.ndarray], *, input_kind: str | None = None,
                    max_rows: int = MAX_EXAMPLES) -> Figure:
    """The fixed validation rows of a checkpoint's snapshots with the last epoch's predictions.

    Args:
        snapshots: :func:`trainables.checkpoint.load_snapshots` of a ``seq2seq`` checkpoint:
            ``column_query`` ``(K, 5)`` and ``column_answer`` ``(K, 3)`` token ids,
            ``column_query_images`` ``(K, 5, 28, 28)`` / ``column_answer_images`` ``(K, 3, 28, 28)``
            intensities 0-255 when the data had them, and ``epoch_NNNN`` the greedy answers:
            token ids ``(K, 3)`` (text outputs) or glyph means ``(K, 3, 28, 28)`` in [0, 1].
        input_kind: ``text`` or ``image``: how the model read the query; None: ``image`` when
            the snapshots hold the query images.
        max_rows: At most this many rows.

    Returns:
        A Figure with one row per example.

    Raises:
        ValueError: If the query, the answer or an ``epoch_NNNN`` prediction is missing.
    """
    epoch = _last_epoch(snapshots)
    missing = [key for key in ("column_query", "column_answer") if key not in snapshots]
    if missing or epoch is None:
        raise ValueError(f"snapshots: need column_query, column_answer and an epoch_NNNN prediction "
                         f"(keys: {sorted(snapshots)})")
    predicted = np.asarray(snapshots[f"epoch_{epoch:04d}"], dtype=np.float32)
    image_output = predicted.ndim == 4
    if input_kind is None:
        input_kind = "image" if "column_query_images" in snapshots else "text"
    queries, truths = _decode(snapshots["column_query"]), _decode(snapshots["column_answer"])
    rows = min(max_rows, len(queries))
    query_images = np.asarray(snapshots.get("column_query_images"), dtype=np.float32) / 255.0 \
        if input_kind == "image" else None
    real = np.asarray(snapshots["column_answer_images"], dtype=np.float32) / 255.0 \
        if image_output and "column_answer_images" in snapshots else None
    layout = _layout(query_images, predicted if image_output else None, real, epoch)
    widths = [0.6 if kind == "image" else 1.4 for kind, _ in layout]
    fig, axes = plt.subplots(rows, len(layout), figsize=(sum(widths) + 0.4, 0.62 * rows + 0.5), squeeze=False,
                             gridspec_kw={"width_ratios": widths}, constrained_layout=True)
    predictions = None if image_output else _decode(predicted)
    for r in range(rows):
        images = []
        if query_images is not None:
            images += list(query_images[r])
        images += list(predicted[r]) if image_output else []
        images += list(real[r]) if real is not None else []
        texts = ([] if query_images is not None else [(queries[r], "black")]) + [(truths[r], "black")]
        if predictions is not None:
            texts.append((predictions[r], _RIGHT if predictions[r] == truths[r] else _WRONG))
        for c, (kind, title) in enumerate(layout):
            _draw_cell(axes[r, c], images.pop(0) if kind == "image" else texts.pop(0), kind)
            if r == 0 and (c == 0 or layout[c - 1][1] != title):
                axes[r, c].set_title(title, fontsize=8, loc="left")
    return fig


def _layout(query_images: np.ndarray | None, generated: np.ndarray | None, real: np.ndarray | None,
            epoch: int) -> list[tuple[str, str]]:
    """The cells of a row of :func:`examples_figure`, ``(kind, column title)`` with kind ``text``
    or ``image``: the query (one image per character, or its text), the truth, the prediction
    (the generated glyphs ``(K, La, 28, 28)`` and the real ones beside them, or the text)."""
    layout: list[tuple[str, str]] = []
    layout += [("image", "query")] * query_images.shape[1] if query_images is not None else [("text", "query")]
    layout += [("text", "truth")]
    if generated is not None:
        layout += [("image", f"generated (epoch {epoch})")] * generated.shape[1]
        layout += [("image", "real digits")] * (real.shape[1] if real is not None else 0)
    else:
        layout += [("text", f"predicted (epoch {epoch})")]
    return layout


def _draw_cell(ax, content, kind: str) -> None:
    """One cell without ticks: an image ``(28, 28)`` in [0, 1], or a ``(text, colour)`` without a frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    if kind == "image":
        ax.imshow(content, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        return
    text, colour = content
    ax.text(0.5, 0.5, repr(text), ha="center", va="center", family="monospace", fontsize=10, color=colour,
            transform=ax.transAxes)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _family_input(checkpoint: Path) -> str | None:
    """The ``input`` kind of the trial's family config (``trial.json``), or None."""
    from analysis.results import read_json
    from trainables.checkpoint import TRIAL_FILE

    if not (checkpoint / TRIAL_FILE).is_file():
        return None
    config = read_json(checkpoint / TRIAL_FILE).get("family_config")
    return config.get("input") if isinstance(config, dict) else None


def arithmetic_figures(study: StudyDir | None, info: StudyInfo, trials: pd.DataFrame, best: pd.Series | None,
                       out: Path) -> list[tuple[str, Path]]:
    """The arithmetic figures of a study, for the report (``EXTRA_FIGURES`` signature).

    Args:
        study: The study directory (unused).
        info: The study's :class:`~analysis.results.StudyInfo` (whether the data are arithmetic).
        trials: ``trials.parquet``'s table.
        best: The best trial's row (``checkpoint_path``, ``trial_id``), or None.
        out: The report directory the PNGs are written to.

    Returns:
        ``[(title, path), ...]``: the accuracy figure when the trials reported the objective, the
        examples when the best checkpoint kept snapshots; ``[]`` when the dataset is not ``arithmetic``.
    """
    from analysis.results import local_copy
    from trainables.checkpoint import load_snapshots
    from trainables.registry import get_family

    if info.dataset["name"] != "arithmetic":
        return []
    metric = info.objective.metric[0]
    figures: list[tuple[str, Path]] = []
    if metric in trials and trials[metric].notna().any():
        family = get_family(info.families[0]).config_cls(**info.family)  # the fixed depth when not searched
        fig = accuracy_figure(trials, metric, fraction=info.dataset_options().train_fraction,
                              depth=getattr(family, DEPTH))
        figures.append((f"{metric} against the train fraction, per encoder depth",
                        save_figure(fig, Path(out) / ACCURACY_FILE)))
    checkpoint = best.get("checkpoint_path") if best is not None else None
    with local_copy(checkpoint if isinstance(checkpoint, str) else None) as directory:
        snapshots = load_snapshots(directory) if directory is not None else {}
        input_kind = _family_input(directory) if directory is not None else None
    if "column_query" in snapshots and _last_epoch(snapshots) is not None:
        fig = examples_figure(snapshots, input_kind=input_kind)
        fig.suptitle(f"best trial {best.get('trial_id', '')}: fixed validation queries", fontsize=9)
        figures.append(("Predictions of the best trial on fixed validation queries",
                        save_figure(fig, Path(out) / EXAMPLES_FILE)))
    return figures
