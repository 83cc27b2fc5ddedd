"""beta-TCVAE: the conv VAE with its KL's total-correlation part weighted by beta.

References:
    Chen et al. 2018, "Isolating Sources of Disentanglement in Variational Autoencoders",
    arXiv:1802.04942; eq. 4 with alpha = gamma = 1 (the ELBO plus ``(1 - beta) * TC``), the TC
    estimated on the minibatch (sec. 4.1), as disentanglement_lib's ``BetaTCVAE``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from trainables.families.conv_vae import ConvVAE, ConvVAEConfig
from trainables.losses import gaussian_kl, total_correlation
from trainables.registry import register

__all__ = ["BetaTCVAEConfig", "BetaTCVAE"]


class BetaTCVAEConfig(ConvVAEConfig):
    """Hyperparameters of :class:`BetaTCVAE`; ``beta`` weighs the total correlation, not the KL."""

    beta: float = Field(6.0, ge=0.0, le=1e4)  # Chen et al.'s dSprites value; 1 is the plain VAE


@register("beta_tcvae", BetaTCVAEConfig, loss_terms=("recon_loss", "kl", "tc"))
class BetaTCVAE(ConvVAE):
    """:class:`ConvVAE` whose penalty is ``kl + (beta - 1) * tc``.

    Args:
        config: The family's hyperparameters.
        input_shape: ``(C, H, W)``, as for :class:`ConvVAE`.
    """

    def regularizer(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``KL + (beta - 1) * TC`` per code (Chen et al. 2018, eq. 4 with alpha = gamma = 1).

        The TC is the minibatch estimate of :func:`trainables.losses.total_correlation` at the codes
        the decoder saw (samples of the posteriors).

        Args:
            mu: ``(B, latent_dim)`` posterior means.
            logvar: ``(B, latent_dim)`` posterior log-variances.
            z: ``(B, latent_dim)`` codes.

        Returns:
            ``{"kl": (B,), "penalty": (B,), "tc": (B,)}`` in nats; the batch means of ``tc`` and
            ``penalty`` are the TC estimate and the regularizer.
        """
        kl = gaussian_kl(mu, logvar)
        tc = total_correlation(z, mu, logvar)
        return {"kl": kl, "penalty": kl + (self.beta - 1.0) * tc, "tc": tc}
