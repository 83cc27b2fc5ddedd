"""The beta-VAE under the name the literature uses: :class:`~trainables.families.conv_vae.ConvVAE`.

``conv_vae`` is the beta-VAE paper's convolutional VAE with ``beta`` weighing the KL term; a study
that compares methods side by side (``search_space.family: [beta_vae, factor_vae, ...]``) names it
``beta_vae``, as Locatello et al. 2019 and disentanglement_lib do.

References:
    Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
    Framework", ICLR; eq. 4.
"""

from __future__ import annotations

from trainables.families.conv_vae import ConvVAE, ConvVAEConfig
from trainables.registry import register

__all__ = ["BetaVAEConfig", "BetaVAE"]


class BetaVAEConfig(ConvVAEConfig):
    """Hyperparameters of :class:`BetaVAE` (those of :class:`~trainables.families.conv_vae.ConvVAEConfig`)."""


@register("beta_vae", BetaVAEConfig, loss_terms=("recon_loss", "kl"))
class BetaVAE(ConvVAE):
    """:class:`~trainables.families.conv_vae.ConvVAE`: reconstruction plus ``beta`` times the KL."""
