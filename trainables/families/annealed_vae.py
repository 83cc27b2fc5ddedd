"""AnnealedVAE: the conv VAE pulled towards a KL capacity that rises linearly during training.

References:
    Burgess et al. 2018, "Understanding disentangling in beta-VAE", arXiv:1804.03599, eq. 8;
    disentanglement_lib's ``AnnealedVAE`` and ``anneal``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from trainables.families.conv_vae import ConvVAE, ConvVAEConfig
from trainables.losses import gaussian_kl
from trainables.registry import register

__all__ = ["AnnealedVAEConfig", "AnnealedVAE", "annealed_capacity"]


class AnnealedVAEConfig(ConvVAEConfig):
    """Hyperparameters of :class:`AnnealedVAE`; ``gamma`` takes the place of ``beta``."""

    beta: float = Field(1.0, ge=1.0, le=1.0)  # fixed, not used: gamma weighs |KL - C|
    gamma: float = Field(1000.0, gt=0.0, le=1e6)  # disentanglement_lib's (and Burgess et al.'s) value
    c_max: float = Field(25.0, ge=0.0, le=1e4)  # nats; Burgess et al.'s dSprites value, mid of the study's grid
    # Steps until C reaches c_max: disentanglement_lib's 100k of 300k steps. Short runs need far fewer.
    iteration_threshold: int = Field(100_000, gt=0, le=10**9)


def annealed_capacity(step: torch.Tensor | int, c_max: float, iteration_threshold: int) -> torch.Tensor:
    """The capacity ``C(t) = min(c_max, c_max * t / iteration_threshold)``.

    Args:
        step: Training steps taken so far (>= 0), an int or an integer tensor.
        c_max: Final capacity, nats.
        iteration_threshold: Steps after which ``C`` stays at ``c_max`` (> 0).

    Returns:
        Float scalar tensor in ``[0, c_max]``, nats.

    References:
        Burgess et al. 2018, arXiv:1804.03599, sec. 5; disentanglement_lib ``anneal``.
    """
    step = torch.as_tensor(step, dtype=torch.float32)
    return torch.clamp(c_max * step / iteration_threshold, max=c_max)


@register("annealed_vae", AnnealedVAEConfig, loss_terms=("recon_loss", "kl", "capacity"))
class AnnealedVAE(ConvVAE):
    """:class:`ConvVAE` whose penalty is ``gamma * |KL - C(t)|``.

    ``step`` (a buffer, so it is saved in the checkpoint's state dict and a resumed trial goes on
    from there) counts training-mode forward passes, one per optimisation step.

    Args:
        config: The family's hyperparameters.
        input_shape: ``(C, H, W)``, as for :class:`ConvVAE`.
    """

    step: torch.Tensor

    def __init__(self, config: AnnealedVAEConfig, input_shape: Sequence[int]):
        super().__init__(config, input_shape)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def regularizer(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``gamma * |KL - C(t)|`` (Burgess et al. 2018, eq. 8), ``C`` at the steps taken so far.

        As in disentanglement_lib, the absolute value applies to the batch-mean KL; the per-code
        penalty is that batch value repeated. A training-mode call advances ``step`` by one.

        Args:
            mu: ``(B, latent_dim)`` posterior means.
            logvar: ``(B, latent_dim)`` posterior log-variances.
            z: ``(B, latent_dim)`` codes (unused).

        Returns:
            ``{"kl": (B,), "penalty": (B,), "capacity": scalar}`` in nats.
        """
        config = self.config
        kl = gaussian_kl(mu, logvar)
        capacity = annealed_capacity(self.step, config.c_max, config.iteration_threshold).to(kl.device)
        if self.training:
            self.step += 1
        penalty = config.gamma * (kl.mean() - capacity).abs()
        return {"kl": kl, "penalty": penalty.expand_as(kl), "capacity": capacity}
