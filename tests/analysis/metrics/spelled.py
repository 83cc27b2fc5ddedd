"""Ground truth whose images spell their factors, shared by the metric tests of FactorVAE and BetaVAE."""

from __future__ import annotations

import zlib
from collections.abc import Callable

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


def spelled_ground_truth(sizes: list[int]) -> ArrayGroundTruthData:
    """The full factor grid of ``sizes`` (at most 8 factors), rows shuffled so row order carries no
    information; each image's first pixel row spells its factors."""
    factors = grid(sizes)[np.random.default_rng(3).permutation(int(np.prod(sizes)))]
    return ArrayGroundTruthData(spell(factors), factors, sizes, list("abcdefgh"[: len(sizes)]))


def factor_reader(num_factors: int) -> Callable[[np.ndarray], np.ndarray]:
    """The representation that decodes the spelled factors: images -> float ``(B, num_factors)``."""

    def read(x: np.ndarray) -> np.ndarray:
        return x[:, 0, 0, :num_factors].astype(np.float64)

    return read


@pytest.fixture
def spelled_data() -> ArrayGroundTruthData:
    return spelled_ground_truth(GRID_SIZES)


read_factors = factor_reader(K)


def noise(x: np.ndarray, num_latents: int, scale: float) -> np.ndarray:
    """Gaussian noise ``(B, num_latents)`` seeded by the images, so a representation stays a function."""
    return np.random.default_rng(zlib.crc32(x.tobytes())).normal(0.0, scale, (len(x), num_latents))


def identity_like(x: np.ndarray) -> np.ndarray:
    """The factors plus noise far smaller than a factor step."""
    return read_factors(x) + noise(x, K, 0.01)
