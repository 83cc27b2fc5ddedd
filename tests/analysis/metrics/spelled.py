"""Ground truth whose images spell their factors, shared by the metric tests of FactorVAE and BetaVAE."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from datasets.base import ArrayGroundTruthData

GRID_SIZES = [3, 4, 5, 6]  # values of each of the four factors
K = len(GRID_SIZES)


def spell(factors: np.ndarray) -> np.ndarray:
    """Images uint8 ``(N, 1, 4, 8)`` whose first pixel row spells each row's factors."""
    images = np.zeros((len(factors), 1, 4, 8), dtype=np.uint8)  # (N, C, H, W)
    images[:, 0, 0, : factors.shape[1]] = factors
    return images


def grid(sizes: list[int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), -1).reshape(-1, len(sizes))


@pytest.fixture
def spelled_data() -> ArrayGroundTruthData:
    """The full factor grid, rows shuffled so row order carries no information."""
    factors = grid(GRID_SIZES)[np.random.default_rng(3).permutation(np.prod(GRID_SIZES))]
    return ArrayGroundTruthData(spell(factors), factors, GRID_SIZES, list("abcd"))


def read_factors(x: np.ndarray) -> np.ndarray:
    """Representation that decodes the factors spelled in the images: float ``(B, K)``."""
    return x[:, 0, 0, :K].astype(np.float64)


def noise(x: np.ndarray, num_latents: int, scale: float) -> np.ndarray:
    """Gaussian noise ``(B, num_latents)`` seeded by the images, so a representation stays a function."""
    return np.random.default_rng(zlib.crc32(x.tobytes())).normal(0.0, scale, (len(x), num_latents))


def identity_like(x: np.ndarray) -> np.ndarray:
    """The factors plus noise far smaller than a factor step."""
    return read_factors(x) + noise(x, K, 0.01)
