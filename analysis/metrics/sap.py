"""Separated Attribute Predictability (SAP) score.

References:
    Kumar, Sattigeri, Balakrishnan 2018, "Variational Inference of Disentangled Latent
    Concepts from Unlabeled Observations", arXiv:1711.00848, Sec. 3. Estimator and
    classifier as in disentanglement_lib (``evaluation/metrics/sap_score.py``).
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from analysis.metrics.utils import RepresentationFn, check_train_test, sample_train_test
from datasets.base import GroundTruthData

__all__ = ["compute_sap", "sap_from_codes", "sap_score_matrix"]


def compute_sap(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    *,
    random_state: np.random.Generator,
    num_train: int = 10_000,
    num_test: int = 5_000,
    batch_size: int = 256,
    continuous_factors: bool = False,
) -> dict[str, float]:
    """Samples a train and a test set, encodes them and scores their SAP.

    Args:
        dataset: Ground-truth dataset the observations and factors come from.
        representation_fn: Observations ``(B, C, H, W)`` float32 -> mean codes ``(B, latent_dim)``.
        random_state: Source of randomness for the samples (train set first, then test set).
        num_train: Samples the classifiers are fitted on, >= 2.
        num_test: Samples the classifiers are scored on, >= 1. Sampled (and unused) also
            when ``continuous_factors`` is set, as disentanglement_lib does.
        batch_size: Observations per call of ``representation_fn``.
        continuous_factors: Score each (latent, factor) pair by R^2 instead of by the test
            accuracy of a linear classifier.

    Returns:
        ``{"sap": score}``, score in ``[0, 1]``; higher is better.

    Raises:
        ValueError: If ``num_train < 2`` or ``num_test < 1``.
    """
    split = sample_train_test(dataset, representation_fn, random_state, num_train, num_test, batch_size)
    return {"sap": sap_from_codes(*split, continuous_factors=continuous_factors)}


def sap_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous_factors: bool = False,
) -> float:
    """SAP of a representation: the mean over factors of the gap between its two most predictive latents.

    Factors that take a single value in the train set are left out of the mean.

    Args:
        codes_train: float ``(num_train, latent_dim)``, row i encoding train sample i.
        factors_train: int ``(num_train, num_factors)``, the ground-truth factors of train sample i.
        codes_test: float ``(num_test, latent_dim)``.
        factors_test: int ``(num_test, num_factors)``.
        continuous_factors: Score pairs by R^2 (train set only) instead of classifier accuracy.

    Returns:
        SAP in ``[0, 1]`` (1: each factor predictable from exactly one latent, and from no
        other). With discrete factors even a perfect code scores below 1: the other latents
        still predict at chance (a perfect code of binary factors scores ~0.5), and one
        latent's linear one-vs-rest classifier reads middle values of a many-valued factor
        poorly. With one latent, the second-best score is taken as 0.

    Raises:
        ValueError: If the arrays are not 2-D, train or test rows disagree, the splits
            disagree in ``latent_dim`` or ``num_factors``, or every factor is constant.
    """
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    informative = np.array([np.unique(factors_train[:, k]).size > 1 for k in range(factors_train.shape[1])])
    if not informative.any():
        raise ValueError("every factor is constant in the train set: SAP is undefined")
    scores = sap_score_matrix(
        codes_train, factors_train[:, informative], codes_test, factors_test[:, informative], continuous_factors
    )
    top = np.sort(scores, axis=0)[::-1]  # (latent_dim, num_informative), descending
    second = top[1] if top.shape[0] > 1 else np.zeros_like(top[0])
    return float(np.mean(top[0] - second))


def sap_score_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous_factors: bool = False,
) -> np.ndarray:
    """How well each latent alone predicts each factor (disentanglement_lib's ``_compute_score_matrix``).

    Discrete factors: test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` fitted
    on the single latent (train set). Continuous factors: ``cov(z_i, v_j)^2 / (var z_i var v_j)``
    on the train set (sample covariance, ``ddof=1``), 0 for a latent of variance <= 1e-12.

    scikit-learn's default ``dual="auto"`` solves the SVC in the primal here (more samples
    than features); the dual solver, the default when disentanglement_lib was written,
    reaches the same optimum (identical coefficients on dSprites-like codes).

    Args:
        codes_train: float ``(num_train, latent_dim)``.
        factors_train: int ``(num_train, num_factors)``, each factor taking >= 2 values.
        codes_test: float ``(num_test, latent_dim)``.
        factors_test: int ``(num_test, num_factors)``.
        continuous_factors: R^2 instead of classifier accuracy.

    Returns:
        float ``(latent_dim, num_factors)``, each in ``[0, 1]``.
    """
    latent_dim, num_factors = codes_train.shape[1], factors_train.shape[1]
    scores = np.zeros((latent_dim, num_factors))
    for i in range(latent_dim):
        for j in range(num_factors):
            if continuous_factors:
                cov = np.cov(codes_train[:, i], factors_train[:, j], ddof=1)  # (2, 2)
                scores[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            else:
                classifier = LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(codes_train[:, i : i + 1], factors_train[:, j])
                scores[i, j] = np.mean(classifier.predict(codes_test[:, i : i + 1]) == factors_test[:, j])
    return scores


# Shared with the other train/test metrics (dci, modularity_explicitness); candidates for utils.py.
