"""Shared test fixtures. Ray stays on loopback and writes under a temporary directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before anything imports ray: keep every Ray listener on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import subprocess  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_dsprites_npz(path: Path, *, num: int = 600, six_columns: bool = False, seed: int = 0) -> Path:
    """A small file in the dSprites layout: binary 64x64 images whose content follows the factors.

    Factors: shape (3), scale (6), orientation (10), pos_x (16), pos_y (16); with
    ``six_columns`` a constant colour column comes first (the canonical layout).
    """
    rng = np.random.default_rng(seed)
    sizes = np.array([3, 6, 10, 16, 16])
    classes = rng.integers(0, sizes, size=(num, 5))
    imgs = np.zeros((num, 64, 64), dtype=np.uint8)
    for i, (shape, scale, _, x, y) in enumerate(classes):
        half = 2 + scale + shape
        cx, cy = 8 + 3 * x, 8 + 3 * y
        imgs[i, max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = 1
    if six_columns:
        classes = np.concatenate([np.zeros((num, 1), dtype=np.int64), classes], axis=1)
    np.savez_compressed(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(np.float64))
    return path


def dsprites_data(tmp: Path, num: int = 3000) -> Path:
    """The shared dSprites grid beside the checkout when present, else a ``num``-image file under ``tmp``."""
    data = SHARED_DATA / "dsprites_downsampled.npz"
    return data if data.is_file() else write_dsprites_npz(tmp / "dsprites.npz", num=num)


def subprocess_env(tag: str, **extra: str) -> dict[str, str]:
    """Environment for a ``python -m study.run`` subprocess: Ray on loopback, not attached elsewhere.

    Args:
        tag: Names the short RAY_TMPDIR ``/tmp/<tag><pid>`` (created), which keeps Ray's socket
            paths under their length limit.
        **extra: Further variables, e.g. ``DSPRITES_PATH``.
    """
    ray_tmp = Path("/tmp") / f"{tag}{os.getpid()}"
    ray_tmp.mkdir(exist_ok=True)
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PYTHONUNBUFFERED": "1", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def dsprites_file(tmp_path: Path) -> Path:
    """A 600-image dSprites-layout file (5 factor columns)."""
    return write_dsprites_npz(tmp_path / "dsprites_small.npz")


@pytest.fixture
def jets_file(tmp_path: Path) -> Path:
    """A 200-jet synthetic file in the ML4SCI jets schema with small 25x25 images (fast)."""
    from datasets.jets import write_synthetic

    return write_synthetic(tmp_path / "jets.h5", 200, seed=0, size=25, chunk_rows=64)


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray (no dashboard) under a short RAY_TMPDIR, shared by a test module."""
    import ray
    import ray.data

    path = Path("/tmp") / f"rl{os.getpid()}"
    path.mkdir(exist_ok=True)
    environ = dict(os.environ)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(path), log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    # ray.init sets RAY_AUTH_MODE=token in os.environ; left there, a later in-process cluster
    # under another HOME (test_cluster.py) looks for a token that is not there.
    os.environ.clear()
    os.environ.update(environ)


@pytest.fixture
def ray_tmpdir(tmp_path_factory, monkeypatch) -> Path:
    """A short RAY_TMPDIR so Ray's socket paths stay under the length limit."""
    path = Path("/tmp") / f"rt{os.getpid()}"
    path.mkdir(exist_ok=True)
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    return path


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """A real ``python -m study.run configs/smoke.yaml`` (Ray, 2 tiny trials), run once per session.

    Returns:
        ``(study_dir, completed_process, {"cmd": argv, "env": environment})``.
    """
    tmp = tmp_path_factory.mktemp("smoke")
    env = subprocess_env("rts", DSPRITES_PATH=str(dsprites_data(tmp)))
    cmd = [sys.executable, "-m", "study.run", "configs/smoke.yaml", "--num-cpus", "2",
           "--set", f"storage_path={tmp / 'studies'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return tmp / "studies" / "smoke", proc, {"cmd": cmd, "env": env}


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the loopback S3 server (moto), with the environment that reaches it.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``.
        name: The bucket's name.
        env: ``AWS_*`` variables (endpoint, test keys, region), also set in this process.
    """

    endpoint: str
    name: str
    env: dict[str, str]

    @property
    def uri(self) -> str:
        return f"s3://{self.name}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def put(self, key: str, path: Path) -> str:
        """Uploads a local file; returns its URI."""
        self.client().upload_file(str(path), self.name, key)
        return f"{self.uri}/{key}"


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in this process, on 127.0.0.1 (a real S3 wire protocol on loopback)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request in the test logs
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path) -> S3Bucket:
    """A fresh bucket on the loopback S3 server; this process's environment points at it (test keys
    only, no ~/.aws), and ``env`` carries the same variables for subprocesses."""
    import uuid

    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    bucket = S3Bucket(endpoint=s3_server, name=f"vae-{uuid.uuid4().hex[:12]}", env=env)
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


sys.path.insert(0, str(REPO))
