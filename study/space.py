"""From a spec's search space to Ray Tune's param space and a seeded OptunaSearch.

Imports Ray: import it only after :mod:`study.run` has set up Ray's environment.

Every algorithm is an Optuna sampler behind Tune's ``OptunaSearch``: ``tpe``
(TPESampler), ``random`` (RandomSampler), ``grid`` (GridSampler over the categorical
choices) and ``nsga2`` (NSGAIISampler). Repeats of a configuration come from
:class:`RepeatSearcher`, which runs each suggested configuration ``repeats`` times, sets
``__trial_index__`` (the repeat index) in each trial's own config, and tells the searcher the
mean of each objective metric over the repeats: one Optuna trial per configuration.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.journal import StudyJournal
from study.params import FAMILY_KEY, CategoricalParam, FixedParam, FloatParam, IntParam, SpaceEntry
from study.spec import StudySpec
from trainables.trial import REPEAT_KEY

__all__ = ["param_space", "build_searcher", "num_trials", "RepeatSearcher", "ConditionalSpace", "REPEATS_FILE"]

REPEATS_FILE = "repeats-state.json"  # RepeatSearcher's groups of repeats, in the study directory


def param_space(spec: StudySpec) -> dict[str, Any]:
    """Tune's param space: a Tune domain per searched parameter, fixed values as constants; empty
    when families have parameters of their own (the searcher's define-by-run space proposes every
    value then, :class:`ConditionalSpace`)."""
    if spec.conditional:
        return {}
    space: dict[str, Any] = {}
    for entry in spec.entries:
        name, p = entry.key, entry.param
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


class ConditionalSpace:
    """Optuna's define-by-run search space of a study whose families have parameters of their own:
    each trial's family is drawn first, then the shared parameters and that family's own (named
    ``family.field``, so two families' ``beta`` are two parameters); fixed values are returned as
    constants. Sampled conditionally by any Optuna sampler through ``OptunaSearch(space=...)``.

    Args:
        entries: The spec's flattened search space (:attr:`study.spec.StudySpec.entries`).
        families: The searched families, in the spec's order.
    """

    def __init__(self, entries: list[SpaceEntry], families: list[str]):
        self.entries = list(entries)
        self.families = list(families)

    def __call__(self, trial) -> dict[str, Any]:
        family = trial.suggest_categorical(FAMILY_KEY, self.families)
        constants: dict[str, Any] = {}
        for entry in self.entries:
            if entry.key == FAMILY_KEY or not entry.applies(family):
                continue
            p = entry.param
            if isinstance(p, FixedParam):
                constants[entry.key] = p.value
            elif isinstance(p, FloatParam):
                trial.suggest_float(entry.key, p.low, p.high, log=p.log)
            elif isinstance(p, IntParam):
                trial.suggest_int(entry.key, p.low, p.high, log=p.log)
            else:
                trial.suggest_categorical(entry.key, p.choices)
        return constants


def build_searcher(spec: StudySpec, journal: StudyJournal | None = None):
    """A seeded ``OptunaSearch`` wrapped in a :class:`RepeatSearcher` (``repeats`` runs per configuration).

    Args:
        spec: The study spec.
        journal: The study's Optuna journal, whose live local file keeps the Optuna study (named
            after the spec), so that ``optuna-dashboard JOURNAL`` shows it live and
            ``optuna.load_study`` reads it; None keeps it in memory.
    """
    seed = spec.seed
    points = None
    if spec.search.algorithm == "grid" and spec.conditional:
        # Optuna's GridSampler cannot condition on the family: every point of the union of the
        # families' grids is enqueued instead, so the sampler is never asked.
        points = spec.grid_points()[: num_configurations(spec)]
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif spec.search.algorithm == "grid":
        grid = {e.key: e.param.choices for e in spec.entries if isinstance(e.param, CategoricalParam)}
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
    storage = None
    if journal is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(journal.local)))
    space = ConditionalSpace(spec.entries, spec.family_names) if spec.conditional else None
    searcher = OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler, study_name=spec.name,
                            storage=storage, points_to_evaluate=points)
    return RepeatSearcher(searcher, repeats=spec.search.repeats, metrics=objective.metrics, journal=journal)


class RepeatSearcher(Searcher):
    """Runs each configuration of an inner searcher ``repeats`` times with distinct repeat indices.

    Each trial's config carries its repeat index as ``__trial_index__`` (the trial seed derives
    from it). When every repeat of a configuration has completed, the inner searcher is told the
    mean of each objective metric over the repeats that reported it (NaN-free), or an error when
    none did. The groups are this class's own state, saved beside the inner searcher's as JSON.

    Args:
        searcher: The inner searcher (``OptunaSearch``).
        repeats: Trials per configuration, >= 1.
        metrics: The objective metric names (one, or several for a multi-objective study).
        journal: The study's Optuna journal, copied into the study each time the search state is
            saved (so the stored journal holds every trial the saved state knows); None: not kept.
    """

    def __init__(self, searcher: Searcher, *, repeats: int, metrics: list[str], journal: StudyJournal | None = None):
        self.searcher = searcher
        self.repeats = int(repeats)
        self.metrics = list(metrics)
        self.journal = journal
        self.groups: dict[str, dict[str, Any]] = {}  # first trial id -> {"config", "members", "scores"}
        self.group_of: dict[str, str] = {}  # trial id -> first trial id of its configuration
        self.current: str | None = None
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        group = self.groups.get(self.current) if self.current is not None else None
        if group is None or len(group["members"]) >= self.repeats:
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self.current = trial_id
            group = self.groups[trial_id] = {"config": copy.deepcopy(config), "members": [], "scores": {}}
        group["members"].append(trial_id)
        self.group_of[trial_id] = self.current
        return {**copy.deepcopy(group["config"]), REPEAT_KEY: len(group["members"]) - 1}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        first = self.group_of.get(trial_id)
        if first is None:
            return
        group = self.groups[first]
        values = [result.get(m) for m in self.metrics] if result and not error else None
        finite = values is not None and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        group["scores"][trial_id] = [float(v) for v in values] if finite else None
        if len(group["scores"]) < self.repeats:
            return
        good = [v for v in group["scores"].values() if v is not None]
        if not good:
            self.searcher.on_trial_complete(first, result=None, error=True)
            return
        means = np.mean(np.array(good, dtype=float), axis=0)  # (num_metrics,)
        self.searcher.on_trial_complete(first, result=dict(zip(self.metrics, means.tolist())))

    def _state_path(self, checkpoint_path: str) -> Path:
        # Tune saves to a temporary name and renames it; our JSON goes beside it under a fixed name.
        return Path(checkpoint_path).parent / REPEATS_FILE

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)
        if self.journal is not None:
            self.journal.push()
        path = self._state_path(checkpoint_path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.get_state()))
        tmp.replace(path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
        path = self._state_path(checkpoint_path)
        if path.is_file():
            state = json.loads(path.read_text())
            self.groups, self.group_of, self.current = state["groups"], state["group_of"], state["current"]

    def get_state(self) -> dict:
        return {"groups": self.groups, "group_of": self.group_of, "current": self.current}

    def set_state(self, state: dict) -> None:
        self.groups, self.group_of, self.current = state["groups"], state["group_of"], state["current"]
