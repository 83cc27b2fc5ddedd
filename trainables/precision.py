"""Mixed precision for every family: autocast, a gradient scaler for fp16, and the count of steps taken.

``auto`` (``training.precision``'s default) is bf16 where the device computes bfloat16 natively
and fp32 elsewhere (:func:`resolve_precision`, :func:`native_bf16`); the trial records the
precision it trained in (``precision`` in its provenance). ``fp32`` disables autocast and scales nothing, so it trains bit for bit as without this module.
``bf16`` autocasts to bfloat16 (no scaler: its exponent range is fp32's). ``fp16`` autocasts to
float16 and scales the loss (``torch.amp.GradScaler``) so small gradients do not flush to zero;
the scaler skips an optimiser step whose gradients overflowed, and :class:`Amp` counts the steps
actually taken (:attr:`Amp.taken`) and skipped (:attr:`Amp.skipped`).
A family with its own optimisation step (``training_step``) calls :meth:`Amp.backward` and
:meth:`Amp.step` instead of ``loss.backward()`` and ``optimizer.step()``, so its steps are counted too.

fp16 trains on CUDA devices only (:func:`resolve_precision` refuses it on the CPU). Measured here
(torch 2.13 CPU, the smoke study's conv VAE, batch 64, one thread): a step under CPU fp16 autocast
took 1,234 ms against 66 ms in fp32 (19x slower; bf16 79 ms), and the scaler, starting at 2**16
and halving at each overflow, skipped the first 11 steps of every seed and beta before the scale
fitted (2**5), so an 8-step trial trained nothing. bf16 is the CPU's mixed precision.

References:
    Micikevicius et al. 2018, "Mixed Precision Training", ICLR, arXiv:1710.03740 (loss scaling).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

__all__ = ["FP16_ON_CPU", "Amp", "Precision", "PrecisionSetting", "native_bf16", "resolve_precision"]

Precision = Literal["fp32", "bf16", "fp16"]  # what a trial trains in
PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16"]  # what training.precision may say
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# CPU features (torch.cpu.get_capabilities()) with bfloat16 arithmetic in hardware: x86 AVX512-BF16
# and AMX-BF16 (oneDNN's bf16 convolutions and matmuls), arm64 BF16 and SVE-BF16.
_CPU_BF16 = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")
# Why fp16 is refused on the CPU (the spec's check before Ray and the loop's at run time say it).
FP16_ON_CPU = ("fp16 trains on CUDA GPUs only: on the CPU its autocast runs ~19x slower than fp32 and the loss "
               "scaler skips the first ~11 steps; use bf16 (or fp32) there")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware, so that bf16 autocast is faster than fp32.

    CUDA: compute capability 8.0 or more (Ampere and later: bf16 tensor cores). CPU: one of the
    features of :data:`_CPU_BF16` among ``torch.cpu.get_capabilities()`` (AVX512-BF16 or AMX on
    x86; without them torch emulates bf16, slower than fp32). Measured on this machine's CPU
    (Xeon with AVX512-BF16 and AMX): a training step of the main job's conv VAE runs 2.3x faster
    under bf16 autocast than in fp32 (``benchmarks/precision.py``). Other devices: False.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return any(bool(capabilities.get(name, False)) for name in _CPU_BF16)  # keys vary by architecture
    return False


def resolve_precision(precision: str, device: torch.device | str) -> Precision:
    """The precision a trial trains in on ``device``.

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (``training.precision``).
        device: Where the trial trains.

    Returns:
        For ``auto``: ``bf16`` where :func:`native_bf16`, else ``fp32``. Otherwise ``precision``.

    Raises:
        ValueError: ``training.precision: ...`` if ``precision`` is none of the four, or is
            ``fp16`` on a CPU device (see the module docstring for the measurement).
    """
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in _DTYPES:
        raise ValueError(f"training.precision: expected one of {['auto', *_DTYPES]}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type == "cpu":
        raise ValueError(f"training.precision: this trial trains on the CPU, but {FP16_ON_CPU}")
    return precision


class Amp:
    """Autocast, loss scaling and the count of optimisation steps taken, for one trial.

    A step is one batch's optimisation: every :meth:`step` call between two :meth:`update` calls
    (a family with several optimizers steps each once per batch). It is *taken* when every one of
    its optimizer steps was applied, and *skipped* when the fp16 scaler skipped any of them (the
    gradients overflowed; the scale then backs off once). Under fp32 and bf16 every step is taken.

    Counting adds no host sync: the fp16 scaler already decides on the host whether to call
    ``optimizer.step()`` (it reads its overflow flag with ``.item()``), and :meth:`step` counts
    that call through the optimizer's step post-hook. (An optimizer that takes the scaler into its
    own step, e.g. a fused Adam, would be counted as applied; the trials' optimizers are not fused.)

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (:func:`resolve_precision`).
        device: Where the model trains (autocast's device type).

    Attributes:
        precision: The precision trained in (``auto`` resolved on ``device``).
        taken: Steps taken since this object was made.
        skipped: Steps the fp16 scaler skipped since then.

    Raises:
        ValueError: As :func:`resolve_precision`.
    """

    def __init__(self, precision: PrecisionSetting = "fp32", device: torch.device | str = "cpu"):
        self.precision = resolve_precision(precision, device)
        self.dtype = _DTYPES[self.precision]
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if self.precision == "fp16" else None
        self.taken = 0
        self.skipped = 0
        self._called = 0  # optimizer steps asked for in this batch
        self._applied = 0  # of them, applied

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
        self._called += 1
        if self.scaler is None:
            optimizer.step()
            self._applied += 1
            return
        # A flag, not a count: the hook runs twice when an optimizer subclass's step calls its base
        # class's step and both were patched by torch (seq2seq's clipping optimizers).
        applied: list[bool] = []
        hook = optimizer.register_step_post_hook(lambda *_: applied.append(True))
        try:
            self.scaler.step(optimizer)  # calls optimizer.step() only when no gradient overflowed
        finally:
            hook.remove()
        self._applied += bool(applied)

    def update(self) -> bool:
        """Ends an optimisation step (adapts the fp16 loss scale); call once per batch.

        Returns:
            Whether the step was taken (every optimizer step of the batch applied); counted in
            :attr:`taken`, else in :attr:`skipped`.
        """
        if self.scaler is not None:
            self.scaler.update()
        taken = self._applied == self._called
        self.taken += taken
        self.skipped += not taken
        self._called = self._applied = 0
        return taken

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
