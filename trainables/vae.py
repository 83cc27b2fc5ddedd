"""The VAE skeleton every VAE family shares: encode, reparameterize, decode, named loss terms.

A family supplies the encoder and decoder; a variant overrides :meth:`VAE.regularizer`
(the beta-VAE's ``beta * kl`` by default) or :meth:`VAE.reconstruction_nll`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.losses import bernoulli_nll, gaussian_kl, reparameterize

__all__ = ["VAE", "VAEOutput"]


@dataclass
class VAEOutput:
    """What :meth:`VAE.forward` returns.

    Attributes:
        loss: Scalar training objective, mean over the batch.
        recon_loss: Scalar, mean over the batch of the per-sample NLL (nats, summed over
            data dimensions).
        kl: Scalar, mean over the batch of KL(q(z|x) || p(z)) (nats, summed over latents).
        mu: ``(B, latent_dim)`` posterior means.
        logvar: ``(B, latent_dim)`` posterior log-variances.
        recon: ``(B, C, H, W)`` decoder output (logits for a Bernoulli likelihood).
    """

    loss: torch.Tensor
    recon_loss: torch.Tensor
    kl: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    recon: torch.Tensor

    def terms(self) -> dict[str, torch.Tensor]:
        """The scalar loss terms by name: ``loss``, ``recon_loss``, ``kl``."""
        return {"loss": self.loss, "recon_loss": self.recon_loss, "kl": self.kl}


class VAE(nn.Module):
    """Gaussian-posterior VAE with a standard-normal prior; subclasses set the networks.

    Subclasses assign ``self.encoder`` (``(B, ...) -> (B, 2 * latent_dim)``),
    ``self.decoder`` (``(B, latent_dim) -> (B, ...)``) and ``self.beta``.
    """

    encoder: nn.Module
    decoder: nn.Module
    beta: float
    latent_dim: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps inputs ``(B, ...)`` to posterior ``(mu, logvar)``, each ``(B, latent_dim)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Maps codes ``(B, latent_dim)`` to decoder outputs ``(B, ...)``."""
        return self.decoder(z)

    def reconstruction_nll(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample NLL ``(B,)`` in nats; Bernoulli on logits by default."""
        return bernoulli_nll(recon, x)

    def regularizer(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(kl, penalty)``, each ``(B,)``; the loss adds ``penalty``.

        The beta-VAE penalty ``beta * KL`` (Higgins et al. 2017, eq. 4).
        """
        kl = gaussian_kl(mu, logvar)
        return kl, self.beta * kl

    def forward(self, batch: dict[str, torch.Tensor]) -> VAEOutput:
        """Runs the model on ``batch["image"]``, float ``(B, C, H, W)`` in ``[0, 1]``."""
        x = batch["image"]
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar) if self.training else mu
        recon = self.decode(z)
        nll = self.reconstruction_nll(recon, x)  # (B,)
        kl, penalty = self.regularizer(mu, logvar, z)  # (B,), (B,)
        return VAEOutput(
            loss=(nll + penalty).mean(),
            recon_loss=nll.mean(),
            kl=kl.mean(),
            mu=mu,
            logvar=logvar,
            recon=recon,
        )
