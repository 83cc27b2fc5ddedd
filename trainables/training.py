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
        precision: ``auto`` (the default: bf16 where the device computes bfloat16 natively, i.e.
            CUDA compute capability >= 8.0 or a CPU with AVX512-BF16 / AMX, else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (fp16 on CUDA GPUs only); see :mod:`trainables.precision`. Set
            ``fp32`` to compare bit for bit with a study trained in fp32 (every study before
            ``auto`` was the default), or when a result might hinge on bf16's 8-bit mantissa.
        steps: Optimisation steps to take, or None to train ``epochs`` epochs. With a step budget
            the trial reports once per epoch (``step`` in each report) and stops mid-epoch at the
            budget. A step the fp16 loss scaler skips (gradients overflowed) is not taken: the
            trial attempts another batch for it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    epochs: int = Field(10, gt=0, le=100_000)
    batch_size: int = Field(64, gt=0, le=65_536)  # 64 as in disentanglement_lib
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    max_failures: int = Field(0, ge=0, le=100)  # restarts of a failed trial from its last checkpoint
    # auto: bf16 where the hardware has it (2.3x a conv VAE step on this CPU), else fp32. fp32: exactly
    # as without mixed precision; bf16: autocast to bfloat16; fp16: autocast + loss scaling, CUDA
    # GPUs only (refused on the CPU: trainables.precision).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # A budget in optimisation steps taken instead of epochs (disentanglement_lib: 300,000); the last
    # epoch stops at the budget. None: train training.epochs epochs.
    steps: int | None = Field(None, gt=0, le=100_000_000)
