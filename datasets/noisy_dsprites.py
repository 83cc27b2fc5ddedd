"""Noisy dSprites: dSprites on a background of uniform noise (disentanglement_lib's ``NoisyDSprites``):
every pixel and channel ``min(sprite + U[0, 1), 1)``, so the sprite is white and the background noise.

Observations are float32 ``(3, 64, 64)`` in [0, 1]; the factors are dSprites' five. See
:mod:`datasets.sprite_variants` for where the noise comes from (the metric's ``random_state``; per
training row, the study seed).

References:
    Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations", ICML (arXiv:1811.12359); disentanglement_lib
    ``data/ground_truth/dsprites.py`` (``NoisyDSprites``).
"""

from __future__ import annotations

from datasets.dsprites import FACTOR_NAMES
from datasets.registry import PreparedData, register_dataset
from datasets.sprite_variants import Noise, VariantOptions, prepare_variant

__all__ = ["NoisyDSpritesOptions", "load_noisy_dsprites", "FACTOR_NAMES"]


class NoisyDSpritesOptions(VariantOptions):
    """The ``dataset`` section for noisy dSprites: dSprites' options (``variant``: grid or full, ``path``)."""


@register_dataset("noisy_dsprites", NoisyDSpritesOptions)
def load_noisy_dsprites(options: NoisyDSpritesOptions, seed: int) -> PreparedData:
    """dSprites (split as ``dsprites`` splits it for ``seed``) on uniform noise.

    Raises:
        DataError: If the dSprites file cannot be found or read.
    """
    return prepare_variant(options, seed, lambda size: Noise(size),
                           {"observation": "min(sprite + U[0, 1) per pixel and channel, 1) (NoisyDSprites)"})
