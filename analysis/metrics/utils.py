"""Pieces the metric modules share: sampling codes from a ground-truth dataset, discretising."""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import mutual_info_score

from datasets.base import GroundTruthData

__all__ = [
    "sample_codes_and_factors",
    "sample_train_test",
    "check_train_test",
    "discretize",
    "discrete_mutual_info",
    "discrete_entropy",
]

RepresentationFn = Callable[[np.ndarray], np.ndarray]


def sample_codes_and_factors(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    num_samples: int,
    random_state: np.random.Generator,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples factors, renders their observations and encodes them, batch by batch.

    The factors returned are those of the observations encoded, row for row.

    Args:
        dataset: Ground-truth dataset.
        representation_fn: Maps observations ``(B, C, H, W)`` float32 to codes
            ``(B, latent_dim)``.
        num_samples: Number of samples, > 0.
        random_state: Source of randomness.
        batch_size: Observations encoded per call of ``representation_fn``.

    Returns:
        ``codes`` float ``(num_samples, latent_dim)`` and ``factors`` int64
        ``(num_samples, num_factors)``.
    """
    codes, factors = [], []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        y = dataset.sample_factors(n, random_state)
        x = dataset.sample_observations_from_factors(y, random_state)
        codes.append(np.asarray(representation_fn(x)))
        factors.append(y)
    return np.concatenate(codes), np.concatenate(factors)


def discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Bins each column of ``codes (num_samples, latent_dim)`` into ``num_bins`` equal-width bins.

    Returns:
        int64 ``(num_samples, latent_dim)`` of bin indices in ``[1, num_bins]``
        (disentanglement_lib's ``_histogram_discretize``).
    """
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1][:-1]
        out[:, j] = np.digitize(codes[:, j], edges)
    return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information in nats between every discrete code and every factor.

    Args:
        codes: int ``(num_samples, latent_dim)``.
        factors: int ``(num_samples, num_factors)``.

    Returns:
        float ``(latent_dim, num_factors)``, each >= 0.
    """
    return np.array(
        [[mutual_info_score(factors[:, k], codes[:, j]) for k in range(factors.shape[1])] for j in range(codes.shape[1])]
    )


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy in nats of each column of ``factors (num_samples, num_factors)``; ``(num_factors,)``."""
    return np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def sample_train_test(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    random_state: np.random.Generator,
    num_train: int,
    num_test: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Samples and encodes a train set, then a test set, from the same ``random_state``.

    Returns:
        ``codes_train (num_train, latent_dim)``, ``factors_train (num_train, num_factors)``,
        ``codes_test (num_test, latent_dim)``, ``factors_test (num_test, num_factors)``.

    Raises:
        ValueError: If ``num_train < 2`` or ``num_test < 1``.
    """
    if num_train < 2 or num_test < 1:
        raise ValueError(
            f"`num_train >= 2` and `num_test >= 1` must hold, but got num_train={num_train}, num_test={num_test}"
        )
    train = sample_codes_and_factors(dataset, representation_fn, num_train, random_state, batch_size)
    test = sample_codes_and_factors(dataset, representation_fn, num_test, random_state, batch_size)
    return (*train, *test)


def check_train_test(
    codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays as float64 codes and int factors, after checking their shapes agree.

    Raises:
        ValueError: If an array is not 2-D, codes and factors of a split differ in rows, or
            the splits differ in ``latent_dim`` or ``num_factors``.
    """
    arrays = {
        "codes_train": np.asarray(codes_train, dtype=np.float64),
        "factors_train": np.asarray(factors_train),
        "codes_test": np.asarray(codes_test, dtype=np.float64),
        "factors_test": np.asarray(factors_test),
    }
    shapes = {name: a.shape for name, a in arrays.items()}
    if any(a.ndim != 2 for a in arrays.values()):
        raise ValueError(f"codes and factors must be 2-D (num_samples, ...), but got shapes {shapes}")
    ct, ft, cs, fs = arrays.values()
    if ct.shape[0] != ft.shape[0] or cs.shape[0] != fs.shape[0]:
        raise ValueError(f"codes and factors of a split must have as many rows, but got shapes {shapes}")
    if ct.shape[1] != cs.shape[1] or ft.shape[1] != fs.shape[1]:
        raise ValueError(f"train and test must have as many latents and factors, but got shapes {shapes}")
    if ct.shape[0] < 2 or cs.shape[0] < 1:
        raise ValueError(f"need >= 2 train rows and >= 1 test row, but got shapes {shapes}")
    return ct, ft, cs, fs
