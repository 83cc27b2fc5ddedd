"""Hyperparameter importance: known rankings on synthetic studies, both evaluators, both directions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from analysis import tables
from analysis.importance import importance_markdown, importance_table, infer_distributions, param_importances

PARAMS = ["beta", "latent_dim", "lr", "encoder"]


def _study(metric_of, *, n: int = 80, seed: int = 0) -> pd.DataFrame:
    """``n`` finished trials; ``beta``, ``lr`` uniform floats, ``latent_dim`` ints, ``encoder`` categorical."""
    rng = np.random.default_rng(seed)
    trials = pd.DataFrame({
        "trial_id": [f"t{i:03d}" for i in range(n)],
        "status": "TERMINATED",
        "beta": rng.uniform(0.0, 1.0, n),
        "latent_dim": rng.integers(2, 11, n),
        "lr": rng.uniform(1e-4, 1e-2, n),
        "encoder": rng.choice(["conv", "mlp"], n),
        "repeat": 0,
    })
    trials["metric"] = metric_of(trials, rng)
    return trials


@pytest.mark.parametrize("evaluator", ["ped_anova", "fanova"])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_one_parameter_that_drives_the_metric_ranks_first(evaluator, mode):
    trials = _study(lambda t, rng: 3 * t["beta"] + rng.normal(0, 0.05, len(t)))
    result = param_importances(trials, PARAMS, "metric", mode, evaluator=evaluator, seed=0)
    assert result.reason is None
    assert next(iter(result.values)) == "beta"
    assert result.values["beta"] > 0.5
    assert sum(result.values.values()) == pytest.approx(1.0)
    assert result.n_configurations == result.n_trials == 80


def test_ped_anova_honours_the_direction():
    """The top of the metric is set by beta, its bottom by lr: each direction names its own parameter."""
    def metric(t, rng):
        lr = (t["lr"] - 1e-4) / (1e-2 - 1e-4)  # in [0, 1]
        return np.maximum(t["beta"] - 0.7, 0) - np.maximum(lr - 0.7, 0) + rng.normal(0, 0.005, len(t))

    trials = _study(metric, n=120)
    high = param_importances(trials, PARAMS, "metric", "max", evaluator="ped_anova")
    low = param_importances(trials, PARAMS, "metric", "min", evaluator="ped_anova")
    assert next(iter(high.values)) == "beta"
    assert next(iter(low.values)) == "lr"


def test_a_single_searched_parameter_has_importance_one():
    trials = _study(lambda t, rng: t["beta"])
    result = param_importances(trials, ["beta"], "metric", "max")
    assert result.values == {"beta": 1.0}


def test_a_constant_parameter_gets_zero_and_a_note():
    trials = _study(lambda t, rng: t["beta"] + rng.normal(0, 0.05, len(t))).assign(latent_dim=4)
    result = param_importances(trials, PARAMS, "metric", "max")
    assert result.values["latent_dim"] == 0.0
    assert list(result.values)[-1] == "latent_dim"
    assert "latent_dim" in result.notes[0]
    assert sum(result.values.values()) == pytest.approx(1.0)


def test_nan_metrics_and_unfinished_trials_are_dropped_and_repeats_averaged():
    trials = _study(lambda t, rng: t["beta"], n=12)
    repeated = pd.concat([trials, trials.assign(repeat=1, metric=trials["metric"] + 0.1)], ignore_index=True)
    repeated.loc[0, "metric"] = np.nan
    repeated.loc[1, "status"] = "ERROR"
    result = param_importances(repeated, PARAMS, "metric", "max")
    assert result.n_trials == 22
    assert result.n_configurations == 12  # configurations 0 and 1 keep their second repeat


def test_too_few_configurations_give_an_empty_table_with_a_reason():
    trials = _study(lambda t, rng: t["beta"], n=2)
    table = importance_table(trials, PARAMS, ["metric"], ["max"])
    assert table.empty
    assert "2 configuration(s)" in table.attrs["skipped"]["metric"]
    assert importance_markdown(table) == "No importance computed.\n"


def test_a_constant_objective_gives_a_reason():
    trials = _study(lambda t, rng: np.ones(len(t)), n=10)
    result = param_importances(trials, PARAMS, "metric", "min")
    assert result.values == {} and "same" in result.reason


def test_table_per_objective_with_modes_from_metric_names():
    trials = _study(lambda t, rng: t["beta"] + rng.normal(0, 0.05, len(t)), n=40)
    trials["mig"] = trials.pop("metric")
    trials["val_recon_loss"] = -trials["mig"]
    table = tables.importance_table(trials, PARAMS, ["mig", "val_recon_loss"])
    assert list(table.columns) == ["scope", "objective", "mode", "param", "importance", "rank", "n_configurations",
                                   "n_trials", "evaluator"]
    assert table.groupby("objective")["mode"].first().to_dict() == {"mig": "max", "val_recon_loss": "min"}
    assert table.groupby("objective")["importance"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    top = table[table["rank"] == 1].set_index("objective")["param"].to_dict()
    assert top == {"mig": "beta", "val_recon_loss": "beta"}
    markdown = importance_markdown(table)
    assert markdown.splitlines()[0] == "| param | mig (max) | val_recon_loss (min) |"
    assert markdown.splitlines()[2].startswith("| beta | ")


def test_infer_distributions():
    configs = pd.DataFrame({"beta": [0.5, 4.0], "latent_dim": [2, 8], "encoder": ["mlp", "conv"],
                            "widths": [str((64, 64)), str((32,))], "lr": [1e-4, 1e-2]})
    dists = infer_distributions(configs, list(configs.columns), log_params=["lr"])
    assert dists["beta"] == FloatDistribution(0.5, 4.0)
    assert dists["latent_dim"] == IntDistribution(2, 8)
    assert dists["encoder"] == CategoricalDistribution(["conv", "mlp"])
    assert dists["widths"] == CategoricalDistribution(["(32,)", "(64, 64)"])
    assert dists["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    with pytest.raises(ValueError, match="encoder"):
        infer_distributions(configs, ["encoder"], log_params=["encoder"])


def test_bad_arguments_are_refused():
    trials = _study(lambda t, rng: t["beta"], n=5)
    with pytest.raises(ValueError, match="mode"):
        param_importances(trials, PARAMS, "metric", "up")
    with pytest.raises(ValueError, match="evaluator"):
        param_importances(trials, PARAMS, "metric", "max", evaluator="shap")
    with pytest.raises(ValueError, match="repeat"):
        param_importances(trials, [*PARAMS, "repeat"], "metric", "max")
    with pytest.raises(KeyError, match="gamma"):
        param_importances(trials, ["gamma"], "metric", "max")


def test_a_conditional_space_is_ranked_within_each_family():
    rng = np.random.default_rng(0)
    rows = []
    for family, param, values in (("beta_vae", "beta_vae.beta", [1, 2, 4, 8]), ("factor_vae", "factor_vae.gamma",
                                                                                [10, 20, 40, 80])):
        for value in values:
            for lr in (1e-4, 1e-3):
                score = (value if family == "beta_vae" else 0.0) + 0.001 * rng.random()  # beta drives, gamma does not
                rows.append({"trial_id": f"{family}{value}{lr}", "status": "TERMINATED", "family": family,
                             param: value, "lr": lr, "mig": score})
    trials = pd.DataFrame(rows)
    table = importance_table(trials, ["family", "beta_vae.beta", "factor_vae.gamma", "lr"], ["mig"], ["max"])
    assert set(table["scope"]) == {"family beta_vae", "family factor_vae"}
    beta = table[table["scope"] == "family beta_vae"].set_index("param")["importance"]
    assert set(beta.index) == {"beta_vae.beta", "lr"} and beta["beta_vae.beta"] > beta["lr"]
    assert set(table.loc[table["scope"] == "family factor_vae", "param"]) == {"factor_vae.gamma", "lr"}
    text = importance_markdown(table)
    assert "Within family beta_vae:" in text and "Within family factor_vae:" in text


def test_a_single_searched_parameter_gets_a_sentence_not_an_importance_of_one():
    from analysis.importance import NOT_INFORMATIVE, single_parameter_scopes

    trials = _study(lambda t, rng: t["beta"] + rng.normal(0, 0.05, len(t)), n=20)
    table = importance_table(trials, ["beta"], ["metric"], ["max"])
    assert table["importance"].tolist() == [1.0]  # by construction: what the sentence replaces
    assert single_parameter_scopes(table) == {"all trials": "beta"}
    text = importance_markdown(table)
    assert NOT_INFORMATIVE in text.lower() and "(beta)" in text and "|" not in text and "1.000" not in text
    both = importance_table(trials, ["beta", "lr"], ["metric"], ["max"])
    assert single_parameter_scopes(both) == {} and importance_markdown(both).startswith("| param |")
