"""MLP beta-VAE for vector data (the toy 2-D sets; any input, flattened).

With the default Gaussian likelihood of fixed sigma the reconstruction term is the squared error
``||x - x_hat||^2 / (2 sigma^2)`` plus its normalising constant: MSE as a likelihood, so
``val_elbo`` is a bound on log p(x) in nats per sample and comparable across betas (beta only
weights the KL in the training loss).

References:
    Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114 (appendix C.2, the
    Gaussian MLP decoder); Higgins et al. 2017, "beta-VAE", ICLR, eq. 4 (the objective).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from trainables.likelihoods import build_likelihood
from trainables.nets import MLP
from trainables.registry import register
from trainables.vae import VAE

__all__ = ["MLPVAEConfig", "MLPVAE"]


class MLPVAEConfig(BaseModel):
    """Hyperparameters of :class:`MLPVAE`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latent_dim: int = Field(2, gt=0, le=1024)  # 2: as many as the toy data's dimensions
    hidden_widths: tuple[int, ...] = Field((64, 64), min_length=1, max_length=8)  # encoder; decoder reversed
    beta: float = Field(1.0, ge=0.0, le=1e4)  # 1 is the plain VAE
    likelihood: Literal["gaussian", "bernoulli"] = "gaussian"  # bernoulli: binary data such as dSprites
    # Fixed std of the Gaussian likelihood, in data units (standardised toy data: 1 is the data's
    # own spread). Only beta * sigma^2 shapes the optimum; sigma also sets the nats of val_elbo.
    sigma: float = Field(1.0, gt=0.0, le=1e3)
    activation: Literal["leaky_relu", "relu"] = "leaky_relu"  # leaky: no dead units on short runs


@register("mlp_vae", MLPVAEConfig, loss_terms=("recon_loss", "kl"))
class MLPVAE(VAE):
    """MLP encoder ``x -> (mu, logvar)`` and its mirror decoder ``z -> x_hat``.

    Args:
        config: The family's hyperparameters.
        input_shape: Shape of one observation, ``(D,)`` (or ``(C, H, W)``, flattened).
        condition_dim: Features a conditional subclass appends to the encoder's input and to the
            decoder's input (0: unconditional).
    """

    def __init__(self, config: MLPVAEConfig, input_shape: Sequence[int], condition_dim: int = 0):
        super().__init__()
        self.config = config
        self.beta = config.beta
        self.latent_dim = config.latent_dim
        self.input_shape = tuple(input_shape)
        data_dim = math.prod(self.input_shape)
        widths = tuple(config.hidden_widths)
        self.encoder = MLP(data_dim + condition_dim, widths, 2 * config.latent_dim, config.activation)
        self.decoder = MLP(config.latent_dim + condition_dim, widths[::-1], data_dim, config.activation)
        self.likelihood = build_likelihood(config.likelihood, self.input_shape, config.sigma)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps observations ``(B, *input_shape)`` to posterior ``(mu, logvar)``, each ``(B, latent_dim)``."""
        mu, logvar = self.encoder(x.flatten(start_dim=1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Maps codes ``(B, latent_dim)`` to decoder outputs ``(B, *input_shape)`` (means or logits)."""
        return self.decoder(z).view(-1, *self.input_shape)
