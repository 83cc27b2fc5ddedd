"""BetaVAE disentanglement score.

Each point fixes one factor across pairs of observations; its feature is the mean over the
batch of the absolute code differences of the pairs, and a linear classifier predicts the
fixed factor from it. The score is the classifier's accuracy on independent points.

A representation can score 1 while one factor is captured by no latent: that factor is
recognised by no latent being small (Kim & Mnih 2018, sec. 4, who proposed the FactorVAE
score for this reason).

References:
    Higgins, Matthey, Pal, Burgess, Glorot, Botvinick, Mohamed, Lerchner 2017, "beta-VAE:
    Learning Basic Visual Concepts with a Constrained Variational Framework", ICLR 2017
    (no arXiv version), https://openreview.net/forum?id=Sy2fzU9gl, sec. 3. Procedure and
    defaults as in disentanglement_lib (``evaluation/metrics/beta_vae.py``,
    ``compute_beta_vae_sklearn``, with the ``unsupervised_study_v1`` metric configs):
    scikit-learn's ``LogisticRegression`` with its defaults, batches of 64, 10,000 training
    and 5,000 evaluation points.
    Kim, Mnih 2018, "Disentangling by Factorising", arXiv:1802.05983, sec. 4 (the failure
    mode above).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from analysis.metrics.factor_vae import FixedFactorSampler
from analysis.metrics.utils import RepresentationFn
from datasets.base import GroundTruthData

__all__ = ["compute_beta_vae", "beta_vae_from_features"]


def compute_beta_vae(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    *,
    random_state: np.random.Generator,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    batch_size: int = 64,
) -> dict[str, float]:
    """Samples features of pairs with one factor shared and scores a classifier of that factor.

    Args:
        dataset: Ground-truth dataset the observations and factors come from. An
            ``ArrayGroundTruthData`` may be any subset of a factor grid (see ``FixedFactorSampler``).
        representation_fn: Observations ``(B, C, H, W)`` float32 -> mean codes ``(B, latent_dim)``.
        random_state: Source of randomness for the samples and the classifier.
        num_train: Points the classifier is fitted on, >= 2 (they must hold two factors).
        num_eval: Independent points it is scored on, >= 1.
        batch_size: Pairs of observations averaged into one point, >= 1.

    Returns:
        ``{"beta_vae": eval accuracy, "beta_vae_train_accuracy": train accuracy}``, in
        ``[0, 1]``, higher is better; chance is about ``1 / num_factors``.

    Raises:
        ValueError: If an argument is out of its range, or all training points fixed the
            same factor.
    """
    for name, value, lowest in (("num_train", num_train, 2), ("num_eval", num_eval, 1), ("batch_size", batch_size, 1)):
        if value < lowest:
            raise ValueError(f"`{name} >= {lowest}` must hold, but got {name}={value}")
    args = (FixedFactorSampler(dataset), representation_fn, batch_size, random_state)
    train_features, train_labels = _sample_points(dataset, num_train, *args)
    eval_features, eval_labels = _sample_points(dataset, num_eval, *args)
    train_accuracy, eval_accuracy = beta_vae_from_features(
        train_features, train_labels, eval_features, eval_labels, random_state=random_state
    )
    return {"beta_vae": eval_accuracy, "beta_vae_train_accuracy": train_accuracy}


def beta_vae_from_features(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    *,
    random_state: np.random.Generator,
) -> tuple[float, float]:
    """Fits ``LogisticRegression`` (scikit-learn defaults) on the training points and scores it.

    Args:
        train_features: float ``(num_train, latent_dim)``; row i is the mean over a batch of
            ``|z1 - z2|`` for pairs that share factor ``train_labels[i]``.
        train_labels: int ``(num_train,)``, the shared factor's index; at least two distinct.
        eval_features: float ``(num_eval, latent_dim)``, the same for independent points.
        eval_labels: int ``(num_eval,)``.
        random_state: Seeds the classifier (its default solver is deterministic).

    Returns:
        ``(train_accuracy, eval_accuracy)``, fractions of points whose factor is predicted,
        in ``[0, 1]``.

    Raises:
        ValueError: If the shapes disagree or the training labels hold a single factor.
    """
    train_features, eval_features = np.asarray(train_features, float), np.asarray(eval_features, float)
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    for name, features, labels in (
        ("train", train_features, train_labels),
        ("eval", eval_features, eval_labels),
    ):
        if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels) or len(labels) < 1:
            raise ValueError(
                f"{name}_features must be (n, latent_dim) and {name}_labels (n,) with n >= 1, but got shapes "
                f"{features.shape} and {labels.shape}"
            )
    if train_features.shape[1] != eval_features.shape[1]:
        raise ValueError(
            f"train and eval features must have as many columns, but got {train_features.shape[1]} "
            f"and {eval_features.shape[1]}"
        )
    if len(np.unique(train_labels)) < 2:
        raise ValueError(f"train_labels must hold at least two factors, but all are {train_labels[0]}")
    model = LogisticRegression(random_state=int(random_state.integers(2**31)))
    model.fit(train_features, train_labels)
    train_accuracy = np.mean(model.predict(train_features) == train_labels)
    eval_accuracy = np.mean(model.predict(eval_features) == eval_labels)
    return float(train_accuracy), float(eval_accuracy)


def _sample_points(
    dataset: GroundTruthData,
    num_points: int,
    sampler: FixedFactorSampler,
    representation_fn: RepresentationFn,
    batch_size: int,
    random_state: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Features float ``(num_points, latent_dim)`` and labels int64 ``(num_points,)``
    (disentanglement_lib's ``_generate_training_sample``)."""
    labels = np.empty(num_points, dtype=np.int64)
    features = None  # (num_points, latent_dim) once the first codes give latent_dim
    for i in range(num_points):
        factor_index = int(random_state.integers(dataset.num_factors))
        factors1 = dataset.sample_factors(batch_size, random_state)
        factors2 = dataset.sample_factors(batch_size, random_state)
        factors2 = sampler.fix(factors2, factor_index, factors1[:, factor_index], random_state)
        z1 = np.asarray(representation_fn(dataset.sample_observations_from_factors(factors1, random_state)))
        z2 = np.asarray(representation_fn(dataset.sample_observations_from_factors(factors2, random_state)))
        if features is None:
            features = np.empty((num_points, z1.shape[1]))
        features[i] = np.mean(np.abs(z1 - z2), axis=0)
        labels[i] = factor_index
    return features, labels
