"""Fault injection for tests: kill a trial's worker, or make its loss NaN, at a chosen epoch.

Set ``VAE_STUDY_FAULT`` in the environment of the process that starts Ray (trial processes
inherit it) to ``KIND:KEY=VALUE:EPOCH``:

* ``kill:beta=4:2`` - the worker of every trial whose ``beta`` is 4 SIGKILLs itself right after
  reporting epoch 2 (its checkpoint is persisted by then). A restarted trial resumes at epoch 3,
  so the fault fires once per trial.
* ``nan:beta=4:2`` - the training images of those trials are NaN in epoch 2, so their training
  loss becomes NaN and the loop errors the trial (``FloatingPointError``). For families that read
  an ``image`` column (not ``seq2seq``).

``KEY`` is a family or training parameter of the trial. Nothing happens when the variable is
unset; it exists for the fault tests and must not be set in real studies.

The faults live behind the :class:`~trainables.protocol.Session` the loop is handed, never in the
loop: where a session is built (``study.driver``, :func:`trainables.session.train_fn_per_worker`),
:func:`with_faults` wraps it in a :class:`FaultySession` when the variable names a fault. A kill
fires in ``report``; a NaN fault hands the loop a train shard whose batches of that epoch carry
NaN images, so the loop's own finiteness check raises ``FloatingPointError``.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from trainables.checkpoint import load_checkpoint
from trainables.protocol import RestoredCheckpoint, Session, Shard
from trainables.trial import TrialConfig

__all__ = ["ENV", "Fault", "FaultySession", "active_fault", "with_faults"]

ENV = "VAE_STUDY_FAULT"


@dataclass(frozen=True)
class Fault:
    """A parsed ``VAE_STUDY_FAULT``."""

    kind: str  # "kill" or "nan"
    key: str
    value: str
    epoch: int

    def matches(self, params: dict[str, Any], epoch: int) -> bool:
        """Whether the trial with these parameters is hit at ``epoch``."""
        if epoch != self.epoch or self.key not in params:
            return False
        value = params[self.key]
        try:
            return float(value) == float(self.value)
        except (TypeError, ValueError):
            return str(value) == self.value

    def kill(self) -> None:
        """SIGKILLs the current process (no cleanup, as a crashed worker)."""
        os.kill(os.getpid(), signal.SIGKILL)


def active_fault() -> Fault | None:
    """The fault named by ``VAE_STUDY_FAULT``, or None.

    Raises:
        ValueError: If the variable is set but not ``KIND:KEY=VALUE:EPOCH``.
    """
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        kind, assignment, epoch = raw.split(":")
        key, value = assignment.split("=", 1)
        fault = Fault(kind, key, value, int(epoch))
    except ValueError:
        raise ValueError(f"{ENV}={raw!r}: expected KIND:KEY=VALUE:EPOCH, e.g. kill:beta=4:2") from None
    if fault.kind not in ("kill", "nan"):
        raise ValueError(f"{ENV}={raw!r}: KIND must be kill or nan")
    return fault


def with_faults(session: Session, config: TrialConfig) -> Session:
    """``session``, wrapped in a :class:`FaultySession` when ``VAE_STUDY_FAULT`` names a fault.

    The fault's ``KEY`` is looked up among the trial's family config and training values (JSON values).

    Raises:
        ValueError: If the variable is set but malformed (see :func:`active_fault`).
    """
    fault = active_fault()
    if fault is None:
        return session
    return FaultySession(session, fault, {**config.family_config.model_dump(mode="json"),
                                          **config.training.model_dump()})


class FaultySession:
    """A :class:`~trainables.protocol.Session` that injects ``fault`` into the session it wraps (tests only).

    Args:
        session: The session the worker would otherwise be handed; everything else goes to it.
        fault: What to inject, and when.
        params: The trial's parameters, matched against the fault's ``KEY=VALUE``.
    """

    def __init__(self, session: Session, fault: Fault, params: dict[str, Any]):
        self._session = session
        self._fault = fault
        self._params = params
        self.world_rank = session.world_rank
        self.world_size = session.world_size
        self.node_id = session.node_id
        self.gpu_ids = session.gpu_ids

    def report(self, metrics: dict[str, float | str], checkpoint_dir: str | None) -> None:
        """Reports; then a kill fault of this epoch SIGKILLs the worker (its checkpoint is persisted by then)."""
        self._session.report(metrics, checkpoint_dir)
        if self._fault.kind == "kill" and self._fault.matches(self._params, int(metrics["epoch"])):
            self._fault.kill()

    def checkpoint(self) -> RestoredCheckpoint | None:
        return self._session.checkpoint()

    def shard(self, name: str) -> Shard:
        """The wrapped session's shard; for a NaN fault, the train shard poisons the fault's epoch."""
        shard = self._session.shard(name)
        fault = self._fault
        if name != "train" or fault.kind != "nan" or not fault.matches(self._params, fault.epoch):
            return shard  # not this trial: no checkpoint read
        return _NanShard(shard, lambda epoch: fault.matches(self._params, epoch), self._epochs_done())

    def device(self) -> torch.device:
        return self._session.device()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return self._session.prepare(model)

    def _epochs_done(self) -> int:
        """Epochs of the checkpoint the worker resumes from (0 for a fresh trial): the loop's first
        pass over the train shard is epoch ``done + 1``."""
        checkpoint = self._session.checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as directory:
            return int(load_checkpoint(directory)["epoch"])


class _NanShard:
    """A train shard whose images are NaN in the passes (epochs) that ``hit`` names.

    Args:
        shard: The worker's train shard; the loop makes one pass over it per epoch.
        hit: ``hit(epoch)``: whether that epoch's images are NaN.
        done: Epochs done before the first pass.
    """

    def __init__(self, shard: Shard, hit: Callable[[int], bool], done: int):
        self._shard = shard
        self._hit = hit
        self._epoch = done

    def iter_torch_batches(self, *, batch_size: int, dtypes: torch.dtype,
                           device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        self._epoch += 1
        batches = self._shard.iter_torch_batches(batch_size=batch_size, dtypes=dtypes, device=device)
        return _nan_images(batches, self._epoch) if self._hit(self._epoch) else batches

    def iter_batches(self, *, batch_size: int, batch_format: str) -> Iterator[dict[str, Any]]:
        return self._shard.iter_batches(batch_size=batch_size, batch_format=batch_format)


def _nan_images(batches: Iterator[dict[str, torch.Tensor]], epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    """``batches`` with every ``image`` value NaN.

    Raises:
        ValueError: If a batch has no ``image`` column (a family that reads other columns).
    """
    for batch in batches:
        if "image" not in batch:
            raise ValueError(f"{ENV}: a nan fault poisons the batches' 'image' column, but the batches of "
                             f"epoch {epoch} have only {sorted(batch)}")
        yield {**batch, "image": torch.full_like(batch["image"], float("nan"))}
