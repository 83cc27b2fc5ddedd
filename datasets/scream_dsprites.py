"""Scream dSprites: dSprites on a random patch of a picture (disentanglement_lib's ``ScreamDSprites``).

The picture is the user's (``dataset.background`` or ``$SCREAM_PATH``, a png/jpg; disentanglement_lib
uses Munch's *The Scream*), fitted into 350x274. Per image, a random 64x64 patch averaged with a
random colour is the background and the sprite's pixels are that patch inverted. Observations are
float32 ``(3, 64, 64)`` in [0, 1]; the factors are dSprites' five. See
:mod:`datasets.sprite_variants` for where the patches come from (the metric's ``random_state``; per
training row, the study seed).

References:
    Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations", ICML (arXiv:1811.12359); disentanglement_lib
    ``data/ground_truth/dsprites.py`` (``ScreamDSprites``).
"""

from __future__ import annotations

from pydantic import field_validator

from datasets.dsprites import FACTOR_NAMES
from datasets.registry import DataError, PreparedData, register_dataset
from datasets.sprite_variants import Scream, VariantOptions, load_scream_image, prepare_variant

__all__ = ["ScreamDSpritesOptions", "load_scream_dsprites", "FACTOR_NAMES"]


class ScreamDSpritesOptions(VariantOptions):
    """The ``dataset`` section for scream dSprites: dSprites' options and the background picture."""

    background: str | None = None  # a png/jpg, local path or URI; None: $SCREAM_PATH

    @field_validator("background", mode="before")
    @classmethod
    def _picture(cls, value):
        return cls._location(value)  # as dataset.path: ~ expanded, a URI kept, a blank refused


@register_dataset("scream_dsprites", ScreamDSpritesOptions)
def load_scream_dsprites(options: ScreamDSpritesOptions, seed: int) -> PreparedData:
    """dSprites (split as ``dsprites`` splits it for ``seed``) on patches of the background picture.

    Raises:
        DataError: If the dSprites file or the picture cannot be found or read, or the picture is
            too small.
    """
    picture, digest = load_scream_image(options.background)

    def make(size: tuple[int, int]) -> Scream:
        if picture.shape[0] <= size[0] or picture.shape[1] <= size[1]:
            raise DataError(f"dataset.background: the picture is {picture.shape[1]}x{picture.shape[0]} once fitted; "
                            f"the {size[1]}x{size[0]} patches need a larger one")
        return Scream(picture, size)

    return prepare_variant(options, seed, make, {"observation": "patch of the background picture, sprite inverted "
                                                 "(ScreamDSprites)", "background_sha256": digest})
