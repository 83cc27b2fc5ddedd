"""The training section of a study spec: what the per-worker loop is handed, validated and typed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainingSpec"]


class TrainingSpec(BaseModel):
    """Optimisation settings shared by every trial (each can also be searched).

    Attributes:
        epochs: Passes over the training rows, 1 to 100,000.
        batch_size: Rows per optimisation step (64 as in disentanglement_lib).
        lr: Learning rate of the optimizer, in (0, 10].
        optimizer: ``adam``, ``adamw`` or ``sgd`` (families with their own optimisation step may
            accept only some: their ``check_setup`` says which).
        max_failures: Restarts of a failed trial from its last checkpoint.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    epochs: int = Field(10, gt=0, le=100_000)
    batch_size: int = Field(64, gt=0, le=65_536)  # 64 as in disentanglement_lib
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    max_failures: int = Field(0, ge=0, le=100)  # restarts of a failed trial from its last checkpoint
