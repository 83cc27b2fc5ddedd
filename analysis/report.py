"""``python -m analysis.report STUDY_DIR``: the study's table and plots, and a page linking them.

Writes into ``STUDY_DIR/report/``: ``disentanglement_table.md`` and ``.csv`` (per
configuration, mean +/- std over repeats of mig, val_elbo, val_recon_loss, val_kl),
``tradeoff.png``, and ``index.md`` that shows them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from analysis.plots import tradeoff_figure
from analysis.results import load_metadata, load_trials
from analysis.tables import disentanglement_table, to_markdown, write_table

__all__ = ["write_report"]


def write_report(study_dir: str | Path) -> Path:
    """Writes the report of a study directory holding ``trials.parquet``; returns ``index.md``.

    Raises:
        FileNotFoundError: If the directory has no ``trials.parquet``.
    """
    study_dir = Path(study_dir)
    if not (study_dir / "trials.parquet").is_file():
        raise FileNotFoundError(f"{study_dir}: no trials.parquet (run the study, or python -m study.results)")
    trials = load_trials(study_dir)
    meta = load_metadata(study_dir)
    by = [p for p in meta.get("searched_params", []) if p in trials] or ["trial_id"]
    out = study_dir / "report"
    out.mkdir(exist_ok=True)
    table = disentanglement_table(trials, by)
    write_table(table, out)
    sections = [f"# Study {meta.get('name', study_dir.name)}\n",
                f"{len(trials)} trials; status: {trials['status'].value_counts().to_dict()}.\n",
                "## Disentanglement table (mean ± std over repeats)\n", to_markdown(table),
                "\n[CSV](disentanglement_table.csv)\n"]
    param = "beta" if "beta" in by else by[0]
    if param != "trial_id":
        fig = tradeoff_figure(trials, param)
        fig.savefig(out / "tradeoff.png", dpi=110)
        plt.close(fig)
        sections += [f"\n## Trade-off over {param}\n", "![trade-off](tradeoff.png)\n"]
    index = out / "index.md"
    index.write_text("\n".join(sections))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description="Write a study's report.")
    parser.add_argument("study_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        print(write_report(args.study_dir))
    except (FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
