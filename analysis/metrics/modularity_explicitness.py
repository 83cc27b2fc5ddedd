"""Modularity and explicitness.

References:
    Ridgeway, Mozer 2018, "Learning Deep Disentangled Embeddings With the F-Statistic Loss",
    arXiv:1802.05312, Sec. 3 (modularity from delta_i; explicitness: ROC AUC of a linear
    classifier per factor value). Estimator and defaults as in disentanglement_lib
    (``evaluation/metrics/modularity_explicitness.py``): mutual information of mean codes in
    20 equal-width bins; explicitness from a one-vs-rest logistic regression on the
    standardised codes, macro-averaged one-vs-rest ROC AUC.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.multiclass import OneVsRestClassifier

from analysis.metrics.utils import (
    RepresentationFn,
    check_train_test,
    discrete_mutual_info,
    discretize,
    sample_train_test,
)
from datasets.base import GroundTruthData

__all__ = [
    "compute_modularity_explicitness",
    "modularity_explicitness_from_codes",
    "modularity_from_codes",
    "modularity",
    "explicitness_from_codes",
]


def compute_modularity_explicitness(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    *,
    random_state: np.random.Generator,
    num_train: int = 10_000,
    num_test: int = 5_000,
    num_bins: int = 20,
    batch_size: int = 256,
) -> dict[str, float]:
    """Samples a train and a test set, encodes them and scores their modularity and explicitness.

    Args:
        dataset: Ground-truth dataset the observations and factors come from.
        representation_fn: Observations ``(B, C, H, W)`` float32 -> mean codes ``(B, latent_dim)``.
        random_state: Source of randomness for the samples (train set first, then test set).
        num_train: Samples the mutual information and the classifiers use, >= 2.
        num_test: Samples the classifiers are scored on, >= 1.
        num_bins: Equal-width bins per latent for the mutual information, >= 2.
        batch_size: Observations per call of ``representation_fn``.

    Returns:
        ``{"modularity", "explicitness_train", "explicitness_test"}``, each in ``[0, 1]``,
        higher is better (explicitness 0.5 is chance).

    Raises:
        ValueError: If ``num_train < 2``, ``num_test < 1`` or ``num_bins < 2``.
    """
    if num_bins < 2:
        raise ValueError(f"`num_bins >= 2` must hold, but got num_bins={num_bins}")
    split = sample_train_test(dataset, representation_fn, random_state, num_train, num_test, batch_size)
    return modularity_explicitness_from_codes(*split, num_bins=num_bins)


def modularity_explicitness_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    num_bins: int = 20,
) -> dict[str, float]:
    """Modularity (train set) and explicitness (fitted on train, scored on both sets).

    Factors that take a single value in the train set are left out of both scores.

    Args:
        codes_train: float ``(num_train, latent_dim)``, row i encoding train sample i.
        factors_train: int ``(num_train, num_factors)``, the ground-truth factors of train sample i.
        codes_test: float ``(num_test, latent_dim)``.
        factors_test: int ``(num_test, num_factors)``.
        num_bins: Equal-width bins per latent for the mutual information, >= 2.

    Returns:
        ``{"modularity", "explicitness_train", "explicitness_test"}``, each in ``[0, 1]``.

    Raises:
        ValueError: If the shapes disagree (see ``check_train_test``), ``num_bins < 2``, or
            every factor is constant.
    """
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    informative = _informative(factors_train)
    explicit_train, explicit_test = explicitness_from_codes(
        codes_train, factors_train[:, informative], codes_test, factors_test[:, informative]
    )
    return {
        "modularity": modularity_from_codes(codes_train, factors_train[:, informative], num_bins=num_bins),
        "explicitness_train": explicit_train,
        "explicitness_test": explicit_test,
    }


def modularity_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """Modularity from codes and the factors of the same samples.

    Args:
        codes: float ``(num_samples, latent_dim)``.
        factors: int ``(num_samples, num_factors)``; constant factors are left out.
        num_bins: Equal-width bins each latent is discretised into, >= 2.

    Returns:
        Modularity in ``[0, 1]``; see ``modularity``.

    Raises:
        ValueError: If the arrays are not 2-D or differ in rows, ``num_bins < 2``, or every
            factor is constant.
    """
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(
            f"codes and factors must be 2-D with as many rows, but got shapes {codes.shape} and {factors.shape}"
        )
    if num_bins < 2:
        raise ValueError(f"`num_bins >= 2` must hold, but got num_bins={num_bins}")
    factors = factors[:, _informative(factors)]
    return modularity(discrete_mutual_info(discretize(codes, num_bins), factors))


def modularity(mutual_info: np.ndarray) -> float:
    """Modularity from a mutual-information matrix (disentanglement_lib's ``modularity``).

    For latent i with ``theta_i = max_k I(z_i; v_k)``:
    ``delta_i = sum_{k != argmax} I(z_i; v_k)^2 / (theta_i^2 (K - 1))`` and its modularity is
    ``1 - delta_i``, or 0 for a latent carrying no information (``theta_i = 0``).

    Args:
        mutual_info: float ``(latent_dim, num_factors)``, nats, >= 0.

    Returns:
        Mean modularity over latents, in ``[0, 1]`` (1: every latent informs about one
        factor only). With one factor an informative latent scores 1.
    """
    squared = np.square(mutual_info)
    top = squared.max(axis=1)  # (latent_dim,)
    spread = squared.sum(axis=1) - top
    denominator = top * (squared.shape[1] - 1.0)
    delta = np.divide(spread, denominator, out=np.zeros_like(spread), where=denominator > 0)
    per_code = np.where(top > 0, 1.0 - delta, 0.0)
    return float(np.mean(per_code))


def explicitness_from_codes(
    codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray
) -> tuple[float, float]:
    """Explicitness: ROC AUC of a linear classifier of each factor on all latents.

    Codes are standardised with the train set's mean and standard deviation (``ddof=0``;
    a latent of zero deviation is only centred, where disentanglement_lib divides by 0).
    Per factor, a one-vs-rest L2 logistic regression (``C=1``, liblinear, intercept
    included) is fitted on the train set. That is what disentanglement_lib's
    ``LogisticRegression()`` meant under the scikit-learn (< 0.22) it was written for
    (default ``solver="liblinear"``, ``multi_class="ovr"``); scikit-learn 1.9 has no
    ``multi_class`` and defaults to a multinomial lbfgs fit, so it is spelt here as
    ``OneVsRestClassifier(LogisticRegression(solver="liblinear"))``, which also normalises
    the per-value probabilities to sum to 1, as the old ``"ovr"`` mode did. Its predicted
    probabilities are scored by the macro-averaged one-vs-rest ROC AUC over the factor's
    values (a value absent from a split is left out of that split's average, where
    disentanglement_lib fails).

    Args:
        codes_train: float ``(num_train, latent_dim)``.
        factors_train: int ``(num_train, num_factors)``, each factor taking >= 2 values.
        codes_test: float ``(num_test, latent_dim)``.
        factors_test: int ``(num_test, num_factors)``.

    Returns:
        Mean over factors of the train and of the test ROC AUC, each in ``[0, 1]``
        (0.5: chance, 1: every value linearly separable from the rest); NaN for a split
        where some factor takes a single value.

    Raises:
        ValueError: If there are no factors.
    """
    if factors_train.shape[1] == 0:
        raise ValueError("every factor is constant: explicitness is undefined")
    mean, std = codes_train.mean(axis=0), codes_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (codes_train - mean) / std, (codes_test - mean) / std
    auc_train, auc_test = [], []
    for k in range(factors_train.shape[1]):
        clf = OneVsRestClassifier(LogisticRegression(solver="liblinear")).fit(x_train, factors_train[:, k])
        auc_train.append(_macro_auc(factors_train[:, k], clf.predict_proba(x_train), clf.classes_))
        auc_test.append(_macro_auc(factors_test[:, k], clf.predict_proba(x_test), clf.classes_))
    return float(np.mean(auc_train)), float(np.mean(auc_test))


def _macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes both present and absent somewhere in ``y``; NaN if none is."""
    onehot = y[:, None] == classes[None, :]  # (num_samples, num_classes)
    scorable = onehot.any(axis=0) & ~onehot.all(axis=0)
    if not scorable.any():
        return float("nan")
    return float(np.mean([roc_auc_score(onehot[:, c], proba[:, c]) for c in np.flatnonzero(scorable)]))


def _informative(factors: np.ndarray) -> np.ndarray:
    """bool ``(num_factors,)``: which columns take more than one value."""
    informative = np.array([np.unique(factors[:, k]).size > 1 for k in range(factors.shape[1])], dtype=bool)
    if not informative.any():
        raise ValueError("every factor is constant: modularity and explicitness are undefined")
    return informative
