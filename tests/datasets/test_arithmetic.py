"""datasets/arithmetic.py: queries and their text, the split, the digit pools, train fractions,
the readback classifier and the refused options and files."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from datasets import arithmetic
from datasets.arithmetic import (
    ANSWER_LENGTH,
    GLYPH_SIZE,
    MNIST_FILES,
    PIXEL_MAX,
    QUERY_LENGTH,
    VOCAB,
    ArithmeticOptions,
    ReadbackAccuracy,
    decode,
    encode,
    make_queries,
    read_idx,
)
from datasets.registry import DataError, get_dataset
from tests.conftest import SHARED_DATA

MNIST = SHARED_DATA / "mnist"
needs_mnist = pytest.mark.skipif(not all((MNIST / f).is_file() for f in MNIST_FILES),
                                 reason=f"MNIST t10k files not in {MNIST}")


def options(**kwargs) -> ArithmeticOptions:
    return ArithmeticOptions(name="arithmetic", **kwargs)


def load(seed: int = 0, **kwargs):
    return get_dataset("arithmetic").load(options(**kwargs), seed)


def rows(columns: dict[str, np.ndarray]) -> list[str]:
    return decode(columns["query"])


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Readback weights go to a fresh cache: each test trains what it needs."""
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_PATH", raising=False)


# Text


def test_encode_decode_round_trip_with_known_ids():
    ids = encode(["12+34", "1-2", ""], QUERY_LENGTH)
    assert ids.dtype == np.int64 and ids.shape == (3, 5)
    assert ids[0].tolist() == [1, 2, 10, 3, 4]  # digits are their own ids, '+' 10, '-' 11, blank 12
    assert ids[1].tolist() == [1, 11, 2, 12, 12]
    assert decode(ids) == ["12+34", "1-2  ", "     "]
    assert decode(ids.astype(np.float32)) == decode(ids)  # columns arrive as float32
    assert [s.rstrip() for s in decode(encode(["-99", "198", "0"], ANSWER_LENGTH))] == ["-99", "198", "0"]


@pytest.mark.parametrize("text", ["123456", "1*2", "a"])
def test_encode_refuses_what_does_not_fit(text):
    with pytest.raises(ValueError, match="expected at most 5"):
        encode([text], QUERY_LENGTH)


def test_every_query_with_its_answer():
    queries, answers = make_queries(99)
    assert len(queries) == 20_000 and len(set(queries)) == 20_000
    known = dict(zip(queries, answers))
    assert known["12+34"] == "46" and known["0-99"] == "-99" and known["99+99"] == "198" and known["7-7"] == "0"
    assert max(map(len, queries)) == QUERY_LENGTH and max(map(len, answers)) == ANSWER_LENGTH


def test_text_columns_split_and_answers():
    data = load(max_operand=20, val_fraction=0.2)  # 2 * 21 ** 2 = 882 queries
    assert data.input_shape == (QUERY_LENGTH,) and data.ground_truth is None
    assert data.train["query"].shape == (706, 5) and data.val["answer"].shape == (176, 3)
    assert {v.dtype for split in (data.train, data.val) for v in split.values()} == {np.dtype(np.float32)}
    train, val = rows(data.train), rows(data.val)
    assert not set(train) & set(val) and len(set(train) | set(val)) == 882  # no query in both splits
    for split in (data.train, data.val):
        for query, answer in zip(decode(split["query"]), decode(split["answer"])):
            assert str(eval(query)) == answer.rstrip()
    assert data.info["num_train"] == 706 and data.info["num_val"] == 176 and data.info["num_queries"] == 882
    assert getattr(data, "validation_metrics", None) is None  # text output: no readback hook


def test_train_fractions_nest_and_keep_the_validation_queries():
    full = load(max_operand=20)
    half, tenth = load(max_operand=20, train_fraction=0.5), load(max_operand=20, train_fraction=0.1)
    n = len(full.train["query"])
    assert len(half.train["query"]) == round(0.5 * n) and len(tenth.train["query"]) == round(0.1 * n)
    assert rows(tenth.train) == rows(half.train)[: len(tenth.train["query"])] == rows(full.train)[: round(0.1 * n)]
    assert rows(half.val) == rows(full.val) == rows(tenth.val)
    assert half.info["num_train"] == round(0.5 * n) and half.info["num_train_before_fraction"] == n


def test_the_split_follows_the_seed():
    assert rows(load(max_operand=9).val) == rows(load(max_operand=9).val)
    assert rows(load(max_operand=9).val) != rows(load(1, max_operand=9).val)


# Options


def test_extra_metrics_name_the_readback_for_image_outputs():
    assert options(output="image").extra_metrics() == ("val_readback_accuracy", "val_readback_char_accuracy")
    assert options(input="image").extra_metrics() == ()


@pytest.mark.parametrize("value", [100, 999])
def test_operands_that_do_not_fit_five_characters_are_refused(value):
    with pytest.raises(ValidationError, match="max_operand"):
        options(max_operand=value)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_train_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValidationError, match="train_fraction"):
        options(train_fraction=fraction)


def test_a_fraction_that_keeps_no_row_is_refused():
    with pytest.raises(DataError, match="train_fraction"):
        load(max_operand=1, train_fraction=0.01)  # 8 queries


def test_path_without_images_and_unknown_keys_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="path"):
        options(path=tmp_path)
    with pytest.raises(ValidationError, match="not_a_field"):
        options(not_a_field=1)


# MNIST files


def write_idx(path: Path, magic: int, dims: tuple[int, ...], data: bytes, compress: bool = True) -> Path:
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_read_idx_reads_gzip_and_raw_files(tmp_path):
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8)
    images = write_idx(tmp_path / "i.gz", 2051, (2, 28, 28), pixels.tobytes())
    raw = write_idx(tmp_path / "i.raw", 2051, (2, 28, 28), pixels.tobytes(), compress=False)
    labels = write_idx(tmp_path / "l.gz", 2049, (3,), bytes([7, 0, 9]))
    assert np.array_equal(read_idx(images, "images"), pixels.reshape(2, 28, 28))
    assert np.array_equal(read_idx(raw, "images"), pixels.reshape(2, 28, 28))
    assert read_idx(labels, "labels").tolist() == [7, 0, 9]


@pytest.mark.parametrize("case, match", [
    ("missing", "no such file"),
    ("text", "not an IDX images file"),
    ("labels_magic", "magic number 2049, expected 2051"),
    ("dims", "dimensions"),
    ("truncated", "data bytes"),
    ("bad_gzip", "corrupt gzip"),
])
def test_bad_idx_files_are_refused_naming_the_file(tmp_path, case, match):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    if case == "text":
        path.write_bytes(gzip.compress(b"these are not the digits you are looking for"))
    elif case == "labels_magic":
        write_idx(path, 2049, (4,), bytes(4))
    elif case == "dims":
        write_idx(path, 2051, (1, 32, 32), bytes(32 * 32))
    elif case == "truncated":
        write_idx(path, 2051, (2, 28, 28), bytes(28 * 28))
    elif case == "bad_gzip":
        path.write_bytes(gzip.compress(bytes(100))[:20])
    with pytest.raises(DataError, match=match) as err:
        read_idx(path, "images")
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_corrupt_deflate_data_is_refused_naming_the_file(tmp_path):
    """A gzip stream whose deflate data is damaged (zlib.error, not OSError) is one DataError."""
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (3000,),
                     np.random.default_rng(0).integers(0, 10, 3000, dtype=np.uint8).tobytes())
    damaged = bytearray(path.read_bytes())
    damaged[40:60] = bytes(20)  # zeros in the middle of the deflate stream
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match="corrupt gzip data") as err:
        read_idx(path, "labels")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


PUBLISHED_MD5 = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                 "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
                 "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                 "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432"}


@pytest.mark.parametrize("name, count", [("t10k-labels-idx1-ubyte.gz", 10_000), ("train-labels-idx1-ubyte.gz", 60_000)])
def test_a_file_of_a_published_name_and_count_must_be_the_published_file(tmp_path, name, count):
    """A file named as MNIST's and holding its number of digits claims to be the published file: its md5
    must be the published one (Fashion-MNIST and KMNIST use the same names and counts)."""
    labels = np.random.default_rng(1).integers(0, 10, count, dtype=np.uint8).tobytes()
    path = write_idx(tmp_path / name, 2049, (count,), labels)
    found = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DataError) as err:
        read_idx(path, "labels")
    message = str(err.value)
    assert str(path) in message and PUBLISHED_MD5[name] in message and found in message and "\n" not in message
    other = write_idx(tmp_path / "labels.gz", 2049, (count,), labels)  # not a published name: read as it is
    assert len(read_idx(other, "labels")) == count
    small = write_idx(tmp_path / name, 2049, (count - 1,), labels[1:])  # not the published count: a subset
    assert len(read_idx(small, "labels")) == count - 1


@needs_mnist
def test_the_published_files_pass_and_one_changed_pixel_is_refused(tmp_path):
    name = "t10k-images-idx3-ubyte.gz"
    assert read_idx(MNIST / name, "images").shape == (10_000, 28, 28)
    raw = bytearray(gzip.decompress((MNIST / name).read_bytes()))
    raw[16 + 14 * 28 + 14] ^= 0xFF  # the middle pixel of the first digit
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=f"{PUBLISHED_MD5[name]}") as err:
        read_idx(path, "images")
    assert str(path) in str(err.value) and hashlib.md5(path.read_bytes()).hexdigest() in str(err.value)


def test_a_missing_mnist_file_or_folder_is_refused_naming_it(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="dataset.path.*MNIST_PATH"):
        load(max_operand=9, input="image")
    with pytest.raises(DataError, match="no such folder"):
        load(max_operand=9, input="image", path=tmp_path / "nowhere")
    write_idx(tmp_path / MNIST_FILES[0], 2051, (10, 28, 28), bytes(10 * 784))
    with pytest.raises(DataError, match=MNIST_FILES[1]):
        load(max_operand=9, input="image", path=tmp_path)
    (tmp_path / MNIST_FILES[1]).write_bytes(b"not idx at all")
    monkeypatch.setenv("MNIST_PATH", str(tmp_path))  # the environment variable names the folder too
    with pytest.raises(DataError, match=f"{MNIST_FILES[1]}: not an IDX labels file"):
        load(max_operand=9, input="image")


def write_mnist(folder: Path, prefix: str, digits: list[int], fill: int, compress: bool = True) -> None:
    suffix = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", 2051, (len(digits), 28, 28),
              bytes([fill]) * (len(digits) * 784), compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", 2049, (len(digits),), bytes(digits), compress)


def test_the_full_mnist_adds_its_training_digits_after_the_test_digits(tmp_path):
    from datasets.arithmetic import load_mnist, mnist_files

    write_mnist(tmp_path, "t10k", list(range(10)), fill=1)
    images, labels = load_mnist(tmp_path)
    assert len(images) == 10 and [p.name for pair in mnist_files(tmp_path) for p in pair] == list(MNIST_FILES)
    write_mnist(tmp_path, "train", list(range(10)) * 2, fill=2, compress=False)  # unpacked names serve too
    images, labels = load_mnist(tmp_path)
    assert images.shape == (30, 28, 28) and labels.tolist() == list(range(10)) * 3
    assert (images[:10] == 1).all() and (images[10:] == 2).all()
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: no such file; the full MNIST needs both"):
        load_mnist(tmp_path)


# Glyphs


def test_operator_glyphs_are_mnist_like_and_jittered():
    rng = np.random.default_rng(0)
    glyphs = arithmetic.render_operators(np.array(["+", "-", "+", "-"]), rng)
    assert glyphs.shape == (4, 28, 28) and glyphs.dtype == np.uint8
    assert glyphs.max() >= 200 and glyphs[:, :3].max() == 0 and glyphs[:, :, :3].max() == 0  # empty borders
    ink = (glyphs > 127).sum(axis=(1, 2))
    assert ink[0] > ink[1] and ink[2] > ink[3]  # '+' has two strokes
    rows_with_ink = (glyphs > 127).any(axis=2).sum(axis=1)
    assert rows_with_ink[1] <= 6 and rows_with_ink[0] >= 10  # '-' is flat, '+' tall
    assert not np.array_equal(glyphs[0], glyphs[2])  # jitter per occurrence


@needs_mnist
def test_image_columns_hold_real_digits_from_disjoint_pools():
    data = load(max_operand=20, val_fraction=0.2, input="image", path=MNIST)
    images, labels = arithmetic.load_mnist(MNIST)
    label_of = {hashlib.sha1(im.tobytes()).hexdigest(): int(lab) for im, lab in zip(images, labels)}
    seen: dict[str, set[str]] = {}
    for split, columns in (("train", data.train), ("val", data.val)):
        glyphs = columns["query_images"]
        assert glyphs.shape == (len(columns["query"]), 5, 28, 28) and glyphs.dtype == np.uint8
        ids = columns["query"].astype(int)
        digits = ids < 10
        keys = [hashlib.sha1(g.tobytes()).hexdigest() for g in glyphs[digits]]
        assert [label_of[k] for k in keys] == ids[digits].tolist()  # each digit is an MNIST image of that digit
        assert glyphs[ids == VOCAB.index(" ")].max() == 0  # blanks are empty
        assert glyphs[ids >= 10].max() > 0 or not (ids == 10).any()
        seen[split] = set(keys)
    assert not seen["train"] & seen["val"]  # no digit image in both splits' queries
    pools = data.info["digit_pool_train"], data.info["digit_pool_val"]
    assert pools == (8000, 2000) and data.input_shape == (5, GLYPH_SIZE, GLYPH_SIZE)
    half = load(max_operand=20, val_fraction=0.2, input="image", path=MNIST, train_fraction=0.5)
    n = len(half.train["query"])
    assert np.array_equal(half.train["query_images"], data.train["query_images"][:n])  # same glyphs per row
    assert np.array_equal(half.val["query_images"], data.val["query_images"])


@needs_mnist
@pytest.mark.slow  # trains the readback CNN: ~25 s of one core
def test_readback_classifier_reads_held_out_digits_and_true_answers(tmp_path):
    data = load(max_operand=20, input="text", output="image", path=MNIST)
    assert data.info["readback_accuracy"] >= 0.97, data.info  # real digits of the val pool, never trained on
    assert data.info["readback_symbol_accuracy"] >= 0.99
    assert Path(data.info["readback_cache"]).is_file()
    hook = data.validation_metrics
    assert isinstance(hook, ReadbackAccuracy)
    hook = pickle.loads(pickle.dumps(hook))  # shipped to Ray workers
    truth = data.val["answer"]
    scores = hook({"answer_images_pred": data.val["answer_images"] / PIXEL_MAX, "answer_true": truth})
    assert scores["readback_accuracy"] >= 0.9 and scores["readback_char_accuracy"] >= 0.96
    shuffled = data.val["answer_images"][np.random.default_rng(0).permutation(len(truth))] / PIXEL_MAX
    low = hook({"answer_images_pred": shuffled, "answer_true": truth})
    assert low["readback_accuracy"] < 0.2
    blank = hook({"answer_images_pred": np.zeros_like(shuffled), "answer_true": truth})
    assert blank["readback_char_accuracy"] == pytest.approx(float(np.mean(truth == VOCAB.index(" "))))
    with pytest.raises(KeyError, match="answer_images_pred"):
        hook({"answer_true": truth})
    again = load(max_operand=20, input="text", output="image", path=MNIST)  # from the cache, same weights
    assert again.info["readback_accuracy"] == data.info["readback_accuracy"]


# MNIST from a bucket prefix (a loopback S3 server).


def test_the_mnist_folder_may_be_a_bucket_prefix(tmp_path, s3_bucket, monkeypatch):
    from datasets.arithmetic import load_mnist, mnist_files

    folder = tmp_path / "mnist"
    folder.mkdir()
    write_mnist(folder, "t10k", list(range(10)) * 30, fill=1)
    write_mnist(folder, "train", list(range(10)) * 20, fill=2, compress=False)  # unpacked names serve too
    for file in folder.iterdir():
        s3_bucket.put(f"mnist/{file.name}", file)
    prefix = f"{s3_bucket.uri}/mnist"
    assert [str(p) for pair in mnist_files(prefix) for p in pair] == [
        f"{prefix}/{name}" for name in (*MNIST_FILES, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")]
    (local_images, local_labels), (images, labels) = load_mnist(folder), load_mnist(prefix)
    np.testing.assert_array_equal(images, local_images)
    np.testing.assert_array_equal(labels, local_labels)
    assert images.shape == (500, 28, 28) and (images[:300] == 1).all() and (images[300:] == 2).all()
    monkeypatch.setenv("MNIST_PATH", prefix + "/")  # the environment variable takes a URI too
    data = load(max_operand=9, val_fraction=0.2, input="image")
    assert data.source == prefix and data.info["mnist_files"][:2] == list(MNIST_FILES)
    fingerprint = data.fingerprint()
    assert (fingerprint.path, fingerprint.size, fingerprint.scope) == (
        prefix, sum(f.stat().st_size for f in folder.iterdir()), "etag")
    np.testing.assert_array_equal(load(max_operand=9, val_fraction=0.2, input="image", path=folder).train[
        "query_images"], data.train["query_images"])
    with pytest.raises(DataError, match=f"^dataset.path: {prefix}x: no such prefix"):
        load(max_operand=9, input="image", path=prefix + "x")
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key="mnist/train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: no such file; the full MNIST needs both"):
        load_mnist(prefix)
