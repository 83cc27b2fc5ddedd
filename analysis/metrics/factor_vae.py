"""FactorVAE disentanglement score.

For a batch of observations that share the value of one factor, the latent of least variance
(each latent normalised by its standard deviation over the whole dataset) "votes" for that
factor; a majority-vote classifier maps each latent to the factor it votes for most, and the
score is that classifier's accuracy on independent votes.

References:
    Kim, Mnih 2018, "Disentangling by Factorising", arXiv:1802.05983, sec. 4. Procedure and
    defaults as in disentanglement_lib (``evaluation/metrics/factor_vae.py`` with
    the ``unsupervised_study_v1`` metric configs): 10,000 samples for the global
    variances, latents pruned when their standard deviation is below 0.05, batches of 64,
    10,000 training and 5,000 evaluation votes.

Two departures from disentanglement_lib, neither changing the accuracies: its
``num_active_dims`` is ``len`` of the boolean mask (so always ``latent_dim``), here the number
of latents kept; its votes index the latent among the active ones, here among all of them.
"""

from __future__ import annotations

import numpy as np

from analysis.metrics.utils import RepresentationFn, sample_codes_and_factors
from datasets.base import ArrayGroundTruthData, GroundTruthData

__all__ = ["compute_factor_vae", "factor_vae_from_votes", "FixedFactorSampler"]


def compute_factor_vae(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    *,
    random_state: np.random.Generator,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    batch_size: int = 64,
    prune_dims_threshold: float = 0.05,
) -> dict[str, float]:
    """Samples votes from batches with one factor fixed and scores their majority-vote classifier.

    If no latent is active (every standard deviation below ``prune_dims_threshold``, e.g. a
    constant representation), the score is 0 with 0 active latents, as in disentanglement_lib.

    Args:
        dataset: Ground-truth dataset the observations and factors come from. An
            ``ArrayGroundTruthData`` may be any subset of a factor grid (see ``FixedFactorSampler``).
        representation_fn: Observations ``(B, C, H, W)`` float32 -> mean codes ``(B, latent_dim)``.
        random_state: Source of randomness for the samples.
        num_train: Votes the classifier is fitted on, >= 1.
        num_eval: Independent votes it is scored on, >= 1.
        num_variance_estimate: Samples the global variance of each latent is estimated from, >= 2.
        batch_size: Observations sharing the fixed factor per vote, >= 2.
        prune_dims_threshold: Latents whose standard deviation (in code units, not variance)
            over the dataset is below this are left out of the votes, >= 0.

    Returns:
        ``{"factor_vae": eval accuracy, "factor_vae_train_accuracy": train accuracy,
        "factor_vae_num_active_dims": number of latents kept}``; accuracies in ``[0, 1]``,
        higher is better; chance is about ``1 / num_factors``.

    Raises:
        ValueError: If an argument is out of its range.
    """
    _check_at_least(num_train=num_train, num_eval=num_eval, lowest=1)
    _check_at_least(num_variance_estimate=num_variance_estimate, batch_size=batch_size, lowest=2)
    if not prune_dims_threshold >= 0:
        raise ValueError(f"`prune_dims_threshold >= 0` must hold, but got prune_dims_threshold={prune_dims_threshold}")

    codes, _ = sample_codes_and_factors(dataset, representation_fn, num_variance_estimate, random_state)
    global_variances = np.var(codes, axis=0, ddof=1)  # (latent_dim,)
    active = np.sqrt(global_variances) >= prune_dims_threshold  # disentanglement_lib's _prune_dims
    if not active.any():
        return {"factor_vae": 0.0, "factor_vae_train_accuracy": 0.0, "factor_vae_num_active_dims": 0}

    sampler = FixedFactorSampler(dataset)
    args = (sampler, representation_fn, batch_size, global_variances, active, random_state)
    train_votes = _sample_votes(dataset, num_train, *args)
    eval_votes = _sample_votes(dataset, num_eval, *args)
    train_accuracy, eval_accuracy = factor_vae_from_votes(train_votes, eval_votes)
    return {
        "factor_vae": eval_accuracy,
        "factor_vae_train_accuracy": train_accuracy,
        "factor_vae_num_active_dims": int(active.sum()),
    }


def factor_vae_from_votes(train_votes: np.ndarray, eval_votes: np.ndarray) -> tuple[float, float]:
    """Train and eval accuracy of the majority-vote classifier fitted on ``train_votes``.

    Each latent is assigned the factor that most training votes in it came from (ties: the
    lowest factor index; a latent with no training vote: factor 0); a vote is correct when
    its latent is assigned its factor.

    Args:
        train_votes: int ``(num_train, 2)``; row i is ``(factor_index, latent_index)``: the
            factor fixed in batch i and the latent of least normalised variance there.
        eval_votes: int ``(num_eval, 2)``, the same for independent batches.

    Returns:
        ``(train_accuracy, eval_accuracy)``, each the fraction of votes classified correctly,
        in ``[0, 1]``.

    Raises:
        ValueError: If an array is not ``(n, 2)`` with ``n >= 1`` or holds a negative index.
    """
    votes = []
    for name, v in (("train_votes", train_votes), ("eval_votes", eval_votes)):
        v = np.asarray(v)
        if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] < 1 or not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"{name} must be int (num_votes >= 1, 2), but got shape {v.shape} {v.dtype}")
        if v.min() < 0:
            raise ValueError(f"{name} must hold indices >= 0, but its minimum is {v.min()}")
        votes.append(v)
    train, held_out = votes
    num_factors, num_latents = np.maximum(train.max(axis=0), held_out.max(axis=0)) + 1
    table = np.zeros((num_factors, num_latents), dtype=np.int64)  # (num_factors, latent_dim) vote counts
    np.add.at(table, (train[:, 0], train[:, 1]), 1)
    classifier = np.argmax(table, axis=0)  # (latent_dim,) factor assigned to each latent
    train_accuracy = np.mean(classifier[train[:, 1]] == train[:, 0])
    eval_accuracy = np.mean(classifier[held_out[:, 1]] == held_out[:, 0])
    return float(train_accuracy), float(eval_accuracy)


class FixedFactorSampler:
    """Draws factor rows whose factor ``k`` takes given values, for any ground-truth dataset.

    disentanglement_lib samples factor rows and overwrites column ``k``. That needs every
    factor combination to exist; a subset of a grid held as ``ArrayGroundTruthData`` (e.g.
    ``dsprites_subset.npz``) lacks most, so for such data each row is drawn instead uniformly
    from the dataset's rows whose factor ``k`` has the wanted value. On a full grid both give
    the same distribution: the other factors uniform and independent.

    Args:
        dataset: Ground-truth dataset; an ``ArrayGroundTruthData`` gets the per-row draw.
    """

    def __init__(self, dataset: GroundTruthData):
        self.dataset = dataset
        self._order: list[np.ndarray] | None = None
        if isinstance(dataset, ArrayGroundTruthData):
            # Rows sorted by each factor, so rows with factor k == v are one slice.
            self._order = [np.argsort(dataset.factors[:, k], kind="stable") for k in range(dataset.num_factors)]
            self._sorted = [dataset.factors[order, k] for k, order in enumerate(self._order)]

    def fix(
        self, factors: np.ndarray, factor_index: int, values: np.ndarray, random_state: np.random.Generator
    ) -> np.ndarray:
        """Factor rows like ``factors`` (sampled from the dataset) with column ``factor_index`` set to ``values``.

        Args:
            factors: int ``(num, num_factors)`` rows from ``dataset.sample_factors``; for
                datasets other than ``ArrayGroundTruthData`` their other columns are kept.
            factor_index: The factor to fix, in ``[0, num_factors)``.
            values: int ``(num,)`` or scalar, values of that factor, each one some row has.
            random_state: Source of randomness for the per-row draw.

        Returns:
            int64 ``(num, num_factors)``; row i has factor ``factor_index == values[i]`` and
            every row can be passed to ``dataset.sample_observations_from_factors``.

        Raises:
            ValueError: If no row of the dataset has one of the values.
        """
        factors = np.array(factors, dtype=np.int64)  # a copy: the caller's rows are left alone
        values = np.broadcast_to(np.asarray(values, dtype=np.int64), (len(factors),))
        if self._order is None:
            factors[:, factor_index] = values
            return factors
        column = self._sorted[factor_index]
        lo = np.searchsorted(column, values, side="left")
        hi = np.searchsorted(column, values, side="right")
        if np.any(hi == lo):
            missing = sorted(set(values[hi == lo].tolist()))
            raise ValueError(f"no row has factor {factor_index} equal to {missing}")
        rows = self._order[factor_index][random_state.integers(lo, hi)]
        return self.dataset.factors[rows]


def _sample_votes(
    dataset: GroundTruthData,
    num_votes: int,
    sampler: FixedFactorSampler,
    representation_fn: RepresentationFn,
    batch_size: int,
    global_variances: np.ndarray,
    active: np.ndarray,
    random_state: np.random.Generator,
) -> np.ndarray:
    """int ``(num_votes, 2)`` of ``(factor_index, latent_index)`` (disentanglement_lib's
    ``_generate_training_sample``), the latent indexed among all latents, not the active ones."""
    active_dims = np.flatnonzero(active)
    scale = global_variances[active_dims]
    votes = np.empty((num_votes, 2), dtype=np.int64)
    for i in range(num_votes):
        factor_index = int(random_state.integers(dataset.num_factors))
        factors = dataset.sample_factors(batch_size, random_state)
        factors = sampler.fix(factors, factor_index, factors[0, factor_index], random_state)
        x = dataset.sample_observations_from_factors(factors, random_state)
        codes = np.asarray(representation_fn(x))[:, active_dims]  # (batch_size, num_active)
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero variance kept by threshold 0
            normalised = np.var(codes, axis=0, ddof=1) / scale
        votes[i] = factor_index, active_dims[np.argmin(normalised)]
    return votes


def _check_at_least(lowest: int, **values: int) -> None:
    for name, value in values.items():
        if value < lowest:
            raise ValueError(f"`{name} >= {lowest}` must hold, but got {name}={value}")
