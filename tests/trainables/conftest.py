"""Fixtures for the model-family tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these nets are tiny, and more threads only contend on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Lifts the refusal of fp16 on the CPU (``trainables.precision.resolve_precision``) so that
    the loss scaler's bookkeeping, which the CPU's ``GradScaler`` performs as CUDA's does, can be
    tested on this CUDA-less machine."""
    from trainables import precision

    resolve = precision.resolve_precision
    monkeypatch.setattr(precision, "resolve_precision",
                        lambda value, device: value if value == "fp16" else resolve(value, device))
