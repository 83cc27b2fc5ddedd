"""Loading what a study saved: a trial's trained model, and the study's held-out data.

Reads JSON and ``torch.load(weights_only=True)`` checkpoints only; models are rebuilt through
the family registry of ``trainables``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from analysis.results import read_json, read_spec
from datasets.base import ArrayGroundTruthData
from datasets.registry import PreparedData, get_dataset
from trainables.checkpoint import TRIAL_FILE, load_checkpoint
from trainables.protocol import representation_fn
from trainables.registry import get_family

__all__ = ["NoGroundTruth", "load_trial_model", "representation_fn", "load_prepared", "load_ground_truth"]


class NoGroundTruth(ValueError):
    """The study's dataset has no ground-truth factors (toy points, images, jets)."""


def load_trial_model(checkpoint_path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model a trial checkpointed, in eval mode on the CPU, and the trial's description.

    Args:
        checkpoint_path: A trial checkpoint directory (``checkpoint_path`` in ``trials.parquet``),
            holding ``checkpoint.pt`` and ``trial.json``.

    Returns:
        ``(model, trial)`` where ``trial`` is ``trial.json``: ``family``, ``family_config``,
        ``training``, ``input_shape``, ``seed``, ``provenance``...

    Raises:
        FileNotFoundError: If either file is missing.
        analysis.results.StudyFileError: If ``trial.json`` is corrupt.
        pickle.UnpicklingError: If ``checkpoint.pt`` holds anything but tensors (weights_only).
    """
    checkpoint_path = Path(checkpoint_path)
    trial = read_json(checkpoint_path / TRIAL_FILE)
    family = get_family(trial["family"])
    model = family.model_cls(family.config_cls(**trial["family_config"]), tuple(trial["input_shape"]))
    model.load_state_dict(load_checkpoint(checkpoint_path)["model"])
    model.eval()
    return model, trial


def load_prepared(study_dir: str | Path) -> PreparedData:
    """The study's data, loaded again from its ``spec.json`` (the split is recomputed from the seed).

    Raises:
        FileNotFoundError: If the directory holds no ``spec.json``.
        datasets.registry.DataError: If the data file is missing or invalid here.
        pydantic.ValidationError: If the spec's dataset section no longer validates.
    """
    spec = read_spec(study_dir)
    entry = get_dataset(spec["dataset"]["name"])
    return entry.load(entry.options_cls(**spec["dataset"]), int(spec.get("seed", 0)))


def load_ground_truth(study_dir: str | Path) -> ArrayGroundTruthData:
    """The held-out rows of a study's dataset as ground-truth data (the rows its metrics scored).

    Raises:
        NoGroundTruth: If the dataset has no ground-truth factors.
        datasets.registry.DataError: If the data file is missing or invalid.
    """
    prepared = load_prepared(study_dir)
    if prepared.ground_truth is None:
        raise NoGroundTruth(f"dataset {read_spec(study_dir)['dataset']['name']!r} has no ground-truth factors")
    return prepared.ground_truth
