"""Gaussian total correlation of the mean codes (unsupervised: the factors are not used).

The total correlation ``KL(p(z) || prod_i p(z_i))`` of the Gaussian fitted to the codes,
in closed form from its covariance.

References:
    Watanabe 1960, "Information theoretical analysis of multivariate correlation" (total
    correlation); Locatello et al. 2019, "Challenging Common Assumptions in the
    Unsupervised Learning of Disentangled Representations", arXiv:1811.12359, Sec. 3
    (unsupervised scores). Estimator as in disentanglement_lib
    (``evaluation/metrics/unsupervised_metrics.py``, ``gaussian_total_correlation``).
"""

from __future__ import annotations

import numpy as np

from analysis.metrics.utils import RepresentationFn, sample_codes_and_factors
from datasets.base import GroundTruthData

__all__ = ["compute_gaussian_tc", "gaussian_tc_from_codes"]


def compute_gaussian_tc(
    dataset: GroundTruthData,
    representation_fn: RepresentationFn,
    *,
    random_state: np.random.Generator,
    num_train: int = 10_000,
    batch_size: int = 256,
) -> dict[str, float]:
    """Samples ``num_train`` observations, encodes them and scores the Gaussian TC of their codes.

    Args:
        dataset: Ground-truth dataset the observations come from (factors unused).
        representation_fn: Observations ``(B, C, H, W)`` float32 -> mean codes ``(B, latent_dim)``.
        random_state: Source of randomness for the samples.
        num_train: Number of samples, >= 2.
        batch_size: Observations per call of ``representation_fn``.

    Returns:
        ``{"gaussian_tc": tc}``, tc in nats, ``[0, inf]``; lower is better (0: uncorrelated latents).

    Raises:
        ValueError: If ``num_train < 2``.
    """
    if num_train < 2:
        raise ValueError(f"`num_train >= 2` must hold, but got num_train={num_train}")
    codes, _ = sample_codes_and_factors(dataset, representation_fn, num_train, random_state, batch_size)
    return {"gaussian_tc": gaussian_tc_from_codes(codes)}


def gaussian_tc_from_codes(codes: np.ndarray) -> float:
    """Total correlation of the Gaussian with the codes' sample covariance ``Sigma`` (``ddof=1``).

    ``TC = 0.5 * (sum_i log Sigma_ii - log det Sigma)`` nats: the KL divergence from
    ``N(0, Sigma)`` to ``N(0, diag Sigma)``. It depends on the correlations only (invariant
    to scaling and shifting each latent). Latents of zero variance are independent of the
    rest and are left out; a latent that is an exact linear function of others gives ``inf``
    (or, through rounding, a very large value).

    Args:
        codes: float ``(num_samples, latent_dim)``.

    Returns:
        TC in nats, ``>= 0`` (rounding below 0 is clipped); 0 with fewer than 2 varying latents.

    Raises:
        ValueError: If ``codes`` is not 2-D or has fewer than 2 rows.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise ValueError(f"codes must be 2-D (num_samples >= 2, latent_dim), but got shape {codes.shape}")
    codes = codes[:, codes.var(axis=0) > 0]
    if codes.shape[1] < 2:
        return 0.0
    cov = np.cov(codes, rowvar=False)  # (latent_dim, latent_dim)
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return float("inf")
    return max(0.0, float(0.5 * (np.sum(np.log(np.diag(cov))) - logdet)))
