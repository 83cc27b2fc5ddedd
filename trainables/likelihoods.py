"""Observation likelihoods p(x | z) shared by the VAE families.

A likelihood is an ``nn.Module`` (it may own learned parameters, e.g. a log-sigma) with
``nll(decoded, x) -> (B,)`` in nats, summed over data dimensions, and ``mean(decoded)``,
the mean of p(x | z) in data space (what reconstructions and samples show).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from trainables.losses import bernoulli_nll

__all__ = ["BernoulliLikelihood", "GaussianLikelihood", "build_likelihood", "gaussian_nll"]


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Negative log-density of ``x`` under independent Gaussians, normalising constant included.

    ``0.5 * log(2 pi) + log_sigma + (x - mean)^2 / (2 sigma^2)`` per dimension, summed, so that
    ``-(nll + kl)`` is a true ELBO in nats (for continuous data, a bound on a log-density).

    Args:
        mean: Decoder means, float ``(B, ...)``.
        x: Observations, same shape.
        log_sigma: Log standard deviation, broadcastable to ``x`` (a scalar, ``(C, 1, 1)``
            per channel or ``(C, H, W)`` per pixel).

    Returns:
        Float ``(B,)``: NLL summed over data dimensions, in nats (may be negative when sigma < 1/sqrt(2 pi)).

    References:
        Kingma & Welling 2014, arXiv:1312.6114, appendix C.2.
    """
    log_sigma = log_sigma.expand_as(x)
    per_dim = 0.5 * math.log(2 * math.pi) + log_sigma + 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2)
    return per_dim.flatten(start_dim=1).sum(dim=1)


class BernoulliLikelihood(nn.Module):
    """Independent Bernoullis on decoder logits (binary or [0, 1] data such as dSprites)."""

    def nll(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample NLL ``(B,)`` in nats of ``x`` in ``[0, 1]`` given logits ``decoded`` ``(B, ...)``."""
        return bernoulli_nll(decoded, x)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities, ``sigmoid(decoded)``, in ``[0, 1]``."""
        return torch.sigmoid(decoded)


class GaussianLikelihood(nn.Module):
    """Independent Gaussians around the decoder output, with a fixed or learned sigma.

    With a fixed sigma the NLL is ``||x - mean||^2 / (2 sigma^2)`` plus a constant: MSE as a
    likelihood. ``learn_sigma="channel"`` learns one log-sigma per channel, ``"pixel"`` one per
    data dimension (both start at ``log(sigma)``).

    Args:
        data_shape: Shape of one observation, ``(C, H, W)`` or ``(D,)``.
        sigma: The fixed sigma, or the initial one when learned; > 0, in data units.
        learn_sigma: ``"none"``, ``"channel"`` or ``"pixel"``.
    """

    def __init__(self, data_shape: Sequence[int], sigma: float = 1.0,
                 learn_sigma: Literal["none", "channel", "pixel"] = "none"):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, but got {sigma}")
        shape = {"none": (), "channel": (data_shape[0],) + (1,) * (len(data_shape) - 1),
                 "pixel": tuple(data_shape)}[learn_sigma]
        log_sigma = torch.full(shape, math.log(sigma))
        if learn_sigma == "none":
            self.register_buffer("log_sigma", log_sigma)
        else:
            self.log_sigma = nn.Parameter(log_sigma)

    def nll(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample NLL ``(B,)`` in nats of ``x`` given means ``decoded`` ``(B, ...)``."""
        return gaussian_nll(decoded, x, self.log_sigma)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """The decoder output itself."""
        return decoded


def build_likelihood(name: Literal["bernoulli", "gaussian"], data_shape: Sequence[int], sigma: float = 1.0,
                     learn_sigma: Literal["none", "channel", "pixel"] = "none") -> nn.Module:
    """The likelihood module named ``name`` for observations of ``data_shape``."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    return GaussianLikelihood(data_shape, sigma, learn_sigma)
