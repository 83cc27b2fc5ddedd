"""Fault injection for tests: kill a trial's worker, or make its loss NaN, at a chosen epoch.

Set ``VAE_STUDY_FAULT`` in the environment of the process that starts Ray (trial processes
inherit it) to ``KIND:KEY=VALUE:EPOCH``:

* ``kill:beta=4:2`` - the worker of every trial whose ``beta`` is 4 SIGKILLs itself right after
  reporting epoch 2 (its checkpoint is persisted by then). A restarted trial resumes at epoch 3,
  so the fault fires once per trial.
* ``nan:beta=4:2`` - the training loss of those trials becomes NaN in epoch 2.

``KEY`` is a family or training parameter of the trial. Nothing happens when the variable is
unset; it exists for the fault tests and must not be set in real studies.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

__all__ = ["ENV", "Fault", "active_fault"]

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
