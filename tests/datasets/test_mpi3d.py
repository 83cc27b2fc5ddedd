"""MPI3D: the .npz reader and converter (read in pieces, never unpickled), refusals of wrong files, the
loader on a converted file of the published schema, and the npz -> cache -> load path on a small grid."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datasets import mpi3d
from datasets.factor_grid import GridSpec, check_grid_file, write_grid_file
from datasets.mpi3d import FACTOR_SIZES, NUM_IMAGES, SPEC, MPI3DOptions, convert_npz, load_mpi3d
from datasets.registry import DataError

SMALL = GridSpec("mpi3d", mpi3d.FACTOR_NAMES, (2, 1, 2, 1, 3, 2, 2), (4, 4, 3))  # 48 rows of 4x4 RGB


def small_images(spec: GridSpec = SMALL, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(spec.num_rows, *spec.image_shape), dtype=np.uint8)


def refused(action, *parts: str) -> str:
    with pytest.raises(DataError) as info:
        action()
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_convert_reads_the_npz_in_pieces(tmp_path, monkeypatch, save):
    monkeypatch.setattr(mpi3d, "READ_ROWS", 5)  # several pieces, the last one short
    images = small_images()
    save(tmp_path / "m.npz", images=images)
    out = convert_npz(tmp_path / "m.npz", tmp_path / "m.h5", SMALL)
    assert check_grid_file(out, SMALL) == 8
    import h5py

    with h5py.File(out, "r") as f:
        assert np.array_equal(f["images"][:], images)


def test_wrong_npz_files_are_refused_before_conversion(tmp_path):
    def convert(name: str):
        return lambda: convert_npz(tmp_path / name, tmp_path / "out.h5", SMALL)

    np.savez(tmp_path / "shape.npz", images=small_images()[:-1])
    refused(convert("shape.npz"), str(tmp_path / "shape.npz"), "key 'images' must be (48, 4, 4, 3) uint8", "(47, 4, 4, 3)")
    np.savez(tmp_path / "dtype.npz", images=small_images().astype(np.int16))
    refused(convert("dtype.npz"), "int16")
    np.savez(tmp_path / "fortran.npz", images=np.asfortranarray(small_images()))
    refused(convert("fortran.npz"), "Fortran order")
    np.savez(tmp_path / "key.npz", imgs=small_images())
    refused(convert("key.npz"), "key 'images' missing (found ['imgs'])")
    (tmp_path / "text.npz").write_text("no zip")
    refused(convert("text.npz"), "not an .npz file")
    assert not (tmp_path / "out.h5").exists() and not list(tmp_path.glob("*.part"))


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    """An object array's data is a pickle: its header alone refuses it."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("unpickled",))

    images = np.empty(SMALL.num_rows, dtype=object)
    images[:] = [Payload()] * SMALL.num_rows
    np.savez(tmp_path / "pickled.npz", images=images)
    refused(lambda: convert_npz(tmp_path / "pickled.npz", tmp_path / "out.h5", SMALL), "object")
    assert not marker.exists()


@pytest.fixture(scope="module")
def converted_file(tmp_path_factory) -> Path:
    """A converted file of the published schema (1,036,800 rows): a few rows written, the rest 0."""
    rows = np.array([0, 1, 12345, 1_036_799])

    def fill(data):
        for row in rows:
            data[row] = (row % 251) + 1

    return write_grid_file(tmp_path_factory.mktemp("mpi3d") / "mpi3d_toy.h5", SPEC, fill, source="test")


def test_loader_streams_a_converted_file(converted_file):
    prepared = load_mpi3d(MPI3DOptions(name="mpi3d", path=str(converted_file)), 0)
    description = prepared.describe()
    assert description.input_shape == (3, 64, 64)
    assert description.num_train + description.num_val == NUM_IMAGES
    assert description.classes == dict(zip(mpi3d.FACTOR_NAMES, FACTOR_SIZES))
    data = pickle.loads(pickle.dumps(prepared.ground_truth))
    rng = np.random.default_rng(0)
    factors = data.sample_factors(1000, rng)
    assert (factors.max(axis=0) < np.array(FACTOR_SIZES)).all()
    wanted = SPEC.factors_of(np.array([12345, 1_036_799, 2]))
    x = data.sample_observations_from_factors(wanted, rng)
    assert np.allclose(x[:, :, 0, 0] * 255, [[12345 % 251 + 1] * 3, [1_036_799 % 251 + 1] * 3, [0] * 3])


def test_wrong_given_files_are_refused(tmp_path, converted_file):
    import h5py

    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("images", (10, 64, 64, 3), dtype=np.uint8)
    refused(lambda: load_mpi3d(MPI3DOptions(name="mpi3d", path=str(tmp_path / "plain.h5")), 0),
            "dataset.path", "not a converted mpi3d file")
    np.savez(tmp_path / "small.npz", images=small_images())
    refused(lambda: load_mpi3d(MPI3DOptions(name="mpi3d", path=str(tmp_path / "small.npz")), 0),
            str(tmp_path / "small.npz"), "key 'images' must be (1036800, 64, 64, 3) uint8")
    refused(lambda: load_mpi3d(MPI3DOptions(name="mpi3d", path=str(tmp_path / "absent.npz")), 0),
            "dataset.path", "no such file")


def test_a_given_npz_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mpi3d, "SPEC", SMALL)
    images = small_images()
    np.savez(tmp_path / "mpi3d_real.npz", images=images)
    options = MPI3DOptions(name="mpi3d", path=str(tmp_path / "mpi3d_real.npz"), block_rows=4, val_fraction=0.25)
    prepared = load_mpi3d(options, 0)
    converted = list((tmp_path / "cache" / "mpi3d").glob("mpi3d-*.h5"))
    assert len(converted) == 1 and prepared.source == converted[0]
    assert prepared.info["file_chosen_by"] == "dataset.path (converted)"
    data = prepared.ground_truth
    x = data.sample_observations_from_factors(SMALL.factors_of(np.array([5, 47])), np.random.default_rng(0))
    assert np.array_equal(np.round(x * 255).astype(np.uint8), images[[5, 47]].transpose(0, 3, 1, 2))
    mtime = converted[0].stat().st_mtime_ns
    load_mpi3d(options, 1)
    assert converted[0].stat().st_mtime_ns == mtime  # reused, not converted again
    with pytest.raises(DataError, match="md5 .* does not match the published 55889cb7"):
        load_mpi3d(options.model_copy(update={"checksum": True}), 0)


def test_the_variant_is_downloaded_checked_and_converted(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MPI3D_PATH", raising=False)
    monkeypatch.setattr(mpi3d, "SPEC", SMALL)
    np.savez(tmp_path / "served.npz", images=small_images())
    monkeypatch.setitem(mpi3d.URLS, "real", (tmp_path / "served.npz").as_uri())
    monkeypatch.setitem(mpi3d.CHECKSUMS, "real", {"sha256": "0" * 64})
    options = MPI3DOptions(name="mpi3d", variant="real", block_rows=4)
    refused(lambda: load_mpi3d(options, 0), "sha256", "does not match the published 000", "MPI3D_PATH")
    monkeypatch.setenv("MPI3D_SHA256", hashlib.sha256((tmp_path / "served.npz").read_bytes()).hexdigest())
    prepared = load_mpi3d(options, 0)
    assert prepared.source == tmp_path / "cache" / "mpi3d" / "mpi3d_real.h5"
    assert prepared.info["file_chosen_by"] == "dataset.variant=real"
    assert not (tmp_path / "cache" / "mpi3d" / "mpi3d_real.npz").exists()  # the converted file replaces it


def test_convert_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mpi3d, "SPEC", SMALL)
    np.savez(tmp_path / "m.npz", images=small_images())
    assert mpi3d.main(["convert", str(tmp_path / "m.npz"), str(tmp_path / "m.h5")]) == 0
    assert check_grid_file(tmp_path / "m.h5", SMALL) == 8
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as archive:
        archive.writestr("other.npy", b"")
    assert mpi3d.main(["convert", str(tmp_path / "bad.npz"), str(tmp_path / "x.h5")]) == 2
    assert "key 'images' missing" in capsys.readouterr().err
