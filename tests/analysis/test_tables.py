"""Tables: per-configuration summaries, the best configuration per metric, markdown/LaTeX output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.tables import best_configurations, disentanglement_table, to_latex, to_markdown, write_table


@pytest.fixture
def trials() -> pd.DataFrame:
    """beta x latent_dim, 3 repeats each, with known means; beta 4 / latent 10 disentangles best,
    beta 1 / latent 10 reconstructs best. A failed trial with an absurd mig must not count."""
    rng = np.random.default_rng(0)
    mig = {(1, 5): 0.05, (1, 10): 0.10, (4, 5): 0.20, (4, 10): 0.40}
    recon = {(1, 5): 90.0, (1, 10): 80.0, (4, 5): 120.0, (4, 10): 110.0}
    rows = []
    for (beta, dim), m in mig.items():
        for repeat in range(3):
            rows.append({"trial_id": f"{beta}-{dim}-{repeat}", "status": "TERMINATED", "beta": beta,
                         "latent_dim": dim, "repeat": repeat, "mig": m + rng.normal(0, 0.01),
                         "val_recon_loss": recon[beta, dim] + rng.normal(0, 1.0), "val_elbo": -recon[beta, dim]})
    rows.append({"trial_id": "failed", "status": "ERROR", "beta": 1, "latent_dim": 5, "repeat": 3, "mig": 0.99,
                 "val_recon_loss": 1.0, "val_elbo": -1.0})
    return pd.DataFrame(rows)


def test_disentanglement_table_counts_finished_repeats(trials):
    table = disentanglement_table(trials, ["beta", "latent_dim"])
    assert table["n"].tolist() == [3, 3, 3, 3]
    assert table["mig_mean"].max() < 0.5
    assert "val_kl_mean" not in table  # absent metrics are skipped


def test_best_configurations_picks_the_known_best(trials):
    best = best_configurations(trials, ["beta", "latent_dim"], ["mig", "val_recon_loss", "val_elbo", "val_kl"])
    assert list(best.columns) == ["metric", "mode", "beta", "latent_dim", "mean", "std", "n"]
    rows = best.set_index("metric")
    assert list(rows.index) == ["mig", "val_recon_loss", "val_elbo"]  # val_kl never reported
    assert rows.loc["mig", ["mode", "beta", "latent_dim"]].tolist() == ["max", 4, 10]
    assert rows.loc["val_recon_loss", ["mode", "beta", "latent_dim"]].tolist() == ["min", 1, 10]
    assert rows.loc["val_elbo", ["mode", "beta", "latent_dim"]].tolist() == ["max", 1, 10]
    done = trials[(trials["status"] == "TERMINATED") & (trials["beta"] == 4) & (trials["latent_dim"] == 10)]
    assert rows.loc["mig", "mean"] == pytest.approx(done["mig"].mean())
    assert rows.loc["mig", "std"] == pytest.approx(done["mig"].std(ddof=1))
    assert rows.loc["mig", "n"] == 3


def test_best_configurations_explicit_modes_override(trials):
    best = best_configurations(trials, ["beta", "latent_dim"], ["mig"], modes=["min"])
    assert best[["mode", "beta", "latent_dim"]].iloc[0].tolist() == ["min", 1, 5]


def test_best_configurations_single_key_and_ties_go_to_the_first(trials):
    trials["score_accuracy"] = 1.0  # every configuration ties
    best = best_configurations(trials, ["beta"], ["score_accuracy"])
    assert best[["beta", "mean", "n"]].iloc[0].tolist() == [1, 1.0, 6]


def test_best_configurations_no_finished_trials(trials):
    trials["status"] = "ERROR"
    best = best_configurations(trials, ["beta"], ["mig"])
    assert best.empty and list(best.columns) == ["metric", "mode", "beta", "mean", "std", "n"]


def test_best_configurations_bad_arguments(trials):
    with pytest.raises(ValueError, match="modes"):
        best_configurations(trials, ["beta"], ["mig", "val_elbo"], modes=["max"])
    with pytest.raises(ValueError, match="modes"):
        best_configurations(trials, ["beta"], ["mig"], modes=["up"])
    with pytest.raises(KeyError, match="gamma"):
        best_configurations(trials, ["gamma"], ["mig"])
    with pytest.raises(KeyError, match="weirdness"):
        best_configurations(trials, ["beta"], ["weirdness"])


def test_to_latex_booktabs_with_mean_pm_std(trials):
    table = disentanglement_table(trials, ["beta", "latent_dim"], ["mig", "val_recon_loss"])
    latex = to_latex(table)
    lines = latex.splitlines()
    assert lines[0] == r"\begin{tabular}{lllrr}"
    assert lines[1:4] == [r"\toprule", r"beta & latent\_dim & n & mig & val\_recon\_loss \\", r"\midrule"]
    assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert len(lines) == 4 + 4 + 2
    assert lines[4].startswith("1 & 5 & 3 & 0.0") and lines[4].count(r"$\pm$") == 2


def test_to_latex_without_std_and_for_best_configurations(trials):
    one = trials[trials["repeat"] == 0]  # n = 1: no std
    body = to_latex(disentanglement_table(one, ["beta", "latent_dim"], ["mig"])).splitlines()[4:-2]
    assert len(body) == 4 and not any(r"$\pm$" in line for line in body)
    latex = to_latex(best_configurations(trials, ["beta"], ["mig"]))
    assert r"metric & mode & beta & n & mean $\pm$ std \\" in latex
    assert r"mig & max & 4 & 6 & " in latex


def test_to_markdown_best_configurations(trials):
    markdown = to_markdown(best_configurations(trials, ["beta"], ["mig"]))
    assert markdown.splitlines()[0] == "| metric | mode | beta | n | mean ± std |"


def test_write_table_writes_md_csv_tex(trials, tmp_path):
    paths = write_table(disentanglement_table(trials, ["beta"]), tmp_path / "report")
    assert [p.name for p in paths] == ["disentanglement_table.md", "disentanglement_table.csv",
                                       "disentanglement_table.tex"]
    assert r"\toprule" in paths[2].read_text()
    assert pd.read_csv(paths[1])["beta"].tolist() == [1, 4]


def with_udr(trials: pd.DataFrame) -> pd.DataFrame:
    """The fixture's trials with a udr that follows mig exactly in rank (udr = 2 * mig) and a sap
    that runs against it; the failed trial's udr is NaN."""
    out = trials.copy()
    out["udr"] = np.where(out["status"] == "TERMINATED", 2 * out["mig"], np.nan)
    out["sap"] = -out["mig"]
    return out


def test_udr_table_ranks_configurations_by_mean_udr(trials):
    from analysis.tables import udr_table

    table = udr_table(with_udr(trials), ["beta", "latent_dim"])
    assert list(table.columns) == ["beta", "latent_dim", "n", "udr_mean", "udr_std"]
    assert list(zip(table["beta"], table["latent_dim"])) == [(4, 10), (4, 5), (1, 10), (1, 5)]  # mig's order
    assert table["n"].tolist() == [3, 3, 3, 3]
    assert table["udr_mean"].is_monotonic_decreasing
    assert "| beta | latent_dim | n | udr |" in to_markdown(table)


def test_udr_table_without_the_column_names_the_rescore_command(trials):
    from analysis.tables import udr_table

    with pytest.raises(KeyError, match="--metrics udr"):
        udr_table(trials, ["beta"])


def test_udr_correlations_are_spearman_over_finished_trials(trials):
    from analysis.tables import udr_correlations

    table = udr_correlations(with_udr(trials)).set_index("metric")
    assert list(table.index) == ["mig", "sap"]  # the ground-truth metrics present; val_* are not supervised
    assert table.loc["mig", "spearman_rho"] == pytest.approx(1.0)
    assert table.loc["sap", "spearman_rho"] == pytest.approx(-1.0)
    assert table["n"].tolist() == [12, 12]  # the failed trial does not count
    assert table.loc["mig", "p_value"] < 1e-6


def test_udr_correlations_need_three_varying_pairs(trials):
    from analysis.tables import udr_correlations

    few = with_udr(trials).head(2)
    constant = with_udr(trials).assign(mig=0.3)
    assert np.isnan(udr_correlations(few, ["mig"])["spearman_rho"]).all()
    assert np.isnan(udr_correlations(constant, ["mig"])["spearman_rho"]).all()
# ---- the best configuration against seed noise ----------------------------------------------------

def _margin_trials(means: dict[float, float], spread: tuple[float, ...] = (-0.05, 0.0, 0.05)) -> pd.DataFrame:
    """One row per (beta, repeat): metric ``score_accuracy`` = mean + spread[repeat] (seed std 0.05 with 3)."""
    rows = [{"trial_id": f"{beta}-{r}", "status": "TERMINATED", "beta": beta, "score_accuracy": mean + offset}
            for beta, mean in means.items() for r, offset in enumerate(spread)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("means, verdict, margin", [
    ({1.0: 0.50, 4.0: 0.52}, "within seed noise", 0.02),  # 0.02 < 2 * 0.05 * sqrt(2/3) = 0.0816
    ({1.0: 0.50, 4.0: 0.70}, "beyond seed noise", 0.20),
    ({1.0: 0.50, 4.0: 0.52, 16.0: 0.62}, "beyond seed noise", 0.10),  # the runner-up is beta 4, not beta 1
])
def test_a_best_is_named_only_beyond_twice_the_standard_error_of_its_margin(means, verdict, margin):
    best = best_configurations(_margin_trials(means), ["beta"], ["score_accuracy"], margins=True)
    assert list(best.columns) == ["metric", "mode", "beta", "mean", "std", "n", "runner_up", "margin", "seed_noise",
                                  "verdict"]
    row = best.iloc[0]
    assert row["beta"] == max(means, key=means.get) and row["verdict"] == verdict
    assert row["margin"] == pytest.approx(margin)
    assert row["seed_noise"] == pytest.approx(2 * 0.05 * np.sqrt(1 / 3 + 1 / 3))
    assert row["runner_up"] == ("beta=4" if len(means) == 3 else "beta=1")


def test_without_repeats_or_a_runner_up_no_best_is_named():
    one_repeat = best_configurations(_margin_trials({1.0: 0.5, 4.0: 0.9}, spread=(0.0,)), ["beta"],
                                     ["score_accuracy"], margins=True).iloc[0]
    assert one_repeat["verdict"] == "seed noise unknown (one repeat each)" and np.isnan(one_repeat["seed_noise"])
    assert one_repeat["margin"] == pytest.approx(0.4)
    single = best_configurations(_margin_trials({1.0: 0.5}), ["beta"], ["score_accuracy"], margins=True).iloc[0]
    assert single["verdict"] == "single configuration" and single["runner_up"] is None


def test_pooled_seed_std_weights_each_configuration_by_its_degrees_of_freedom():
    from analysis.tables import pooled_seed_std

    counts, stds = pd.Series([3, 2, 1]), pd.Series([0.1, 0.4, np.nan])  # (2 * 0.01 + 1 * 0.16) / 3 = 0.06
    assert pooled_seed_std(counts, stds) == pytest.approx(np.sqrt(0.06))
    assert np.isnan(pooled_seed_std(pd.Series([1, 1]), pd.Series([np.nan, np.nan])))


def test_the_margin_columns_follow_the_mean_in_markdown_and_latex():
    best = best_configurations(_margin_trials({1.0: 0.50, 4.0: 0.52}), ["beta"], ["score_accuracy"], margins=True)
    lines = to_markdown(best).splitlines()
    assert lines[0] == "| metric | mode | beta | n | mean ± std | runner_up | margin | seed_noise | verdict |"
    assert lines[2] == "| score_accuracy | max | 4 | 3 | 0.520 ± 0.050 | beta=1 | 0.020 | 0.082 | within seed noise |"
    latex = to_latex(best).splitlines()
    assert latex[0] == r"\begin{tabular}{llllrlrrl}"  # metric, mode, beta, n; mean; the margin columns
    assert latex[4].endswith(r"beta=1 & 0.020 & 0.082 & within seed noise \\")


def test_markdown_cells_escape_what_would_break_a_table_or_turn_into_emphasis():
    from analysis.tables import markdown_cell

    assert markdown_cell("val_recon_loss") == "val_recon_loss"  # inside a word, _ cannot emphasise
    assert markdown_cell("a|b *c* _d_ [e]") == r"a\|b \*c\* \_d\_ \[e\]"
    table = pd.DataFrame({"encoder": ["conv|mlp", None], "mig_mean": [0.5, 0.25], "mig_std": [np.nan, 0.1]})
    assert to_markdown(table).splitlines()[2:] == [r"| conv\|mlp | 0.500 |", "| n/a | 0.250 ± 0.100 |"]
