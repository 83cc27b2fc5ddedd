"""Writes analysis/notebooks/explore_study.ipynb (no outputs): ``python scripts/make_notebook.py``."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Explore a vae-study study\n\n"
        "Loads a study's `trials.parquet` and `epochs.parquet` (nothing else is needed), shows the "
        "disentanglement table, the trade-off plots and the Pareto front. Set `STUDY_DIR` (or the "
        "environment variable `VAE_STUDY_DIR`) to a study: a directory, e.g. `studies/beta_sweep`, or a "
        "URI such as `s3://bucket/studies/beta_sweep` (credentials from the usual AWS variables)."
    ),
    new_code_cell(
        "import os\n\n"
        "import matplotlib.pyplot as plt\n"
        "from IPython.display import Markdown, display\n\n"
        "from analysis import plots\n"
        "from analysis.results import load_epochs, load_info, load_trials\n"
        "from analysis.tables import best_configurations, disentanglement_table, to_markdown\n\n"
        "STUDY_DIR = os.environ.get('VAE_STUDY_DIR', '../../studies/beta_sweep')\n"
        "trials = load_trials(STUDY_DIR)\n"
        "epochs = load_epochs(STUDY_DIR)\n"
        "info = load_info(STUDY_DIR)\n"
        "params = [p for p in info.searched_params if p in trials]\n"
        "print(f\"{info.name}: {len(trials)} trials, searched {params}, objective {info.objective.metric}\")\n"
        "trials[['trial_id', 'status', *params, 'repeat', 'mig', 'val_elbo', 'val_recon_loss', 'val_kl']]"
    ),
    new_markdown_cell("## Disentanglement table (mean ± std over repeats)"),
    new_code_cell(
        "metrics = [m for m in ('mig', 'val_elbo', 'val_recon_loss', 'val_kl') if m in trials]\n"
        "table = disentanglement_table(trials, params, metrics)\n"
        "display(Markdown(to_markdown(table)))\n"
        "display(Markdown(to_markdown(best_configurations(trials, params, metrics))))"
    ),
    new_markdown_cell("## Trade-off: MIG and reconstruction against the searched parameter, rate-distortion"),
    new_code_cell(
        "param = 'beta' if 'beta' in params else params[0]\n"
        "fig = plots.tradeoff_figure(trials, param)\n"
        "plt.show()"
    ),
    new_markdown_cell("## Pareto front (MIG up, reconstruction loss down; dominated trials faded)"),
    new_code_cell(
        "two = len(info.objective.metric) == 2\n"
        "pair = info.objective.metric if two else ['mig', 'val_recon_loss']\n"
        "modes = info.objective.mode if two else ['max', 'min']\n"
        "fig = plots.pareto_figure(trials, pair, modes)\n"
        "plt.show()\n"
        "front = plots.pareto_mask(trials[pair].to_numpy(float), modes)\n"
        "trials.loc[front, ['trial_id', *params, *pair]]"
    ),
    new_markdown_cell("## Learning curves"),
    new_code_cell(
        "fig = plots.learning_curves_figure(epochs, [m for m in ('train_loss', 'val_elbo') if m in epochs],\n"
        "                                   color_by=param, trials=trials)\n"
        "plt.show()"
    ),
]


def main() -> None:
    notebook = new_notebook(cells=CELLS, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                   "language": "python"}})
    path = Path(__file__).resolve().parents[1] / "analysis" / "notebooks" / "explore_study.ipynb"
    nbformat.write(notebook, path)
    print(path)


if __name__ == "__main__":
    main()
