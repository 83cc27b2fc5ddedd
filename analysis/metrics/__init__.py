"""Disentanglement metrics, one module each, as disentanglement_lib defines them.

``METRICS`` maps the names a study spec uses (``evaluation.metrics``) to a :class:`Metric`:
its sampler wrapper ``compute(dataset, representation_fn, *, random_state, num_train) -> dict``
and the result keys it returns, each with whether higher (``max``) or lower (``min``) is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from analysis.metrics.mig import compute_mig, mig_from_codes

__all__ = ["METRICS", "Metric", "metric_key_modes", "compute_mig", "mig_from_codes"]


@dataclass(frozen=True)
class Metric:
    """A metric of the suite: its sampler wrapper and its result keys with their directions."""

    compute: Callable[..., dict[str, float]]
    keys: dict[str, Literal["min", "max"]]


METRICS: dict[str, Metric] = {
    "mig": Metric(compute_mig, {"mig": "max"}),
}


def metric_key_modes(names: list[str] | None = None) -> dict[str, str]:
    """Result key -> ``"min"``/``"max"`` for the named metrics (all metrics when None)."""
    chosen = METRICS if names is None else {n: METRICS[n] for n in names}
    return {key: mode for metric in chosen.values() for key, mode in metric.keys.items()}
