"""What a worker is handed to train one trial: :class:`TrialConfig`, the trial's seed, its model.

The loop (:mod:`trainables.loop`) trains a :class:`TrialConfig`; the checkpoint directory
(:mod:`trainables.checkpoint`) describes it in ``trial.json``; the Tune driver (``study.driver``)
builds it from a study spec and one sampled configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch
from pydantic import BaseModel

from trainables.registry import get_family
from trainables.training import TrainingSpec

__all__ = ["TrialConfig", "Evaluate", "HeldOut", "ValidationMetrics", "REPEAT_KEY", "trial_seed", "build_model"]



class HeldOut(Protocol):
    """The validation rows the end-of-trial evaluation reads: ``held_out(num)`` -> up to ``num``
    images float32 ``(num, ...)``; ``held_out(num, column)`` -> that column of the same rows (a label
    such as ``y``). Raises KeyError for a column the rows do not have."""

    def __call__(self, num: int, column: str = "image") -> np.ndarray: ...


# The evaluation a study hands the loop: ``evaluate(model, device, held_out)`` -> named floats. It
# raises when a requested metric cannot be computed (a hole must not look like a result).
Evaluate = Callable[[torch.nn.Module, torch.device, HeldOut], dict[str, float]]
# A dataset's per-epoch metrics from the concatenated per-sample predictions of a validation pass.
ValidationMetrics = Callable[[dict[str, torch.Tensor]], dict[str, float]]

REPEAT_KEY = "__trial_index__"  # set by tune.search.Repeater: the repeat index of a configuration


def trial_seed(study_seed: int, repeat: int) -> int:
    """The seed of a trial: derived from the study seed and the trial's repeat index.

    Repeats of one configuration get distinct seeds; the same repeat index of two
    configurations gets the same seed (common random numbers across configurations).

    Returns:
        A seed in ``[0, 2**31)``.
    """
    return int(np.random.SeedSequence([study_seed, repeat]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class TrialConfig:
    """Everything a worker needs to train one trial (picklable: it travels to Ray workers).

    Attributes:
        family: Registered family name.
        family_config: The family's validated config (an instance of its ``config_cls``).
        training: The validated training spec.
        input_shape: Shape of one observation, e.g. ``(C, H, W)``.
        seed: The trial's seed (``trial_seed``); worker ``r`` seeds torch with ``seed + r``.
        threads: torch threads of each worker.
        snapshot_epochs: Epochs whose validation reconstructions are kept; None: every epoch.
        snapshot_samples: Fixed validation rows reconstructed at those epochs; 0: none.
        evaluate: The end-of-trial evaluation (see :data:`Evaluate`), or None for none.
        validation_metrics: The dataset's per-epoch metrics from the model's predictions
            (``PreparedData.validation_metrics``), or None.
        description: Extra JSON facts for ``trial.json`` (the study's evaluation settings...).

    Raises:
        TypeError: If ``training`` is not a :class:`TrainingSpec` or ``family_config`` is not an
            instance of the family's config class.
    """

    family: str
    family_config: BaseModel
    training: TrainingSpec
    input_shape: tuple[int, ...]
    seed: int
    threads: int = 1
    snapshot_epochs: list[int] | None = None
    snapshot_samples: int = 8
    evaluate: Evaluate | None = None
    validation_metrics: ValidationMetrics | None = None
    description: dict[str, Any] | None = None

    def __post_init__(self):
        if not isinstance(self.training, TrainingSpec):
            raise TypeError(f"TrialConfig.training: expected a TrainingSpec, got {type(self.training).__name__}")
        config_cls = get_family(self.family).config_cls
        if not isinstance(self.family_config, config_cls):
            raise TypeError(f"TrialConfig.family_config: expected a {config_cls.__name__}, "
                            f"got {type(self.family_config).__name__}")


def build_model(config: TrialConfig) -> torch.nn.Module:
    """The trial's model, from its family and validated config (freshly initialised from torch's RNG)."""
    return get_family(config.family).model_cls(config.family_config, config.input_shape)
