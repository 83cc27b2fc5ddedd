"""disentanglement_lib's dSprites variants: the same sprites and factors, observed in colour, on noise or
on a patch of a picture (``color_dsprites``, ``noisy_dsprites``, ``scream_dsprites``).

Each variant loads dSprites as the ``dsprites`` dataset does (the shipped grid or the full file,
``dataset.path`` or ``$DSPRITES_PATH``; same split for the same seed) and changes only how a sprite
is observed, as three-channel images float32 ``(3, 64, 64)`` in [0, 1]:

* colour (:class:`Colour`): the sprite's pixels take one colour per image, each channel uniform in
  [0.5, 1); the background stays black;
* noise (:class:`Noise`): every background pixel and channel uniform in [0, 1); the sprite white;
* scream (:class:`Scream`): the background is a random 64x64 patch of a picture (disentanglement_lib
  uses Munch's *The Scream*, fitted into 350x274), averaged with a random colour; the sprite's
  pixels are that patch inverted.

Where the randomness comes from:

* the metrics: ``sample_observations_from_factors`` draws it from the ``random_state`` the metric
  passes, fresh at each call, as disentanglement_lib does at observation time;
* training and validation rows: drawn once per row from ``SeedSequence([seed, 0xC010, split, row])``
  (the study seed, the split, the row's position in it), so the same study sees the same images
  every epoch and after a resume. The sprites stay binary uint8 in memory; the transform runs in
  Ray Data tasks (``map_batches``) as batches stream to the trials.

References:
    Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
    Disentangled Representations", ICML (arXiv:1811.12359), section 5 and disentanglement_lib
    ``data/ground_truth/dsprites.py`` (``ColorDSprites``, ``NoisyDSprites``, ``ScreamDSprites``).
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from datasets.base import ArrayGroundTruthData
from datasets.dsprites import DSpritesOptions
from datasets.registry import DataError, PreparedData, get_dataset
from datasets.remote import given_location, location_of, read_object, require
from datasets.storage import is_uri

__all__ = ["Variant", "Colour", "Noise", "Scream", "VariantOptions", "VariantGroundTruth", "row_params",
           "load_scream_image", "prepare_variant", "ROW_COLUMN", "TRAIN", "VAL"]

ROW_COLUMN = "__row__"  # position of a row in its split, dropped by the transform
TRAIN, VAL = 0, 1  # split ids in the per-row seed
SALT = 0xC010
SCREAM_BOX = (350, 274)
BLOCK_ROWS = 2048  # rows per Ray block of the binary sprites (from_columns)  # disentanglement_lib's thumbnail of scream.jpg: at most 350 wide, 274 high


class Variant(Protocol):
    """How a binary sprite is observed: per-image random parameters, and the image they give."""

    def draw(self, num: int, random_state: np.random.Generator) -> np.ndarray:
        """Parameters of ``num`` observations, drawn from ``random_state``."""

    def apply(self, sprites: np.ndarray, params: np.ndarray) -> np.ndarray:
        """float32 ``(num, 3, H, W)`` in [0, 1] of binary ``sprites (num, 1, H, W)`` and ``params``."""


@dataclass(frozen=True)
class Colour:
    """disentanglement_lib's ``ColorDSprites``: the sprite times a colour uniform in [0.5, 1) per channel."""

    def draw(self, num: int, random_state: np.random.Generator) -> np.ndarray:
        """float32 ``(num, 3, 1, 1)`` colours (drawn as disentanglement_lib's ``(num, 1, 1, 3)``)."""
        return random_state.uniform(0.5, 1.0, size=(num, 1, 1, 3)).astype(np.float32).transpose(0, 3, 1, 2)

    def apply(self, sprites: np.ndarray, params: np.ndarray) -> np.ndarray:
        return sprites.astype(np.float32) * params  # (num, 1, H, W) * (num, 3, 1, 1)


@dataclass(frozen=True)
class Noise:
    """disentanglement_lib's ``NoisyDSprites``: ``min(sprite + U[0, 1), 1)`` per pixel and channel.

    Attributes:
        size: ``(H, W)`` of the images.
    """

    size: tuple[int, int] = (64, 64)

    def draw(self, num: int, random_state: np.random.Generator) -> np.ndarray:
        """float32 ``(num, 3, H, W)`` noise (drawn as disentanglement_lib's ``(num, H, W, 3)``)."""
        return random_state.uniform(0.0, 1.0, size=(num, *self.size, 3)).astype(np.float32).transpose(0, 3, 1, 2)

    def apply(self, sprites: np.ndarray, params: np.ndarray) -> np.ndarray:
        return np.minimum(sprites.astype(np.float32) + params, np.float32(1.0))


@dataclass(frozen=True, eq=False)
class Scream:
    """disentanglement_lib's ``ScreamDSprites``: a patch of a picture as background, the sprite inverted.

    Per image: a crop corner ``x`` in ``[0, Hb - H)`` and ``y`` in ``[0, Wb - W)``, a colour ``c``
    uniform in [0, 1)^3, the background ``(picture[x:x+H, y:y+W] + c) / 2``; at the sprite's pixels
    ``1 - background``.

    Attributes:
        picture: float32 ``(Hb, Wb, 3)`` in [0, 1], ``Hb > H`` and ``Wb > W``.
        size: ``(H, W)`` of the images.
    """

    picture: np.ndarray = field(repr=False)
    size: tuple[int, int] = (64, 64)

    def draw(self, num: int, random_state: np.random.Generator) -> np.ndarray:
        """float32 ``(num, 3, H, W)`` backgrounds (per image: row, column, colour, in that order)."""
        h, w = self.size
        out = np.empty((num, 3, h, w), dtype=np.float32)
        for i in range(num):
            x = random_state.integers(0, self.picture.shape[0] - h)
            y = random_state.integers(0, self.picture.shape[1] - w)
            patch = (self.picture[x : x + h, y : y + w] + random_state.uniform(0.0, 1.0, size=3)) / 2.0
            out[i] = patch.transpose(2, 0, 1)
        return out

    def apply(self, sprites: np.ndarray, params: np.ndarray) -> np.ndarray:
        return np.where(sprites.astype(bool), np.float32(1.0) - params, params).astype(np.float32)


def row_params(variant: Variant, seed: int, split: int, rows: np.ndarray) -> np.ndarray:
    """Parameters of rows drawn once per row: row ``r`` of ``split`` from ``SeedSequence([seed, 0xC010, split, r])``.

    Args:
        variant: The variant.
        seed: Study seed.
        split: :data:`TRAIN` or :data:`VAL`.
        rows: int ``(num,)`` positions in the split.

    Returns:
        The parameters of ``variant.draw``, one row each, independent of how rows are batched.
    """
    return np.concatenate([variant.draw(1, np.random.default_rng([seed, SALT, split, int(r)])) for r in rows])


class VariantGroundTruth(ArrayGroundTruthData):
    """Held-out dSprites rows observed through a variant.

    ``sample_observations_from_factors`` draws the variant's parameters from the metric's
    ``random_state`` (a fresh colour, noise or patch per call); ``observations(rows)`` gives the
    rows as the validation stream does (parameters fixed per row by the study seed).

    Args:
        sprites: The held-out rows: binary uint8 images ``(N, 1, H, W)`` and their factors.
        variant: How a sprite is observed.
        seed: Study seed (``observations``).
        row_ids: Each row's position in the validation split (default ``0 .. N-1``).
    """

    def __init__(self, sprites: ArrayGroundTruthData, variant: Variant, seed: int, row_ids: np.ndarray | None = None):
        super().__init__(sprites.images, sprites.factors, sprites.factors_num_values, sprites.factor_names)
        self.variant = variant
        self.seed = seed
        self.row_ids = np.arange(len(sprites), dtype=np.int64) if row_ids is None else np.asarray(row_ids)

    def subset(self, rows: np.ndarray) -> VariantGroundTruth:
        sprites = ArrayGroundTruthData(self.images[rows], self.factors[rows], self.factors_num_values,
                                       self.factor_names)
        return VariantGroundTruth(sprites, self.variant, self.seed, self.row_ids[rows])

    def observations(self, rows: np.ndarray) -> np.ndarray:
        """float32 ``(len(rows), 3, H, W)``: the rows as the validation stream shows them."""
        rows = np.asarray(rows)
        return self.variant.apply(self.images[rows], row_params(self.variant, self.seed, VAL, self.row_ids[rows]))

    def sample_observations_from_factors(self, factors: np.ndarray, random_state: np.random.Generator) -> np.ndarray:
        """A random held-out sprite with each factor row, observed with parameters from ``random_state``.

        Returns:
            float32 ``(num, 3, H, W)`` in [0, 1].

        Raises:
            KeyError: If a factor combination has no held-out image.
        """
        rows = self.rows_of(factors, random_state)
        return self.variant.apply(self.images[rows], self.variant.draw(len(rows), random_state))


class VariantOptions(DSpritesOptions):
    """The ``dataset`` section of a dSprites variant: dSprites' own (``variant``: grid or full, ``path``)
    and how the transform runs."""

    map_concurrency: int = Field(2, ge=1, le=1024)  # Ray Data tasks applying the transform at once, per split


def load_scream_image(path: str | Path | None) -> tuple[np.ndarray, str]:
    """The background picture, fitted into 350x274 (aspect kept) as disentanglement_lib does.

    Args:
        path: ``dataset.background`` (a local path or a URI of a png/jpg), else ``$SCREAM_PATH``.

    Returns:
        ``(picture, sha256)``: float32 ``(Hb, Wb, 3)`` in [0, 1] and the digest of the file read.

    Raises:
        DataError: If neither is given, the file is missing or not an image, or it is under 65x65
            once fitted.
    """
    from PIL import Image, UnidentifiedImageError

    given = (location_of(path), "dataset.background") if path is not None else given_location(None, "SCREAM_PATH")
    if given is None:
        raise DataError("dataset.background: scream_dsprites needs a background picture; set dataset.background "
                        "or SCREAM_PATH to a png/jpg (disentanglement_lib uses Munch's The Scream, scream.jpg)")
    location, where = given
    if is_uri(location):
        data = read_object(require(location, "object", "a png/jpg picture", where))
    elif location.is_file():
        data = location.read_bytes()
    else:
        raise DataError(f"{where}: {location}: no such file (expected a png/jpg picture)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            picture = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{where}: {location}: not a readable image ({str(err)[:200]})") from None
    picture.thumbnail(SCREAM_BOX)
    if picture.width < 65 or picture.height < 65:
        raise DataError(f"{where}: {location}: {picture.width}x{picture.height} once fitted into "
                        f"{SCREAM_BOX[0]}x{SCREAM_BOX[1]}; the 64x64 patches need at least 65x65")
    return np.asarray(picture, dtype=np.float32) / np.float32(255.0), hashlib.sha256(data).hexdigest()


def _observe(variant: Variant, seed: int, split: int, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch's sprites observed through ``variant`` (parameters per row from the seed); drops the row column."""
    batch = dict(batch)
    rows = batch.pop(ROW_COLUMN)
    batch["image"] = variant.apply(batch["image"], row_params(variant, seed, split, rows))
    return batch


def variant_datasets(train: dict[str, np.ndarray], val: dict[str, np.ndarray], variant: Variant, seed: int,
                     concurrency: int) -> dict[str, Any]:
    """``{"train", "val"}`` Ray datasets of the binary sprites, observed through ``variant`` as they stream."""
    from datasets.ray_data import from_columns

    out = {}
    for split, (name, columns) in ((TRAIN, ("train", train)), (VAL, ("val", val))):
        rows = np.arange(len(columns["image"]), dtype=np.int64)
        ds = from_columns({**columns, ROW_COLUMN: rows}, BLOCK_ROWS)
        # num_cpus=0: trials hold every CPU of a small cluster (RAY_NOTES.md); concurrency bounds the tasks.
        out[name] = ds.map_batches(functools.partial(_observe, variant, seed, split), batch_format="numpy",
                                   num_cpus=0, concurrency=max(1, min(concurrency, -(-len(rows) // BLOCK_ROWS))))
    return out


def prepare_variant(options: VariantOptions, seed: int, make_variant: Callable[[tuple[int, int]], Variant],
                    info: dict[str, Any]) -> PreparedData:
    """dSprites as the ``dsprites`` dataset loads it, observed through a variant.

    Args:
        options: The ``dataset`` section.
        seed: Study seed (the split, and the per-row parameters of train and validation rows).
        make_variant: ``make_variant((H, W))`` the variant for the file's image size.
        info: Facts for ``data.json`` about the variant.

    Returns:
        PreparedData whose ``train``/``val`` hold dSprites' columns (binary images), whose
        ``ray_datasets`` streams them with ``image`` float32 ``(3, H, W)`` in [0, 1], and whose
        ground truth is a :class:`VariantGroundTruth`.

    Raises:
        DataError: From loading dSprites.
    """
    fields = {key: getattr(options, key) for key in DSpritesOptions.model_fields if key != "name"}
    sprites = get_dataset("dsprites").load(DSpritesOptions(name="dsprites", **fields), seed)
    _, h, w = sprites.input_shape
    variant = make_variant((h, w))
    shapes = {name: tuple(int(d) for d in np.shape(a)[1:]) for name, a in sprites.train.items()}
    build = functools.partial(variant_datasets, sprites.train, sprites.val, variant, seed, options.map_concurrency)
    return PreparedData(
        train=sprites.train, val=sprites.val, input_shape=(3, h, w),
        ground_truth=VariantGroundTruth(sprites.ground_truth, variant, seed), source=sprites.source,
        info={**sprites.info, **info}, ray_datasets=build, column_shapes={**shapes, "image": (3, h, w)},
    )
