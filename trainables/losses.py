"""Likelihoods and regularizers shared by the model families.

Conventions (pythae style, explicit reductions): every per-sample term is a sum over
data or latent dimensions, in nats; the batch reduction is a mean, done by the caller
with ``.mean()`` so that per-sample values stay available for evaluation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["bernoulli_nll", "gaussian_kl", "gaussian_log_density", "reparameterize", "total_correlation"]


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


def gaussian_log_density(samples: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log-density of ``samples`` under ``N(mean, exp(logvar))``.

    Args:
        samples: Float tensor, any shape broadcastable with ``mean`` and ``logvar``.
        mean: Float tensor of means.
        logvar: Float tensor of log-variances.

    Returns:
        Float tensor of the broadcast shape: ``log N(samples; mean, exp(logvar))`` per element, in nats
        (not summed over any dimension).
    """
    return -0.5 * ((samples - mean).pow(2) * torch.exp(-logvar) + logvar + math.log(2 * math.pi))


def total_correlation(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Minibatch estimate of the total correlation ``KL(q(z) || prod_l q(z_l))`` of the aggregate posterior.

    ``q(z)`` is the mixture of the batch's posteriors, ``(1/B) sum_i q(z | x_i)``, and ``q(z_l)`` its
    marginals; each code ``z_j`` is scored under both (the minibatch estimator of Chen et al. 2018,
    sec. 4.1, with the batch standing in for the data set). Per code,
    ``tc_j = log q(z_j) - sum_l log q(z_jl)``, so the batch mean estimates the TC. It equals
    disentanglement_lib's ``total_correlation`` plus the constant ``(latent_dim - 1) * log B``, which
    that library drops (no effect on gradients): with it, independent codes score ~0. The estimate is
    biased for small batches (a batch of one scores 0).

    Args:
        z: Codes ``(B, latent_dim)`` float, drawn from the posteriors (or the posterior means).
        mu: Posterior means ``(B, latent_dim)``.
        logvar: Posterior log-variances ``(B, latent_dim)``.

    Returns:
        Float tensor ``(B,)``: ``tc_j`` in nats; its mean is the batch's TC estimate (>= 0 in the
        limit of large batches, a single code may be negative).

    References:
        Chen et al. 2018, "Isolating Sources of Disentanglement in Variational Autoencoders",
        arXiv:1802.04942, eq. 2 (the TC term) and sec. 4.1 (minibatch estimator); disentanglement_lib
        ``methods/unsupervised/vae.py`` ``total_correlation``.
    """
    batch = z.shape[0]
    # log q(z_j,l | x_i) for every pair: (B_j, B_i, latent_dim).
    log_q_pairs = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))
    log_qz = torch.logsumexp(log_q_pairs.sum(dim=2), dim=1) - math.log(batch)  # (B,) joint
    log_qz_marginals = (torch.logsumexp(log_q_pairs, dim=1) - math.log(batch)).sum(dim=1)  # (B,) product
    return log_qz - log_qz_marginals
