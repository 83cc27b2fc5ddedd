"""FactorVAE: the conv VAE plus gamma times a discriminator's estimate of the total correlation.

A discriminator tells codes ``z ~ q(z)`` from codes whose dimensions were permuted
independently across the batch (samples of ``prod_l q(z_l)``); its logit difference estimates
the TC, which the VAE minimises while the discriminator is trained by its own optimizer.

As disentanglement_lib (and unlike Kim & Mnih's Algorithm 1, which permutes the codes of a second
minibatch), the permuted codes come from the same batch, and the VAE and the discriminator step
on the same forward pass.

References:
    Kim & Mnih 2018, "Disentangling by Factorising", arXiv:1802.05983, eq. 2 (objective), eq. 3 and
    Algorithm 1 (discriminator, permutation), appendix A (discriminator: 6 layers of 1000 units);
    disentanglement_lib's ``FactorVAE``, ``shuffle_codes`` and ``fc_discriminator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from trainables.families.conv_vae import ConvVAE, ConvVAEConfig
from trainables.losses import gaussian_kl
from trainables.nets import MLP
from trainables.precision import Amp
from trainables.registry import register

__all__ = ["FactorVAEConfig", "FactorVAE", "permute_dims"]

AdamBeta = Annotated[float, Field(ge=0.0, lt=1.0)]


class FactorVAEConfig(ConvVAEConfig):
    """Hyperparameters of :class:`FactorVAE`."""

    beta: float = Field(1.0, ge=1.0, le=1.0)  # fixed, not used: the KL weight is 1 (eq. 2)
    gamma: float = Field(10.0, ge=0.0, le=1e4)  # TC weight; 10: lowest of disentanglement_lib's 10..100
    discriminator_layers: int = Field(6, gt=0, le=16)  # hidden layers; Kim & Mnih's appendix A
    discriminator_hidden: int = Field(1000, gt=0, le=8192)  # units per hidden layer; Kim & Mnih's appendix A
    discriminator_lr: float = Field(1e-4, gt=0.0, le=1.0)  # disentanglement_lib's discriminator Adam
    discriminator_betas: tuple[AdamBeta, AdamBeta] = (0.5, 0.9)  # disentanglement_lib's discriminator Adam


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Permutes each latent dimension independently across the batch.

    The result's rows are samples of ``prod_l q(z_l)`` when the rows of ``z`` are samples of
    ``q(z)`` (Kim & Mnih 2018, Algorithm 1).

    Args:
        z: Codes ``(B, latent_dim)``.

    Returns:
        ``(B, latent_dim)``: column ``l`` is a permutation of ``z[:, l]`` (the global torch RNG draws it).
    """
    order = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)  # (B, D): a permutation per column
    return torch.gather(z, 0, order)


@register("factor_vae", FactorVAEConfig, loss_terms=("recon_loss", "kl", "tc", "discriminator_loss"))
class FactorVAE(ConvVAE):
    """:class:`ConvVAE` with penalty ``kl + gamma * tc`` and a code discriminator.

    The discriminator outputs two logits per code, ``[joint, permuted]``
    (``(B, latent_dim) -> (B, 2)``). The loop calls :meth:`configure_optimizers` and
    :meth:`training_step`; validation calls ``forward`` (TC estimate and discriminator loss, no updates).

    Args:
        config: The family's hyperparameters.
        input_shape: ``(C, H, W)``, as for :class:`ConvVAE`.
    """

    @classmethod
    def check_setup(cls, config: FactorVAEConfig, training, data) -> None:
        """The conv VAE's input check, and Adam: FactorVAE trains both networks with it (Kim & Mnih 2018, sec. 5)."""
        super().check_setup(config, training, data)
        if training.optimizer != "adam":
            raise ValueError(f"training.optimizer: factor_vae trains with adam, but got {training.optimizer!r}")

    def __init__(self, config: FactorVAEConfig, input_shape: Sequence[int]):
        super().__init__(config, input_shape)
        # nets.MLP's leaky ReLU (slope 0.01) where disentanglement_lib's TF default has 0.2.
        self.discriminator = MLP(config.latent_dim, [config.discriminator_hidden] * config.discriminator_layers, 2,
                                 "leaky_relu")

    def discriminator_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the discriminator on codes (class 0) and their permutation (class 1).

        ``0.5 * (CE(D(z), 0) + CE(D(permute_dims(z)), 1))``, the negative of disentanglement_lib's
        ``discriminator_loss``; only the discriminator gets gradients (``z`` is detached).

        Args:
            z: Codes ``(B, latent_dim)``.

        Returns:
            Float scalar, nats, ``log 2`` for a discriminator at chance.
        """
        z = z.detach()
        joint = self.discriminator(z)  # (B, 2)
        permuted = self.discriminator(permute_dims(z))  # (B, 2)
        zeros = torch.zeros(len(z), dtype=torch.long, device=z.device)
        return 0.5 * (F.cross_entropy(joint, zeros) + F.cross_entropy(permuted, zeros + 1))

    def regularizer(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``KL + gamma * TC`` (Kim & Mnih 2018, eq. 2), ``TC ~ log(D(z) / (1 - D(z)))`` (eq. 3).

        With two logits, ``log(D / (1 - D))`` is ``logit_joint - logit_permuted``; gradients reach
        the encoder through the discriminator, whose own parameters the VAE optimizer leaves alone.

        Args:
            mu: ``(B, latent_dim)`` posterior means.
            logvar: ``(B, latent_dim)`` posterior log-variances.
            z: ``(B, latent_dim)`` codes the decoder saw (samples of the posteriors).

        Returns:
            ``{"kl": (B,), "penalty": (B,), "tc": (B,), "discriminator_loss": scalar}`` in nats.
        """
        kl = gaussian_kl(mu, logvar)
        logits = self.discriminator(z)  # (B, 2)
        tc = logits[:, 0] - logits[:, 1]
        return {"kl": kl, "penalty": kl + self.config.gamma * tc, "tc": tc,
                "discriminator_loss": self.discriminator_loss(z)}

    def configure_optimizers(self, training: dict) -> list[torch.optim.Optimizer]:
        """``[VAE Adam (training.lr), discriminator Adam (discriminator_lr, discriminator_betas)]``.

        Raises:
            ValueError: If ``training.optimizer`` is not ``"adam"`` (FactorVAE trains both with Adam).
        """
        if training.optimizer != "adam":
            raise ValueError(f"training.optimizer: factor_vae trains with adam, but got {training.optimizer!r}")
        discriminator = {id(p) for p in self.discriminator.parameters()}
        vae_parameters = [p for p in self.parameters() if id(p) not in discriminator]
        return [
            torch.optim.Adam(vae_parameters, lr=training.lr),
            torch.optim.Adam(self.discriminator.parameters(), lr=self.config.discriminator_lr,
                             betas=self.config.discriminator_betas),
        ]

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: list[torch.optim.Optimizer],
                      amp: Amp | None = None) -> dict[str, torch.Tensor]:
        """One step of each network on ``batch``: the VAE on ``loss``, then the discriminator on its loss.

        Args:
            batch: ``{"image": (B, C, H, W) float}``.
            optimizers: What :meth:`configure_optimizers` returned.
            amp: The trial's mixed precision (loss scaling for fp16); None: plain fp32.

        Returns:
            Detached scalar terms: ``loss``, ``recon_loss``, ``kl``, ``tc``, ``discriminator_loss``
            (before the step).
        """
        vae_optimizer, discriminator_optimizer = optimizers
        amp = amp or Amp()
        out = self(batch)
        vae_optimizer.zero_grad(set_to_none=True)
        amp.backward(out.loss)  # also leaves gradients on the discriminator: cleared below
        amp.step(vae_optimizer)
        discriminator_optimizer.zero_grad(set_to_none=True)
        amp.backward(out.extra["discriminator_loss"])
        amp.step(discriminator_optimizer)
        return {name: value.detach() for name, value in out.terms().items()}
