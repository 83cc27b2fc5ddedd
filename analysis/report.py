"""``python -m analysis.report STUDY_DIR``: a study's tables and plots, and the page showing them.

Writes into ``STUDY_DIR/report/``:

* ``disentanglement_table.{md,csv,tex}``: per configuration, mean ± std over repeats of the
  metrics reported (MIG and any other disentanglement metric, val_elbo, val_recon_loss, val_kl);
* ``best_configurations.{md,csv,tex}``: the best configuration for each metric, with its margin
  over the runner-up against seed noise (:func:`analysis.tables.best_configurations`);
* ``udr_table.{md,csv,tex}`` and ``udr_correlations.{md,csv,tex}`` when the study computed
  ``udr``: configurations ranked by mean UDR, and its Spearman correlation with each supervised
  metric (:func:`analysis.tables.udr_table`, :func:`analysis.tables.udr_correlations`);
* ``tradeoff.png`` (the searched parameter vs MIG and vs val_recon_loss, rate-distortion),
  ``metrics_vs_<param>.png`` (the metrics the trade-off does not show), ``rate_distortion.png``
  (only without a trade-off figure), ``pareto.png``, ``metric_correlation.png``,
  ``learning_curves.png``; ``importance.{csv,png}``, ``parallel_coordinates.png``,
  ``seed_variance.csv`` (:mod:`analysis.instrument`);
* from the best trial's checkpoint (when the dataset can be loaded): ``traversals.png``,
  ``reconstructions.png``, ``latent_pca.png``, and the study's extra figures;
* ``index.md``, the page, and ``index.html``, the same page rendered by Python-Markdown
  (:mod:`analysis.page`): every table on it is a markdown table whose cells are formatted once,
  every figure appears once, with alt text and a numbered caption.

Large studies: above the thresholds of :mod:`analysis.plots` (``LEARNING_CURVES_MAX_TRIALS``,
``PARALLEL_MAX_LINES``, ``SCATTER_MAX_POINTS``, ``PARAM_MAX_VALUES``) and :data:`TABLE_MAX_ROWS`
the figures and the page's disentanglement table show summaries, and the page lists each switch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; the plots module itself leaves the backend to Jupyter

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import plots  # noqa: E402
from analysis.checkpoints import NoGroundTruth  # noqa: E402
from analysis.cli import ArgumentParser, one_line  # noqa: E402
from analysis.instrument import instrument_sections  # noqa: E402
from analysis.metrics import metric_key_modes  # noqa: E402
from analysis.page import figure_markdown, render_html  # noqa: E402
from analysis.results import (  # noqa: E402
    EPOCHS_FILE,
    REPORT_DIR,
    TRIALS_FILE,
    StudyDir,
    StudyFileError,
    StudyInfo,
    StudyLock,
    best_trial,
    is_directory,
    load_epochs,
    load_trials,
    require_columns,
)
from analysis.tables import (  # noqa: E402
    NOISE_SE,
    best_configurations,
    disentanglement_table,
    markdown_cell,
    to_markdown,
    udr_correlations,
    udr_table,
    write_table,
)
from datasets.registry import DataError  # noqa: E402
from datasets.storage import StorageError  # noqa: E402

__all__ = ["write_report"]

BASE_METRICS = ("val_elbo", "val_recon_loss", "val_kl")
# The page's disentanglement table: above this many configurations (a continuous search: one per
# trial), the best TABLE_MAX_ROWS by the first objective's mean, and a line saying the rest are in the CSV.
TABLE_MAX_ROWS = 20

# How the page decides that a best configuration is a winner (analysis.tables.best_configurations).
SEED_NOISE_RULE = (
    f"A configuration is named best only when its mean beats the runner-up's by more than {NOISE_SE:g} standard "
    f"errors of the difference: margin > seed_noise = {NOISE_SE:g} · s · √(1/n_best + 1/n_runner-up), where s is "
    "the metric's seed standard deviation pooled within configurations (the within-configuration mean square of "
    "the seed-variance table) and n the repeats behind each mean. Otherwise the verdict is \"within seed noise\": "
    "the study does not tell the two apart. With one repeat per configuration the seed noise is unknown and no "
    "configuration is named a winner.")

# One block of the page: ("h2" | "h3", heading), ("text" | "table", markdown), or ("figure", (title, path)).
Section = tuple[str, object]

# Figures that only some studies have (toy data space, interpolations, prediction grids), as
# "module:function" with ``function(study, info, trials, best, out) -> [(title, path), ...]``, where
# ``study`` is the StudyDir, ``info`` its StudyInfo,
# ``best`` is the best trial's row (or None) and ``out`` the report directory; [] when the study
# has nothing to show. A figure that fails is reported as skipped, with the reason.
EXTRA_FIGURES: list[str] = [
    "analysis.prediction_grid:prediction_grid",  # snapshots.npz of the best checkpoint: recon + task predictions
    "analysis.interpolation:study_interpolation_figure",  # lerp/slerp between two codes of the best trial
    "analysis.toy_figures:toy_figures",  # toy 2-D studies: reconstructions, prior and per-class samples
    "analysis.arithmetic_figures:arithmetic_figures",  # seq2seq: accuracy vs train fraction per depth, examples
]


def _failure(target: str, err: BaseException) -> str:
    """A failed figure as the index lists it: ``target: ErrorType: first line of the message``."""
    message = str(err).splitlines()[0] if str(err) else ""
    return one_line(f"{target}: {type(err).__name__}: {message}")


def _extra_figures(study: StudyDir, info: StudyInfo, trials: pd.DataFrame, best, out: Path) -> tuple[list, list[str]]:
    import importlib

    figures, failed = [], []
    for target in EXTRA_FIGURES:
        module, name = target.split(":")
        try:
            figures += getattr(importlib.import_module(module), name)(study, info, trials, best, out)
        except Exception as err:  # one figure's failure must not cost the rest: it is listed with its error
            failed.append(_failure(target, err))
        plt.close("all")
    return figures, failed


def _metrics(trials: pd.DataFrame) -> list[str]:
    """Disentanglement metrics present in the table (suite order), then the ELBO terms."""
    suite = [k for k in metric_key_modes() if k in trials and trials[k].notna().any()]
    tasks = [c for c in trials.columns  # a multitask study's heads: val_<task>_accuracy / _auc / _mae
             if c.startswith("val_") and c.endswith(("_accuracy", "_auc", "_mae")) and trials[c].notna().any()]
    return suite + [m for m in BASE_METRICS if m in trials] + tasks


_save = plots.save_figure


def _model_figures(info: StudyInfo, trials: pd.DataFrame, metric: str, mode: str, out: Path) -> tuple[list, str | None]:
    """Traversals, reconstructions and latent PCA of the best trial; ``(paths, why they do not apply)``.

    A study whose data has no factors, whose data file is not on this machine, or with no
    finished checkpoint has none (the reason is returned); any other failure raises, and the
    report lists it with its error type.
    """
    from analysis.checkpoints import load_ground_truth, load_trial_model, representation_fn

    best = best_trial(trials, metric, mode) if metric in trials else None
    if best is None or not is_directory(best.get("checkpoint_path")):
        return [], "no finished trial with a checkpoint"
    try:
        ground_truth = load_ground_truth(info)
    except DataError as err:  # the data file may live on another machine
        return [], f"dataset not loadable here ({one_line(str(err).splitlines()[0])})"
    except NoGroundTruth as err:  # toy, images, jets: traversals by factor do not apply
        return [], str(err)
    model, _ = load_trial_model(best["checkpoint_path"])
    rng = np.random.default_rng(0)
    rows = rng.choice(len(ground_truth), size=min(2000, len(ground_truth)), replace=False)
    x = ground_truth.observations(rows)
    codes = representation_fn(model)(x)
    title = f"best trial by {metric}: {best['trial_id']}"
    paths = []
    fig = plots.traversal_figure(model, x[:1])
    fig.suptitle(title)
    paths.append(_save(fig, out / "traversals.png"))
    fig = plots.reconstructions_figure(model, x[:10])
    fig.suptitle(title)
    paths.append(_save(fig, out / "reconstructions.png"))
    fig = plots.latent_pca_figure(codes, ground_truth.factors[rows], ground_truth.factor_names)
    fig.suptitle(f"PCA of latent means, {title}")
    paths.append(_save(fig, out / "latent_pca.png"))
    return paths, None


def write_report(study: str | os.PathLike | StudyDir, *, out: str | os.PathLike | None = None,
                 model_figures: bool = True) -> str:
    """Writes the report of a study holding ``trials.parquet``; returns the location of ``index.md``.

    Args:
        study: The study: a local directory, a URI (``s3://bucket/studies/NAME``) or its StudyDir.
        out: A local directory to write the report into instead of the study's ``report/``.
        model_figures: Also draw traversals, reconstructions and latent PCA of the best trial
            (needs its checkpoint and the dataset file).

    Raises:
        FileNotFoundError: If the study has no ``trials.parquet``.
        analysis.results.StudyFileError: If a table or its metadata cannot be read.
    """
    study = study if isinstance(study, StudyDir) else StudyDir(study)
    trials = load_trials(study)
    info = study.read_info()
    epochs = load_epochs(study) if study.is_file(EPOCHS_FILE) else None
    require_columns(trials, ["trial_id", "status"], study.uri(TRIALS_FILE))
    if not _metrics(trials):
        raise StudyFileError(f"{study.uri(TRIALS_FILE)}: no metric column with a value (expected some of "
                             f"{', '.join(BASE_METRICS)}, mig, ...); nothing to report")
    with _staging(study, out) as directory:
        sections = _summary(trials, info, epochs)
        sections += _table_sections(trials, info, directory)
        sections += [("h2", "Across the search"), *_figures(_study_figures(trials, info, epochs, directory))]
        sections += _instrument(trials, info, directory)
        if model_figures:
            sections += _best_trial_figures(study, info, trials, directory)
        source = _markdown(info.name, sections, directory)
        (directory / "index.md").write_text(source)
        (directory / "index.html").write_text(render_html(f"Study {info.name}", source))
    return str(Path(out) / "index.md") if out is not None else study.uri(REPORT_DIR, "index.md")


@contextlib.contextmanager
def _staging(study: StudyDir, out: str | os.PathLike | None):
    """The local directory the report is drawn into: ``out``, the study's own ``report/`` when
    local, else a temporary directory uploaded to the study's ``report/`` at the end."""
    if out is not None or not study.remote:
        directory = Path(out) if out is not None else Path(study.path(REPORT_DIR))
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="vae-study-report-") as tmp:
        yield Path(tmp)
        study.upload(Path(tmp), REPORT_DIR)


def _searched(trials: pd.DataFrame, info: StudyInfo) -> list[str]:
    return [p for p in info.searched_params if p in trials] or ["trial_id"]


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == "TERMINATED"]


def _summary(trials: pd.DataFrame, info: StudyInfo, epochs: pd.DataFrame | None) -> list[Section]:
    """What the study is (trials by status, searched parameters, objective) and, for a large study,
    which figures and tables show summaries instead of one element per trial."""
    status = ", ".join(f"{n:,} {s}" for s, n in trials["status"].value_counts().items())
    objective = ", ".join(f"{m} ({mode})" for m, mode in zip(info.objective.metric, info.objective.mode))
    searched = ", ".join(p for p in _searched(trials, info) if p != "trial_id") or "none"
    sections: list[Section] = [("text", markdown_cell(f"{len(trials):,} trials ({status}); searched parameters: "
                                                      f"{searched}; objective: {objective}."))]
    notes = _large_study_notes(trials, info, epochs)
    if notes:
        sections += [("h2", "Summaries for a large study"),
                     ("text", ("Above these thresholds a figure or table shows a summary instead of one element "
                               "per trial or configuration:")),
                     ("text", "\n".join(f"- {markdown_cell(note)}" for note in notes))]
    return sections


def _large_study_notes(trials: pd.DataFrame, info: StudyInfo, epochs: pd.DataFrame | None) -> list[str]:
    """One line per summary switch: what switched, the count, the threshold (the same counts the
    figures compare: finished trials, curves in ``epochs``, distinct values, configurations)."""
    done, metric = _finished(trials), info.objective.metric[0]
    by, (numeric, colour) = _searched(trials, info), _color_param(trials, info)
    notes = []
    configurations = done.groupby(by, dropna=False).ngroups if len(done) else 0
    if configurations > TABLE_MAX_ROWS:
        notes.append(f"disentanglement table: {configurations:,} configurations > {TABLE_MAX_ROWS}: the page shows "
                     f"the {TABLE_MAX_ROWS} best by mean {metric}; all of them are in disentanglement_table.csv")
    curves = epochs["trial_id"].nunique() if epochs is not None and len(epochs) else 0
    if curves > plots.LEARNING_CURVES_MAX_TRIALS:
        groups = f"per {colour} bin (at most {plots.CURVE_BINS})" if colour else "over all trials"
        notes.append(f"learning curves summarised: {curves:,} trials > {plots.LEARNING_CURVES_MAX_TRIALS}: the median "
                     f"and {_band()} band {groups} (learning_curves.png)")
    if len(done) > plots.SCATTER_MAX_POINTS:
        notes.append(f"scatter plots as densities: {len(done):,} finished trials > {plots.SCATTER_MAX_POINTS}: "
                     "rate-distortion in hexagonal bins, dominated trials of the Pareto front as a grey density, no "
                     "dot per trial against a parameter (tradeoff.png, metrics_vs_*.png, pareto.png)")
    for param in numeric:
        values = done[param].nunique()
        if values > plots.PARAM_MAX_VALUES:
            notes.append(f"{param} binned on x axes: {values:,} distinct values > {plots.PARAM_MAX_VALUES}: the median "
                         f"and {_band()} band per bin of {plots.PARAM_BINS} equal-count bins")
    if len(done) > plots.PARALLEL_MAX_LINES and numeric:
        notes.append(f"parallel coordinates: {len(done):,} finished trials > {plots.PARALLEL_MAX_LINES}: the best "
                     f"{plots.PARALLEL_MAX_LINES} by {metric} as lines, every trial as a density per axis")
    return notes


def _band() -> str:
    return f"{round(100 * plots.BAND[0])}-{round(100 * plots.BAND[1])}%"


def _table_sections(trials: pd.DataFrame, info: StudyInfo, out: Path) -> list[Section]:
    """The disentanglement table (the best :data:`TABLE_MAX_ROWS` on the page) and the best
    configuration per metric judged against seed noise; both also as md/csv/tex files."""
    by, metrics = _searched(trials, info), _metrics(trials)
    table = disentanglement_table(trials, by, metrics)
    write_table(table, out)
    best = best_configurations(trials, by, metrics, margins=True)
    write_table(best, out, stem="best_configurations")
    shown, more = _top_rows(table, info)
    return [
        ("h2", "Configurations"),
        ("h3", "Disentanglement table (mean ± std over repeats)"),
        *([("text", more)] if more else []),
        ("table", to_markdown(shown)),
        ("text", _files("disentanglement_table")),
        ("h3", "Best configuration per metric, against seed noise"),
        ("text", SEED_NOISE_RULE),
        ("table", to_markdown(best)),
        ("text", _files("best_configurations")),
        *_udr_sections(trials, by, out),
    ]


def _udr_sections(trials: pd.DataFrame, by: list[str], out: Path) -> list[Section]:
    """With a ``udr`` column: configurations ranked by mean UDR and, where the data has factors,
    UDR's Spearman correlation with each supervised metric (also as md/csv/tex files)."""
    if "udr" not in trials:
        return []
    ranked = udr_table(trials, by)
    write_table(ranked, out, stem="udr_table")
    sections: list[Section] = [
        ("h3", "UDR: agreement between seeds (Duan et al. 2020)"),
        ("table", to_markdown(ranked.head(TABLE_MAX_ROWS))),
        ("text", _files("udr_table")),
    ]
    correlations = udr_correlations(trials)
    if len(correlations):
        write_table(correlations, out, stem="udr_correlations")
        sections += [("text", "Spearman rank correlation of UDR with each supervised metric over finished trials:"),
                     ("table", to_markdown(correlations)), ("text", _files("udr_correlations"))]
    return sections


def _files(stem: str) -> str:
    return f"Files: [CSV]({stem}.csv) · [LaTeX]({stem}.tex) · [Markdown]({stem}.md)"


def _top_rows(table: pd.DataFrame, info: StudyInfo) -> tuple[pd.DataFrame, str | None]:
    """The rows of the disentanglement table the page shows (all, or the :data:`TABLE_MAX_ROWS` best
    by the first objective's mean) and the line saying where the others are."""
    if len(table) <= TABLE_MAX_ROWS:
        return table, None
    metric, mode = info.objective.metric[0], info.objective.mode[0]
    column = f"{metric}_mean"
    if column in table:
        shown = table.sort_values(column, ascending=mode == "min", kind="stable", na_position="last")
        which = f"the {TABLE_MAX_ROWS} best by mean {metric} ({mode})"
    else:
        shown, which = table, f"the first {TABLE_MAX_ROWS} ({metric} not reported)"
    return shown.head(TABLE_MAX_ROWS), markdown_cell(
        f"{len(table):,} configurations: {which}; the other {len(table) - TABLE_MAX_ROWS:,} are in the CSV.")


def _color_param(trials: pd.DataFrame, info: StudyInfo) -> tuple[list[str], str | None]:
    """The numeric searched parameters, and the one figures colour by (beta when searched)."""
    numeric = [p for p in _searched(trials, info) if p != "trial_id" and pd.api.types.is_numeric_dtype(trials[p])
               and not pd.api.types.is_bool_dtype(trials[p])]
    return numeric, "beta" if "beta" in numeric else (numeric[0] if numeric else None)


TRADEOFF_METRICS = ("mig", "val_recon_loss")  # the trade-off figure's parameter panels (tradeoff_figure)


def _study_figures(trials: pd.DataFrame, info: StudyInfo, epochs: pd.DataFrame | None, out: Path) -> list:
    """Trade-off, the other metrics per parameter, rate-distortion (without a trade-off figure only),
    Pareto front, correlations, learning curves: each view once, captioned with the summary it shows."""
    metrics, done = _metrics(trials), _finished(trials)
    numeric, param = _color_param(trials, info)
    figures: list[tuple[str, Path]] = []
    tradeoff = bool(param) and bool(set(TRADEOFF_METRICS) & set(trials.columns))
    if tradeoff:
        title = (f"Trade-off over {param}: {param} vs MIG and vs val_recon_loss ({_spread(done, param)}), "
                 f"and rate-distortion (val_kl vs val_recon_loss) coloured by {param}{_dense(done)}")
        figures.append((title, _save(plots.tradeoff_figure(trials, param), out / "tradeoff.png")))
    for p in numeric:
        shown = [m for m in metrics if not (tradeoff and p == param and m in TRADEOFF_METRICS)]
        if shown:
            figures.append((f"{', '.join(shown)} vs {p} ({_spread(done, p)})",
                            _save(plots.metric_vs_param_figure(trials, p, shown), out / f"metrics_vs_{p}.png")))
    if not tradeoff and {"val_kl", "val_recon_loss"} <= set(trials.columns):
        title = "Rate-distortion: val_kl vs val_recon_loss" + (f", coloured by {param}" if param else "") + _dense(done)
        figures.append((title, _save(plots.rate_distortion_figure(trials, param), out / "rate_distortion.png")))
    objective = info.objective
    pair = objective.metric if len(objective.metric) == 2 else list(TRADEOFF_METRICS)
    if set(pair) <= set(trials.columns):
        modes = objective.mode if len(objective.metric) == 2 else ["max", "min"]
        faded = "as a density" if len(done) > plots.SCATTER_MAX_POINTS else "faded"
        figures.append((f"Pareto front of {pair[0]} and {pair[1]} (dominated trials {faded})",
                        _save(plots.pareto_figure(trials, pair, modes), out / "pareto.png")))
    if len(metrics) >= 2:
        figures.append(("Spearman rank correlation between metrics over finished trials",
                        _save(plots.metric_correlation_figure(trials, metrics), out / "metric_correlation.png")))
    if epochs is not None and len(epochs):
        curves = [m for m in ("train_loss", "val_elbo", "val_kl") if m in epochs]
        summarised = epochs["trial_id"].nunique() > plots.LEARNING_CURVES_MAX_TRIALS
        how = (f": the median and {_band()} band per {param or 'study'} bin" if summarised
               else (f", coloured by {param}" if param else ", one line per trial"))
        figures.append((f"Learning curves ({', '.join(curves)}){how}", _save(
            plots.learning_curves_figure(epochs, curves, color_by=param, trials=trials if param else None),
            out / "learning_curves.png")))
    return figures


def _spread(done: pd.DataFrame, param: str) -> str:
    """How a metric-vs-parameter panel shows the spread: per value, or per bin for a continuous search."""
    if done[param].nunique() > plots.PARAM_MAX_VALUES:
        return f"median and {_band()} band per bin of {param}"
    return "mean ± std over repeats"


def _dense(done: pd.DataFrame) -> str:
    return " (hexagonal bins: median per bin)" if len(done) > plots.SCATTER_MAX_POINTS else ""


def _figures(figures: list[tuple[str, Path]]) -> list[Section]:
    return [("figure", figure) for figure in figures]


def _instrument(trials: pd.DataFrame, info: StudyInfo, out: Path) -> list[Section]:
    """Importance per objective and parallel coordinates (their figures after them), then the
    seed-variance table of every table metric."""
    objective = info.objective
    params = [p for p in _searched(trials, info) if p != "trial_id"]
    sections, figures = instrument_sections(trials, params, objective.metric, objective.mode, out,
                                            metrics=list(dict.fromkeys([*objective.metric, *_metrics(trials)])))
    variance = next((i for i, (kind, _) in enumerate(sections) if kind == "h2" and i > 0), len(sections))
    return [*sections[:variance], *_figures(figures), *sections[variance:]]


def _best_trial_figures(study: StudyDir, info: StudyInfo, trials: pd.DataFrame, out: Path) -> list[Section]:
    """Traversals, reconstructions, PCA and the study's extra figures of the best trial; a figure
    that fails is listed with its error, never dropped silently."""
    metric, mode = info.objective.metric[0], info.objective.mode[0]
    titles = ["Latent traversals of the best trial (each latent over ±2 prior σ)",
              "Reconstructions of the best trial", "PCA of latent means, coloured by each factor"]
    best_row = best_trial(trials, metric, mode) if metric in trials else None
    about = "no finished trial" if best_row is None else f"trial {best_row['trial_id']}"
    sections: list[Section] = [("h2", "Best trial"),
                               ("text", markdown_cell(f"The best trial by {metric} ({mode}): {about}."))]
    figures, failed = [], []
    try:
        paths, skipped = _model_figures(info, trials, metric, mode, out)
        figures += list(zip(titles, paths))
        if skipped:
            sections.append(("text", markdown_cell(f"Best-trial figures do not apply: {skipped}.")))
    except Exception as err:  # listed with its error type below, never silently dropped
        failed.append(_failure("best-trial figures", err))
    plt.close("all")
    extra, extra_failed = _extra_figures(study, info, trials, best_row, out)
    sections += _figures(figures + extra)
    failed += extra_failed
    if failed:
        sections += [("h2", "Figures that failed"), ("text", "\n".join(f"- {markdown_cell(line)}" for line in failed))]
    return sections


def _markdown(name: str, sections: list[Section], out: Path) -> str:
    """The page as markdown: one block per section, figures numbered in order, each file once (a
    figure whose file is already on the page is not shown again)."""
    blocks, seen = [f"# Study {markdown_cell(name)}"], set()
    for kind, body in sections:
        if kind == "figure":
            title, path = body
            src = Path(os.path.relpath(path, out)).as_posix()
            if src in seen:
                continue
            seen.add(src)
            blocks.append(figure_markdown(len(seen), title, src).rstrip("\n"))
        else:
            blocks.append({"h2": "## ", "h3": "### "}.get(kind, "") + body.strip("\n"))
    return "\n\n".join(blocks) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m analysis.report", description="Write a study's report.")
    parser.add_argument("study", help="the study directory: a local path or a URI (s3://bucket/studies/NAME)")
    parser.add_argument("--out", default=None, help="a local directory for the report (default: the study's report/)")
    parser.add_argument("--no-model-figures", action="store_true",
                        help="skip traversals, reconstructions and PCA (they load the best checkpoint and the data)")
    args = parser.parse_args(argv)
    try:
        study = StudyDir(args.study)
        with StudyLock(study, "analysis.report") if args.out is None else contextlib.nullcontext():
            print(write_report(study, out=args.out, model_figures=not args.no_model_figures))
    except (FileNotFoundError, KeyError, StudyFileError, StorageError) as err:
        print(f"error: {one_line(err.args[0] if isinstance(err, KeyError) else str(err))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
