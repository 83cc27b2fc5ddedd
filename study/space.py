"""From a spec's search space to Ray Tune's param space and a seeded OptunaSearch.

Imports Ray: import it only after :mod:`study.run` has set up Ray's environment.

Every algorithm is an Optuna sampler behind Tune's ``OptunaSearch``: ``tpe``
(TPESampler), ``random`` (RandomSampler), ``grid`` (GridSampler over the categorical
choices) and ``nsga2`` (NSGAIISampler). Repeats of a configuration come from Tune's
``Repeater``, which runs each suggested configuration ``repeats`` times, sets
``__trial_index__`` in the trial config, and tells the searcher the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

from study.spec import CategoricalParam, FixedParam, FloatParam, IntParam, StudySpec

__all__ = ["param_space", "build_searcher", "num_trials"]


def param_space(spec: StudySpec) -> dict[str, Any]:
    """Tune's param space: a Tune domain per searched parameter, fixed values as constants."""
    space: dict[str, Any] = {}
    for name, p in spec.search_space.items():
        if isinstance(p, FloatParam):
            space[name] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
        elif isinstance(p, IntParam):
            space[name] = tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)
        elif isinstance(p, CategoricalParam):
            space[name] = tune.choice(p.choices)
        elif isinstance(p, FixedParam):
            space[name] = p.value
    return space


def num_configurations(spec: StudySpec) -> int:
    """Configurations the searcher proposes: ``num_samples``, or the whole grid."""
    if spec.search.algorithm == "grid":
        return spec.search.num_samples or spec.grid_size
    return spec.search.num_samples


def num_trials(spec: StudySpec) -> int:
    """Trials in the study: configurations times repeats."""
    return num_configurations(spec) * spec.search.repeats


def build_searcher(spec: StudySpec):
    """A seeded ``OptunaSearch`` wrapped in a ``Repeater`` (``repeats`` runs per configuration)."""
    seed = spec.seed
    if spec.search.algorithm == "grid":
        grid = {k: p.choices for k, p in spec.search_space.items() if isinstance(p, CategoricalParam)}
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
    elif spec.search.algorithm == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif spec.search.algorithm == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    objective = spec.objective
    metric = objective.metrics if objective.multi else objective.metrics[0]
    mode = objective.modes if objective.multi else objective.modes[0]
    searcher = OptunaSearch(metric=metric, mode=mode, sampler=sampler, seed=seed)
    repeater_cls = _MultiObjectiveRepeater if objective.multi else Repeater
    return repeater_cls(searcher, repeat=spec.search.repeats, set_index=True)


class _MultiObjectiveRepeater(Repeater):
    """Tune's ``Repeater`` for a list of metrics: tells the searcher each metric's mean."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs):
        if trial_id not in self._trial_id_to_group:
            return
        group = self._trial_id_to_group[trial_id]
        metrics = self.searcher.metric
        have = bool(result) and all(m in result for m in metrics)
        group.report(trial_id, [result[m] for m in metrics] if have else [np.nan] * len(metrics))
        if group.finished_reporting():
            scores = np.array(group.scores(), dtype=float)  # (repeats, num_metrics)
            means = np.nanmean(scores, axis=0)
            done = dict(zip(metrics, means.tolist())) if np.isfinite(means).all() else None
            self.searcher.on_trial_complete(group.primary_trial_id, result=done, **kwargs)
