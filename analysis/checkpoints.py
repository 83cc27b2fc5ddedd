"""Loading what a study saved: a trial's trained model, and the study's held-out data.

Reads JSON and ``torch.load(weights_only=True)`` checkpoints only; models are rebuilt through
the family registry of ``trainables``. Checkpoints in object storage are copied to a temporary
local directory first (:func:`analysis.results.local_copy`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from analysis.results import StudyInfo, local_copy, read_json
from datasets.base import ArrayGroundTruthData
from datasets.registry import PreparedData, get_dataset
from trainables.checkpoint import TRIAL_FILE, load_checkpoint
from trainables.protocol import representation_fn
from trainables.registry import get_family

__all__ = ["NoGroundTruth", "load_trial_model", "representation_fn", "load_prepared", "load_ground_truth"]


class NoGroundTruth(ValueError):
    """The study's dataset has no ground-truth factors (toy points, images, jets)."""


def load_trial_model(checkpoint_path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model a trial checkpointed, in eval mode on the CPU, and the trial's description.

    Args:
        checkpoint_path: A trial checkpoint directory (``checkpoint_path`` of ``load_trials``: a local
            path or a URI), holding ``checkpoint.pt`` and ``trial.json``.

    Returns:
        ``(model, trial)`` where ``trial`` is ``trial.json``: ``family``, ``family_config``,
        ``training``, ``input_shape``, ``seed``, ``provenance``...

    Raises:
        FileNotFoundError: If the directory or either file is missing.
        analysis.results.StudyFileError: If ``trial.json`` is corrupt.
        pickle.UnpicklingError: If ``checkpoint.pt`` holds anything but tensors (weights_only).
    """
    with local_copy(checkpoint_path) as directory:
        if directory is None:
            raise FileNotFoundError(f"{checkpoint_path}: no such checkpoint directory")
        trial = read_json(directory / TRIAL_FILE)
        family = get_family(trial["family"])
        model = family.model_cls(family.config_cls(**trial["family_config"]), tuple(trial["input_shape"]))
        model.load_state_dict(load_checkpoint(directory)["model"])
    model.eval()
    return model, trial


def load_prepared(info: StudyInfo) -> PreparedData:
    """The study's data, loaded again as the study did (the split is recomputed from its seed).

    Raises:
        datasets.registry.DataError: If the data file is missing or invalid here.
        pydantic.ValidationError: If the study's dataset section no longer validates.
    """
    options = info.dataset_options()
    return get_dataset(options.name).load(options, info.seed)


def load_ground_truth(info: StudyInfo) -> ArrayGroundTruthData:
    """The held-out rows of a study's dataset as ground-truth data (the rows its metrics scored).

    Raises:
        NoGroundTruth: If the dataset has no ground-truth factors.
        datasets.registry.DataError: If the data file is missing or invalid.
    """
    prepared = load_prepared(info)
    if prepared.ground_truth is None:
        raise NoGroundTruth(f"dataset {info.dataset['name']!r} has no ground-truth factors")
    return prepared.ground_truth
