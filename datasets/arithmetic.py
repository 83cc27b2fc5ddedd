"""Arithmetic queries (``12+34`` -> ``46``) as text and as rows of handwritten digit images.

Every query ``a+b`` and ``a-b`` with integers ``a, b`` in ``[0, max_operand]`` (default 99: 20,000
queries), as fixed-length text left-aligned and padded with spaces: ``QUERY_LENGTH = 5`` query
characters (``"12+34"``, ``"1-2  "``) and ``ANSWER_LENGTH = 3`` answer characters (``"46 "``,
``"-1 "``). The vocabulary :data:`VOCAB` is the digits, ``+``, ``-`` and the blank; a character's
token id is its index there, and the same index is its glyph class for the readback classifier.

Columns (every row one query; the train rows in one seeded order, see ``train_fraction``):

* ``query`` ``(N, 5)`` and ``answer`` ``(N, 3)``: token ids (float32 once the loop casts them;
  models cast back with ``.long()``). Always present.
* ``query_images`` ``(N, 5, 28, 28)`` (``input: image``) and ``answer_images`` ``(N, 3, 28, 28)``
  (``output: image``): one 28x28 glyph per character, **uint8 intensities 0-255** (MNIST's own
  encoding; 20,000 x 8 glyphs take 125 MB as uint8, 502 MB as float32). The loop casts every column
  to float32 per batch; models divide by :data:`PIXEL_MAX` to get ``[0, 1]``.

Glyphs: a digit is a real MNIST digit (the 10,000 ``t10k`` digits, plus the 60,000 ``train``
digits when the folder holds the full MNIST; read from IDX files with numpy), drawn at random for each occurrence from its split's pool: the digits are split (seeded,
``val_fraction``) into a train pool and a val pool, so that no digit image of a validation query
appears in a train query. ``+`` and ``-`` are anti-aliased strokes drawn with numpy, with random
length, angle, thickness and offset per occurrence; the blank is an empty canvas.

With ``output: image`` a readback classifier (a small CNN over the 13 glyph classes, trained at
preparation on the train pool only, seeded; held-out accuracy on the val pool's real digits in
``data.json``) reads generated answer images back as characters: the dataset's validation hook
reports ``val_readback_accuracy`` (whole answer exact) and ``val_readback_char_accuracy``.

References:
    Zaremba & Sutskever 2014, "Learning to Execute", arXiv:1410.4615 (sequence models on
    arithmetic programs); LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied
    to document recognition", Proc. IEEE 86(11) (MNIST and its IDX format).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from datasets.dsprites import cache_dir
from datasets.registry import DataError, DatasetOptions, PreparedData, fraction_rows, register_dataset, split_rows
from datasets.remote import Location, child, exists, given_location, name_of, read_object, require
from datasets.storage import is_uri

__all__ = ["ArithmeticOptions", "ReadbackAccuracy", "VOCAB", "QUERY_LENGTH", "ANSWER_LENGTH", "GLYPH_SIZE",
           "PIXEL_MAX", "ENV_PATH", "MNIST_FILES", "MNIST_TRAIN_FILES", "MNIST_MD5", "encode", "decode", "make_queries",
           "read_idx", "mnist_files", "load_mnist",
           "render_operators", "compose_images", "train_readback", "prepare"]

VOCAB = "0123456789+- "  # token id = index = glyph class; 12 is the blank
BLANK = VOCAB.index(" ")
QUERY_LENGTH = 5  # "99+99": two 2-digit operands and the operator
ANSWER_LENGTH = 3  # "198" and "-99" are the longest answers
GLYPH_SIZE = 28  # MNIST's 28x28 pixels
PIXEL_MAX = 255.0  # image columns hold uint8 0-255; divide by this for [0, 1]
ENV_PATH = "MNIST_PATH"
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
# The published files (yann.lecun.com/exdb/mnist): md5 of each .gz as published, and its number of
# items. A gzip file of one of these names holding that many items claims to be the published file
# and must match the digest (Fashion-MNIST and KMNIST use the same names and counts); see read_idx.
MNIST_MD5 = {
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 10_000),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 10_000),
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 60_000),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 60_000),
}
_IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803 (uint8, 3 dims) and 0x0801 (uint8, 1 dim)
_POOL_STREAM = 0xD161  # seed streams: digit pools, train glyph draws, val glyph draws, classifier
_TRAIN_GLYPHS, _VAL_GLYPHS, _CLASSIFIER = 0x7A1, 0x7A2, 0xC1A5


class ArithmeticOptions(DatasetOptions):
    """The ``dataset`` section for ``name: arithmetic``.

    ``path`` is the folder holding :data:`MNIST_FILES` and optionally :data:`MNIST_TRAIN_FILES`
    (else ``$MNIST_PATH``), read only when ``input`` or ``output`` is ``image``: a local folder or
    a URI prefix holding the IDX files as objects (``s3://bucket/mnist``). ``val_fraction``
    holds out that fraction of the queries and of the MNIST digits; ``limit`` keeps that many
    queries (after shuffling).
    """

    input: Literal["text", "image"] = "text"  # image: the query as a row of glyph images
    output: Literal["text", "image"] = "text"  # image: the answer as glyph images (and a readback classifier)
    max_operand: int = Field(99, ge=1)  # operands 0..max_operand; 99 is the most 5-character queries hold
    # Keep the first round(train_fraction * num_train) rows of the one seeded train order: smaller
    # fractions are prefixes of larger ones, the validation queries are the same for every fraction.
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)

    searchable: ClassVar[frozenset[str]] = frozenset({"train_fraction"})  # search_space: {dataset.train_fraction: ...}

    @field_validator("max_operand")
    @classmethod
    def _fits_the_padded_length(cls, value: int) -> int:
        if len(f"{value}+{value}") > QUERY_LENGTH:
            raise ValueError(f"queries are {QUERY_LENGTH} characters, so operands must be at most 99")
        return value

    @model_validator(mode="after")
    def _path_only_for_images(self) -> ArithmeticOptions:
        if self.path is not None and self.input == "text" and self.output == "text":
            raise ValueError(f"path: text input and text output read no MNIST file; remove path ({self.path})")
        return self

    def extra_metrics(self) -> tuple[str, ...]:
        """Per-epoch metrics the dataset's validation hook adds: the readback scores for image outputs."""
        return ("val_readback_accuracy", "val_readback_char_accuracy") if self.output == "image" else ()


# Text


def encode(texts: Sequence[str], length: int) -> np.ndarray:
    """Token ids of strings padded on the right with blanks.

    Args:
        texts: Strings over :data:`VOCAB`, each at most ``length`` characters.
        length: Characters per row.

    Returns:
        int64 ``(len(texts), length)`` token ids in ``[0, len(VOCAB))``.

    Raises:
        ValueError: If a string is too long or has a character outside the vocabulary.
    """
    ids = np.full((len(texts), length), BLANK, dtype=np.int64)
    for i, text in enumerate(texts):
        if len(text) > length or any(c not in VOCAB for c in text):
            raise ValueError(f"{text!r}: expected at most {length} characters of {VOCAB!r}")
        ids[i, : len(text)] = [VOCAB.index(c) for c in text]
    return ids


def decode(ids: np.ndarray) -> list[str]:
    """Strings of token ids ``(N, L)`` (any integer or integral float dtype), blanks kept."""
    return ["".join(VOCAB[int(t)] for t in row) for row in np.asarray(ids)]


def make_queries(max_operand: int) -> tuple[list[str], list[str]]:
    """Every ``a+b`` then every ``a-b`` for ``a, b`` in ``[0, max_operand]``, a-major order.

    Returns:
        ``(queries, answers)``: ``2 * (max_operand + 1) ** 2`` strings each, unpadded
        (``"12+34"``, ``"46"``).
    """
    operands = range(max_operand + 1)
    queries, answers = [], []
    for op, apply in (("+", int.__add__), ("-", int.__sub__)):
        for a in operands:
            for b in operands:
                queries.append(f"{a}{op}{b}")
                answers.append(str(apply(a, b)))
    return queries, answers


# MNIST


def resolve_path(path: str | Path | None) -> Location:
    """The MNIST folder: ``path``, else ``$MNIST_PATH``; a local Path or a URI prefix.

    Raises:
        DataError: If neither is given or the folder (prefix) does not exist.
    """
    given = given_location(path, ENV_PATH)
    if given is None:
        raise DataError(f"dataset.path: image input/output needs MNIST; set dataset.path or {ENV_PATH} to the "
                        f"folder holding {MNIST_FILES[0]} and {MNIST_FILES[1]}")
    location, where = given
    if is_uri(location):
        return require(location, "prefix", f"a prefix holding {', '.join(MNIST_FILES)}", where)
    if not location.is_dir():
        raise DataError(f"{where}: {location}: no such folder (expected one holding {', '.join(MNIST_FILES)})")
    return location


def read_idx(path: Location, kind: Literal["images", "labels"]) -> np.ndarray:
    """Reads an IDX file (gzip-compressed or raw) of uint8 MNIST images or labels.

    A gzip file with a published name (:data:`MNIST_MD5`; the name as given or with ``.gz`` added)
    that holds the published number of items (10,000 ``t10k``, 60,000 ``train``) claims to be the
    published file: its md5 must be the published one. Smaller files of those names (subsets, test
    fixtures) and unpacked files (no digest of the unpacked content is published) are read as
    they are.

    Args:
        path: The file: a local path or a URI (the object is read whole).
        kind: ``images`` (magic 2051, dims ``(N, 28, 28)``) or ``labels`` (magic 2049, ``(N,)``).

    Returns:
        uint8 ``(N, 28, 28)`` intensities 0-255, or uint8 ``(N,)`` labels 0-9.

    Raises:
        DataError: If the file is missing, corrupt gzip, not IDX, of the other kind, truncated, its
            values or dimensions are not MNIST's, or it claims to be a published file whose md5 it
            does not have; one line naming the file.
    """
    if not exists(path):
        raise DataError(f"{path}: no such {'object' if is_uri(path) else 'file'} (expected the MNIST IDX {kind} file)")
    packed = read_object(path) if is_uri(path) else Path(path).read_bytes()
    compressed = packed[:2] == b"\x1f\x8b"
    raw = packed
    if compressed:
        try:
            raw = gzip.decompress(packed)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; damaged deflate data a zlib.error
            raise DataError(f"{path}: corrupt gzip data ({err})") from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != _IDX_MAGIC[kind]:
        raise DataError(f"{path}: not an IDX {kind} file (magic number {magic}, expected {_IDX_MAGIC[kind]})")
    ndim = 3 if kind == "images" else 1
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)) if len(raw) >= 4 + 4 * ndim \
        else ()
    if len(dims) != ndim or (kind == "images" and dims[1:] != (GLYPH_SIZE, GLYPH_SIZE)):
        raise DataError(f"{path}: IDX {kind} dimensions {dims}, expected (N{', 28, 28' if ndim == 3 else ''})")
    size = int(np.prod(dims))
    if len(raw) != 4 + 4 * ndim + size:
        raise DataError(f"{path}: {len(raw) - 4 - 4 * ndim} data bytes, expected {size} for dimensions {dims}")
    if compressed:
        _check_published(path, packed, dims[0])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    if kind == "labels" and data.size and data.max() > 9:
        raise DataError(f"{path}: labels must be digits 0-9, but the largest is {data.max()}")
    return data.copy()


def _check_published(path: Location, packed: bytes, count: int) -> None:
    """Refuses a gzip file that claims to be a published MNIST file (its name and item count) but
    lacks the published md5 (:data:`MNIST_MD5`)."""
    name = name_of(path)
    expected, published_count = MNIST_MD5.get(name if name.endswith(".gz") else f"{name}.gz", (None, None))
    if expected is None or count != published_count:
        return
    found = hashlib.md5(packed).hexdigest()
    if found != expected:
        raise DataError(f"{path}: md5 {found}, expected {expected} (the published MNIST file of that name, "
                        f"{published_count} items); the file is damaged, another data set (Fashion-MNIST, KMNIST) or "
                        "recompressed: use the published .gz")


def mnist_files(folder: Location) -> list[tuple[Location, Location]]:
    """The ``(images, labels)`` IDX pairs of ``folder`` to read: :data:`MNIST_FILES` (the 10,000
    test digits, required), then :data:`MNIST_TRAIN_FILES` (the 60,000 training digits of the full
    MNIST) when the folder holds them. Each name is taken gzip-compressed, or unpacked without
    ``.gz``. ``folder`` is a local folder or a URI prefix.

    Raises:
        DataError: If only one file of the training pair is there (the other is named).
    """
    def find(name: str) -> Location:
        packed = child(folder, name)
        return packed if exists(packed) or not exists(child(folder, name.removesuffix(".gz"))) \
            else child(folder, name.removesuffix(".gz"))

    pairs = [(find(MNIST_FILES[0]), find(MNIST_FILES[1]))]
    train = (find(MNIST_TRAIN_FILES[0]), find(MNIST_TRAIN_FILES[1]))
    present = [exists(path) for path in train]
    if any(present) and not all(present):
        missing = train[present.index(False)]
        raise DataError(f"{missing}: no such file; the full MNIST needs both {MNIST_TRAIN_FILES[0]} and "
                        f"{MNIST_TRAIN_FILES[1]} (or neither: the test digits alone serve)")
    return pairs + [train] if all(present) else pairs


def load_mnist(folder: Location) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits of ``folder`` (see :func:`mnist_files`), test digits first.

    Returns:
        uint8 images ``(N, 28, 28)`` with intensities 0-255 and uint8 labels ``(N,)`` 0-9;
        N = 10,000 for the test files alone, 70,000 with the training files.

    Raises:
        DataError: If a file is missing or invalid (see :func:`read_idx`), or the counts differ.
    """
    images, labels = [], []
    for image_file, label_file in mnist_files(folder):
        images.append(read_idx(image_file, "images"))
        labels.append(read_idx(label_file, "labels"))
        if len(images[-1]) != len(labels[-1]):
            raise DataError(f"{folder}: {len(images[-1])} images in {name_of(image_file)} but {len(labels[-1])} "
                            f"labels in {name_of(label_file)}")
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(np.unique(labels)) < 10:
        raise DataError(f"{child(folder, MNIST_FILES[1])}: every digit 0-9 needs an image, but only "
                        f"{sorted(np.unique(labels).tolist())} occur")
    return images, labels


# Glyphs


def render_operators(chars: np.ndarray, rng: np.random.Generator, chunk: int = 4096) -> np.ndarray:
    """Draws ``+`` and ``-`` glyphs with random stroke jitter, MNIST-like (centred, ~2.5 px strokes).

    Each stroke is a segment through a point near the centre (offset up to 2 px), half-length 5-8
    px, angle within 10 degrees of horizontal (``+``'s second stroke of vertical), half-width
    0.9-1.6 px, with a 1-pixel anti-aliased edge; peak intensity 200-255.

    Args:
        chars: ``(n,)`` array of ``"+"`` / ``"-"`` characters.
        rng: Draws the jitter.
        chunk: Glyphs drawn at a time (bounds the ``(chunk, 784)`` float arrays).

    Returns:
        uint8 ``(n, 28, 28)`` intensities 0-255.
    """
    n = len(chars)
    centre = (GLYPH_SIZE - 1) / 2 + rng.uniform(-2, 2, size=(n, 2))  # (n, 2) as (x, y)
    half_length = rng.uniform(5, 8, size=(n, 2))
    angle = np.deg2rad(rng.uniform(-10, 10, size=(n, 2))) + np.array([0.0, np.pi / 2])  # stroke 1 ~ -, 2 ~ |
    half_width = rng.uniform(0.9, 1.6, size=n)
    peak = rng.uniform(200, 255, size=n)
    plus = np.asarray(chars) == "+"
    ys, xs = np.mgrid[0:GLYPH_SIZE, 0:GLYPH_SIZE]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)  # (784, 2)
    out = np.zeros((n, GLYPH_SIZE * GLYPH_SIZE), dtype=np.float64)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        for stroke in range(2):
            direction = np.stack([np.cos(angle[part, stroke]), np.sin(angle[part, stroke])], axis=1)  # (m, 2)
            a = centre[part] - half_length[part, stroke, None] * direction
            span = 2 * half_length[part, stroke, None] * direction  # (m, 2) from a to b
            rel = pixels[None] - a[:, None]  # (m, 784, 2)
            t = np.clip((rel @ span[:, :, None])[..., 0] / (span**2).sum(1)[:, None], 0, 1)  # (m, 784)
            dist = np.linalg.norm(rel - t[..., None] * span[:, None], axis=2)
            ink = np.clip(half_width[part, None] + 0.5 - dist, 0, 1)  # 1 inside, 1-px linear edge
            if stroke == 1:
                ink *= plus[part, None]  # '-' has one stroke
            out[part] = np.maximum(out[part], ink)
    return np.rint(out * peak[:, None]).astype(np.uint8).reshape(n, GLYPH_SIZE, GLYPH_SIZE)


def compose_images(ids: np.ndarray, pool_images: np.ndarray, pool_labels: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """One glyph per character: a random pool digit per digit occurrence, drawn operators, empty blanks.

    Args:
        ids: int ``(N, L)`` token ids.
        pool_images: uint8 ``(P, 28, 28)`` the split's MNIST digits.
        pool_labels: uint8 ``(P,)`` their digits; every digit 0-9 must occur.
        rng: Draws the digits and the operators' jitter.

    Returns:
        uint8 ``(N, L, 28, 28)`` intensities 0-255.
    """
    flat = ids.ravel()
    out = np.zeros((len(flat), GLYPH_SIZE, GLYPH_SIZE), dtype=np.uint8)
    for digit in range(10):
        where = np.flatnonzero(flat == digit)
        candidates = np.flatnonzero(pool_labels == digit)
        out[where] = pool_images[candidates[rng.integers(0, len(candidates), size=len(where))]]
    operators = np.flatnonzero((flat == VOCAB.index("+")) | (flat == VOCAB.index("-")))
    out[operators] = render_operators(np.array([VOCAB[i] for i in flat[operators]]), rng)
    return out.reshape(*ids.shape, GLYPH_SIZE, GLYPH_SIZE)


def glyph_set(images: np.ndarray, labels: np.ndarray, per_symbol: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digits plus ``per_symbol`` drawn ``+``, ``-`` and blanks each: uint8 ``(M, 28, 28)``, int64 classes ``(M,)``."""
    symbols = np.repeat(np.array(["+", "-"]), per_symbol)
    drawn = render_operators(symbols, rng)
    blanks = np.zeros((per_symbol, GLYPH_SIZE, GLYPH_SIZE), dtype=np.uint8)
    classes = np.concatenate([labels.astype(np.int64), [VOCAB.index(s) for s in symbols], np.full(per_symbol, BLANK)])
    return np.concatenate([images, drawn, blanks]), classes.astype(np.int64)


# Readback classifier

_READBACK_EPOCHS = 4
_READBACK_BATCH = 64
_READBACK_LR = 3e-3  # the one-cycle schedule's peak
_READBACK_VERSION = 2  # bump when the net, its training or the glyphs change: invalidates cached weights


def _readback_net():
    """The readback CNN: two conv-pool blocks and an MLP, 28x28 in [0, 1] -> 13 glyph logits."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, len(VOCAB)),
    )


def _shift(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Each image ``(B, 28, 28)`` rolled by up to ``max_shift`` pixels per axis (MNIST borders are empty)."""
    out = np.empty_like(images)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(images), 2))
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    return out


def _classify(weights: dict[str, np.ndarray], images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Glyph classes int64 ``(N,)`` of float images ``(N, 28, 28)`` in [0, 1] under the given weights."""
    import torch

    net = _readback_net()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    net.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.as_tensor(np.asarray(images[start : start + batch], dtype=np.float32))[:, None]
            parts.append(net(x).argmax(dim=1).numpy())
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def train_readback(train_images: np.ndarray, train_labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Trains the readback CNN on the train pool's digits plus drawn ``+``, ``-`` and blanks.

    Seeded and single-threaded (deterministic on one machine): Adam with a one-cycle learning rate,
    ``_READBACK_EPOCHS`` epochs of random 2-pixel shifts; about 25 s of one CPU core for 9,000
    digits, 0.981-0.986 on the 1,000 held-out digits of study seeds 0-2.

    References:
        Smith & Topin 2019, "Super-Convergence", arXiv:1708.07120 (the one-cycle schedule).

    Args:
        train_images: uint8 ``(P, 28, 28)`` train-pool digits, 0-255.
        train_labels: uint8 ``(P,)`` their digits.
        seed: Seeds the glyphs, the shuffling and the initial weights.

    Returns:
        The net's state dict as float32 numpy arrays.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(np.random.SeedSequence([seed, _CLASSIFIER]))
    images, classes = glyph_set(train_images, train_labels, max(1, len(train_labels) // 10), rng)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(int(rng.integers(2**31)))
        net = _readback_net()
        optimizer = torch.optim.Adam(net.parameters(), lr=_READBACK_LR)
        steps_per_epoch = -(-len(images) // _READBACK_BATCH)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=_READBACK_LR,
                                                       total_steps=_READBACK_EPOCHS * steps_per_epoch)
        net.train()
        for _ in range(_READBACK_EPOCHS):
            order = rng.permutation(len(images))
            for start in range(0, len(order), _READBACK_BATCH):
                rows = order[start : start + _READBACK_BATCH]
                x = torch.from_numpy(_shift(images[rows], rng).astype(np.float32) / PIXEL_MAX)[:, None]
                loss = F.cross_entropy(net(x), torch.from_numpy(classes[rows]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def readback_weights(train_images: np.ndarray, train_labels: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], Path]:
    """:func:`train_readback`'s weights, cached under ``<cache>/arithmetic/`` by a digest of its inputs.

    The cache file (``readback-<digest>.npz``, read with ``allow_pickle=False``) is keyed by the
    pool's bytes, the seed and :data:`_READBACK_VERSION`; an unreadable one is retrained over.

    Returns:
        ``(weights, cache file)``.
    """
    digest = hashlib.sha256()
    for part in (train_images.tobytes(), train_labels.tobytes(), f"{seed}:{_READBACK_VERSION}".encode()):
        digest.update(part)
    path = cache_dir() / "arithmetic" / f"readback-{digest.hexdigest()[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}, path
        except (OSError, ValueError, EOFError):
            pass  # a torn write: train again and overwrite it
    weights = train_readback(train_images, train_labels, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part.npz")
    np.savez(tmp, **weights)
    os.replace(tmp, path)
    return weights, path


def readback_scores(weights: dict[str, np.ndarray], val_images: np.ndarray, val_labels: np.ndarray,
                    seed: int) -> dict[str, float]:
    """Held-out accuracies of the readback CNN, in [0, 1].

    Returns:
        ``readback_accuracy`` on the val pool's real digits (never seen in training) and
        ``readback_symbol_accuracy`` on 200 each of freshly drawn ``+``, ``-`` and blanks.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _CLASSIFIER, 1]))
    symbols, classes = glyph_set(val_images[:0], val_labels[:0], 200, rng)
    return {"readback_accuracy": float(np.mean(_classify(weights, val_images / PIXEL_MAX) == val_labels)),
            "readback_symbol_accuracy": float(np.mean(_classify(weights, symbols / PIXEL_MAX) == classes))}


@dataclass
class ReadbackAccuracy:
    """The dataset's validation hook: generated answer images read back by the classifier.

    Picklable (it travels to Ray workers): the weights are numpy arrays; the net is rebuilt per call.

    Attributes:
        weights: The readback CNN's state dict (float32 numpy arrays).
        images_key: Key of the generated answer images in the model's ``predictions``, float
            ``(N, 3, 28, 28)`` in ``[0, 1]``.
        target_key: Key of the true answer token ids, ``(N, 3)``.
    """

    weights: dict[str, np.ndarray] = field(repr=False)
    images_key: str = "answer_images_pred"
    target_key: str = "answer_true"

    def read(self, images: np.ndarray) -> np.ndarray:
        """Token ids int64 ``(N, L)`` of glyph images float ``(N, L, 28, 28)`` in ``[0, 1]``."""
        images = np.asarray(images, dtype=np.float32)
        return _classify(self.weights, images.reshape(-1, GLYPH_SIZE, GLYPH_SIZE)).reshape(images.shape[:2])

    def __call__(self, predictions: dict[str, Any]) -> dict[str, float]:
        """Scores of a validation epoch's predictions (tensors or arrays).

        Returns:
            ``readback_accuracy``: fraction of answers whose every character reads back right, in
            [0, 1]; ``readback_char_accuracy``: fraction of characters read back right.

        Raises:
            KeyError: If the predictions lack the generated images or the true answers.
        """
        missing = [k for k in (self.images_key, self.target_key) if k not in predictions]
        if missing:
            raise KeyError(f"readback: the model's predictions lack {missing} (got {sorted(predictions)})")
        read = self.read(_numpy(predictions[self.images_key]))
        target = np.rint(_numpy(predictions[self.target_key])).astype(np.int64)
        return {"readback_accuracy": float(np.mean((read == target).all(axis=1))),
                "readback_char_accuracy": float(np.mean(read == target))}


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().float().numpy() if hasattr(value, "detach") else np.asarray(value)


def _add_glyphs(options: ArithmeticOptions, seed: int, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
                info: dict[str, Any]) -> tuple[Location, ReadbackAccuracy | None]:
    """Adds the glyph columns the options ask for to ``train`` and ``val`` (in place), and the readback.

    MNIST's digits are split into a train and a val pool (seeded, ``val_fraction``); each split's
    glyphs are drawn from its own pool with its own seeded stream.

    Args:
        options: The ``dataset`` section (``input``/``output`` image, ``path``, ``val_fraction``).
        seed: The study seed.
        train: Train columns with ``query``, ``answer`` int64 token ids, every stored train row.
        val: Val columns, the same.
        info: ``data.json`` facts; pool sizes and the readback's held-out accuracies are added.

    Returns:
        ``(MNIST folder, the readback hook or None when the output is text)``.

    Raises:
        DataError: If MNIST is missing or invalid, or a pool lacks a digit.
    """
    folder = resolve_path(options.path)
    images, labels = load_mnist(folder)
    pool_seed = np.random.SeedSequence([seed, _POOL_STREAM]).generate_state(1)[0].item()
    pool_train, pool_val = split_rows(len(images), options.val_fraction, pool_seed)
    pools = {"train": (images[pool_train], labels[pool_train]), "val": (images[pool_val], labels[pool_val])}
    for name, (_, pool_labels) in pools.items():
        if len(np.unique(pool_labels)) < 10:
            raise DataError(f"dataset.val_fraction={options.val_fraction}: the {name} pool of "
                            f"{len(pool_labels)} MNIST digits lacks a digit; hold out a larger fraction")
    info.update({"mnist_files": [name_of(path) for pair in mnist_files(folder) for path in pair],
                 "digit_pool_train": len(pool_train), "digit_pool_val": len(pool_val),
                 "pixel_storage": "uint8 0-255 (divide by 255 for [0, 1])"})
    for name, columns, stream in (("train", train, _TRAIN_GLYPHS), ("val", val, _VAL_GLYPHS)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
        if options.input == "image":
            columns["query_images"] = compose_images(columns["query"], *pools[name], rng)
        if options.output == "image":
            columns["answer_images"] = compose_images(columns["answer"], *pools[name], rng)
    if options.output != "image":
        return folder, None
    weights, cache_file = readback_weights(*pools["train"], seed)
    info.update(readback_scores(weights, *pools["val"], seed))
    info["readback_cache"] = str(cache_file)
    return folder, ReadbackAccuracy(weights)


# The loader


@register_dataset("arithmetic", ArithmeticOptions)
def prepare(options: ArithmeticOptions, seed: int) -> PreparedData:
    """Builds the queries, splits them deterministically from ``seed`` and draws their glyphs.

    Train rows are stored in the one seeded order of :func:`datasets.registry.split_rows` and cut
    to the first ``round(train_fraction * num_train)``; glyphs are drawn for the whole train order
    first, so a row looks the same under every fraction.

    Args:
        options: The ``dataset`` section.
        seed: The study seed: the query split's, the digit pools', the glyph draws' and the
            readback classifier's.

    Returns:
        Columns ``query``, ``answer`` (and ``query_images``/``answer_images``, see the module
        docstring); ``input_shape`` the per-row shape of the input column, ``(5,)`` or
        ``(5, 28, 28)``; no ground truth; ``info`` with counts, pool sizes and the readback
        classifier's held-out accuracy; ``validation_metrics`` a :class:`ReadbackAccuracy`
        when ``output: image``.

    Raises:
        datasets.registry.DataError: If the split or fraction leaves no rows, or MNIST is
            missing or invalid.
    """
    texts, answers = make_queries(options.max_operand)
    query, answer = encode(texts, QUERY_LENGTH), encode(answers, ANSWER_LENGTH)
    train_rows, val_rows = split_rows(len(query), options.val_fraction, seed, options.limit)
    stored_train = len(train_rows)
    num_train = fraction_rows(options.train_fraction, stored_train)
    if num_train < 1:
        raise DataError(f"dataset.train_fraction={options.train_fraction} of {stored_train} train queries keeps none")
    info: dict[str, Any] = {
        "num_queries": len(query), "num_train": num_train, "num_train_before_fraction": stored_train,
        "num_val": len(val_rows), "train_fraction": options.train_fraction, "max_operand": options.max_operand,
        "vocab": VOCAB, "query_length": QUERY_LENGTH, "answer_length": ANSWER_LENGTH,
        "input": options.input, "output": options.output,
    }
    train = {"query": query[train_rows], "answer": answer[train_rows]}
    val = {"query": query[val_rows], "answer": answer[val_rows]}
    source = Path(f"generated: a+b and a-b for a, b in [0, {options.max_operand}]")
    readback = None
    if "image" in (options.input, options.output):
        source, readback = _add_glyphs(options, seed, train, val, info)
    train = {name: column[:num_train] for name, column in train.items()}
    train["query"], train["answer"] = train["query"].astype(np.float32), train["answer"].astype(np.float32)
    val["query"], val["answer"] = val["query"].astype(np.float32), val["answer"].astype(np.float32)
    info["columns"] = {name: list(column.shape[1:]) for name, column in val.items()}
    input_column = "query_images" if options.input == "image" else "query"
    return PreparedData(train=train, val=val, input_shape=tuple(val[input_column].shape[1:]), ground_truth=None,
                        source=source, info=info, validation_metrics=readback)
