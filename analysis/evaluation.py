"""The end-of-trial evaluation a study hands the training loop (the loop imports no metric).

:class:`Evaluator` computes the metrics of ``evaluation.metrics`` on a trained model: ground-truth
metrics (MIG, SAP, ...) score the model's codes of the held-out rows against their factors;
sample metrics (``sample_mmd``) compare the model's samples with held-out images; the ``probe``
scores the codes of held-out rows against their label column (``evaluation.probe_label``).
Study-level metrics (``udr``) compare the trials after they end and are skipped here. A metric that
cannot be computed raises :class:`MetricUnavailable`, so a trial never ends without a number it
promised (the spec refuses such a study before Ray starts; this is the guard behind it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from analysis.metrics import METRICS
from datasets.base import ArrayGroundTruthData
from trainables.protocol import representation_fn, supports
from trainables.trial import HeldOut

__all__ = ["Evaluator", "MetricUnavailable", "metric_requirement"]


class MetricUnavailable(ValueError):
    """A requested metric cannot be computed for this model or data; the message says why."""


def metric_requirement(name: str, *, has_factors: bool, model_cls: type,
                       varying_factors: int | None = None) -> str | None:
    """Why metric ``name`` cannot be computed for a family on a dataset, or None when it can.

    Args:
        name: A key of :data:`analysis.metrics.METRICS`.
        has_factors: Whether the dataset's held-out rows carry ground-truth factors.
        model_cls: The family's module class (its abilities are checked).
        varying_factors: Factors taking more than one value among the held-out rows, or None when
            not known (not checked). A metric that scores codes against factors
            (:attr:`~analysis.metrics.Metric.scores_factors`) needs at least one.

    Raises:
        KeyError: If ``name`` is not a metric of the suite.
    """
    metric = METRICS[name]
    if metric.kind == "samples":
        return None if supports(model_cls, "sample") else f"{name} needs model samples, and the family has no `sample`"
    if metric.kind == "ground_truth" and not has_factors:
        return f"{name} needs ground-truth factors, and the dataset has none"
    if metric.scores_factors and varying_factors == 0:
        return (f"{name} scores codes against ground-truth factors, and every ground-truth factor is constant in "
                "the held-out rows")
    if not supports(model_cls, "encode"):
        return f"{name} scores codes, and the family has no encoder (`encode`)"
    return None


@dataclass
class Evaluator:
    """``evaluate(model, device, held_out) -> {result key: float}`` for the trial loop.

    Attributes:
        metrics: Names from :data:`analysis.metrics.METRICS`.
        num_train: Samples each metric scores (``evaluation.num_train``).
        seed: The trial's seed; every metric draws from ``np.random.default_rng(seed)``.
        ground_truth: The held-out rows with their factors, or None when the data has none.
        num_test: Held-out samples of the metrics that score one (``evaluation.num_test``); None
            keeps each metric's default (5,000).
        probe_label: The held-out rows' label column the ``probe`` scores (``evaluation.probe_label``).
    """

    metrics: list[str]
    num_train: int
    seed: int
    ground_truth: ArrayGroundTruthData | None = field(default=None, repr=False)
    num_test: int | None = None
    probe_label: str | None = None

    def __call__(self, model: torch.nn.Module, device: torch.device, held_out: HeldOut) -> dict[str, float]:
        """Every per-trial metric requested of ``model`` (in eval mode, on ``device``).

        Args:
            model: The trained model.
            device: Where the model is.
            held_out: ``held_out(num)`` -> up to ``num`` validation images float32 ``(num, ...)``;
                ``held_out(num, column)`` -> that column of the same rows.

        Returns:
            Each metric's result keys (``mig``, ``sample_mmd``, ...) with their values.

        Raises:
            MetricUnavailable: If a metric cannot be computed (no factors, every factor constant,
                no encoder, no samples, no label column).
        """
        results: dict[str, float] = {}
        for name in self._per_trial:
            reason = metric_requirement(name, has_factors=self.ground_truth is not None, model_cls=type(model),
                                        varying_factors=self._varying_factors())
            if reason is not None:
                raise MetricUnavailable(f"evaluation.metrics: {reason}")
            metric = METRICS[name]
            rng = np.random.default_rng(self.seed)
            if metric.kind == "samples":
                results.update(metric.compute(held_out(self.num_train), _sampler(model), random_state=rng))
            elif metric.kind == "labels":
                images, labels = self._labelled(held_out)
                results.update(metric.compute(images, labels, representation_fn(model, device), random_state=rng))
            else:
                results.update(metric.score(self.ground_truth, representation_fn(model, device), random_state=rng,
                                            num_train=self.num_train, num_test=self.num_test))
        missing = [key for name in self._per_trial for key in METRICS[name].keys if key not in results]
        if missing:
            raise MetricUnavailable(f"evaluation.metrics: {missing[0]!r} was not produced")
        return results

    def _varying_factors(self) -> int | None:
        """Factors of :attr:`ground_truth` that take more than one value (None without ground truth)."""
        if self.ground_truth is None:
            return None
        factors = self.ground_truth.factors  # (N, num_factors)
        return int(sum(len(np.unique(factors[:, i])) > 1 for i in range(factors.shape[1])))


    @property
    def _per_trial(self) -> list[str]:
        """The requested metrics computed at the end of a trial (not the study-level ones)."""
        return [name for name in self.metrics if METRICS[name].kind != "study"]

    def _labelled(self, held_out: HeldOut) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``num_train`` held-out images and their ``probe_label`` column, row for row."""
        if self.probe_label is None:
            raise MetricUnavailable("evaluation.probe_label: the probe needs a label column of the data (e.g. y)")
        try:
            return held_out(self.num_train), held_out(self.num_train, self.probe_label)
        except KeyError:
            raise MetricUnavailable(f"evaluation.probe_label: the held-out rows have no column "
                                    f"{self.probe_label!r}") from None


def _sampler(model: torch.nn.Module) -> Callable[[int, np.random.Generator], np.ndarray]:
    """``(num, random_state) -> float32 (num, ...)`` samples of ``model`` as numpy."""

    def sample(num: int, random_state: np.random.Generator) -> np.ndarray:
        generator = torch.Generator().manual_seed(int(random_state.integers(2**31)))
        return model.sample(num, generator=generator).float().cpu().numpy()

    return sample
