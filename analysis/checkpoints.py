"""Loading what a study saved: a trial's trained model, and the study's held-out data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from datasets.base import ArrayGroundTruthData

__all__ = ["load_trial_model", "representation_fn", "load_study_spec", "load_ground_truth"]


def load_trial_model(checkpoint_path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model a trial checkpointed, in eval mode on the CPU, and the trial's description.

    Args:
        checkpoint_path: A trial checkpoint directory (``checkpoint_path`` in ``trials.parquet``),
            holding ``checkpoint.pt`` and ``trial.json``.

    Returns:
        ``(model, trial)`` where ``trial`` holds ``family``, ``family_config``, ``training``,
        ``input_shape``, ``seed``, ``metrics``, ``num_train``.

    Raises:
        FileNotFoundError: If either file is missing.
        pickle.UnpicklingError: If ``checkpoint.pt`` holds anything but tensors (weights_only).
    """
    from trainables.loop import TRIAL_FILE, load_checkpoint
    from trainables.registry import get_family

    checkpoint_path = Path(checkpoint_path)
    trial = json.loads((checkpoint_path / TRIAL_FILE).read_text())
    family = get_family(trial["family"])
    model = family.model_cls(family.config_cls(**trial["family_config"]), tuple(trial["input_shape"]))
    model.load_state_dict(load_checkpoint(checkpoint_path)["model"])
    model.eval()
    return model, trial


def representation_fn(model: torch.nn.Module, device: torch.device | str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """Observations float32 ``(B, C, H, W)`` -> posterior means ``(B, latent_dim)`` of ``model``.

    Args:
        model: A VAE with ``encode(x) -> (mu, logvar)``, already on ``device``.
        device: Where the observations are sent before encoding; the codes come back as numpy.
    """

    def encode(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
            return model.encode(x)[0].cpu().numpy()

    return encode


def load_study_spec(study_dir: str | Path):
    """The ``StudySpec`` a study ran with (its ``spec.json``)."""
    from study.results import SPEC_FILE
    from study.spec import StudySpec

    return StudySpec.model_validate_json((Path(study_dir) / SPEC_FILE).read_text())


def load_ground_truth(study_dir: str | Path) -> ArrayGroundTruthData:
    """The held-out rows of a study's dataset as ground-truth data (the rows its metrics scored).

    The split is recomputed from the spec's seed, so it is the one the trials used.

    Raises:
        ValueError: If the dataset has no ground-truth factors.
        datasets.registry.DataError: If the data file is missing or invalid.
    """
    from datasets.registry import get_dataset

    spec = load_study_spec(study_dir)
    prepared = get_dataset(spec.dataset["name"]).load(spec.dataset_options(), spec.seed)
    if prepared.ground_truth is None:
        raise ValueError(f"dataset {spec.dataset['name']!r} has no ground-truth factors")
    return prepared.ground_truth
