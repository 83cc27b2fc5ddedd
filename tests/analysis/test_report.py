"""The report: ``python -m analysis.report`` refuses tables it cannot report on (one line naming the
file and the columns, exit code 2, nothing written); the page it writes is one markdown source
rendered by Python-Markdown, whose every link, image and table is checked here by parsing
``index.html`` (the end-to-end report is tested on a real study in tests/study/test_run_e2e.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import plots
from analysis.results import EPOCHS_FILE, TRIALS_FILE, StudyDir
from study.spec import load_spec
from tests.conftest import REPO


@pytest.mark.parametrize("columns, fragment", [
    ({"trial_id": ["a", "b"], "status": ["TERMINATED"] * 2, "beta": [1, 4]}, "no metric column"),
    ({"beta": [1, 4], "mig": [0.1, 0.2]}, "no column 'trial_id', 'status'"),
])
def test_a_table_without_the_needed_columns_is_refused_and_nothing_is_written(tmp_path, columns, fragment):
    study = tmp_path / "smoke"
    StudyDir(study).write_table(TRIALS_FILE, pd.DataFrame(columns), load_spec(REPO / "configs" / "smoke.yaml").info())
    proc = subprocess.run([sys.executable, "-m", "analysis.report", str(study)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {study / 'trials.parquet'}:") and fragment in line, line
    assert sorted(p.name for p in study.iterdir()) == ["trials.parquet"]


# ---- the page: one markdown source, rendered by Python-Markdown; every link, image and table checked ----

class PageParser(HTMLParser):
    """The links, images, figures, tables and visible text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.tables, self.text = [], [], [], []
        self.figures = self.captions = self.images_in_figures = 0
        self._stack, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in ("img", "meta", "br", "hr"):
            self._stack.append(tag)
        if tag == "a":
            self.links.append(attrs.get("href"))
        elif tag == "img":
            self.images.append((attrs.get("src"), attrs.get("alt")))
            self.images_in_figures += "figure" in self._stack
        elif tag == "figure":
            self.figures += 1
        elif tag == "figcaption":
            self.captions += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if "style" not in self._stack and "title" not in self._stack:
            self.text.append(data)


def markdown_tables(source: str) -> list[list[list[str]]]:
    """The pipe tables of a markdown text: rows of cells, the |---| row left out, escapes undone."""
    tables, current = [], None
    for line in source.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            tables.append(current)
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        if all(set(c.strip()) <= set("-:") for c in cells):
            continue
        current.append([re.sub(r"\\(.)", r"\1", c.strip()) for c in cells])
    return tables


@dataclass
class PageCounts:
    links: int
    images: int
    tables: int
    table_rows: int
    text: str = field(repr=False)


def check_page(report: Path) -> PageCounts:
    """The page's invariants: every href and src is a file of ``report/``, no markdown link syntax
    in the text, each markdown table has an HTML twin with the same cells, every image has alt text
    and a caption, and no image is shown twice."""
    page = PageParser()
    page.feed((report / "index.html").read_text())
    targets = [*page.links, *(src for src, _ in page.images)]
    for target in targets:
        assert target and "://" not in target and not target.startswith("/"), target
        assert (report / target).resolve().parent == report.resolve() and (report / target).is_file(), target
    text = "".join(page.text)
    assert "](" not in text and "![" not in text
    assert markdown_tables((report / "index.md").read_text()) == page.tables
    sources = [src for src, _ in page.images]
    assert len(sources) == len(set(sources)), sources
    assert all(alt and alt.strip() for _, alt in page.images)
    assert page.figures == page.captions == page.images_in_figures == len(page.images)
    return PageCounts(len(page.links), len(page.images), len(page.tables), sum(len(t) for t in page.tables), text)


SPREAD = (-0.05, 0.0, 0.05)  # the repeats of every configuration: seed std 0.05 exactly


def write_study(root: Path, *, configurations: int = 3, repeats: int = 3, continuous: bool = False,
                epochs: int = 2, udr: bool = False) -> Path:
    """A synthetic study: trials.parquet and epochs.parquet with the smoke spec's metadata.

    Grid (``continuous=False``): beta in 1, 4, 16 (cycled); MIG barely moves with beta (means 0.20,
    0.21, 0.22, seed spread 0.05: the best is within seed noise), val_kl falls from 40 to 10 (seed
    spread 0.5: far beyond it). Continuous: beta and lr drawn per configuration, as a TPE search does.
    ``udr``: a ``udr`` column, MIG + 0.3 (ranks the trials exactly as MIG does).
    """
    info = load_spec(REPO / "configs" / "smoke.yaml").info()
    if continuous:
        info = info.model_copy(update={"searched_params": ["beta", "lr"]})
    rng = np.random.default_rng(0)
    trials, curves = [], []
    for c in range(configurations):
        beta = float(np.exp(rng.uniform(0, np.log(16)))) if continuous else [1.0, 4.0, 16.0][c % 3]
        for r in range(repeats):
            offset = SPREAD[r % 3] if not continuous else rng.normal(0, 0.05)
            kl = 40 / np.sqrt(beta) + 10 * offset
            recon = 1000 + 300 / kl
            row = {"trial_id": f"t{len(trials):04d}", "status": "TERMINATED", "beta": beta, "repeat": r,
                   "mig": 0.2 + 0.01 * np.log2(beta) / 2 + offset, "val_kl": kl, "val_recon_loss": recon,
                   "val_elbo": -(kl + recon)}
            if continuous:
                row["lr"] = float(10 ** rng.uniform(-4, -2))
            if udr:
                row["udr"] = row["mig"] + 0.3
            trials.append(row)
            curves += [{"trial_id": row["trial_id"], "epoch": e, "train_loss": recon + kl + 100 / e,
                        "val_elbo": -(recon + kl + 100 / e), "val_kl": kl} for e in range(1, epochs + 1)]
    study = StudyDir(root)
    study.write_table(TRIALS_FILE, pd.DataFrame(trials), info)
    study.write_table(EPOCHS_FILE, pd.DataFrame(curves), info)
    return root


def test_the_page_renders_its_markdown_with_every_link_image_and_table_resolved(tmp_path):
    from analysis.report import SEED_NOISE_RULE, write_report

    study = write_study(tmp_path / "smoke")
    assert write_report(study, model_figures=False) == str(study / "report" / "index.md")
    report = study / "report"
    counts = check_page(report)
    # links: CSV, LaTeX, markdown of two tables, and seed_variance.csv; images: the six figures
    assert (counts.links, counts.images, counts.tables, counts.table_rows) == (7, 6, 3, 4 + 5 + 5)
    source = (report / "index.md").read_text()
    assert SEED_NOISE_RULE in source
    assert "| 1 | 3 | 0.200 ± 0.050 |" in source  # mean ± std in the page's table, as in the .md file
    assert "| 1 | 3 | 0.200 ± 0.050 |" in (report / "disentanglement_table.md").read_text()
    best = pd.read_csv(report / "best_configurations.csv").set_index("metric")
    assert best.loc["mig", "verdict"] == "within seed noise" and best.loc["val_kl", "verdict"] == "beyond seed noise"
    assert best.loc["mig", "margin"] == pytest.approx(0.01) and best.loc["mig", "seed_noise"] == pytest.approx(
        2 * 0.05 * np.sqrt(2 / 3))
    # one searched parameter: no importance table of 1.000 (1), a sentence instead
    assert "Importance is not informative with a single searched parameter (beta)" in counts.text
    assert "1.000 (1)" not in source
    # each view once: the trade-off figure holds MIG, val_recon_loss and rate-distortion
    assert not (report / "rate_distortion.png").exists()
    assert "Figure 2. val\\_elbo, val\\_kl vs beta" not in source and "Figure 2. val_elbo, val_kl vs beta" in source
    assert "Summaries for a large study" not in source


def test_a_study_of_1000_trials_keeps_the_page_small_and_says_what_it_summarised(tmp_path):
    from analysis.report import TABLE_MAX_ROWS, write_report

    study = write_study(tmp_path / "tpe", configurations=1000, repeats=1, continuous=True)
    write_report(study, model_figures=False)
    report = study / "report"
    counts = check_page(report)
    assert counts.images == 8  # trade-off, metrics vs beta and vs lr, Pareto, correlation, curves, importance, parallel
    page = PageParser()
    page.feed((report / "index.html").read_text())
    assert len(page.tables[0]) == 1 + TABLE_MAX_ROWS  # header and the 20 best configurations
    assert counts.table_rows <= 40 and (report / "index.html").stat().st_size < 30_000
    assert len(pd.read_csv(report / "disentanglement_table.csv")) == 1000
    mig = [float(row[3]) for row in page.tables[0][1:]]
    assert mig == sorted(mig, reverse=True)  # the best by the objective, mig (max)
    for line in ["disentanglement table: 1,000 configurations > 20", "the other 980 are in the CSV",
                 f"learning curves summarised: 1,000 trials > {plots.LEARNING_CURVES_MAX_TRIALS}",
                 f"scatter plots as densities: 1,000 finished trials > {plots.SCATTER_MAX_POINTS}",
                 f"beta binned on x axes: 1,000 distinct values > {plots.PARAM_MAX_VALUES}",
                 "lr binned on x axes: 1,000 distinct values",
                 f"parallel coordinates: 1,000 finished trials > {plots.PARALLEL_MAX_LINES}"]:
        assert line in counts.text, line
    best = pd.read_csv(report / "best_configurations.csv")
    assert set(best["verdict"]) == {"seed noise unknown (one repeat each)"}


def test_a_study_with_udr_shows_configurations_ranked_by_udr_and_its_agreement_with_mig(tmp_path):
    from analysis.report import write_report

    study = write_study(tmp_path / "smoke", udr=True)
    write_report(study, model_figures=False)
    report = study / "report"
    counts = check_page(report)
    assert counts.tables == 3 + 2 and "UDR: agreement between seeds" in counts.text
    ranked = pd.read_csv(report / "udr_table.csv")
    assert list(ranked["beta"]) == [16.0, 4.0, 1.0]  # mean udr 0.52, 0.51, 0.50
    assert ranked["udr_mean"].tolist() == pytest.approx([0.52, 0.51, 0.50])
    rho = pd.read_csv(report / "udr_correlations.csv").set_index("metric")
    assert rho.loc["mig", "n"] == 9 and rho.loc["mig", "spearman_rho"] == pytest.approx(1.0)


def test_a_study_without_udr_has_no_udr_section(tmp_path):
    from analysis.report import write_report

    study = write_study(tmp_path / "smoke")
    write_report(study, model_figures=False)
    assert not (study / "report" / "udr_table.csv").exists()
    assert "UDR" not in (study / "report" / "index.md").read_text()
