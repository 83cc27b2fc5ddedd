"""DIP-VAE: the conv VAE with a penalty pushing the aggregate posterior's covariance to the identity.

References:
    Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from Unlabeled
    Observations", arXiv:1711.00848; eq. 6 (DIP-VAE-I, covariance of the means), eq. 7 and 9
    (DIP-VAE-II, covariance of z); disentanglement_lib's ``DIPVAE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from trainables.families.conv_vae import ConvVAE, ConvVAEConfig
from trainables.losses import gaussian_kl
from trainables.registry import register

__all__ = ["DIPVAEConfig", "DIPVAE", "dip_covariance", "dip_regularizer"]

# lambda_d / lambda_od when lambda_d is not given: disentanglement_lib's study (10 for DIP-VAE-I as in
# Kumar et al.'s experiments, 1 for DIP-VAE-II).
LAMBDA_D_FACTOR: dict[str, float] = {"i": 10.0, "ii": 1.0}


class DIPVAEConfig(ConvVAEConfig):
    """Hyperparameters of :class:`DIPVAE`."""

    beta: float = Field(1.0, ge=1.0, le=1.0)  # fixed, not used: the KL weight is 1 (eq. 6 / 7)
    dip_type: Literal["i", "ii"] = "i"  # i: covariance of the means; ii: of z
    lambda_od: float = Field(10.0, ge=0.0, le=1e4)  # off-diagonal weight; mid of disentanglement_lib's 1..50
    lambda_d: float | None = Field(None, ge=0.0, le=1e6)  # diagonal weight; None: LAMBDA_D_FACTOR * lambda_od


def dip_covariance(mu: torch.Tensor, logvar: torch.Tensor, dip_type: str) -> torch.Tensor:
    """The covariance DIP-VAE regularizes, estimated on the batch.

    ``"i"``: ``Cov[mu(x)]`` (eq. 6); ``"ii"``: ``Cov[z] = E[diag(exp(logvar))] + Cov[mu(x)]`` (eq. 9).
    Covariances divide by ``B`` (as disentanglement_lib).

    Args:
        mu: Posterior means ``(B, latent_dim)`` float.
        logvar: Posterior log-variances ``(B, latent_dim)``.
        dip_type: ``"i"`` or ``"ii"``.

    Returns:
        Float ``(latent_dim, latent_dim)``.
    """
    centred = mu - mu.mean(dim=0, keepdim=True)  # (B, D)
    cov_mu = centred.T @ centred / mu.shape[0]  # (D, D)
    expected_var = {"i": 0.0, "ii": 1.0}[dip_type] * logvar.exp().mean(dim=0)  # (D,)
    return cov_mu + torch.diag(expected_var)


def dip_regularizer(covariance: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """``lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2`` (Kumar et al. 2018, eq. 6 / 7).

    Args:
        covariance: Float ``(D, D)``.
        lambda_od: Off-diagonal weight, >= 0.
        lambda_d: Diagonal weight, >= 0.

    Returns:
        Float scalar, >= 0, 0 exactly when ``covariance`` is the identity (or the weights are 0).
    """
    diagonal = torch.diagonal(covariance)
    off_diagonal = covariance - torch.diag(diagonal)
    return lambda_od * off_diagonal.pow(2).sum() + lambda_d * (diagonal - 1.0).pow(2).sum()


@register("dip_vae", DIPVAEConfig, loss_terms=("recon_loss", "kl", "dip"))
class DIPVAE(ConvVAE):
    """:class:`ConvVAE` whose penalty is ``kl + dip``, ``dip`` the covariance penalty of the batch.

    Args:
        config: The family's hyperparameters.
        input_shape: ``(C, H, W)``, as for :class:`ConvVAE`.
    """

    def __init__(self, config: DIPVAEConfig, input_shape: Sequence[int]):
        super().__init__(config, input_shape)
        self.lambda_d = (config.lambda_d if config.lambda_d is not None
                         else LAMBDA_D_FACTOR[config.dip_type] * config.lambda_od)

    def regularizer(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``KL + dip`` (Kumar et al. 2018, eq. 6 for DIP-VAE-I, eq. 7 with eq. 9 for DIP-VAE-II).

        ``dip`` is a batch quantity; the per-code penalty adds that batch value to each KL.

        Args:
            mu: ``(B, latent_dim)`` posterior means.
            logvar: ``(B, latent_dim)`` posterior log-variances.
            z: ``(B, latent_dim)`` codes (unused: both types use the moments).

        Returns:
            ``{"kl": (B,), "penalty": (B,), "dip": scalar}``.
        """
        kl = gaussian_kl(mu, logvar)
        covariance = dip_covariance(mu, logvar, self.config.dip_type)
        dip = dip_regularizer(covariance, self.config.lambda_od, self.lambda_d)
        return {"kl": kl, "penalty": kl + dip, "dip": dip}
