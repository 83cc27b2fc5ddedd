"""Plots: each returns a Figure of the expected layout; pareto_mask and spearman_matrix on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from analysis import plots
from analysis.plots import pareto_mask, spearman_matrix

BETAS = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


@pytest.fixture
def trials() -> pd.DataFrame:
    """6 betas x 3 repeats; one trial failed (its metrics must not be plotted)."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (beta, repeat) in enumerate((b, r) for b in BETAS for r in range(3)):
        kl = 40 / np.sqrt(beta) + rng.normal(0, 1)
        recon = 1000 + 300 / kl + rng.normal(0, 2)
        rows.append({"trial_id": f"t{i:02d}", "status": "ERROR" if i == 4 else "TERMINATED", "beta": beta,
                     "repeat": repeat, "encoder": ["conv", "mlp"][repeat % 2], "val_kl": kl,
                     "val_recon_loss": recon, "val_elbo": -(kl + recon),
                     "mig": 0.02 * np.log2(2 * beta) + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


@pytest.fixture
def epochs(trials) -> pd.DataFrame:
    rows = [{"trial_id": tid, "epoch": e, "train_loss": 2000 / e + 10 * i, "val_elbo": -2000 / e - 10 * i}
            for i, tid in enumerate(trials["trial_id"]) for e in range(1, 6)]
    return pd.DataFrame(rows)


def _notes(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


# ----------------------------------------------------------------------------- result plots


def test_tradeoff_figure_has_three_panels_and_a_colourbar(trials):
    fig = plots.tradeoff_figure(trials, "beta")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # mig, val_recon_loss, rate-distortion, its colourbar
    assert fig.axes[3].get_ylabel() == "beta (log scale)"


def test_tradeoff_figure_missing_param_raises(trials):
    with pytest.raises(KeyError, match="lr"):
        plots.tradeoff_figure(trials, "lr")


def test_metric_vs_param_figure_plots_means_over_finished_repeats(trials):
    fig = plots.metric_vs_param_figure(trials, "beta", ["mig", "val_kl", "not_a_metric"])
    assert len(fig.axes) == 3
    done = trials[trials["status"] == "TERMINATED"]
    means = done.groupby("beta")["mig"].mean()
    line = fig.axes[0].lines[0]  # the errorbar's mean line
    np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), BETAS)
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), means.to_numpy())
    assert fig.axes[0].get_xscale() == "log"
    assert "no not_a_metric reported" in _notes(fig)


def test_metric_vs_param_figure_categorical_param(trials):
    fig = plots.metric_vs_param_figure(trials, "encoder", ["mig"])
    assert len(fig.axes) == 1
    assert fig.axes[0].get_xscale() == "linear"
    assert len(fig.axes[0].lines[0].get_xdata()) == 2


def test_metric_vs_param_figure_needs_metrics(trials):
    with pytest.raises(ValueError, match="metrics"):
        plots.metric_vs_param_figure(trials, "beta", [])


@pytest.mark.parametrize(("values", "label"), [(BETAS, "beta (log scale)"), ([1.0, 2.0, 3.0, 4.0, 1.5, 2.5], "beta")])
def test_rate_distortion_log_colour_scale_when_spanning_8x(trials, values, label):
    trials["beta"] = np.repeat(values, 3)
    fig = plots.rate_distortion_figure(trials, "beta")
    assert len(fig.axes) == 2
    assert fig.axes[1].get_ylabel() == label
    assert len(fig.axes[0].collections[0].get_offsets()) == 17  # finished trials only


def test_rate_distortion_categorical_colour_has_legend(trials):
    fig = plots.rate_distortion_figure(trials, "encoder")
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["conv", "mlp"]


def test_rate_distortion_missing_colour_column_raises(trials):
    with pytest.raises(KeyError, match="gamma"):
        plots.rate_distortion_figure(trials, "gamma")


def test_rate_distortion_without_kl_is_an_annotated_panel(trials):
    fig = plots.rate_distortion_figure(trials.drop(columns="val_kl"))
    assert "no val_kl reported" in _notes(fig)


@pytest.mark.parametrize(
    "draw",
    [
        lambda t: plots.tradeoff_figure(t),
        lambda t: plots.metric_vs_param_figure(t, "beta"),
        lambda t: plots.rate_distortion_figure(t),
        lambda t: plots.pareto_figure(t),
        lambda t: plots.metric_correlation_figure(t),
    ],
    ids=["tradeoff", "metric_vs_param", "rate_distortion", "pareto", "correlation"],
)
def test_no_finished_trials_gives_annotated_panels(trials, draw):
    trials["status"] = "ERROR"
    fig = draw(trials)
    assert isinstance(fig, Figure)
    assert any("reported" in note for note in _notes(fig))


def test_pareto_mask_min_min_keeps_ties():
    values = np.array([[1, 4], [2, 2], [4, 1], [3, 3], [2, 2], [5, 5]], dtype=float)
    np.testing.assert_array_equal(pareto_mask(values, ["min", "min"]), [True, True, True, False, True, False])


def test_pareto_mask_max_min_mix():
    # (mig, recon): mig higher is better, recon lower is better.
    values = np.array([[0.1, 10], [0.2, 12], [0.05, 9], [0.1, 11], [0.2, 12.5], [np.nan, 1]])
    np.testing.assert_array_equal(pareto_mask(values, ["max", "min"]), [True, True, True, False, False, False])
    # The same points with both objectives maximised: (0.2, 12.5) dominates all but itself.
    np.testing.assert_array_equal(pareto_mask(values, ["max", "max"]), [False, False, False, False, True, False])


def test_pareto_mask_edge_cases():
    assert pareto_mask(np.array([[3.0, 1.0]]), ["min", "max"]).tolist() == [True]
    assert pareto_mask(np.empty((0, 2)), ["min", "max"]).tolist() == []
    same = np.ones((3, 2))
    assert pareto_mask(same, ["min", "min"]).all()


@pytest.mark.parametrize(("values", "modes"), [(np.ones((3, 2)), ["min"]), (np.ones((3, 2)), ["min", "up"]),
                                               (np.ones(3), ["min"])])
def test_pareto_mask_rejects_bad_input(values, modes):
    with pytest.raises(ValueError, match="must"):
        pareto_mask(values, modes)


def test_pareto_figure_highlights_the_front(trials):
    fig = plots.pareto_figure(trials, ["mig", "val_recon_loss"])
    assert len(fig.axes) == 1
    done = trials[trials["status"] == "TERMINATED"]
    expected = pareto_mask(done[["mig", "val_recon_loss"]].to_numpy(), ["max", "min"])
    ax = fig.axes[0]
    front = ax.lines[0]
    assert len(front.get_xdata()) == expected.sum() > 0
    assert np.all(np.diff(front.get_xdata()) >= 0)  # joined in order of the first objective
    faded = ax.collections[0]
    assert faded.get_alpha() == pytest.approx(0.25)
    assert len(faded.get_offsets()) == len(done) - expected.sum()


def test_pareto_figure_needs_two_metrics(trials):
    with pytest.raises(ValueError, match="2 objectives"):
        plots.pareto_figure(trials, ["mig"], ["max"])


def test_spearman_matrix_known_answers():
    rng = np.random.default_rng(1)
    a = rng.normal(size=30)
    table = pd.DataFrame({"status": "TERMINATED", "mig": a, "val_kl": np.exp(a), "val_elbo": -(a**3),
                          "val_recon_loss": rng.normal(size=30)})
    corr = spearman_matrix(table, ["mig", "val_kl", "val_elbo", "val_recon_loss", "absent"])
    assert list(corr.columns) == ["mig", "val_kl", "val_elbo", "val_recon_loss"]
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert corr.loc["mig", "val_kl"] == pytest.approx(1.0)  # monotone, though not linear
    assert corr.loc["mig", "val_elbo"] == pytest.approx(-1.0)
    assert abs(corr.loc["mig", "val_recon_loss"]) < 0.5


def test_metric_correlation_figure_is_an_annotated_heatmap(trials):
    fig = plots.metric_correlation_figure(trials)
    assert len(fig.axes) == 2  # heatmap, colourbar
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (4, 4)
    assert len(ax.texts) == 16
    assert [t.get_text() for t in ax.texts[::5]] == ["1.00"] * 4


def test_learning_curves_one_line_per_trial(epochs):
    fig = plots.learning_curves_figure(epochs, ["train_loss", "val_elbo", "val_kl"])
    assert len(fig.axes) == 3
    assert [len(ax.lines) for ax in fig.axes] == [18, 18, 0]
    assert "no val_kl reported" in _notes(fig)
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [1, 2, 3, 4, 5])


def test_learning_curves_coloured_by_config(epochs, trials):
    fig = plots.learning_curves_figure(epochs, color_by="beta", trials=trials)
    assert len(fig.axes) == 3  # two panels and the colourbar
    first, last = fig.axes[0].lines[0], fig.axes[0].lines[-1]  # beta 0.5 and 16
    assert not np.allclose(first.get_color(), last.get_color())


def test_learning_curves_bad_arguments(epochs, trials):
    with pytest.raises(ValueError, match="trials"):
        plots.learning_curves_figure(epochs, color_by="beta")
    with pytest.raises(KeyError, match="gamma"):
        plots.learning_curves_figure(epochs, color_by="gamma", trials=trials)
    with pytest.raises(KeyError, match="epoch"):
        plots.learning_curves_figure(epochs.drop(columns="epoch"))


# ----------------------------------------------------------------------------- model plots

LATENT_DIM, SIZE = 3, 16


def _tiny_vae(channels: int = 1):
    from trainables.registry import get_family

    torch.manual_seed(0)
    family = get_family("conv_vae")
    config = family.config_cls(filters=[8, 8], hidden_dim=16, latent_dim=LATENT_DIM)
    return family.model_cls(config, (channels, SIZE, SIZE)).eval()


def _images(n: int, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).random((n, channels, SIZE, SIZE), dtype=np.float32)


def _cell(mosaic: np.ndarray, row: int, col: int) -> np.ndarray:
    return mosaic[row * (SIZE + 1) : row * (SIZE + 1) + SIZE, col * (SIZE + 1) : col * (SIZE + 1) + SIZE]


def test_traversal_grid_is_latents_by_steps():
    model, x = _tiny_vae(), _images(1)
    fig = plots.traversal_figure(model, x, span=2.0, steps=5)
    assert len(fig.axes) == 1
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (LATENT_DIM * (SIZE + 1) - 1, 5 * (SIZE + 1) - 1)
    with torch.no_grad():
        mean_image = torch.sigmoid(model.decode(model.encode(torch.from_numpy(x))[0]))[0, 0].numpy()
    for d in range(LATENT_DIM):  # the middle column (offset 0) decodes the posterior mean
        np.testing.assert_allclose(_cell(mosaic, d, 2), mean_image, atol=1e-6)
        assert not np.allclose(_cell(mosaic, d, 0), _cell(mosaic, d, 4))


def test_traversal_rgb():
    fig = plots.traversal_figure(_tiny_vae(channels=3), _images(1, channels=3), steps=4)
    assert fig.axes[0].images[0].get_array().shape == (LATENT_DIM * (SIZE + 1) - 1, 4 * (SIZE + 1) - 1, 3)


@pytest.mark.parametrize(("x", "options"), [(_images(2), {}), (_images(1)[0], {}), (_images(1), {"span": 0}),
                                            (_images(1), {"steps": 1})])
def test_traversal_rejects_bad_input(x, options):
    with pytest.raises(ValueError, match="must"):
        plots.traversal_figure(_tiny_vae(), x, **options)


def test_reconstructions_two_rows():
    x = _images(4)
    fig = plots.reconstructions_figure(_tiny_vae(), x)
    assert len(fig.axes) == 1
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (2 * (SIZE + 1) - 1, 4 * (SIZE + 1) - 1)
    np.testing.assert_allclose(_cell(mosaic, 0, 3), x[3, 0])  # originals on top
    assert "NLL" in fig.axes[0].get_title()


def test_latent_pca_one_panel_per_factor():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, [3, 10], size=(200, 2))
    codes = np.column_stack([factors[:, 1], 0.1 * factors[:, 0], rng.normal(0, 0.01, 200)])  # (200, 3)
    fig = plots.latent_pca_figure(codes, factors, ["shape", "position"])
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 and len(fig.axes) == 4  # plus a colourbar each
    assert [ax.get_title() for ax in panels] == ["latent PCA coloured by shape", "latent PCA coloured by position"]
    assert panels[0].get_xlabel() == "PC1 (100% of variance)"  # the code is mostly factor 1


def test_latent_pca_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="factor_names"):
        plots.latent_pca_figure(np.zeros((5, 2)), np.zeros((5, 2), dtype=int), ["only_one"])
    with pytest.raises(ValueError, match="shapes"):
        plots.latent_pca_figure(np.zeros((5, 2)), np.zeros((4, 2), dtype=int), ["a", "b"])


# ----------------------------------------------------------------------------- the study as an instrument


def test_parallel_coordinates_one_line_per_finished_trial(trials):
    from matplotlib.collections import LineCollection

    fig = plots.parallel_coordinates_figure(trials, ["beta", "encoder"], "mig", "max")
    ax = fig.axes[0]
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = lines.get_segments()
    assert len(segments) == 17  # 18 trials, one failed
    assert all(seg.shape == (3, 2) for seg in segments)  # beta, encoder, mig
    assert [t.get_text() for t in ax.get_xticklabels()] == ["beta\n(log)", "encoder\n(categorical)", "mig"]
    beta_y = np.array([seg[0, 1] for seg in segments])
    assert beta_y.min() == 0.0 and beta_y.max() == 1.0
    assert np.allclose(np.unique(beta_y), np.linspace(0, 1, 6))  # 0.5..16 doubling: evenly spaced on log
    assert set(np.round([seg[1, 1] for seg in segments], 6)) == {0.0, 1.0}  # conv, mlp
    assert fig.axes[1].get_ylabel() == "mig (higher is better)"
    assert segments[-1][2, 1] == 1.0  # the highest mig drawn last, on top


def test_parallel_coordinates_min_mode_draws_the_lowest_last(trials):
    from matplotlib.collections import LineCollection

    fig = plots.parallel_coordinates_figure(trials, ["beta"], "val_recon_loss", "min")
    (lines,) = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert lines.get_segments()[-1][1, 1] == 0.0  # the lowest loss on top


def test_parallel_coordinates_unreported_metric_and_bad_input(trials):
    fig = plots.parallel_coordinates_figure(trials, ["beta"], "dci", "max")
    assert _notes(fig) == ["no dci reported"]
    with pytest.raises(KeyError, match="gamma"):
        plots.parallel_coordinates_figure(trials, ["gamma"], "mig", "max")
    with pytest.raises(ValueError, match="mode"):
        plots.parallel_coordinates_figure(trials, ["beta"], "mig", "up")


def test_importance_figure_one_panel_per_objective():
    table = pd.DataFrame({"objective": ["mig", "mig", "val_elbo", "val_elbo"], "mode": ["max"] * 4,
                          "param": ["beta", "lr", "lr", "beta"], "importance": [0.9, 0.1, 0.7, 0.3],
                          "rank": [1, 2, 1, 2], "evaluator": ["ped_anova"] * 4})
    fig = plots.importance_figure(table)
    assert [ax.get_title() for ax in fig.axes] == ["mig (higher is better)", "val_elbo (higher is better)"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["lr", "beta"]  # most important on top
    empty = table.iloc[:0].copy()
    empty.attrs["skipped"] = {"mig": "2 configuration(s)"}
    assert "mig: 2 configuration(s)" in _notes(plots.importance_figure(empty))[0]


# ----------------------------------------------------------------------------- large studies: summaries


def _many(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` finished trials of a continuous search: beta drawn log-uniformly from [1, 16]."""
    rng = np.random.default_rng(seed)
    beta = np.exp(rng.uniform(0, np.log(16), n))
    kl = 40 / np.sqrt(beta) + rng.normal(0, 1, n)
    recon = 1000 + 300 / kl
    return pd.DataFrame({"trial_id": [f"t{i:04d}" for i in range(n)], "status": "TERMINATED", "beta": beta,
                         "val_kl": kl, "val_recon_loss": recon, "val_elbo": -(kl + recon),
                         "mig": 0.02 * np.log2(beta) + rng.normal(0, 0.005, n)})


def test_learning_curves_of_many_trials_are_a_median_and_band_per_colour_bin():
    from matplotlib.collections import PolyCollection

    trials = _many(plots.LEARNING_CURVES_MAX_TRIALS + 10)
    epochs = pd.DataFrame([{"trial_id": t, "epoch": e, "val_kl": kl + e}
                           for t, kl in zip(trials["trial_id"], trials["val_kl"]) for e in range(1, 4)])
    fig = plots.learning_curves_figure(epochs, ["val_kl"], color_by="beta", trials=trials)
    ax = fig.axes[0]
    assert len(ax.lines) == plots.CURVE_BINS  # not 60 lines
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == plots.CURVE_BINS
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(label.startswith("beta ") and label.endswith("(12)") for label in labels)  # 60 trials in 5 bins
    low_beta = ax.lines[0].get_ydata()  # the lowest beta bin has the highest KL
    assert low_beta[0] > ax.lines[-1].get_ydata()[0]
    fewer = plots.learning_curves_figure(epochs, ["val_kl"], color_by="beta", trials=trials, max_trials=100)
    assert len(fewer.axes[0].lines) == len(trials)


def test_parallel_coordinates_of_many_trials_draw_the_best_as_lines_over_a_density():
    from matplotlib.collections import LineCollection

    trials = _many(plots.PARALLEL_MAX_LINES + 50)
    fig = plots.parallel_coordinates_figure(trials, ["beta"], "mig", "max")
    ax = fig.axes[0]
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines.get_segments()) == plots.PARALLEL_MAX_LINES
    best = np.sort(trials["mig"].to_numpy())[-plots.PARALLEL_MAX_LINES:]
    shown = np.array([seg[1, 1] for seg in lines.get_segments()])  # the mig axis, in [0, 1]
    low, high = trials["mig"].min(), trials["mig"].max()
    np.testing.assert_allclose(np.sort(shown), (best - low) / (high - low))
    assert len(ax.patches) == 2 * 20  # a 20-bin density beside each of the two axes
    assert "the best 100 of 150 trials" in ax.get_title()


def test_scatters_of_many_trials_become_hexagonal_bins():
    from matplotlib.collections import PathCollection, PolyCollection

    trials = _many(plots.SCATTER_MAX_POINTS + 100)
    fig = plots.rate_distortion_figure(trials, "beta")
    ax = fig.axes[0]
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]
    (bins,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bins.get_array()) < len(trials) / 2  # one colour per occupied hexagon, not per trial
    assert fig.axes[1].get_ylabel() == "beta (log scale), median per bin"
    fig = plots.pareto_figure(trials, ["mig", "val_recon_loss"], ["max", "min"])
    ax = fig.axes[0]
    assert [type(c) for c in ax.collections] == [PolyCollection]  # the dominated trials as a density
    front = pareto_mask(trials[["mig", "val_recon_loss"]].to_numpy(), ["max", "min"])
    assert len(ax.lines[0].get_xdata()) == front.sum()  # the front is still every non-dominated trial


def test_metric_vs_a_continuous_parameter_is_binned():
    trials = _many(plots.SCATTER_MAX_POINTS + 100)
    fig = plots.metric_vs_param_figure(trials, "beta", ["mig"])
    ax = fig.axes[0]
    (median,) = ax.lines
    assert len(median.get_xdata()) == plots.PARAM_BINS
    assert np.all(np.diff(median.get_ydata()) > 0)  # mig grows with log2(beta)
    assert not ax.collections[1:] and len(ax.collections) == 1  # the band; no dot per trial
    few = plots.metric_vs_param_figure(_many(plots.PARAM_MAX_VALUES + 5), "beta", ["mig"]).axes[0]
    assert len(few.collections[0].get_offsets()) == plots.PARAM_MAX_VALUES + 5  # dots kept below SCATTER_MAX_POINTS
