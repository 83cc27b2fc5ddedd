"""Colour dSprites: dSprites whose sprite takes a random colour per image (disentanglement_lib's
``ColorDSprites``): each channel of the sprite's pixels uniform in [0.5, 1), the background black.

Observations are float32 ``(3, 64, 64)`` in [0, 1]; the factors are dSprites' five (the colour is
noise, not a factor). See :mod:`datasets.sprite_variants` for where the colours come from (the
metric's ``random_state``; per training row, the study seed).

References:
    Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations", ICML (arXiv:1811.12359); disentanglement_lib
    ``data/ground_truth/dsprites.py`` (``ColorDSprites``).
"""

from __future__ import annotations

from datasets.dsprites import FACTOR_NAMES
from datasets.registry import PreparedData, register_dataset
from datasets.sprite_variants import Colour, VariantOptions, prepare_variant

__all__ = ["ColorDSpritesOptions", "load_color_dsprites", "FACTOR_NAMES"]


class ColorDSpritesOptions(VariantOptions):
    """The ``dataset`` section for colour dSprites: dSprites' options (``variant``: grid or full, ``path``)."""


@register_dataset("color_dsprites", ColorDSpritesOptions)
def load_color_dsprites(options: ColorDSpritesOptions, seed: int) -> PreparedData:
    """dSprites (split as ``dsprites`` splits it for ``seed``) observed in colour.

    Raises:
        DataError: If the dSprites file cannot be found or read.
    """
    return prepare_variant(options, seed, lambda size: Colour(),
                           {"observation": "sprite x colour ~ U[0.5, 1)^3 per image (ColorDSprites)"})
