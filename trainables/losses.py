"""Likelihoods and regularizers shared by the model families.

Conventions (pythae style, explicit reductions): every per-sample term is a sum over
data or latent dimensions, in nats; the batch reduction is a mean, done by the caller
with ``.mean()`` so that per-sample values stay available for evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bernoulli_nll", "gaussian_kl", "reparameterize"]


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under independent Bernoullis.

    Args:
        logits: Decoder output, float tensor of shape ``(B, C, H, W)`` (any shape
            ``(B, ...)``), the Bernoulli logits.
        target: Observations of the same shape, float in ``[0, 1]``.

    Returns:
        Float tensor of shape ``(B,)``: NLL summed over data dimensions, in nats, >= 0.

    References:
        Kingma & Welling 2014, arXiv:1312.6114, appendix C.1.
    """
    nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return nll.flatten(start_dim=1).sum(dim=1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample.

    Args:
        mu: Posterior means, float tensor ``(B, latent_dim)``.
        logvar: Posterior log-variances, float tensor ``(B, latent_dim)``.

    Returns:
        Float tensor ``(B,)``: KL summed over latent dimensions, in nats, >= 0.

    References:
        Kingma & Welling 2014, arXiv:1312.6114, appendix B (eq. 10).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Draws ``z = mu + sigma * eps`` with ``eps ~ N(0, I)``.

    Args:
        mu: Float tensor ``(B, latent_dim)``.
        logvar: Float tensor ``(B, latent_dim)``.

    Returns:
        Float tensor ``(B, latent_dim)``, differentiable in ``mu`` and ``logvar``.
    """
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
