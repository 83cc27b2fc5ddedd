"""The prediction grid: how the best trial's reconstructions (and task predictions) evolved.

Reads the reconstruction snapshots the training loop keeps in a checkpoint (``snapshots.npz``,
:func:`trainables.checkpoint.load_snapshots`): the fixed validation rows on top, then one row per saved
epoch, one column per row. Multi-channel images whose channels mean different things (jets:
Tracks, ECAL, HCAL) get one block of rows per channel, each with colour limits shared by the
truth and every epoch (a linear scale: the jets loader already ``log1p``-scales the pT); a
3-channel image without channel names is drawn as RGB. With task heads (``multitask_vae``), the
truth of each task titles the top row and the predictions title the epoch rows.

Registered in :data:`analysis.report.EXTRA_FIGURES` as ``analysis.prediction_grid:prediction_grid``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from analysis.plots import save_figure

__all__ = ["prediction_grid", "prediction_grid_figure", "FILENAME"]

FILENAME = "prediction_grid.png"
CHANNEL_LABELS = {"tracks": "Tracks", "ecal": "ECAL", "hcal": "HCAL"}  # jets' channel names as detectors
_EPOCH = re.compile(r"epoch_(\d+)")


def _epochs(snapshots: Mapping[str, np.ndarray], max_epochs: int) -> list[int]:
    """Saved epochs, thinned evenly to at most ``max_epochs`` (the first and last kept)."""
    epochs = sorted(int(m.group(1)) for key in snapshots if (m := _EPOCH.fullmatch(key)))
    if len(epochs) > max_epochs:
        epochs = [epochs[i] for i in np.unique(np.linspace(0, len(epochs) - 1, max_epochs).round().astype(int))]
    return epochs


def _infer_tasks(snapshots: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Tasks named by ``epoch_NNNN_<task>`` keys: probabilities ``(K, C)`` classify, values ``(K,)`` regress."""
    tasks: dict[str, dict[str, Any]] = {}
    for key, value in snapshots.items():
        m = re.fullmatch(r"epoch_\d+_(.+)", key)
        if m:
            tasks[m.group(1)] = {"kind": "classify" if value.ndim == 2 else "regress"}
    return tasks


def _truth_text(name: str, kind: str, value: float) -> str:
    return f"{name}={int(round(value))}" if kind == "classify" else f"{name}={value:.3g}"


def _prediction_text(name: str, kind: str, value: np.ndarray) -> str:
    """A classify prediction as P(class 1) (binary) or its argmax class and probability; a value otherwise."""
    if kind != "classify":
        return f"{name}={float(value):.3g}"
    if len(value) == 2:
        return f"P({name}=1)={value[1]:.2f}"
    return f"{name}={int(value.argmax())} ({value.max():.2f})"


def prediction_grid_figure(snapshots: Mapping[str, np.ndarray], *, tasks: Mapping[str, Mapping[str, Any]] | None = None,
                           channel_names: Sequence[str] | None = None, max_epochs: int = 8) -> Figure:
    """Truth on top, one row per saved epoch below; one block of rows per channel.

    Args:
        snapshots: :func:`trainables.checkpoint.load_snapshots` of a checkpoint: ``inputs`` float
            ``(K, C, H, W)``, ``epoch_NNNN`` reconstructions of the same shape (data space),
            optionally ``epoch_NNNN_<task>`` predictions (``(K, classes)`` probabilities or
            ``(K,)`` values) and ``column_<name>`` ``(K,)`` targets.
        tasks: Task name -> ``{"kind": "classify" | "regress", "column": str | None}`` (a
            ``multitask_vae`` config's ``tasks``); None: inferred from the keys, each task's
            target read from ``column_<task>``.
        channel_names: One name per channel to draw channels as separate blocks (jets); None:
            one grey block for 1 channel, RGB for 3, one block per channel otherwise.
        max_epochs: At most this many epoch rows (evenly spaced, first and last kept).

    Returns:
        A Figure of ``blocks * (1 + epochs)`` rows by ``K`` columns of images.

    Raises:
        ValueError: If ``inputs`` is not ``(K, C, H, W)`` or no ``epoch_NNNN`` key is present.
    """
    inputs = np.asarray(snapshots.get("inputs"), dtype=np.float32)
    if inputs.ndim != 4:
        raise ValueError(f"snapshots: 'inputs' must be images (K, C, H, W), but got shape {inputs.shape}")
    epochs = _epochs(snapshots, max_epochs)
    if not epochs:
        raise ValueError(f"snapshots: no epoch_NNNN reconstructions (keys: {sorted(snapshots)})")
    tasks = dict(tasks) if tasks is not None else _infer_tasks(snapshots)
    num, channels = inputs.shape[:2]
    rows = [("truth", inputs)] + [(f"epoch {e}", np.asarray(snapshots[f"epoch_{e:04d}"], dtype=np.float32))
                                  for e in epochs]
    blocks = _blocks(channel_names, channels)
    targets = {name: snapshots.get(f"column_{task.get('column') or name}") for name, task in tasks.items()}

    fig, axes = plt.subplots(len(blocks) * len(rows), num, figsize=(1.25 * num + 1.2, 1.35 * len(blocks) * len(rows)),
                             squeeze=False, constrained_layout=True)
    for b, (label, channel) in enumerate(blocks):
        lo, hi = float(inputs[:, channel].min()), float(inputs[:, channel].max())
        hi = hi if hi > lo else lo + 1.0
        for r, (row_label, images) in enumerate(rows):
            epoch_key = None if r == 0 else f"epoch_{epochs[r - 1]:04d}"
            for k in range(num):
                ax = axes[b * len(rows) + r, k]
                _draw_image(ax, images[k], label, channel, (lo, hi), rgb=label is None and channels == 3)
                if k == 0:
                    ax.set_ylabel(f"{label}\n{row_label}" if label else row_label, fontsize=7)
                texts = _task_texts(snapshots, tasks, targets, epoch_key, k) if b == 0 else []  # above block 0 only
                if texts:
                    ax.set_title("\n".join(texts), fontsize=6)
    return fig


def _blocks(channel_names: Sequence[str] | None, channels: int) -> list[tuple[str | None, Any]]:
    """The blocks of rows of :func:`prediction_grid_figure`: ``(label, channel index)`` per channel,
    or one ``(None, slice(None))`` block (grey for 1 channel, RGB for 3) without channel names."""
    if channel_names is None and channels in (1, 3):
        return [(None, slice(None))]  # grey or RGB
    names = list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(channels)]
    return [(CHANNEL_LABELS.get(names[c], names[c]), c) for c in range(channels)]


def _draw_image(ax, image: np.ndarray, label: str | None, channel: Any, limits: tuple[float, float], *,
                rgb: bool) -> None:
    """One image ``(C, H, W)`` without ticks, colour limits ``limits``: RGB scaled to them when
    ``rgb``, else the block's channel (viridis) of a named block, or the first channel in grey."""
    lo, hi = limits
    if rgb:
        ax.imshow(np.clip((image.transpose(1, 2, 0) - lo) / (hi - lo), 0, 1))
    else:
        ax.imshow(image[channel] if label is not None else image[0], cmap="viridis" if label is not None else "gray",
                  vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _task_texts(snapshots: Mapping[str, np.ndarray], tasks: Mapping[str, Mapping[str, Any]],
                targets: Mapping[str, np.ndarray | None], epoch_key: str | None, k: int) -> list[str]:
    """Column ``k``'s task lines: each task's truth on the truth row (``epoch_key`` None), its
    prediction at ``epoch_key`` on an epoch row; tasks without a target or prediction are left out."""
    texts = []
    for name, task in tasks.items():
        if epoch_key is None and targets[name] is not None:
            texts.append(_truth_text(name, task["kind"], float(targets[name][k])))
        elif epoch_key is not None and f"{epoch_key}_{name}" in snapshots:
            texts.append(_prediction_text(name, task["kind"], np.asarray(snapshots[f"{epoch_key}_{name}"][k])))
    return texts


def _tasks_of(checkpoint: Path) -> dict[str, dict[str, Any]] | None:
    """The ``tasks`` of the trial's family config (``trial.json``), or None."""
    from analysis.results import read_json
    from trainables.checkpoint import TRIAL_FILE

    if not (checkpoint / TRIAL_FILE).is_file():
        return None
    tasks = read_json(checkpoint / TRIAL_FILE).get("family_config", {}).get("tasks")
    return dict(tasks) if tasks else None


def prediction_grid(study, info, trials, best, out: Path) -> list[tuple[str, Path]]:
    """The report hook: the best trial's prediction grid, or ``[]`` when it kept no image snapshots.

    Args:
        study (StudyDir): The study directory (for ``data.json``'s channel names).
        info (StudyInfo | None): The study's information (unused; the hook's common signature).
        trials (pandas.DataFrame): The trials table (unused).
        best (pandas.Series | None): The best trial's row (``checkpoint_path``, ``trial_id``), or None.
        out: The report directory.

    Returns:
        ``[(title, path of prediction_grid.png)]`` or ``[]``.
    """
    from analysis.results import local_copy
    from trainables.checkpoint import load_snapshots

    if best is None or not isinstance(best.get("checkpoint_path"), str):
        return []
    with local_copy(best["checkpoint_path"]) as checkpoint:
        if checkpoint is None:
            return []
        snapshots = load_snapshots(checkpoint)
        tasks = _tasks_of(checkpoint)
    if snapshots.get("inputs") is None or snapshots["inputs"].ndim != 4 or not _epochs(snapshots, 1):
        return []
    record = study.read_data_record()
    channels = record.channels if record is not None else None
    inputs_channels = snapshots["inputs"].shape[1]
    fig = prediction_grid_figure(snapshots, tasks=tasks,
                                 channel_names=channels if channels and len(channels) == inputs_channels else None)
    fig.suptitle(f"best trial {best.get('trial_id', '')}: fixed validation rows, truth on top", fontsize=9)
    path = save_figure(fig, Path(out) / FILENAME)
    return [("Reconstructions and task predictions over training (best trial; truth on top)", path)]
