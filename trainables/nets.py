"""Network pieces shared by model families: conv encoder and decoder stacks, MLPs."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Callable

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "ConvEncoder", "ConvDecoder", "MLP", "conv_output_size"]

# Hidden-layer activations by config name. LeakyReLU's 0.01 slope keeps units from dying:
# with plain ReLU a third of dSprites runs (lr 1e-3 to 3e-3) stuck at the mean image.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "leaky_relu": partial(nn.LeakyReLU, 0.01)}


def conv_output_size(image_size: int, num_layers: int) -> int:
    """Spatial size after ``num_layers`` stride-2 kernel-4 padding-1 convolutions.

    Raises:
        ValueError: If ``image_size`` is not divisible by ``2 ** num_layers``.
    """
    if image_size % (2**num_layers):
        raise ValueError(
            f"filters: {num_layers} stride-2 layers need an image size divisible by "
            f"{2 ** num_layers}, but the images are {image_size} pixels wide"
        )
    return image_size // (2**num_layers)


def check_image_input(input_shape: Sequence[int], filters: Sequence[int], family: str) -> None:
    """Refuses an input shape a stack of ``len(filters)`` stride-2 convolutions cannot take.

    Args:
        input_shape: ``(C, H, W)`` of the dataset's observations.
        filters: Channel widths of the conv layers.
        family: The family's name, for the message.

    Raises:
        ValueError: ``family.filters: ...`` when the images are not square ``(C, H, H)`` or ``H`` is not
            divisible by ``2 ** len(filters)``.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"family.filters: {family} needs square (C, H, H) images, but the dataset gives {shape}")
    layers = len(filters)
    if shape[1] % (2**layers):
        raise ValueError(f"family.filters: {layers} stride-2 layers need an image size divisible by {2 ** layers}, "
                         f"but the dataset's images are {shape[1]} pixels wide (got filters {list(filters)})")


class ConvEncoder(nn.Module):
    """Stride-2 conv stack, then a hidden linear layer, then ``out_dim`` outputs.

    The beta-VAE paper's dSprites encoder with ``filters=[32, 32, 64, 64]``,
    ``hidden_dim=256`` (Higgins et al. 2017, table 1; kernel 4, stride 2).

    Args:
        input_shape: ``(C, H, W)`` of the images, H == W.
        filters: Output channels of each conv layer.
        hidden_dim: Width of the linear layer after the convs.
        out_dim: Number of outputs (``2 * latent_dim`` for mean and log-variance).
        activation: Key of :data:`ACTIVATIONS` for the hidden layers.
    """

    def __init__(self, input_shape: Sequence[int], filters: Sequence[int], hidden_dim: int, out_dim: int,
                 activation: str = "relu"):
        super().__init__()
        channels, height, _ = input_shape
        size = conv_output_size(height, len(filters))
        layers: list[nn.Module] = []
        for width in filters:
            layers += [nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1), ACTIVATIONS[activation]()]
            channels = width
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, hidden_dim),
            ACTIVATIONS[activation](),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``(B, C, H, W)`` to ``(B, out_dim)``."""
        return self.head(self.convs(x))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: linear layers, then stride-2 transposed convs.

    Args:
        output_shape: ``(C, H, W)`` of the images to produce.
        filters: The encoder's filters; the decoder uses them in reverse.
        hidden_dim: Width of the first linear layer.
        in_dim: Size of the latent code.
        activation: Key of :data:`ACTIVATIONS` for the hidden layers.
    """

    def __init__(self, output_shape: Sequence[int], filters: Sequence[int], hidden_dim: int, in_dim: int,
                 activation: str = "relu"):
        super().__init__()
        channels, height, _ = output_shape
        self.size = conv_output_size(height, len(filters))
        widths = list(reversed(filters))
        self.start_channels = widths[0]
        self.head = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            ACTIVATIONS[activation](),
            nn.Linear(hidden_dim, widths[0] * self.size * self.size),
            ACTIVATIONS[activation](),
        )
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths, widths[1:] + [channels]):
            layers += [nn.ConvTranspose2d(width_in, width_out, kernel_size=4, stride=2, padding=1),
                       ACTIVATIONS[activation]()]
        self.deconvs = nn.Sequential(*layers[:-1])  # no activation on the output: logits or means

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Maps codes ``(B, in_dim)`` to images ``(B, C, H, W)`` (unnormalised)."""
        h = self.head(z).view(-1, self.start_channels, self.size, self.size)  # (B, F, s, s)
        return self.deconvs(h)


class MLP(nn.Sequential):
    """Fully connected stack: ``Linear -> activation`` per hidden width, then a linear output layer.

    Used by the MLP VAE families for encoders and decoders, and by any family for small heads.

    Args:
        in_dim: Input features; inputs are ``(B, in_dim)`` (flatten images first).
        widths: Hidden layer widths, in order; empty for a single linear layer.
        out_dim: Output features (no activation on the output: means, logits, log-variances).
        activation: Key of :data:`ACTIVATIONS` for the hidden layers.

    Raises:
        ValueError: If a dimension is not positive or the activation is unknown.
    """

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, activation: str = "leaky_relu"):
        dims = [in_dim, *widths, out_dim]
        if min(dims) < 1:
            raise ValueError(f"MLP dimensions must be >= 1, but got in_dim={in_dim}, widths={list(widths)}, "
                             f"out_dim={out_dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, but got {activation!r}")
        layers: list[nn.Module] = []
        for width_in, width_out in zip(dims[:-2], dims[1:-1]):
            layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
        super().__init__(*layers, nn.Linear(dims[-2], dims[-1]))
