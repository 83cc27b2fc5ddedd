"""The VAE skeleton every VAE family shares: encode, reparameterize, decode, named loss terms.

A family supplies the encoder, decoder and likelihood; a variant overrides
:meth:`VAE.regularizer` (the beta-VAE's ``beta * kl`` by default). A conditional family
overrides :meth:`VAE.encode_batch` / :meth:`VAE.decode_batch` to read its condition from the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from trainables.likelihoods import BernoulliLikelihood
from trainables.losses import gaussian_kl, reparameterize

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
        recon: ``(B, ...)`` decoder output (logits for a Bernoulli likelihood, means for a Gaussian).
        extra: Further scalar terms by name (e.g. ``tc``, task losses), reported as
            ``train_<name>`` / ``val_<name>``.
        predictions: Per-sample tensors ``(B, ...)`` by name that the loop concatenates over a
            validation epoch and hands to the model's ``validation_metrics`` (e.g. task outputs
            and targets for an AUC).
    """

    loss: torch.Tensor
    recon_loss: torch.Tensor
    kl: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    recon: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)

    def terms(self) -> dict[str, torch.Tensor]:
        """The scalar loss terms by name: ``loss``, ``recon_loss``, ``kl`` and the extra ones."""
        return {"loss": self.loss, "recon_loss": self.recon_loss, "kl": self.kl, **self.extra}


class VAE(nn.Module):
    """Gaussian-posterior VAE with a standard-normal prior; subclasses set the networks.

    Subclasses assign ``self.encoder`` (``(B, ...) -> (B, 2 * latent_dim)``),
    ``self.decoder`` (``(B, latent_dim) -> (B, ...)``), ``self.beta``, ``self.latent_dim`` and
    optionally ``self.likelihood`` (Bernoulli on logits unless set).
    """

    encoder: nn.Module
    decoder: nn.Module
    beta: float
    latent_dim: int
    likelihood: nn.Module

    def __init__(self):
        super().__init__()
        # An instance attribute: a class-level default would shadow the module a subclass assigns
        # (nn.Module keeps submodules in _modules, looked up only after class attributes).
        self.likelihood = BernoulliLikelihood()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps inputs ``(B, ...)`` to posterior ``(mu, logvar)``, each ``(B, latent_dim)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Maps codes ``(B, latent_dim)`` to decoder outputs ``(B, ...)``."""
        return self.decoder(z)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Maps codes ``(B, latent_dim)`` to the means of p(x | z) ``(B, ...)`` in data space."""
        return self.likelihood.mean(self.decode(z))

    def encode_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, logvar)`` of a batch; unconditional: ``encode(batch["image"])``."""
        return self.encode(batch["image"])

    def decode_batch(self, z: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decoder output for codes ``z`` of a batch; unconditional: ``decode(z)``."""
        return self.decode(z)

    def reconstruction_nll(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample NLL ``(B,)`` in nats under the family's likelihood."""
        return self.likelihood.nll(recon, x)

    def regularizer(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The KL and the penalty the loss adds, per sample.

        The beta-VAE penalty ``beta * KL`` (Higgins et al. 2017, eq. 4). Variants override this.

        Args:
            mu: ``(B, latent_dim)`` posterior means.
            logvar: ``(B, latent_dim)`` posterior log-variances.
            z: ``(B, latent_dim)`` the codes the decoder saw.

        Returns:
            ``{"kl": (B,), "penalty": (B,)}`` plus any further ``(B,)`` or scalar terms to
            report (e.g. ``"tc"``).
        """
        kl = gaussian_kl(mu, logvar)
        return {"kl": kl, "penalty": self.beta * kl}

    def forward(self, batch: dict[str, torch.Tensor]) -> VAEOutput:
        """Runs the model on ``batch["image"]`` (float ``(B, ...)``) and any condition in ``batch``."""
        x = batch["image"]
        mu, logvar = self.encode_batch(batch)
        # A sampled z in eval mode too: -(recon_loss + kl) is then a one-sample estimate of the ELBO, a
        # bound on log p(x); decoding the mean code instead would overstate it. Deterministic
        # reconstructions come from reconstruct().
        z = reparameterize(mu, logvar)
        recon = self.decode_batch(z, batch)
        nll = self.reconstruction_nll(recon, x)  # (B,)
        reg = self.regularizer(mu, logvar, z)
        extra = {k: v.mean() for k, v in reg.items() if k not in ("kl", "penalty")}
        return VAEOutput(
            loss=(nll + reg["penalty"]).mean(),
            recon_loss=nll.mean(),
            kl=reg["kl"].mean(),
            mu=mu,
            logvar=logvar,
            recon=recon,
            extra=extra,
        )

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean reconstructions ``(B, ...)`` in data space from the posterior means (no sampling)."""
        mu, _ = self.encode_batch(batch)
        return self.likelihood.mean(self.decode_batch(mu, batch))

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` samples from the model, the likelihood means of decoded prior draws ``(num, ...)``."""
        device = next(self.parameters()).device
        z = torch.randn(num, self.latent_dim, generator=generator).to(device)  # (num, latent_dim)
        return self.generate(z)
