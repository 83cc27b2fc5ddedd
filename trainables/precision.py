"""Mixed precision for every family: autocast, and a gradient scaler for fp16.

``fp32`` disables autocast and scales nothing, so it trains bit for bit as without this module.
``bf16`` autocasts to bfloat16 (no scaler: its exponent range is fp32's). ``fp16`` autocasts to
float16 and scales the loss (``torch.amp.GradScaler``) so small gradients do not flush to zero.
A family with its own optimisation step (``training_step``) calls :meth:`Amp.backward` and
:meth:`Amp.step` instead of ``loss.backward()`` and ``optimizer.step()``.

References:
    Micikevicius et al. 2018, "Mixed Precision Training", ICLR, arXiv:1710.03740 (loss scaling).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

__all__ = ["Amp", "Precision"]

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Amp:
    """Autocast and loss scaling for one trial.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16``.
        device: Where the model trains (autocast's device type).

    Raises:
        ValueError: If ``precision`` is not one of the three.
    """

    def __init__(self, precision: Precision = "fp32", device: torch.device | str = "cpu"):
        if precision not in _DTYPES:
            raise ValueError(f"training.precision: expected one of {sorted(_DTYPES)}, got {precision!r}")
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled for fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; for fp16 unscaled first, and skipped when gradients overflowed."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Ends an optimisation step (adapts the fp16 loss scale); call once per batch."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
