"""Hyperparameter importance per objective, from a study's trials table, with Optuna's evaluators.

The trials table (``trials.parquet``) is turned into an in-memory Optuna study per objective:
one completed Optuna trial per configuration (the tuple of searched parameter values), whose
value is the mean of the objective over that configuration's finished repeats, and whose
distributions are inferred from the table (see :func:`infer_distributions`). Averaging over
repeats first keeps seed noise out of the ranking (the seed share itself is measured by
:mod:`analysis.variance`) and gives every configuration the same weight, whatever its number of
repeats; a study without repeats is unchanged by it.

Two evaluators:

* ``"ped_anova"`` (the default): PED-ANOVA, the Pearson divergence between the distribution of
  each parameter among the top-quantile configurations (the best 10% by default) and among all
  of them. It honours the direction: "top" means highest for ``max`` and lowest for ``min``.
* ``"fanova"``: functional ANOVA, the share of the variance of a random-forest surrogate of the
  objective explained by each parameter alone. Variance is the same for ``y`` and ``-y``, so the
  direction does not change it (it is still passed to the study).

References:
    Watanabe, Bansal & Hutter 2023, "PED-ANOVA: Efficiently Quantifying Hyperparameter
    Importance in Arbitrary Subspaces", IJCAI, arXiv:2304.10255 (the Pearson divergence between
    the top-quantile and the whole-space parameter distributions).
    Hutter, Hoos & Leyton-Brown 2014, "An Efficient Approach for Assessing Hyperparameter
    Importance", ICML, PMLR 32(1):754-762 (functional ANOVA over a random forest).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

__all__ = ["EVALUATORS", "MIN_CONFIGURATIONS", "Importances", "infer_distributions", "param_importances",
           "importance_table", "importance_markdown", "single_parameter_scopes", "NOT_INFORMATIVE",
           "not_informative_sentence"]

EVALUATORS = ("ped_anova", "fanova")
# Two configurations rank the parameters by a single comparison; three is the least that a
# top-quantile (PED-ANOVA) or a variance split (fANOVA) can say anything about.
MIN_CONFIGURATIONS = 3


@dataclass
class Importances:
    """The importances of the searched parameters for one objective.

    Attributes:
        objective: The metric column.
        mode: ``"min"`` or ``"max"``.
        evaluator: ``"ped_anova"`` or ``"fanova"``.
        values: Parameter -> importance in [0, 1], summing to 1 over the parameters (constant
            parameters get 0 and are left out of the evaluation), sorted most important first;
            empty when ``reason`` is set.
        n_configurations: Configurations with a finished, non-NaN value of the objective.
        n_trials: Finished trials with a non-NaN value behind them.
        reason: Why no importance was computed (too few configurations, a constant objective,
            no varying parameter), or None.
        notes: Facts worth printing with the figures (constant parameters, evaluator warnings).
    """

    objective: str
    mode: str
    evaluator: str
    values: dict[str, float]
    n_configurations: int
    n_trials: int
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == "TERMINATED"] if "status" in trials else trials


def _native(value: object) -> object:
    """A table cell as a value an Optuna categorical accepts (None, bool, int, float, str)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # tuples (hidden widths), lists and the like: their text is their identity


def infer_distributions(configs: pd.DataFrame, params: Sequence[str], *, log_params: Collection[str] = ()) -> dict:
    """Optuna distributions spanning the values each parameter takes in ``configs``.

    Numeric columns become ``IntDistribution`` (integer dtype) or ``FloatDistribution`` over
    ``[min, max]``, linear unless named in ``log_params``; booleans, strings and any other
    values become a ``CategoricalDistribution`` of the sorted distinct values (as text when
    they are not Optuna's scalar types).

    Args:
        configs: One row per configuration; ``params`` columns without NaN.
        params: The searched parameter columns.
        log_params: Numeric parameters whose distribution is log-scaled (all values > 0).

    Returns:
        Parameter name -> ``optuna.distributions.BaseDistribution``.

    Raises:
        ValueError: If a parameter in ``log_params`` is not numeric or has a value <= 0.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions = {}
    for param in params:
        column = configs[param]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        log = param in log_params
        if log and (not numeric or (column <= 0).any()):
            raise ValueError(f"log-scaled parameter {param!r} must be numeric and > 0, but got values "
                             f"{sorted(map(str, column.unique()))[:5]}")
        if numeric and pd.api.types.is_integer_dtype(column):
            distributions[param] = IntDistribution(int(column.min()), int(column.max()), log=log)
        elif numeric:
            distributions[param] = FloatDistribution(float(column.min()), float(column.max()), log=log)
        else:
            choices = sorted({_native(v) for v in column}, key=lambda v: (type(v).__name__, v))
            distributions[param] = CategoricalDistribution(choices)
    return distributions


@contextmanager
def _quiet_optuna():
    """Optuna's per-study INFO lines off, restored afterwards; its warnings are recorded."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        optuna.logging.set_verbosity(level)


def _evaluator(name: str, seed: int):
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if name == "ped_anova":
        return PedAnovaImportanceEvaluator()  # target_quantile 0.1: the best tenth against all
    return FanovaImportanceEvaluator(seed=seed)


def param_importances(
    trials: pd.DataFrame,
    params: Sequence[str],
    objective: str,
    mode: Literal["min", "max"],
    *,
    evaluator: Literal["ped_anova", "fanova"] = "ped_anova",
    seed: int = 0,
    log_params: Collection[str] = (),
    min_configurations: int = MIN_CONFIGURATIONS,
) -> Importances:
    """The importance of each searched parameter for one objective.

    Only finished trials (status ``TERMINATED`` when a status column exists) with a non-NaN
    objective and non-NaN parameters count; their objective is averaged over the repeats of
    each configuration (the module docstring says why), and each configuration becomes one
    completed trial of an in-memory Optuna study of direction ``mode``.

    Args:
        trials: The trials table, one row per trial.
        params: The searched parameter columns (not ``repeat``).
        objective: The metric column.
        mode: ``"max"`` if higher is better, ``"min"`` if lower is.
        evaluator: ``"ped_anova"`` or ``"fanova"``.
        seed: Seed of fANOVA's random forest (PED-ANOVA is deterministic and ignores it).
        log_params: Numeric parameters whose distribution is log-scaled (see
            :func:`infer_distributions`); PED-ANOVA's Parzen estimators then work in log space.
        min_configurations: Fewest configurations to evaluate (>= 2).

    Returns:
        The :class:`Importances`. A single varying parameter gets importance 1.0 without an
        evaluator; fewer than ``min_configurations`` configurations, a constant objective or
        no varying parameter give empty ``values`` and a ``reason``.

    Raises:
        KeyError: If a parameter or the objective is not a column of ``trials``.
        ValueError: If ``mode``, ``evaluator`` or ``min_configurations`` is out of range, or
            ``params`` is empty or holds ``repeat``.

    References:
        Watanabe et al. 2023, arXiv:2304.10255 (PED-ANOVA); Hutter et al. 2014, ICML (fANOVA).
    """
    params = _checked_arguments(trials, params, objective, mode, evaluator, min_configurations)
    done = _finished(trials).dropna(subset=[*params, objective])
    configs = _configuration_means(done, params, objective)
    result = Importances(objective, mode, evaluator, {}, len(configs), len(done))
    result.reason = _too_few_or_constant(configs, objective, min_configurations)
    if result.reason is not None:
        return result
    constant = [p for p in params if configs[p].nunique() == 1]
    varying = [p for p in params if p not in constant]
    if constant:
        result.notes.append(f"constant over the finished trials (importance 0): {', '.join(constant)}")
    if not varying:
        result.reason = f"no searched parameter varies over the finished trials ({', '.join(params)})"
        return result
    values, notes = _evaluate(configs, varying, objective, mode, evaluator, seed, log_params)
    result.notes += notes
    result.values = {**values, **{p: 0.0 for p in constant}}
    return result


def _checked_arguments(trials: pd.DataFrame, params: Sequence[str], objective: str, mode: str, evaluator: str,
                       min_configurations: int) -> list[str]:
    """``params`` as a list, after the checks whose errors :func:`param_importances` documents."""
    if mode not in ("min", "max") or evaluator not in EVALUATORS or min_configurations < 2:
        raise ValueError(f"`mode` in ('min', 'max'), `evaluator` in {EVALUATORS} and `min_configurations >= 2` "
                         f"must hold, but got (mode={mode!r}, evaluator={evaluator!r}, "
                         f"min_configurations={min_configurations})")
    params = list(params)
    if not params or "repeat" in params:
        raise ValueError(f"`params` must name the searched parameters (not `repeat`), but got {params}")
    missing = [c for c in [*params, objective] if c not in trials]
    if missing:
        raise KeyError(f"column(s) {missing} not in the trials table; it has {list(trials.columns)}")
    return params


def _too_few_or_constant(configs: pd.DataFrame, objective: str, min_configurations: int) -> str | None:
    """Why the configurations cannot rank parameters (fewer than ``min_configurations``, or one
    value of ``objective`` for all), or None."""
    if len(configs) < min_configurations:
        return (f"{len(configs)} configuration(s) with a finished {objective}; importance needs at least "
                f"{min_configurations}")
    if configs[objective].nunique() == 1:
        return f"{objective} is the same ({configs[objective].iloc[0]:.4g}) for every configuration"
    return None


def _configuration_means(done: pd.DataFrame, params: list[str], objective: str) -> pd.DataFrame:
    """One row per configuration (the ``params`` values, as Optuna-ready cells) with the mean
    ``objective`` over its trials in ``done`` (finished, no NaN), sorted by the parameters."""
    keyed = done[params].apply(lambda col: col.map(_native)) if len(done) else done[params]
    return (keyed.assign(**{objective: done[objective].astype(float)})
            .groupby(params, sort=True, dropna=False)[objective].mean().reset_index())


def _evaluate(configs: pd.DataFrame, varying: list[str], objective: str, mode: str, evaluator: str, seed: int,
              log_params: Collection[str]) -> tuple[dict[str, float], list[str]]:
    """Optuna's importances of the ``varying`` parameters over an in-memory study of ``configs``.

    Returns:
        ``(values, notes)``: parameter -> importance, most important first (ties by name), and
        Optuna's warnings about importance (its "experimental" notice left out). A single
        varying parameter gets 1.0 without an evaluator.
    """
    import optuna

    if len(varying) == 1:
        return {varying[0]: 1.0}, []
    distributions = infer_distributions(configs, varying, log_params=log_params)
    with _quiet_optuna() as caught:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for row in configs.to_dict("records"):
            study.add_trial(optuna.trial.create_trial(
                value=float(row[objective]), params={p: row[p] for p in varying}, distributions=distributions))
        # target=None: the study's own values and direction (PED-ANOVA reads "better" from the
        # direction; with a target it would assume lower is better).
        values = optuna.importance.get_param_importances(study, evaluator=_evaluator(evaluator, seed), params=varying)
    experimental = optuna.exceptions.ExperimentalWarning  # PED-ANOVA's "experimental" notice in Optuna 3.6-3.x
    notes = sorted({f"optuna: {w.message}" for w in caught
                    if "importance" in str(w.message).lower() and not issubclass(w.category, experimental)})
    ordered = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return {p: float(v) for p, v in ordered}, notes


def importance_table(
    trials: pd.DataFrame,
    params: Sequence[str],
    objectives: Sequence[str],
    modes: Sequence[str] | None = None,
    *,
    evaluator: Literal["ped_anova", "fanova"] = "ped_anova",
    seed: int = 0,
    log_params: Collection[str] = (),
) -> pd.DataFrame:
    """A tidy table of :func:`param_importances` for each objective.

    Args:
        trials: The trials table, one row per trial.
        params: The searched parameter columns.
        objectives: Metric columns, one importance ranking each.
        modes: ``"min"``/``"max"`` per objective; None: from each metric's name
            (``study.spec.metric_mode``: losses min, ``val_elbo`` and ``mig`` max).
        evaluator: ``"ped_anova"`` or ``"fanova"``.
        seed: Seed of fANOVA's random forest.
        log_params: Numeric parameters given log-scaled distributions.

    Returns:
        Columns ``scope`` (``"all trials"``, or ``"family NAME"`` when families have parameters of
        their own: importances are then ranked within each family, over the parameters its trials
        have), ``objective``, ``mode``, ``param``, ``importance`` (float in [0, 1], summing
        to 1 per objective and scope), ``rank`` (1 = most important), ``n_configurations``, ``n_trials``,
        ``evaluator``; one row per objective and parameter, objectives in the order given.
        Objectives that could not be evaluated have no rows; ``table.attrs["skipped"]`` maps
        each of them to its reason and ``table.attrs["notes"]`` each objective to its notes.

    Raises:
        KeyError: If a column is missing, or ``modes`` is None and a metric has no known direction.
        ValueError: As :func:`param_importances`, or if ``modes`` does not hold one of
            min/max per objective.
    """
    from analysis.metrics import resolve_modes

    modes = resolve_modes(objectives, modes)
    columns = ["scope", "objective", "mode", "param", "importance", "rank", "n_configurations", "n_trials",
               "evaluator"]
    rows, skipped, notes = [], {}, {}
    for scope, scoped, scope_params in _scopes(trials, list(params)):
        for objective, mode in zip(objectives, modes):
            result = param_importances(scoped, scope_params, objective, mode, evaluator=evaluator, seed=seed,
                                       log_params=[p for p in log_params if p in scope_params])
            label = objective if scope == ALL_TRIALS else f"{objective} ({scope})"
            if result.notes:
                notes[label] = result.notes
            if result.reason is not None:
                skipped[label] = result.reason
                continue
            for rank, (param, value) in enumerate(result.values.items(), start=1):
                rows.append({"scope": scope, "objective": objective, "mode": mode, "param": param,
                             "importance": value, "rank": rank, "n_configurations": result.n_configurations,
                             "n_trials": result.n_trials, "evaluator": evaluator})
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["skipped"] = skipped
    table.attrs["notes"] = notes
    return table


ALL_TRIALS = "all trials"


def _scopes(trials: pd.DataFrame, params: list[str]) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """``(scope, trials, params)`` to rank importances over: all trials, or, when some parameters
    apply to some trials only (a family's own parameters, empty in the other families' rows), each
    group of trials that share the same parameters (a family), over the parameters they have."""
    done = _finished(trials)
    present = done[params].notna() if len(done) else pd.DataFrame(columns=params, dtype=bool)
    if bool(present.all().all()):
        return [(ALL_TRIALS, trials, params)]
    scopes = []
    for pattern in sorted({tuple(row) for row in present.itertuples(index=False)}, reverse=True):
        chosen = [p for p, has in zip(params, pattern) if has]
        rows = done[(present[params] == list(pattern)).all(axis=1)]
        family = rows["family"].unique() if "family" in rows else []
        if len(family) == 1:  # within one family, the family is not a parameter
            scopes.append((f"family {family[0]}", rows, [p for p in chosen if p != "family"]))
        else:
            scopes.append((f"trials with {', '.join(chosen)}", rows, chosen))
    return scopes


NOT_INFORMATIVE = "importance is not informative with a single searched parameter"


def not_informative_sentence(param: str) -> str:
    """What the report says instead of ranking ``param`` alone (importance 1 by construction)."""
    return (f"{NOT_INFORMATIVE[0].upper()}{NOT_INFORMATIVE[1:]} ({param}): ranked alone it has importance 1 "
            "by construction.")


def single_parameter_scopes(table: pd.DataFrame) -> dict[str, str]:
    """Scopes of an :func:`importance_table` that rank a single parameter, each with that parameter.

    A parameter ranked alone has importance 1 by construction, whatever the objective does: such
    a ranking says nothing (whether its values matter beyond seed noise is for
    :mod:`analysis.variance`), so the report prints :data:`NOT_INFORMATIVE` instead of it.
    """
    scopes = table["scope"] if "scope" in table else pd.Series(ALL_TRIALS, index=table.index)
    params = table.groupby(scopes)["param"].unique()
    return {scope: str(names[0]) for scope, names in params.items() if len(names) == 1}


def importance_markdown(table: pd.DataFrame) -> str:
    """:func:`importance_table` as markdown: one row per parameter, one column per objective.

    Parameters are ordered by their importance for the first objective; cells hold the
    importance to 3 decimals and its rank, e.g. ``0.712 (1)``; ``n/a`` where an objective did
    not rank the parameter. Importances ranked within a family (a conditional search space) have
    one table per scope. A scope with a single parameter gets a sentence instead of a table
    (:func:`single_parameter_scopes`), and an empty table a one-line note.
    """
    if table.empty:
        return "No importance computed.\n"
    scopes = list(dict.fromkeys(table["scope"])) if "scope" in table else [ALL_TRIALS]
    single = single_parameter_scopes(table)
    parts = []
    for scope in scopes:
        part = table[table["scope"] == scope] if "scope" in table else table
        heading = "" if scopes == [ALL_TRIALS] else f"Within {scope}:\n\n"
        if scope in single:
            parts.append(heading + not_informative_sentence(single[scope]) + "\n")
        else:
            parts.append(heading + _markdown_grid(part))
    return "\n".join(parts)


def _markdown_grid(table: pd.DataFrame) -> str:
    objectives = list(dict.fromkeys(table["objective"]))
    first = table[table["objective"] == objectives[0]].sort_values("rank")
    params = list(dict.fromkeys([*first["param"], *table["param"]]))
    header = ["param"] + [f"{o} ({table.loc[table['objective'] == o, 'mode'].iloc[0]})" for o in objectives]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    cells = {(r["objective"], r["param"]): f"{r['importance']:.3f} ({r['rank']})" for r in table.to_dict("records")}
    for param in params:
        lines.append("| " + " | ".join([param] + [cells.get((o, param), "n/a") for o in objectives]) + " |")
    return "\n".join(lines) + "\n"
