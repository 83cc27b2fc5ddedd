"""Disentanglement metrics, one module each, as disentanglement_lib defines them.

``METRICS`` maps the names a study spec uses (``evaluation.metrics``) to a :class:`Metric`:
its sampler wrapper ``compute(dataset, representation_fn, *, random_state, num_train) -> dict``
(``Metric.score`` adds the held-out size, ``num_test``, under the metric's own keyword) and the
result keys it returns, each with whether higher (``max``) or lower (``min``) is better. Two
kinds score something else than a trial's codes against factors: ``labels`` (``probe``: a data
label column, during the trial) and ``study`` (``udr``: the seeds of each configuration, after
every trial ended).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Literal

import numpy as np

from analysis.metrics.beta_vae import compute_beta_vae
from analysis.metrics.dci import compute_dci
from analysis.metrics.factor_vae import compute_factor_vae
from analysis.metrics.gaussian_tc import compute_gaussian_tc
from analysis.metrics.mig import compute_mig, mig_from_codes
from analysis.metrics.modularity_explicitness import compute_modularity_explicitness
from analysis.metrics.probe import compute_probe
from analysis.metrics.sample_mmd import compute_sample_mmd
from analysis.metrics.sap import compute_sap
from analysis.metrics.udr import compute_udr, udr_from_codes

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
    "compute_probe",
    "compute_sap",
    "compute_sample_mmd",
    "compute_udr",
    "mig_from_codes",
    "udr_from_codes",
]


@dataclass(frozen=True)
class Metric:
    """A metric of the suite: its sampler wrapper and its result keys with their directions.

    ``kind="ground_truth"``: ``compute(dataset, representation_fn, *, random_state, num_train)``
    scores codes against known factors. ``kind="samples"``: ``compute(images, sample_fn, *,
    random_state)`` compares held-out images ``(N, ...)`` with ``sample_fn(num, random_state)``,
    the model's samples (sample quality, for VAEs and GANs alike). ``kind="labels"``:
    ``compute(images, labels, representation_fn, *, random_state)`` scores codes of held-out
    images against a label column of the same rows (``evaluation.probe_label``). ``kind="study"``:
    ``compute(trials, info, *, random_state, study) -> trials`` with the keys as new columns,
    computed once every trial ended (the per-trial evaluation skips it).

    ``scores_factors``: whether the score relates the codes to the factors' values (MIG, SAP, DCI,
    modularity and explicitness predict or bin factors; the beta-VAE and FactorVAE scores tell which
    factor was held fixed). Such a metric is undefined (or meaningless) when every factor is constant
    in the scored rows; ``gaussian_tc`` only draws observations through the factors and scores the
    codes alone.
    """

    compute: Callable[..., Any]
    keys: dict[str, Literal["min", "max"]]
    kind: Literal["ground_truth", "samples", "labels", "study"] = "ground_truth"
    scores_factors: bool = True  # ground-truth metrics: needs at least one factor that varies
    # The keyword of ``compute`` that sizes its held-out sample (disentanglement_lib's names:
    # ``num_eval`` for the beta-VAE and FactorVAE scores, ``num_test`` for DCI, SAP, modularity);
    # None when the metric scores a single sample.
    test_size: str | None = None

    def score(self, dataset, representation_fn, *, random_state: np.random.Generator, num_train: int,
              num_test: int | None = None) -> dict[str, float]:
        """``compute`` of a ground-truth metric with the study's sample sizes.

        Args:
            dataset (datasets.base.GroundTruthData): Ground-truth data (``sample_factors``,
                ``sample_observations_from_factors``).
            representation_fn (Callable[[numpy.ndarray], numpy.ndarray]): ``(num, ...) float32 ->
                (num, latent_dim)`` codes.
            random_state: The generator every draw comes from.
            num_train: Samples the metric fits or scores on (``evaluation.num_train``).
            num_test: Held-out samples it scores on, where it has such a sample
                (``evaluation.num_test``); None keeps the metric's own default (5,000).

        Returns:
            The metric's result keys with their values.
        """
        sizes = {"num_train": num_train}
        if self.test_size is not None and num_test is not None:
            sizes[self.test_size] = num_test
        return self.compute(dataset, representation_fn, random_state=random_state, **sizes)


_DCI_KEYS = {k: "max" for k in ("dci_disentanglement", "dci_completeness", "dci_informativeness_train",
                                  "dci_informativeness_test")}

METRICS: dict[str, Metric] = {
    "mig": Metric(compute_mig, {"mig": "max"}),
    "sap": Metric(compute_sap, {"sap": "max"}, test_size="num_test"),
    "dci": Metric(compute_dci, _DCI_KEYS, test_size="num_test"),  # the defined GradientBoostingClassifier()
    "dci_fast": Metric(partial(compute_dci, fast=True), _DCI_KEYS, test_size="num_test"),  # see dci.py
    "factor_vae": Metric(compute_factor_vae, {"factor_vae": "max", "factor_vae_train_accuracy": "max"},
                         test_size="num_eval"),
    "beta_vae": Metric(compute_beta_vae, {"beta_vae": "max", "beta_vae_train_accuracy": "max"}, test_size="num_eval"),
    "modularity_explicitness": Metric(
        compute_modularity_explicitness, {"modularity": "max", "explicitness_train": "max", "explicitness_test": "max"},
        test_size="num_test",
    ),
    # Unsupervised: total correlation of the codes, 0 = independent; the factors' values are not scored.
    "gaussian_tc": Metric(compute_gaussian_tc, {"gaussian_tc": "min"}, scores_factors=False),
    # Sample quality of VAEs and GANs alike: kernel MMD^2 of samples vs held-out images (lower is better).
    "sample_mmd": Metric(compute_sample_mmd, {"sample_mmd": "min"}, kind="samples", scores_factors=False),
    # A label the model never saw (jets' y), read off the latent means by a logistic regression.
    "probe": Metric(compute_probe, {"probe_auc": "max", "probe_accuracy": "max"}, kind="labels",
                    scores_factors=False),
    # Unsupervised: agreement between the seeds of a configuration, after all trials (udr.py).
    "udr": Metric(compute_udr, {"udr": "max"}, kind="study", scores_factors=False),
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
