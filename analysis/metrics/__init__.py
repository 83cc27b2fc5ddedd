"""Disentanglement metrics, one module each, as disentanglement_lib defines them.

``METRICS`` maps the names a study spec uses (``evaluation.metrics``) to a :class:`Metric`:
its sampler wrapper ``compute(dataset, representation_fn, *, random_state, num_train) -> dict``
and the result keys it returns, each with whether higher (``max``) or lower (``min``) is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from collections.abc import Sequence
from typing import Callable, Literal

from analysis.metrics.beta_vae import compute_beta_vae
from analysis.metrics.dci import compute_dci
from analysis.metrics.factor_vae import compute_factor_vae
from analysis.metrics.gaussian_tc import compute_gaussian_tc
from analysis.metrics.mig import compute_mig, mig_from_codes
from analysis.metrics.modularity_explicitness import compute_modularity_explicitness
from analysis.metrics.sap import compute_sap
from analysis.metrics.sample_mmd import compute_sample_mmd

__all__ = [
    "METRICS",
    "Metric",
    "metric_key_modes",
    "metric_mode",
    "resolve_modes",
    "compute_beta_vae",
    "compute_dci",
    "compute_factor_vae",
    "compute_gaussian_tc",
    "compute_mig",
    "compute_modularity_explicitness",
    "compute_sap",
    "compute_sample_mmd",
    "mig_from_codes",
]


@dataclass(frozen=True)
class Metric:
    """A metric of the suite: its sampler wrapper and its result keys with their directions.

    ``kind="ground_truth"``: ``compute(dataset, representation_fn, *, random_state, num_train)``
    scores codes against known factors. ``kind="samples"``: ``compute(images, sample_fn, *,
    random_state)`` compares held-out images ``(N, ...)`` with ``sample_fn(num, random_state)``,
    the model's samples (sample quality, for VAEs and GANs alike).
    """

    compute: Callable[..., dict[str, float]]
    keys: dict[str, Literal["min", "max"]]
    kind: Literal["ground_truth", "samples"] = "ground_truth"


_DCI_KEYS = {k: "max" for k in ("dci_disentanglement", "dci_completeness", "dci_informativeness_train",
                                  "dci_informativeness_test")}

METRICS: dict[str, Metric] = {
    "mig": Metric(compute_mig, {"mig": "max"}),
    "sap": Metric(compute_sap, {"sap": "max"}),
    "dci": Metric(compute_dci, _DCI_KEYS),  # the defined GradientBoostingClassifier()
    "dci_fast": Metric(partial(compute_dci, fast=True), _DCI_KEYS),  # see dci.py for its agreement
    "factor_vae": Metric(compute_factor_vae, {"factor_vae": "max", "factor_vae_train_accuracy": "max"}),
    "beta_vae": Metric(compute_beta_vae, {"beta_vae": "max", "beta_vae_train_accuracy": "max"}),
    "modularity_explicitness": Metric(
        compute_modularity_explicitness, {"modularity": "max", "explicitness_train": "max", "explicitness_test": "max"}
    ),
    "gaussian_tc": Metric(compute_gaussian_tc, {"gaussian_tc": "min"}),  # unsupervised; 0 = independent
    # Sample quality of VAEs and GANs alike: kernel MMD^2 of samples vs held-out images (lower is better).
    "sample_mmd": Metric(compute_sample_mmd, {"sample_mmd": "min"}, kind="samples"),
}


def metric_key_modes(names: list[str] | None = None) -> dict[str, str]:
    """Result key -> ``"min"``/``"max"`` for the named metrics (all metrics when None)."""
    chosen = METRICS if names is None else {n: METRICS[n] for n in names}
    return {key: mode for metric in chosen.values() for key, mode in metric.keys.items()}


def metric_mode(metric: str) -> Literal["min", "max"]:
    """Whether a reported metric is better low or high (``val_elbo``, ``mig`` high; losses low).

    Raises:
        KeyError: If the name follows no known convention.
    """
    known = metric_key_modes()
    if metric in known:
        return known[metric]
    if metric.endswith(("_loss", "_kl", "_mae", "_mse", "_nll", "_mmd", "_fd")):
        return "min"
    if metric.endswith(("_elbo", "_accuracy", "_auc")):
        return "max"
    raise KeyError(f"no known direction for metric {metric!r}")


def resolve_modes(metrics: Sequence[str], modes: Sequence[str] | None) -> list[str]:
    """``modes`` checked against ``metrics``, or each metric's direction from its name.

    Raises:
        ValueError: If ``modes`` has the wrong length or a value other than min/max.
        KeyError: If ``modes`` is None and a metric's name has no known direction.
    """
    if modes is None:
        return [metric_mode(m) for m in metrics]
    modes = list(modes)
    if len(modes) != len(metrics) or any(m not in ("min", "max") for m in modes):
        raise ValueError(f"`modes` must hold one of 'min'/'max' per metric, but got (metrics={list(metrics)}, "
                         f"modes={modes})")
    return modes
