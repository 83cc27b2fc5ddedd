"""A trial checkpoint directory's format: its files, how they are written and read, and the provenance stamp.

A checkpoint directory (one per reported epoch of rank 0) holds:

* ``checkpoint.pt`` (:data:`CHECKPOINT_FILE`): ``model`` (state dict), ``optimizers`` (a list of
  state dicts), ``epoch`` (epochs done), ``step`` (optimisation steps taken; absent when 0),
  ``skipped`` (steps the fp16 loss scaler skipped; absent when 0) and ``scaler`` (the fp16 loss
  scale; absent unless fp16). Tensors and plain containers only.
* ``snapshots.npz`` (:data:`SNAPSHOT_FILE`, absent when empty): the fixed validation rows and their
  reconstructions by epoch (:func:`load_snapshots`).
* ``trial.json`` (:data:`TRIAL_FILE`): the trial's description (:func:`describe_trial`) with the
  :class:`Provenance` the trial stamped under ``"provenance"``.

Reading never unpickles: ``torch.load(weights_only=True)`` and ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.trial import TrialConfig

__all__ = ["CHECKPOINT_FILE", "SNAPSHOT_FILE", "TRIAL_FILE", "Provenance", "PROVENANCE_FIELDS", "SavedTrial",
           "provenance", "save_checkpoint", "load_checkpoint", "load_saved_trial", "load_snapshots",
           "describe_trial", "recorded_start"]

CHECKPOINT_FILE = "checkpoint.pt"
SNAPSHOT_FILE = "snapshots.npz"
TRIAL_FILE = "trial.json"


@dataclass(frozen=True)
class Provenance:
    """Where and with what a trial trained, stamped by the trial itself (``trial.json``'s ``provenance``).

    Attributes:
        torch_version, ray_version, optuna_version, numpy_version: The installed versions.
        git_sha: The checkout's commit, or None outside a git checkout (e.g. a ``ray job``
            working-dir copy).
        git_dirty: Whether tracked files differ from that commit; None outside a checkout.
        hostname: The machine's name.
        node_id: Ray's id of the node, or None outside Ray.
        device: ``cpu`` or the CUDA device's name.
        precision: The precision the trial trained in on that device (``fp32``, ``bf16`` or
            ``fp16``: ``training.precision`` with ``auto`` resolved); a resumed trial records the
            one of its latest run.
        threads: torch threads of the worker.
        started_at: UTC, ISO 8601 (milliseconds); kept from the first run when resumed.
        ended_at: UTC, ISO 8601, set at each checkpoint; None before the first.
        gpu_ids: The GPUs Ray assigned the trial (empty on the CPU).
    """

    torch_version: str
    ray_version: str
    optuna_version: str
    numpy_version: str
    git_sha: str | None
    git_dirty: bool | None
    hostname: str
    node_id: str | None
    device: str
    precision: str
    threads: int
    started_at: str
    ended_at: str | None
    gpu_ids: tuple[str, ...]

    def ended(self) -> Provenance:
        """This stamp with ``ended_at`` now (at a checkpoint)."""
        return replace(self, ended_at=_now())


# The provenance keys, in trial.json's order: the one list of them in the project.
PROVENANCE_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(Provenance))


@dataclass(frozen=True)
class SavedTrial:
    """What a checkpoint directory gives a resumed trial (see the module docstring for the files).

    Attributes:
        model: The model's state dict.
        optimizers: One state dict per optimizer, in the order the family configured them.
        epoch: Epochs done.
        step: Optimisation steps taken.
        skipped: Optimisation steps the fp16 loss scaler skipped.
        scaler: The fp16 gradient scaler's state (``{}`` unless fp16).
        snapshots: :func:`load_snapshots` of the directory.
        started_at: When the trial's first run started (:func:`recorded_start`), or None.
    """

    model: dict[str, torch.Tensor]
    optimizers: list[dict[str, Any]]
    epoch: int
    step: int
    skipped: int
    scaler: dict[str, Any]
    snapshots: dict[str, np.ndarray]
    started_at: str | None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(device: torch.device, threads: int, node_id: str | None = None, started_at: str | None = None,
               gpu_ids: list[str] | tuple[str, ...] = (), *, precision: str) -> Provenance:
    """The stamp of a trial starting (or resuming) now on ``device``; ``ended_at`` is None until a checkpoint.

    Args:
        device: Where the trial trains.
        threads: torch threads of the worker.
        node_id: Ray's node id, or None.
        started_at: The start an earlier run recorded (:func:`recorded_start`); None: now.
        gpu_ids: The GPUs Ray assigned the trial.
        precision: The precision it trains in (:func:`trainables.precision.resolve_precision`).
    """
    import optuna
    import ray

    sha = _git("rev-parse", "--verify", "-q", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if sha else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return Provenance(
        torch_version=torch.__version__, ray_version=ray.__version__, optuna_version=optuna.__version__,
        numpy_version=np.__version__, git_sha=sha, git_dirty=None if status is None else bool(status),
        hostname=platform.node(), node_id=node_id, device=name, precision=precision, threads=int(threads),
        started_at=started_at or _now(), ended_at=None, gpu_ids=tuple(gpu_ids),
    )


def describe_trial(config: TrialConfig, stamp: Provenance | None = None) -> dict[str, Any]:
    """``trial.json``: the trial's family, config, training, input shape, seed and provenance (JSON values)."""
    return {
        "family": config.family, "family_config": config.family_config.model_dump(mode="json"),
        "training": config.training.model_dump(mode="json"), "input_shape": list(config.input_shape),
        "seed": config.seed, "threads": config.threads, "snapshot_epochs": config.snapshot_epochs,
        "snapshot_samples": config.snapshot_samples, **(config.description or {}),
        "provenance": _stamp_json(stamp),
    }


def _stamp_json(stamp: Provenance | None) -> dict[str, Any]:
    """The stamp as JSON values (``gpu_ids`` a list), ``{}`` for none."""
    if stamp is None:
        return {}
    return {**asdict(stamp), "gpu_ids": list(stamp.gpu_ids)}


def save_checkpoint(directory: str | Path, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer],
                    epoch: int, config: TrialConfig, snapshots: dict[str, np.ndarray],
                    stamp: Provenance | None = None, *, step: int = 0, skipped: int = 0,
                    scaler: dict[str, Any] | None = None) -> None:
    """Writes a checkpoint directory: ``checkpoint.pt``, ``snapshots.npz`` (when any) and ``trial.json``.

    Args:
        directory: An existing directory.
        model: The trained module (not a DDP wrapper: its state dict's keys are the model's).
        optimizers: Its optimizers.
        epoch: Epochs done.
        config: The trial, described in ``trial.json``.
        snapshots: See :func:`load_snapshots`; ``{}`` writes no ``snapshots.npz``.
        stamp: The trial's provenance; None writes ``{}``.
        step: Optimisation steps taken (not written when 0).
        skipped: Optimisation steps the fp16 loss scaler skipped (not written when 0).
        scaler: The fp16 gradient scaler's state (not written when empty).
    """
    state: dict[str, Any] = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                             "epoch": epoch}
    if step:
        state["step"] = step
    if skipped:
        state["skipped"] = skipped
    if scaler:
        state["scaler"] = scaler  # fp16 loss scale
    torch.save(state, Path(directory) / CHECKPOINT_FILE)
    if snapshots:
        np.savez(Path(directory) / SNAPSHOT_FILE, **snapshots)
    Path(directory, TRIAL_FILE).write_text(json.dumps(describe_trial(config, stamp), indent=2))


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Reads a trial checkpoint: ``model`` state dict, ``optimizers`` (a list of state dicts) and
    ``epoch`` (epochs done), and ``step`` / ``skipped`` / ``scaler`` when written.

    Tensors only: ``torch.load(weights_only=True)`` refuses pickled objects.

    Raises:
        FileNotFoundError: If the directory holds no checkpoint file.
        pickle.UnpicklingError: If the file holds anything but tensors and plain containers.
    """
    return torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def load_saved_trial(directory: str | Path) -> SavedTrial:
    """Everything a resumed trial reads back from its checkpoint directory.

    Raises:
        FileNotFoundError: If the directory holds no checkpoint file.
        pickle.UnpicklingError: If it holds anything but tensors and plain containers.
    """
    state = load_checkpoint(directory)
    return SavedTrial(
        model=state["model"], optimizers=list(state["optimizers"]), epoch=int(state["epoch"]),
        step=int(state.get("step", 0)),  # not written when 0
        skipped=int(state.get("skipped", 0)),  # not written when 0 (and before it was counted)
        scaler=dict(state.get("scaler", {})),  # written for fp16 only
        snapshots=load_snapshots(directory), started_at=recorded_start(directory),
    )


def load_snapshots(directory: str | Path) -> dict[str, np.ndarray]:
    """The reconstruction snapshots a checkpoint carries (``snapshots.npz``), or ``{}``.

    Keys: ``inputs`` ``(K, ...)`` the fixed validation rows; ``epoch_NNNN`` ``(K, ...)`` float16
    mean reconstructions after epoch NNNN; ``epoch_NNNN_<task>`` task predictions ``(K, ...)``;
    ``column_<name>`` ``(K, ...)`` the rows' other columns (task targets).
    """
    path = Path(directory) / SNAPSHOT_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def recorded_start(directory: str | Path) -> str | None:
    """The start time an earlier run of this trial recorded in its ``trial.json`` (kept on resume), or None."""
    path = Path(directory) / TRIAL_FILE
    try:
        return json.loads(path.read_text()).get("provenance", {}).get("started_at")
    except (OSError, ValueError, AttributeError):
        return None
