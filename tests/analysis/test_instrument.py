"""Report sections of the study as an instrument: importance, parallel coordinates, seed variance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.instrument import instrument_sections


@pytest.fixture
def trials() -> pd.DataFrame:
    """4 betas x 3 latent dims x 3 repeats: val_elbo set by beta, mig mostly seed noise; one trial failed."""
    rng = np.random.default_rng(0)
    rows = []
    for beta in [0.5, 1.0, 4.0, 16.0]:
        for latent_dim in [2, 4, 8]:
            effect = rng.normal(0, 0.01)
            for repeat in range(3):
                rows.append({"trial_id": f"t{len(rows):02d}", "status": "TERMINATED", "beta": beta,
                             "latent_dim": latent_dim, "encoder": "mlp", "repeat": repeat,
                             "val_elbo": -10 * np.log2(beta) + rng.normal(0, 0.1),
                             "mig": 0.2 + effect + rng.normal(0, 0.05)})
    frame = pd.DataFrame(rows)
    frame.loc[3, "status"] = "ERROR"
    return frame


def test_sections_and_figures(trials, tmp_path):
    sections, figures = instrument_sections(trials, ["beta", "latent_dim", "encoder", "trial_id"], ["val_elbo", "mig"],
                                            ["max", "max"], tmp_path, num_bootstrap=200)
    kinds = [kind for kind, _ in sections]
    assert set(kinds) <= {"h2", "table", "text"}
    assert kinds.count("table") == 2
    assert sections[0] == ("h2", "Hyperparameter importance (PED-ANOVA)")
    importance_md = sections[kinds.index("table")][1]
    assert importance_md.splitlines()[0] == "| param | val_elbo (max) | mig (max) |"
    assert importance_md.splitlines()[2].startswith("| beta | ")  # beta alone sets val_elbo
    assert any(body == "mig: constant over the finished trials (importance 0): encoder." for _, body in sections)
    texts = [body for kind, body in sections if kind == "text"]
    assert any(t.startswith("For mig, more than half of the variance") for t in texts)
    assert not any(t.startswith("For val_elbo") for t in texts)
    assert [title for title, _ in figures] == ["Importance of each searched parameter, per objective (PED-ANOVA)",
                                               "Parallel coordinates, coloured by val_elbo"]
    for _, path in figures:
        assert path.is_file() and path.stat().st_size > 0
    assert {p.name for p in tmp_path.iterdir()} == {"importance.csv", "importance.png", "parallel_coordinates.png",
                                                    "seed_variance.csv"}
    variance = pd.read_csv(tmp_path / "seed_variance.csv")
    assert variance["metric"].tolist() == ["val_elbo", "mig"]
    assert variance.loc[0, "seed_share"] < 0.01
    assert variance.loc[1, "seed_share"] > 0.5


def test_fanova_on_request(trials, tmp_path):
    sections, _ = instrument_sections(trials, ["beta", "latent_dim"], ["val_elbo"], ["max"], tmp_path,
                                      importance="fanova", num_bootstrap=50)
    assert sections[0] == ("h2", "Hyperparameter importance (fANOVA)")
    assert any(kind == "text" and body.startswith("fANOVA (Hutter et al. 2014)") for kind, body in sections)
    assert pd.read_csv(tmp_path / "importance.csv")["param"].iloc[0] == "beta"


def test_without_searched_parameters_says_so(trials, tmp_path):
    sections, figures = instrument_sections(trials, ["trial_id"], ["val_elbo"], ["max"], tmp_path)
    assert figures == [] and sections[-1][0] == "text" and "No searched parameter" in sections[-1][1]


def test_a_missing_objective_is_reported_not_raised(trials, tmp_path):
    sections, figures = instrument_sections(trials, ["beta", "latent_dim"], ["dci_disentanglement"], ["max"], tmp_path,
                                            num_bootstrap=50)
    texts = [body for kind, body in sections if kind == "text"]
    assert "No importance for dci_disentanglement: not a column of the trials table." in texts
    assert "No importance computed.\n" in [body for kind, body in sections if kind == "table"]
    assert any("dci_disentanglement is not a column" in t for t in [*texts, *(b for k, b in sections if k == "table")])
    assert [title for title, _ in figures] == ["Importance of each searched parameter, per objective (PED-ANOVA)",
                                               "Parallel coordinates, coloured by dci_disentanglement"]


def test_bad_modes_are_refused(trials, tmp_path):
    with pytest.raises(ValueError, match="modes"):
        instrument_sections(trials, ["beta"], ["val_elbo", "mig"], ["max"], tmp_path)
    with pytest.raises(ValueError, match="importance"):
        instrument_sections(trials, ["beta"], ["val_elbo"], ["max"], tmp_path, importance="shap")


def test_markdown_tables_render_as_html(trials, tmp_path):
    from analysis.tables import markdown_table_html

    sections, _ = instrument_sections(trials, ["beta", "latent_dim"], ["val_elbo"], ["max"], tmp_path,
                                      num_bootstrap=50)
    importance_md = next(body for kind, body in sections if kind == "table")
    rendered = markdown_table_html(importance_md)
    assert rendered.startswith("<table><thead><tr><th>param</th><th>val_elbo (max)</th></tr></thead><tbody>")
    assert rendered.count("<tr>") == 3 and "---" not in rendered
    assert markdown_table_html("No importance computed.\n") == "<p>No importance computed.</p>"
    assert markdown_table_html("| a<b |\n|---|\n| 1 |\n") == (
        "<table><thead><tr><th>a&lt;b</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>")


def test_one_searched_parameter_gives_no_importance_table_or_figure(trials, tmp_path):
    sections, figures = instrument_sections(trials, ["beta"], ["val_elbo"], ["max"], tmp_path, num_bootstrap=50)
    texts = [body for kind, body in sections if kind == "text"]
    assert any(t.startswith("Importance is not informative with a single searched parameter (beta)") for t in texts)
    assert [kind for kind, _ in sections].count("table") == 1  # the seed-variance table only
    assert [title for title, _ in figures] == ["Parallel coordinates, coloured by val_elbo"]
    assert not (tmp_path / "importance.png").exists() and "[CSV](importance.csv)" not in texts
