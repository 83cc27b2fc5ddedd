"""The study as an instrument: report sections on what the search measured and how precisely.

Three questions a reader asks of a finished study before trusting its best configuration:

* which searched parameters mattered for each objective (importance table and bar figure,
  :mod:`analysis.importance`; with a single searched parameter, a sentence saying that its
  importance is not informative, instead of a ranking of one);
* which paths through the search space lead to good values (parallel coordinates of the first
  objective, :func:`analysis.plots.parallel_coordinates_figure`);
* whether configurations differ by more than the seed does (the seed share of each metric's
  variance, :mod:`analysis.variance`, with a warning sentence when it exceeds one half).

:func:`instrument_sections` returns them in the report's section format: ``("h2", title)``,
``("table", markdown)``, ``("text", paragraph)``, and ``(title, path)`` figures.

References:
    Watanabe et al. 2023, arXiv:2304.10255 (PED-ANOVA); Hutter et al. 2014, ICML (fANOVA);
    Locatello et al. 2019, arXiv:1811.12359 (seed variance of disentanglement metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from analysis import plots
from analysis.importance import importance_markdown, importance_table, not_informative_sentence, single_parameter_scopes
from analysis.tables import markdown_cell
from analysis.variance import CONFIDENCE, seed_noise_sentences, variance_markdown, variance_table

__all__ = ["instrument_sections"]

_EVALUATOR_NAMES = {"ped_anova": "PED-ANOVA", "fanova": "fANOVA"}
_EVALUATOR_TEXT = {
    "ped_anova": ("PED-ANOVA (Watanabe et al. 2023): how differently each parameter is distributed among the best "
                  "10% of configurations than among all of them; normalised to sum to 1 per objective."),
    "fanova": ("fANOVA (Hutter et al. 2014): the share of the variance of a random-forest model of the objective "
               "that each parameter explains alone; normalised to sum to 1 per objective."),
}


def _failure(part: str, err: Exception) -> tuple[str, str]:
    first = str(err).splitlines()[0] if str(err) else ""
    return ("text", markdown_cell(f"{part} skipped: {type(err).__name__}: {first[:300]}"))


def instrument_sections(
    trials: pd.DataFrame,
    params: Sequence[str],
    objectives: Sequence[str],
    modes: Sequence[str],
    out_dir: str | Path,
    *,
    importance: Literal["ped_anova", "fanova"] = "ped_anova",
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    num_bootstrap: int = 1000,
) -> tuple[list[tuple[str, str]], list[tuple[str, Path]]]:
    """Importance, parallel coordinates and seed-variance sections of a study's report.

    Writes into ``out_dir``: ``importance.csv`` and ``importance.png`` (one bar panel per
    objective), ``parallel_coordinates.png`` (the first objective), ``seed_variance.csv``. A
    part that fails is replaced by a one-line ``("text", ...)`` naming the error, so that the
    rest of the report is still written.

    Args:
        trials: The trials table, one row per trial (finished ones have status ``TERMINATED``).
        params: The searched parameter columns; ``trial_id``, ``repeat`` and columns absent
            from ``trials`` are left out.
        objectives: The study's objective metrics.
        modes: ``"min"``/``"max"`` per objective.
        out_dir: The report directory (must exist).
        importance: ``"ped_anova"`` or ``"fanova"``.
        metrics: Metrics of the seed-variance table; None: the objectives.
        seed: Seed of fANOVA's forest and of the bootstrap generator.
        num_bootstrap: Bootstrap replicates of the seed-share interval (>= 10).

    Returns:
        ``(sections, figures)``: markdown sections as ``(kind, body)`` with kind ``"h2"``,
        ``"table"`` or ``"text"``; figures as ``(title, path)``.

    Raises:
        ValueError: If ``modes`` does not hold one of min/max per objective, or ``importance``
            is not an evaluator name.
    """
    modes = list(modes)
    _check_arguments(objectives, modes, importance)
    out_dir = Path(out_dir)
    params = [p for p in params if p in trials and p not in ("trial_id", "repeat")]
    metrics = list(objectives if metrics is None else metrics)
    sections: list[tuple[str, str]] = [("h2", f"Hyperparameter importance ({_EVALUATOR_NAMES[importance]})")]
    figures: list[tuple[str, Path]] = []
    if not params:
        sections.append(("text", ("No searched parameter in the trials table: no importance, parallel coordinates "
                                  "or seed variance.")))
        return sections, figures
    for part in (_importance_part(trials, params, objectives, modes, out_dir, importance, seed),
                 _parallel_coordinates_part(trials, params, objectives[0], modes[0], out_dir),
                 _variance_part(trials, params, metrics, out_dir, seed, num_bootstrap)):
        sections += part[0]
        figures += part[1]
    return sections, figures


_Part = tuple[list[tuple[str, str]], list[tuple[str, Path]]]  # (sections, figures) of one part of the report


def _check_arguments(objectives: Sequence[str], modes: list[str], importance: str) -> None:
    """Raises the ValueError of :func:`instrument_sections` for bad ``modes`` or ``importance``."""
    if len(modes) != len(objectives) or any(m not in ("min", "max") for m in modes):
        raise ValueError(f"`modes` must hold one of 'min'/'max' per objective, but got "
                         f"(objectives={list(objectives)}, modes={modes})")
    if importance not in _EVALUATOR_NAMES:
        raise ValueError(f"`importance` must be one of {list(_EVALUATOR_NAMES)}, but got {importance!r}")


def _importance_part(trials: pd.DataFrame, params: list[str], objectives: Sequence[str], modes: list[str],
                     out_dir: Path, importance: str, seed: int) -> _Part:
    """The importance table (markdown and ``importance.csv``), its notes and ``importance.png``;
    a sentence instead where a single parameter is ranked (:data:`analysis.importance.NOT_INFORMATIVE`);
    on failure, what was done and one line naming the error."""
    name = _EVALUATOR_NAMES[importance]
    if len(params) == 1:  # 1 by construction, however many configurations: nothing to compute or draw
        return [("text", not_informative_sentence(params[0]))], []
    present = [(o, m) for o, m in zip(objectives, modes) if o in trials]
    sections: list[tuple[str, str]] = []
    try:
        table = importance_table(trials, params, [o for o, _ in present], [m for _, m in present],
                                 evaluator=importance, seed=seed)
        table.to_csv(out_dir / "importance.csv", index=False)
        informative = table[~table["scope"].isin(single_parameter_scopes(table))]
        if table.empty or not informative.empty:
            sections += [("text", _EVALUATOR_TEXT[importance] + (" One value per configuration: the mean over its "
                                                                 "repeats. Cells: importance (rank).")),
                         ("table", importance_markdown(table)),
                         ("text", "[CSV](importance.csv)")]
        else:  # every scope ranks one parameter: 1 by construction, no table, no figure
            sections.append(("text", importance_markdown(table)))
        for objective in objectives:
            if objective not in trials:
                sections.append(("text", f"No importance for {objective}: not a column of the trials table."))
        for objective, reason in table.attrs["skipped"].items():
            sections.append(("text", f"No importance for {objective}: {reason}."))
        for objective, notes in table.attrs["notes"].items():
            sections.append(("text", f"{objective}: " + "; ".join(notes) + "."))
        if not table.empty and informative.empty:
            return sections, []
        informative.attrs.update(table.attrs)
        figure = plots.save_figure(plots.importance_figure(informative), out_dir / "importance.png")
        return sections, [(f"Importance of each searched parameter, per objective ({name})", figure)]
    except Exception as err:  # one part's failure must not cost the report
        return sections + [_failure("Importance", err)], []


def _parallel_coordinates_part(trials: pd.DataFrame, params: list[str], objective: str, mode: str,
                               out_dir: Path) -> _Part:
    """``parallel_coordinates.png`` coloured by ``objective``; on failure, one line naming the error."""
    try:
        figure = plots.save_figure(plots.parallel_coordinates_figure(trials, params, objective, mode),
                                   out_dir / "parallel_coordinates.png")
        return [], [(f"Parallel coordinates, coloured by {objective}", figure)]
    except Exception as err:  # one part's failure must not cost the report
        return [_failure("Parallel coordinates", err)], []


def _variance_part(trials: pd.DataFrame, params: list[str], metrics: list[str], out_dir: Path, seed: int,
                   num_bootstrap: int) -> _Part:
    """The seed-variance heading, table (markdown and ``seed_variance.csv``) and warnings; on
    failure, what was done and one line naming the error."""
    sections: list[tuple[str, str]] = [("h2", "Seed variance: between configurations or between seeds?")]
    try:
        variance = variance_table(trials, params, metrics, random_state=np.random.default_rng(seed),
                                  num_bootstrap=num_bootstrap)
        variance.to_csv(out_dir / "seed_variance.csv", index=False)
        sections += [("text", ("Share of each metric's variance between seeds (repeats) of one configuration, "
                               "against between configurations: one-way random-effects ANOVA estimator "
                               f"(Searle et al. 1992), {round(100 * CONFIDENCE)}% two-stage bootstrap interval over "
                               "configurations and their seeds.")),
                     ("table", variance_markdown(variance)),
                     ("text", "[CSV](seed_variance.csv)")]
        sections += [("text", sentence) for sentence in seed_noise_sentences(variance)]
        return sections, []
    except Exception as err:  # one part's failure must not cost the report
        return sections + [_failure("Seed variance", err)], []
