"""Convolutional beta-VAE: the beta-VAE paper's dSprites architecture, widths from config.

References:
    Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts with a Constrained
    Variational Framework", ICLR; eq. 4 for the objective, appendix A.1 for the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainables.likelihoods import build_likelihood
from trainables.nets import ConvDecoder, ConvEncoder, check_image_input
from trainables.registry import register
from trainables.vae import VAE

__all__ = ["ConvVAEConfig", "ConvVAE"]


class ConvVAEConfig(BaseModel):
    """Hyperparameters of :class:`ConvVAE`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latent_dim: int = Field(10, gt=0, le=1024)  # 10: disentanglement_lib's dSprites setting
    filters: tuple[Annotated[int, Field(gt=0, le=4096)], ...] = Field((32, 32, 64, 64), min_length=1,
                                                                    max_length=8)  # paper's encoder
    hidden_dim: int = Field(256, gt=0, le=8192)  # paper's FC width
    beta: float = Field(1.0, ge=0.0, le=1e4)  # 1 is the plain VAE
    # bernoulli: dSprites pixels are binary; gaussian: continuous images (jets), NLL with its
    # normalising constant so that val_elbo stays a bound in nats.
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    sigma: float = Field(1.0, gt=0.0, le=1e4)  # Gaussian std in data units: fixed, or the initial one when learned
    learn_sigma: Literal["none", "channel", "pixel"] = "none"  # learn log-sigma per channel / per pixel
    # The paper uses relu; with it a third of short dSprites runs died at the mean image.
    activation: Literal["leaky_relu", "relu"] = "leaky_relu"

    @model_validator(mode="after")
    def _sigma_needs_gaussian(self) -> ConvVAEConfig:
        if self.likelihood != "gaussian" and (self.sigma != 1.0 or self.learn_sigma != "none"):
            raise ValueError(
                f"sigma and learn_sigma apply to likelihood 'gaussian', but got likelihood={self.likelihood!r} "
                f"with sigma={self.sigma}, learn_sigma={self.learn_sigma!r}"
            )
        return self


@register("conv_vae", ConvVAEConfig, loss_terms=("recon_loss", "kl"))
class ConvVAE(VAE):
    """Conv encoder (kernel 4, stride 2 per ``filters`` entry) and its mirror decoder.

    Args:
        config: The family's hyperparameters.
        input_shape: ``(C, H, W)``; H must equal W and be divisible by ``2 ** len(filters)``.

    Raises:
        ValueError: If the image size does not fit the number of stride-2 layers.
    """

    # The ability of trainables.protocol: channels_last (NHWC) weights train the main job's step
    # ~1.2x faster in fp32 and ~1.3x in bf16 on this CPU (benchmarks/precision.py).
    memory_format = torch.channels_last

    @classmethod
    def check_setup(cls, config: ConvVAEConfig, training, data) -> None:
        """Refuses images the conv stack cannot take (see :func:`~trainables.nets.check_image_input`)."""
        check_image_input(data.input_shape, config.filters, "conv_vae")

    def __init__(self, config: ConvVAEConfig, input_shape: Sequence[int]):
        super().__init__()
        self.config = config
        self.beta = config.beta
        self.latent_dim = config.latent_dim
        self.encoder = ConvEncoder(input_shape, config.filters, config.hidden_dim, 2 * config.latent_dim,
                                   config.activation)
        self.decoder = ConvDecoder(input_shape, config.filters, config.hidden_dim, config.latent_dim,
                                   config.activation)
        self.likelihood = build_likelihood(config.likelihood, input_shape, config.sigma, config.learn_sigma)
