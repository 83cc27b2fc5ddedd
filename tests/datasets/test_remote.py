"""datasets/remote.py and the fingerprints of objects: data read from a loopback S3 bucket (moto)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from datasets.registry import DataError, DatasetOptions, file_fingerprint, uri_fingerprint
from datasets.remote import BlockCachedFile, child, exists, list_objects, location_of, read_object, require


def test_locations_local_paths_expand_and_uris_stay_strings(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert location_of("~/data/x.h5") == tmp_path / "data" / "x.h5"
    assert location_of("s3://bucket/mnist/") == "s3://bucket/mnist"
    assert child("s3://bucket/mnist", "t10k.gz") == "s3://bucket/mnist/t10k.gz"
    assert DatasetOptions(name="x", path="~/d.npz").path == str(tmp_path / "d.npz")
    assert DatasetOptions(name="x", path="s3://bucket/prefix/").path == "s3://bucket/prefix"
    assert DatasetOptions(name="x", path=tmp_path / "d.npz").path == str(tmp_path / "d.npz")  # a Path is taken


@pytest.mark.parametrize("name", ["arithmetic", "dsprites", "images", "jets"])
def test_every_dataset_path_expands_the_home_directory(monkeypatch, tmp_path, name):
    from datasets.registry import get_dataset

    monkeypatch.setenv("HOME", str(tmp_path))
    extra = {"input": "image"} if name == "arithmetic" else {}  # text queries read no path
    options = get_dataset(name).options_cls(name=name, path="~/data", **extra)
    assert options.path == str(tmp_path / "data")


@pytest.mark.parametrize("module, variable", [("dsprites", "DSPRITES_PATH"), ("jets", "JETS_PATH"),
                                              ("images", "FACES_PATH"), ("arithmetic", "MNIST_PATH")])
def test_every_data_environment_variable_expands_the_home_directory(monkeypatch, tmp_path, module, variable):
    import importlib

    monkeypatch.setenv("HOME", str(tmp_path))
    target = tmp_path / "data"
    target.mkdir() if module == "arithmetic" else target.write_bytes(b"")  # resolve_path checks existence only
    monkeypatch.setenv(variable, "~/data")
    assert importlib.import_module(f"datasets.{module}").resolve_path(None) == target


def test_block_cached_file_reads_what_the_file_holds(s3_bucket, tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    (tmp_path / "blob").write_bytes(data)
    uri = s3_bucket.put("blob", tmp_path / "blob")
    with BlockCachedFile(uri, block_bytes=1000, cache_blocks=3) as f:
        assert f.read(10) == data[:10] and f.tell() == 10
        assert f.requests == 1 and f.bytes_fetched == 1000  # one block
        f.seek(990)
        assert f.read(20) == data[990:1010]  # spans blocks 0 (cached) and 1 (fetched)
        assert f.requests == 2
        f.seek(-5, io.SEEK_END)
        assert f.read(100) == data[-5:] and f.read(1) == b""  # short read at the end, then EOF
        f.seek(2500)
        assert f.read(3000) == data[2500:5500]  # >= a block: straight from storage, uncached
        assert f.requests == 4 and f.bytes_fetched == 1000 + 1000 + 1000 + 3000
        f.seek(0)
        f.read(10)  # blocks 0, 1 and 9 are cached (3 kept)
        assert f.requests == 4
        for offset in (3000, 4000, 6000):  # three more blocks evict 0, 1 and 9
            f.seek(offset)
            f.read(1)
        f.seek(0)
        f.read(1)
        assert f.requests == 8
        for offset in np.random.default_rng(1).integers(0, len(data), 50):
            f.seek(int(offset))
            assert f.read(37) == data[offset:offset + 37]


def test_h5py_reads_an_object_through_the_cached_file(s3_bucket, tmp_path):
    import h5py

    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(50_000, dtype=np.float32).reshape(500, 100)
        f.create_dataset("z", data=np.ones((64, 8)), chunks=(8, 8), compression="gzip")
    uri = s3_bucket.put("a.h5", path)
    with BlockCachedFile(uri, block_bytes=1 << 16) as handle, h5py.File(handle, "r") as f:
        np.testing.assert_array_equal(f["x"][120:130], np.arange(12_000, 13_000, dtype=np.float32).reshape(10, 100))
        np.testing.assert_array_equal(f["z"][:], np.ones((64, 8)))
        assert handle.requests <= 6  # metadata and both datasets in a few block reads, not one per piece


def test_objects_prefixes_and_missing_ones(s3_bucket, tmp_path):
    (tmp_path / "a").write_bytes(b"alpha")
    s3_bucket.put("p/a", tmp_path / "a")
    s3_bucket.put("p/sub/b", tmp_path / "a")
    assert read_object(f"{s3_bucket.uri}/p/a") == b"alpha"
    assert list_objects(f"{s3_bucket.uri}/p") == [("a", 5), ("sub/b", 5)]
    assert exists(f"{s3_bucket.uri}/p/a") and not exists(f"{s3_bucket.uri}/p/zzz") and not exists(f"{s3_bucket.uri}/p")
    assert require(f"{s3_bucket.uri}/p/a", "object", "a file") == f"{s3_bucket.uri}/p/a"
    cases = {
        f"{s3_bucket.uri}/p/zzz": f"dataset.path: {s3_bucket.uri}/p/zzz: no such object (expected an HDF5 jets file)",
        "s3://no-such-bucket-vae/x.h5": "dataset.path: s3://no-such-bucket-vae/x.h5: no such bucket 'no-such-bucket-vae'",
        f"{s3_bucket.uri}/p": f"dataset.path: {s3_bucket.uri}/p: a prefix (folder), not an object",
        "nosuchscheme://b/x.h5": "dataset.path: nosuchscheme://b/x.h5: unknown storage scheme nosuchscheme://",
    }
    for uri, message in cases.items():
        with pytest.raises(DataError) as info:
            require(uri, "object", "an HDF5 jets file", "dataset.path")
        assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)
    with pytest.raises(DataError, match="an object, not a prefix"):
        require(f"{s3_bucket.uri}/p/a", "prefix", "a folder")
    with pytest.raises(DataError, match="no such object"):
        read_object(f"{s3_bucket.uri}/p/zzz")
    with pytest.raises(DataError, match="no such object"):
        BlockCachedFile(f"{s3_bucket.uri}/p/zzz")


def test_fingerprint_of_an_object_is_its_uri_size_and_etag(s3_bucket, tmp_path):
    (tmp_path / "d.bin").write_bytes(b"x" * 1000)
    uri = s3_bucket.put("d.bin", tmp_path / "d.bin")
    etag = s3_bucket.client().head_object(Bucket=s3_bucket.name, Key="d.bin")["ETag"].strip('"')
    fingerprint = file_fingerprint(uri)
    assert (fingerprint.path, fingerprint.size, fingerprint.sha256, fingerprint.scope) == (uri, 1000, etag, "etag")
    (tmp_path / "d.bin").write_bytes(b"y" * 1000)  # the same key, size and name, other content
    s3_bucket.put("d.bin", tmp_path / "d.bin")
    assert file_fingerprint(uri).differs(fingerprint) == ["sha256"]
    with pytest.raises(DataError, match="no such object or prefix"):
        uri_fingerprint(f"{s3_bucket.uri}/absent")


def test_fingerprint_without_an_etag_hashes_the_content_as_for_local_files(s3_bucket, tmp_path, monkeypatch):
    import datasets.registry as registry

    folder = tmp_path / "mnist"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.gz").write_bytes(os.urandom(3000))
    (folder / "sub" / "b").write_bytes(b"b" * 10)
    for key in ("a.gz", "sub/b"):
        s3_bucket.put(f"mnist/{key}", folder / key)
    with_etags = file_fingerprint(f"{s3_bucket.uri}/mnist")
    assert with_etags.size == 3010 and with_etags.scope == "etag"
    monkeypatch.setattr(registry, "_etag", lambda fs, path: None)  # a store that gives none
    local, remote = file_fingerprint(folder), file_fingerprint(f"{s3_bucket.uri}/mnist")
    assert (remote.size, remote.sha256, remote.scope) == (local.size, local.sha256, "file")
    single = file_fingerprint(f"{s3_bucket.uri}/mnist/a.gz")
    assert single.sha256 == file_fingerprint(folder / "a.gz").sha256


# HDF5 streamed from a bucket through Ray Data.


@pytest.fixture(scope="module")
def s3_ray(s3_server):
    """A 2-CPU local Ray whose workers reach the loopback S3 server (its AWS_* variables are set
    before Ray starts: read tasks resolve the URI with their own environment)."""
    import ray
    import ray.data

    environ = dict(os.environ)
    os.environ.update({"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    path = f"/tmp/rs{os.getpid()}"
    os.makedirs(path, exist_ok=True)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=path, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    os.environ.clear()
    os.environ.update(environ)


def test_jets_from_a_bucket_stream_the_rows_of_the_local_file(s3_bucket, s3_ray, jets_file, monkeypatch):
    from datasets.jets import JetsOptions, load_jets

    uri = s3_bucket.put("jets/jets.h5", jets_file)
    opts = {"image_size": 16, "image_mode": "resize", "block_rows": 20, "rows_per_block": 8, "val_fraction": 0.2}
    local = load_jets(JetsOptions(name="jets", path=str(jets_file), **opts), 7)
    monkeypatch.setenv("JETS_PATH", uri)  # the environment variable takes a URI too
    remote = load_jets(JetsOptions(name="jets", **opts), 7)
    assert remote.source == uri and remote.info == local.info  # the same split, statistics and keys
    fingerprint = remote.fingerprint()
    assert (fingerprint.path, fingerprint.size, fingerprint.scope) == (uri, jets_file.stat().st_size, "etag")
    remote_sets, local_sets = remote.ray_datasets(row=True), local.ray_datasets(row=True)
    for split in ("train", "val"):
        got = remote_sets[split].take_batch(batch_size=1000, batch_format="numpy")
        want = local_sets[split].take_batch(batch_size=1000, batch_format="numpy")
        order, want_order = np.argsort(got["row"]), np.argsort(want["row"])
        assert len(got["row"]) == local.info[f"num_{split}"]
        for column in ("row", "image", "y", "m0", "pt"):
            np.testing.assert_array_equal(got[column][order], want[column][want_order])


def test_an_hdf5_object_that_is_not_hdf5_is_refused_naming_it(s3_bucket, tmp_path):
    from datasets.hdf5 import KeySpec, check_hdf5

    (tmp_path / "x.h5").write_text("X_jets,y\n1,2\n")
    uri = s3_bucket.put("x.h5", tmp_path / "x.h5")
    with pytest.raises(DataError, match=f"^{uri}: not a readable HDF5 file"):
        check_hdf5(uri, {"y": KeySpec(1)})
    with pytest.raises(DataError, match=f"^{s3_bucket.uri}/y.h5: no such object"):
        check_hdf5(f"{s3_bucket.uri}/y.h5", {"y": KeySpec(1)})
