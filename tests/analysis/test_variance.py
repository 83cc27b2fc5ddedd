"""Seed share of variance: known shares recovered, the ANOVA estimator by hand, NaN with a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import tables
from analysis.variance import seed_noise_sentence, seed_noise_sentences, seed_share, variance_markdown, variance_table


def _layout(shares: dict[str, float], *, configs: int = 60, repeats: int = 6, seed: int = 0) -> pd.DataFrame:
    """``configs`` x ``repeats`` finished trials; metric m has total variance 1, a share shares[m] between seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(configs):
        effects = {m: rng.normal(0, np.sqrt(1 - s)) for m, s in shares.items()}
        for r in range(repeats):
            rows.append({"beta": 0.5 * (1 + i % 10), "latent_dim": 2 + i // 10, "repeat": r, "status": "TERMINATED",
                         **{m: effects[m] + rng.normal(0, np.sqrt(s)) for m, s in shares.items()}})
    return pd.DataFrame(rows)


def test_known_seed_shares_are_recovered():
    trials = _layout({"mig": 0.8, "val_elbo": 0.1})
    table = variance_table(trials, ["beta", "latent_dim"], ["mig", "val_elbo"], random_state=np.random.default_rng(0))
    rows = table.set_index("metric")
    for metric, truth in {"mig": 0.8, "val_elbo": 0.1}.items():
        row = rows.loc[metric]
        assert row["seed_share"] == pytest.approx(truth, abs=0.08)
        assert row["seed_share_low"] <= truth <= row["seed_share_high"]
        assert row["seed_share_high"] - row["seed_share_low"] < 0.3
        assert row["config_share"] == pytest.approx(1 - row["seed_share"])
        assert (row["n_configs"], row["n_repeats"], row["n_trials"]) == (60, 6.0, 360)
        assert pd.isna(row["reason"])


def test_anova_estimator_on_an_unbalanced_layout_by_hand():
    """Groups [1, 3] and [5, 7, 9]: MSW = 10/3, MSB = 30, n0 = 2.4, s_b^2 = 100/9, share = 3/13."""
    share, low, high = seed_share([np.array([1.0, 3.0]), np.array([5.0, 7.0, 9.0])],
                                  random_state=np.random.default_rng(0), num_bootstrap=200)
    assert share == pytest.approx(3 / 13)
    assert 0.0 <= low <= high <= 1.0


def test_between_below_within_clips_to_a_seed_share_of_one():
    share, _, _ = seed_share([np.array([0.0, 10.0]), np.array([1.0, 9.0])], random_state=np.random.default_rng(0))
    assert share == 1.0


def test_one_repeat_per_configuration_gives_nan_with_a_reason():
    trials = _layout({"mig": 0.5}, repeats=1)
    row = variance_table(trials, ["beta", "latent_dim"], ["mig"], random_state=np.random.default_rng(0)).iloc[0]
    assert np.isnan(row["seed_share"]) and np.isnan(row["seed_share_low"])
    assert "one repeat per configuration" in row["reason"]
    assert (row["n_configs"], row["n_repeats"]) == (60, 1.0)


def test_absent_constant_and_single_configuration_metrics_have_reasons():
    trials = _layout({"mig": 0.5}, configs=4, repeats=3).assign(const=2.0)
    one = trials[trials["beta"] == 0.5]
    table = variance_table(trials, ["beta"], ["const", "nope"], random_state=np.random.default_rng(0))
    assert "does not vary" in table.loc[0, "reason"]
    assert "not a column" in table.loc[1, "reason"]
    single = variance_table(one, ["beta"], ["mig"], random_state=np.random.default_rng(0))
    assert "1 configuration(s)" in single.loc[0, "reason"]


def test_unfinished_and_nan_trials_are_left_out():
    trials = _layout({"mig": 0.5}, configs=10, repeats=3)
    trials.loc[0, "status"] = "ERROR"
    trials.loc[1, "mig"] = np.nan
    row = variance_table(trials, ["beta", "latent_dim"], ["mig"], random_state=np.random.default_rng(0)).iloc[0]
    assert row["n_trials"] == 28 and row["n_configs"] == 10


def test_same_seed_same_interval_and_the_tables_wrapper():
    trials = _layout({"mig": 0.5}, configs=20, repeats=3)
    first = variance_table(trials, ["beta", "latent_dim"], ["mig"], random_state=np.random.default_rng(7))
    again = tables.variance_table(trials, ["beta", "latent_dim"], ["mig"], random_state=np.random.default_rng(7))
    pd.testing.assert_frame_equal(first, again)
    assert list(first.columns[:7]) == ["metric", "seed_share", "seed_share_low", "seed_share_high", "config_share",
                                       "n_configs", "n_repeats"]


def test_the_sentence_only_above_one_half():
    row = {"metric": "mig", "seed_share": 0.62, "seed_share_low": 0.41, "seed_share_high": 0.8}
    assert seed_noise_sentence(row) == (
        "For mig, more than half of the variance (0.62, 90% CI 0.41-0.80) is between seeds of one configuration: "
        "differences between configurations are within seed noise (Locatello et al. 2019).")
    assert seed_noise_sentence({**row, "seed_share": 0.5}) is None
    assert seed_noise_sentence({**row, "seed_share": np.nan}) is None
    trials = _layout({"mig": 0.8, "val_elbo": 0.1})
    table = variance_table(trials, ["beta", "latent_dim"], ["mig", "val_elbo"], random_state=np.random.default_rng(0))
    sentences = seed_noise_sentences(table)
    assert len(sentences) == 1 and sentences[0].startswith("For mig, more than half")
    assert variance_markdown(table).splitlines()[2].startswith("| mig | 0.")


def test_bad_arguments_are_refused():
    trials = _layout({"mig": 0.5}, configs=3, repeats=2)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="repeat"):
        variance_table(trials, ["beta", "repeat"], ["mig"], random_state=rng)
    with pytest.raises(KeyError, match="gamma"):
        variance_table(trials, ["gamma"], ["mig"], random_state=rng)
    with pytest.raises(ValueError, match="num_bootstrap"):
        variance_table(trials, ["beta"], ["mig"], random_state=rng, num_bootstrap=5)
    with pytest.raises(ValueError, match="2 configurations"):
        seed_share([np.array([1.0, 2.0])], random_state=rng)
