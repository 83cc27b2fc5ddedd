"""``python -m analysis.report STUDY_DIR``: a study's tables and plots, and pages linking them.

Writes into ``STUDY_DIR/report/``:

* ``disentanglement_table.{md,csv,tex}``: per configuration, mean ± std over repeats of the
  metrics reported (MIG and any other disentanglement metric, val_elbo, val_recon_loss, val_kl);
* ``best_configurations.{md,csv,tex}``: the best configuration for each metric;
* ``tradeoff.png`` (the searched parameter vs MIG and vs val_recon_loss, rate-distortion),
  ``metrics_vs_<param>.png``, ``rate_distortion.png``, ``pareto.png``, ``metric_correlation.png``,
  ``learning_curves.png``;
* from the best trial's checkpoint (when the dataset can be loaded): ``traversals.png``,
  ``reconstructions.png``, ``latent_pca.png``;
* ``index.md`` and ``index.html`` showing all of them.
"""

from __future__ import annotations

import contextlib
import html
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
from analysis.tables import best_configurations, disentanglement_table, markdown_table_html, to_markdown, write_table  # noqa: E402
from datasets.registry import DataError  # noqa: E402
from datasets.storage import StorageError  # noqa: E402

__all__ = ["write_report"]

BASE_METRICS = ("val_elbo", "val_recon_loss", "val_kl")

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
        sections, tables = _table_sections(trials, info, directory)
        figures = _study_figures(trials, info, epochs, directory)
        instrument, instrument_figures = _instrument(trials, info, directory)
        sections += instrument
        figures += instrument_figures
        if model_figures:
            best_sections, best_figures = _best_trial_figures(study, info, trials, directory)
            sections += best_sections
            figures += best_figures
        for title, path in figures:
            sections += [("h2", title), ("img", path.name)]
        (directory / "index.md").write_text(_markdown(info.name, sections))
        (directory / "index.html").write_text(_html(info.name, sections, *tables))
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


def _table_sections(trials: pd.DataFrame, info: StudyInfo, out: Path) -> tuple[list, tuple]:
    """The status line, the disentanglement table and the best configurations (also as files)."""
    by, metrics = _searched(trials, info), _metrics(trials)
    table = disentanglement_table(trials, by, metrics)
    write_table(table, out)
    best = best_configurations(trials, by, metrics)
    write_table(best, out, stem="best_configurations")
    sections: list[tuple[str, str]] = [
        ("text", f"{len(trials)} trials; status: {trials['status'].value_counts().to_dict()}."),
        ("h2", "Disentanglement table (mean ± std over repeats)"),
        ("table", to_markdown(table)),
        ("text", "[CSV](disentanglement_table.csv) · [LaTeX](disentanglement_table.tex)"),
        ("h2", "Best configuration per metric"),
        ("table", to_markdown(best)),
    ]
    return sections, (table, best)


def _color_param(trials: pd.DataFrame, info: StudyInfo) -> tuple[list[str], str | None]:
    """The numeric searched parameters, and the one figures colour by (beta when searched)."""
    numeric = [p for p in _searched(trials, info) if p != "trial_id" and pd.api.types.is_numeric_dtype(trials[p])]
    return numeric, "beta" if "beta" in numeric else (numeric[0] if numeric else None)


def _study_figures(trials: pd.DataFrame, info: StudyInfo, epochs: pd.DataFrame | None, out: Path) -> list:
    """Trade-off, metrics per parameter, rate-distortion, Pareto front, correlations, learning curves."""
    metrics = _metrics(trials)
    numeric, param = _color_param(trials, info)
    figures: list[tuple[str, Path]] = []
    if param and {"mig", "val_recon_loss"} & set(trials.columns):
        figures.append((f"Trade-off over {param}", _save(plots.tradeoff_figure(trials, param), out / "tradeoff.png")))
    for p in numeric:
        figures.append((f"Metrics vs {p} (mean ± std over repeats)",
                        _save(plots.metric_vs_param_figure(trials, p, metrics), out / f"metrics_vs_{p}.png")))
    if {"val_kl", "val_recon_loss"} <= set(trials.columns):
        figures.append(("Rate-distortion", _save(plots.rate_distortion_figure(trials, param), out / "rate_distortion.png")))
    objective = info.objective
    pair = objective.metric if len(objective.metric) == 2 else ["mig", "val_recon_loss"]
    if set(pair) <= set(trials.columns):
        modes = objective.mode if len(objective.metric) == 2 else ["max", "min"]
        figures.append(("Pareto front (dominated trials faded)",
                        _save(plots.pareto_figure(trials, pair, modes), out / "pareto.png")))
    if len(metrics) >= 2:
        figures.append(("Spearman rank correlation between metrics",
                        _save(plots.metric_correlation_figure(trials, metrics), out / "metric_correlation.png")))
    if epochs is not None and len(epochs):
        curves = [m for m in ("train_loss", "val_elbo", "val_kl") if m in epochs]
        figures.append(("Learning curves", _save(
            plots.learning_curves_figure(epochs, curves, color_by=param, trials=trials if param else None),
            out / "learning_curves.png")))
    return figures


def _instrument(trials: pd.DataFrame, info: StudyInfo, out: Path) -> tuple[list, list]:
    """Importance per objective, parallel coordinates, and the seed-variance table of every table metric."""
    objective = info.objective
    params = [p for p in _searched(trials, info) if p != "trial_id"]
    return instrument_sections(trials, params, objective.metric, objective.mode, out,
                               metrics=list(dict.fromkeys([*objective.metric, *_metrics(trials)])))


def _best_trial_figures(study: StudyDir, info: StudyInfo, trials: pd.DataFrame, out: Path) -> tuple[list, list]:
    """Traversals, reconstructions, PCA and the study's extra figures of the best trial:
    ``(sections, figures)``; a figure that fails is listed with its error, never dropped silently."""
    metric, mode = info.objective.metric[0], info.objective.mode[0]
    titles = ["Latent traversals of the best trial (each latent over ±2 prior σ)",
              "Reconstructions of the best trial", "PCA of latent means, coloured by each factor"]
    sections, figures, failed = [], [], []
    try:
        paths, skipped = _model_figures(info, trials, metric, mode, out)
        figures += list(zip(titles, paths))
        if skipped:
            sections.append(("text", f"Best-trial figures do not apply: {skipped}."))
    except Exception as err:  # listed with its error type below, never silently dropped
        failed.append(_failure("best-trial figures", err))
    plt.close("all")
    best_row = best_trial(trials, metric, mode) if metric in trials else None
    extra, extra_failed = _extra_figures(study, info, trials, best_row, out)
    figures += extra
    failed += extra_failed
    if failed:
        sections += [("h2", "Figures that failed"), ("text", "\n".join(f"- {line}" for line in failed))]
    return sections, figures


def _markdown(name: str, sections: list[tuple[str, str]]) -> str:
    lines = [f"# Study {name}\n"]
    for kind, body in sections:
        lines.append({"h2": f"\n## {body}\n", "img": f"![{body}]({body})\n"}.get(kind, body + "\n"))
    return "\n".join(lines)


def _html(name: str, sections: list[tuple[str, str]], table: pd.DataFrame, best: pd.DataFrame) -> str:
    tables = iter([table, best])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>",
             "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:100%}</style></head><body>",
             f"<h1>Study {html.escape(name)}</h1>"]
    for kind, body in sections:
        if kind == "h2":
            parts.append(f"<h2>{html.escape(body)}</h2>")
        elif kind == "img":
            parts.append(f"<img src='{html.escape(body)}' alt='{html.escape(body)}'>")
        elif kind == "table":
            frame = next(tables, None)  # the two tables given as frames; later ones rendered from their markdown
            parts.append(markdown_table_html(body) if frame is None
                         else frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="n/a"))
        else:
            parts.append(f"<p>{html.escape(body)}</p>")
    return "\n".join(parts + ["</body></html>"])


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
