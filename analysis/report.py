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

import argparse
import html
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; the plots module itself leaves the backend to Jupyter

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import plots  # noqa: E402
from analysis.checkpoints import NoGroundTruth  # noqa: E402
from analysis.cli import one_line  # noqa: E402
from analysis.metrics import metric_key_modes  # noqa: E402
from analysis.results import StudyFileError, best_trial, load_epochs, load_metadata, load_trials  # noqa: E402
from datasets.registry import DataError  # noqa: E402
from analysis.instrument import instrument_sections  # noqa: E402
from analysis.tables import (best_configurations, disentanglement_table, markdown_table_html, to_markdown,  # noqa: E402
                             write_table)

__all__ = ["write_report"]

BASE_METRICS = ("val_elbo", "val_recon_loss", "val_kl")

# Figures that only some studies have (toy data space, interpolations, prediction grids), as
# "module:function" with ``function(study_dir, trials, best, out) -> [(title, path), ...]``, where
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


def _extra_figures(study_dir: Path, trials: pd.DataFrame, best, out: Path) -> tuple[list, list[str]]:
    import importlib

    figures, failed = [], []
    for target in EXTRA_FIGURES:
        module, name = target.split(":")
        try:
            figures += getattr(importlib.import_module(module), name)(study_dir, trials, best, out)
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


def _model_figures(study_dir: Path, trials: pd.DataFrame, metric: str, mode: str, out: Path) -> tuple[list, str | None]:
    """Traversals, reconstructions and latent PCA of the best trial; ``(paths, why they do not apply)``.

    A study whose data has no factors, whose data file is not on this machine, or with no
    finished checkpoint has none (the reason is returned); any other failure raises, and the
    report lists it with its error type.
    """
    from analysis.checkpoints import load_ground_truth, load_trial_model, representation_fn

    best = best_trial(trials, metric, mode) if metric in trials else None
    if best is None or not isinstance(best.get("checkpoint_path"), str) or not Path(best["checkpoint_path"]).is_dir():
        return [], "no finished trial with a checkpoint"
    try:
        ground_truth = load_ground_truth(study_dir)
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


def write_report(study_dir: str | Path, *, model_figures: bool = True) -> Path:
    """Writes the report of a study directory holding ``trials.parquet``; returns ``index.md``.

    Args:
        study_dir: The study directory.
        model_figures: Also draw traversals, reconstructions and latent PCA of the best trial
            (needs its checkpoint and the dataset file).

    Raises:
        FileNotFoundError: If the directory has no ``trials.parquet``.
    """
    study_dir = Path(study_dir)
    if not (study_dir / "trials.parquet").is_file():
        raise FileNotFoundError(f"{study_dir}: no trials.parquet (run the study, or python -m study.results)")
    trials = load_trials(study_dir)
    meta = load_metadata(study_dir)
    epochs = load_epochs(study_dir) if (study_dir / "epochs.parquet").is_file() else None
    by = [p for p in meta.get("searched_params", []) if p in trials] or ["trial_id"]
    metrics = _metrics(trials)
    objective = meta.get("objective", {"metric": ["mig"], "mode": ["max"]})
    out = study_dir / "report"
    out.mkdir(exist_ok=True)

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
    numeric = [p for p in by if p != "trial_id" and pd.api.types.is_numeric_dtype(trials[p])]
    param = "beta" if "beta" in numeric else (numeric[0] if numeric else None)
    figures: list[tuple[str, Path]] = []
    if param and {"mig", "val_recon_loss"} & set(trials.columns):
        figures.append((f"Trade-off over {param}", _save(plots.tradeoff_figure(trials, param), out / "tradeoff.png")))
    for p in numeric:
        figures.append((f"Metrics vs {p} (mean ± std over repeats)",
                        _save(plots.metric_vs_param_figure(trials, p, metrics), out / f"metrics_vs_{p}.png")))
    if {"val_kl", "val_recon_loss"} <= set(trials.columns):
        figures.append(("Rate-distortion", _save(plots.rate_distortion_figure(trials, param), out / "rate_distortion.png")))
    pair = objective["metric"] if len(objective["metric"]) == 2 else ["mig", "val_recon_loss"]
    if set(pair) <= set(trials.columns):
        modes = objective["mode"] if len(objective["metric"]) == 2 else ["max", "min"]
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
    instrument, instrument_figures = instrument_sections(
        trials, [p for p in by if p != "trial_id"], objective["metric"], objective["mode"], out,
        metrics=list(dict.fromkeys([*objective["metric"], *metrics])))  # seed variance of every table metric
    sections += instrument
    figures += instrument_figures
    failed: list[str] = []
    if model_figures:
        metric, mode = objective["metric"][0], objective["mode"][0]
        titles = ["Latent traversals of the best trial (each latent over ±2 prior σ)",
                  "Reconstructions of the best trial", "PCA of latent means, coloured by each factor"]
        try:
            paths, skipped = _model_figures(study_dir, trials, metric, mode, out)
            figures += list(zip(titles, paths))
            if skipped:
                sections.append(("text", f"Best-trial figures do not apply: {skipped}."))
        except Exception as err:  # listed with its error type below, never silently dropped
            failed.append(_failure("best-trial figures", err))
        plt.close("all")
        best_row = best_trial(trials, metric, mode) if metric in trials else None
        extra, extra_failed = _extra_figures(study_dir, trials, best_row, out)
        figures += extra
        failed += extra_failed
    if failed:
        sections.append(("h2", "Figures that failed"))
        sections.append(("text", "\n".join(f"- {line}" for line in failed)))
    for title, path in figures:
        sections += [("h2", title), ("img", path.name)]
    name = meta.get("name", study_dir.name)
    index = out / "index.md"
    index.write_text(_markdown(name, sections))
    (out / "index.html").write_text(_html(name, sections, table, best))
    return index


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
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description="Write a study's report.")
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--no-model-figures", action="store_true",
                        help="skip traversals, reconstructions and PCA (they load the best checkpoint and the data)")
    args = parser.parse_args(argv)
    try:
        print(write_report(args.study_dir, model_figures=not args.no_model_figures))
    except (FileNotFoundError, KeyError, StudyFileError) as err:
        print(f"error: {one_line(err.args[0] if isinstance(err, KeyError) else str(err))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
