"""Mutual Information Gap (MIG).

References:
    Chen, Li, Grosse, Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs",
    arXiv:1802.04942, eq. 8. Estimator and defaults as in disentanglement_lib
    (``evaluation/metrics/mig.py``): mean codes, 20 equal-width bins per latent.
"""

from __future__ import annotations

import numpy as np

from analysis.metrics.utils import (
    RepresentationFn,
    discrete_entropy,
    discrete_mutual_info,
    discretize,
    sample_codes_and_factors,
)
from datasets.base import GroundTruthData

__all__ = ["compute_mig", "mig_from_codes"]


def compute_mig(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    *,
    random_state: np.random.Generator,
    num_train: int = 10_000,
    num_bins: int = 20,
    batch_size: int = 256,
) -> dict[str, float]:
    """Samples ``num_train`` observations, encodes them and scores their MIG.

    Args:
        dataset: Ground-truth dataset the observations and factors come from.
        representation_fn: Observations ``(B, C, H, W)`` float32 -> mean codes ``(B, latent_dim)``.
        random_state: Source of randomness for the samples.
        num_train: Number of samples, > 1.
        num_bins: Equal-width bins per latent, >= 2.
        batch_size: Observations per call of ``representation_fn``.

    Returns:
        ``{"mig": score}``, score in ``[0, 1]``.

    Raises:
        ValueError: If ``num_train < 2``.
    """
    if num_train < 2:
        raise ValueError(f"`num_train >= 2` must hold, but got num_train={num_train}")
    codes, factors = sample_codes_and_factors(dataset, representation_fn, num_train, random_state, batch_size)
    return {"mig": mig_from_codes(codes, factors, num_bins=num_bins)}


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """MIG of a representation, from codes and the factors of the same samples.

    For each factor k: ``(I(z_a; v_k) - I(z_b; v_k)) / H(v_k)`` where ``z_a`` and ``z_b``
    are the latents with the largest and second-largest mutual information with ``v_k``;
    the score is the mean over factors. Factors that take one value (zero entropy) are
    left out of the mean.

    Args:
        codes: float ``(num_samples, latent_dim)``, row i encoding sample i.
        factors: int ``(num_samples, num_factors)``, the ground-truth factors of sample i.
        num_bins: Equal-width bins each latent is discretised into, >= 2.

    Returns:
        MIG in ``[0, 1]`` (1: each factor captured by exactly one latent).

    Raises:
        ValueError: If the arrays are not 2-D, their sample counts differ, ``num_bins < 2``,
            or every factor is constant.
    """
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2:
        raise ValueError(
            f"codes and factors must be 2-D (num_samples, ...), but got shapes {codes.shape} and {factors.shape}"
        )
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(f"codes and factors must have as many rows, but got {codes.shape[0]} and {factors.shape[0]}")
    if num_bins < 2:
        raise ValueError(f"`num_bins >= 2` must hold, but got num_bins={num_bins}")
    entropy = discrete_entropy(factors)  # (num_factors,)
    informative = entropy > 0
    if not informative.any():
        raise ValueError("every factor is constant: MIG is undefined")
    mi = discrete_mutual_info(discretize(codes, num_bins), factors)  # (latent_dim, num_factors)
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros_like(top[0])
    gap = (top[0] - second)[informative] / entropy[informative]
    return float(np.mean(gap))
