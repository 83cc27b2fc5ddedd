"""DCGAN: a deep convolutional GAN whose generator maps latent codes to images in [0, 1].

Generator: the code ``(B, latent_dim)`` as a ``1x1`` map, a transposed conv to ``s x s`` (``s =
H / 2**len(filters)``), then stride-2 transposed convs (kernel 4) through ``reversed(filters)``
to the image; BatchNorm + ReLU after every layer but the last, which ends in a sigmoid. The
paper's tanh output would need data in [-1, 1]; ``(tanh(a) + 1) / 2 == sigmoid(2a)``, so the
sigmoid is the same output family for data in [0, 1], what every dataset here gives and what
the sample metrics compare.

Discriminator: stride-2 convs (kernel 4) through ``filters``, BatchNorm (not on the first
layer) and LeakyReLU(0.2), then a conv over the remaining ``s x s`` map to one logit.

``filters=(64, 128, 256, 512)`` on 64x64 images is the PyTorch reference DCGAN (``ndf = ngf =
64``): the discriminator's widths, which the generator uses in reverse.

References:
    Radford, Metz, Chintala 2016, "Unsupervised Representation Learning with Deep
    Convolutional Generative Adversarial Networks", ICLR, arXiv:1511.06434 (section 3 for the
    architecture guidelines, section 4 for Adam(2e-4, beta1=0.5), N(0, 0.02) weights and
    LeakyReLU slope 0.2); Goodfellow et al. 2014, arXiv:1406.2661, section 3 (the
    non-saturating generator loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainables.nets import check_image_input, conv_output_size
from trainables.precision import Amp
from trainables.registry import register

__all__ = ["DCGANConfig", "DCGAN", "GANOutput", "discriminator_loss", "generator_loss"]

EVAL_NOISE_SEED = 0  # validation passes use the same codes every epoch, so val_* are comparable


class DCGANConfig(BaseModel):
    """Hyperparameters of :class:`DCGAN`.

    The family runs its own Adam optimisers; ``training.lr`` and ``training.optimizer`` of a
    study do not apply to it (``training.batch_size`` and ``epochs`` do).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    latent_dim: int = Field(100, gt=0, le=1024)  # the paper's 100-dimensional uniform/normal z
    # Discriminator widths per stride-2 layer (the generator's, reversed): the reference at 64x64.
    filters: tuple[Annotated[int, Field(gt=0, le=4096)], ...] = Field((64, 128, 256, 512), min_length=1, max_length=8)
    lr: float = Field(2e-4, gt=0.0, le=1.0)  # the paper: 1e-3 was too high
    beta1: float = Field(0.5, ge=0.0, lt=1.0)  # the paper: 0.9 oscillated and was unstable
    beta2: float = Field(0.999, ge=0.0, lt=1.0)  # Adam's default, as in the paper
    init_std: float = Field(0.02, gt=0.0, le=1.0)  # N(0, 0.02) weights, as in the paper


@dataclass
class GANOutput:
    """What :meth:`DCGAN.forward` returns (validation: the losses, no update).

    Attributes:
        d_loss: Scalar discriminator loss ``-log D(x) - log(1 - D(G(z)))``, mean over the batch, nats.
        g_loss: Scalar non-saturating generator loss ``-log D(G(z))``, mean over the batch, nats.
        fake: ``(B, C, H, W)`` generated images in [0, 1].
        predictions: Per-sample predictions for validation metrics: none (``{}``), a GAN predicts nothing.
    """

    d_loss: torch.Tensor
    g_loss: torch.Tensor
    fake: torch.Tensor
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        """The generator's loss (``g_loss``), the ``loss`` of :meth:`terms`."""
        return self.g_loss

    def terms(self) -> dict[str, torch.Tensor]:
        """``loss`` (the generator's), ``d_loss`` and ``g_loss``."""
        return {"loss": self.g_loss, "d_loss": self.d_loss, "g_loss": self.g_loss}


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-log D(x) - log(1 - D(G(z)))``, each term averaged over its batch, in nats (a scalar).

    Args:
        real_logits: ``(B,)`` logits of D on data.
        fake_logits: ``(B',)`` logits of D on generated images.

    References:
        Goodfellow et al. 2014, arXiv:1406.2661, eq. 1 (``log(1 - sigmoid(a)) = -softplus(a)``).
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss ``-log D(G(z))``, averaged over the batch, in nats.

    Args:
        fake_logits: ``(B,)`` logits of D on generated images.

    References:
        Goodfellow et al. 2014, arXiv:1406.2661, section 3 (maximise ``log D(G(z))`` rather than
        minimise ``log(1 - D(G(z)))``, whose gradient vanishes early in training).
    """
    return F.softplus(-fake_logits).mean()


def _check_shape(input_shape: Sequence[int], filters: Sequence[int]) -> int:
    """The spatial size ``s`` the stride-2 layers leave; refuses shapes the filters do not fit."""
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"filters: DCGAN needs square (C, H, H) images, but got input_shape {tuple(input_shape)}")
    return conv_output_size(input_shape[1], len(filters))


class Generator(nn.Module):
    """``(B, latent_dim)`` codes -> ``(B, C, H, W)`` images in [0, 1].

    Args:
        output_shape: ``(C, H, H)``.
        filters: The discriminator's widths; used in reverse.
        latent_dim: Size of the code.
    """

    def __init__(self, output_shape: Sequence[int], filters: Sequence[int], latent_dim: int):
        super().__init__()
        size = _check_shape(output_shape, filters)
        widths = list(reversed(filters))
        layers: list[nn.Module] = [  # (B, latent_dim, 1, 1) -> (B, widths[0], s, s)
            nn.ConvTranspose2d(latent_dim, widths[0], kernel_size=size, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(),
        ]
        for width_in, width_out in zip(widths, widths[1:]):  # doubles the side each layer
            layers += [nn.ConvTranspose2d(width_in, width_out, kernel_size=4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], output_shape[0], kernel_size=4, stride=2, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # (B, latent_dim, 1, 1) -> (B, C, H, W)


class Discriminator(nn.Module):
    """``(B, C, H, W)`` images -> ``(B,)`` logits of "real".

    Args:
        input_shape: ``(C, H, H)``.
        filters: Output channels of each stride-2 conv.
    """

    def __init__(self, input_shape: Sequence[int], filters: Sequence[int]):
        super().__init__()
        size = _check_shape(input_shape, filters)
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for index, width in enumerate(filters):
            layers.append(nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1, bias=index == 0))
            if index > 0:  # the paper leaves BatchNorm off the discriminator's input layer
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            channels = width
        layers.append(nn.Conv2d(channels, 1, kernel_size=size, stride=1, padding=0))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # (B,)


@register("dcgan", DCGANConfig, loss_terms=("d_loss", "g_loss"))
class DCGAN(nn.Module):
    """Generator and discriminator trained by alternating Adam steps (one D step, one G step).

    Args:
        config: The family's hyperparameters.
        input_shape: ``(C, H, H)``; H divisible by ``2 ** len(filters)``.

    Raises:
        ValueError: If the images are not square or their size does not fit the number of
            stride-2 layers (the message names ``filters``).
    """

    latent_dim: int  # the ability of trainables.protocol: the width of the generator's codes
    memory_format = torch.channels_last  # the ability of trainables.protocol: conv nets train faster in NHWC

    @classmethod
    def check_setup(cls, config: DCGANConfig, training, data) -> None:
        """Refuses images the generator and discriminator cannot take."""
        check_image_input(data.input_shape, config.filters, "dcgan")

    def __init__(self, config: DCGANConfig, input_shape: Sequence[int]):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.generator = Generator(input_shape, config.filters, config.latent_dim)
        self.discriminator = Discriminator(input_shape, config.filters)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Conv weights ~ N(0, init_std), BatchNorm scales ~ N(1, init_std), biases 0 (paper, section 4)."""
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, self.config.init_std)
            nn.init.zeros_(module.bias)

    def configure_optimizers(self, training: dict) -> list[torch.optim.Optimizer]:
        """``[discriminator Adam, generator Adam]`` with the config's lr and betas (``training`` unused)."""
        betas = (self.config.beta1, self.config.beta2)
        return [torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr, betas=betas),
                torch.optim.Adam(self.generator.parameters(), lr=self.config.lr, betas=betas)]

    def _noise(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(num, self.latent_dim, generator=generator).to(device)  # (num, latent_dim)

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: list[torch.optim.Optimizer],
                      amp: Amp | None = None) -> dict:
        """One discriminator step on a real and a generated batch, then one generator step.

        Args:
            batch: ``{"image": (B, C, H, W) float in [0, 1]}``.
            optimizers: What :meth:`configure_optimizers` returned.
            amp: The trial's mixed precision (loss scaling for fp16); None: plain fp32.

        Returns:
            Scalars (detached): ``loss`` (= ``g_loss``), ``d_loss`` before its step, ``g_loss``
            against the updated discriminator.
        """
        d_optimizer, g_optimizer = optimizers
        amp = amp or Amp()
        real = batch["image"]
        fake = self.generator(self._noise(len(real)))  # (B, C, H, W)
        d_loss = discriminator_loss(self.discriminator(real), self.discriminator(fake.detach()))
        d_optimizer.zero_grad(set_to_none=True)
        amp.backward(d_loss)
        amp.step(d_optimizer)
        self.discriminator.requires_grad_(False)  # the generator step needs no discriminator gradients
        try:
            g_loss = generator_loss(self.discriminator(fake))
            g_optimizer.zero_grad(set_to_none=True)
            amp.backward(g_loss)
            amp.step(g_optimizer)
        finally:
            self.discriminator.requires_grad_(True)
        return {"loss": g_loss.detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def forward(self, batch: dict[str, torch.Tensor]) -> GANOutput:
        """Both losses on ``batch["image"]`` and as many generated images, without any update.

        In eval mode the codes come from a fixed seed, so validation losses compare across epochs.
        """
        real = batch["image"]
        generator = None if self.training else torch.Generator().manual_seed(EVAL_NOISE_SEED)
        fake = self.generator(self._noise(len(real), generator))
        fake_logits = self.discriminator(fake)
        d_loss = discriminator_loss(self.discriminator(real), fake_logits)
        return GANOutput(d_loss=d_loss, g_loss=generator_loss(fake_logits), fake=fake)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] for codes ``(B, latent_dim)``."""
        return self.generator(z)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images ``(num, C, H, W)`` in [0, 1] from standard-normal codes."""
        return self.generator(self._noise(num, generator))
