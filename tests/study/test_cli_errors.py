"""``python -m study.run`` on bad input: exit code 2, one ``error:`` line, no traceback, nothing written.

Every error here is caught before Ray starts, so each run takes only the seconds of its imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_dsprites_npz

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
TIMEOUT_S = 120  # generous for a loaded machine; a run that reaches Ray would take longer


def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "VAE_STUDY_CACHE": str(tmp_path / "cache")}
    for name in ("DSPRITES_PATH", "RAY_ADDRESS"):  # no real data, no cluster to join
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "study.run", *[str(a) for a in args]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Checks the CLI's contract for bad input and returns the error line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and line.strip() != "error:", line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """Where studies would go; the tests check that nothing appears under it."""
    return tmp_path / "studies"


def assert_nothing_written(storage: Path) -> None:
    assert not (storage / "smoke").exists()
    assert not storage.exists()


def test_missing_config_file(tmp_path, storage):
    config = tmp_path / "absent.yaml"

    result = run_cli([config, "--set", f"storage_path={storage}"], tmp_path)

    assert_usage_error(result, str(config), "cannot read the study spec")
    assert_nothing_written(storage)


def test_malformed_yaml(tmp_path, storage):
    config = tmp_path / "bad.yaml"
    config.write_text("name: smoke\nfamily: {name: conv_vae\ntraining: {epochs: 1}\n")

    result = run_cli([config, "--set", f"storage_path={storage}"], tmp_path)

    assert_usage_error(result, str(config), "not valid YAML at line")
    assert_nothing_written(storage)


@pytest.mark.parametrize(
    "override, fragments",
    [
        pytest.param("training.epoch=1", ["training.epoch: unknown key 'epoch'", "epochs"], id="unknown-key"),
        pytest.param("family.beta=-1", ["family.beta:", "greater than or equal to 0", "(got -1)"], id="negative-beta"),
        pytest.param("training.epochs", ["--set training.epochs: expected KEY=VALUE"], id="no-equals"),
        pytest.param("name.x=1", ["--set name.x=1: name is not a section"], id="through-a-scalar"),
    ],
)
def test_bad_override(tmp_path, storage, override, fragments):
    result = run_cli([SMOKE, "--set", f"storage_path={storage}", "--set", override], tmp_path)

    assert_usage_error(result, *fragments)
    assert_nothing_written(storage)


def test_storage_path_is_a_file(tmp_path, dsprites_file):
    storage = tmp_path / "occupied"
    storage.write_text("not a directory\n")

    result = run_cli([SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={dsprites_file}"], tmp_path)

    assert_usage_error(result, "storage_path:", str(storage), "is a file")
    assert storage.read_text() == "not a directory\n"
    assert not (tmp_path / "smoke").exists()


def test_dataset_path_does_not_exist(tmp_path, storage):
    data = tmp_path / "absent.npz"

    result = run_cli([SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={data}"], tmp_path)

    assert_usage_error(result, "dataset.path:", str(data), "no such file")
    assert_nothing_written(storage)


def test_dataset_file_with_wrong_keys(tmp_path, storage):
    data = tmp_path / "wrong_keys.npz"
    np.savez(data, foo=np.zeros(3))

    result = run_cli([SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={data}"], tmp_path)

    assert_usage_error(result, str(data), "key 'imgs' missing", "['foo']")
    assert_nothing_written(storage)


def test_dataset_file_not_an_npz(tmp_path, storage):
    data = tmp_path / "text.npz"
    data.write_text("these are not arrays\n")

    result = run_cli([SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={data}"], tmp_path)

    assert_usage_error(result, str(data), "not a readable .npz file")
    assert_nothing_written(storage)


def test_dataset_too_small_to_split(tmp_path, storage):
    data = write_dsprites_npz(tmp_path / "two.npz", num=2)

    result = run_cli(
        [SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={data}",
         "--set", "dataset.val_fraction=0.1"],
        tmp_path,
    )

    assert_usage_error(result, "dataset.val_fraction=0.1", "empty train or val split")
    assert_nothing_written(storage)


def test_non_utf8_config(tmp_path, storage):
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"name: caf\xe9\n")

    result = run_cli([config, "--set", f"storage_path={storage}"], tmp_path)

    assert_usage_error(result, str(config))
    assert_nothing_written(storage)


def test_a_local_run_imports_ray_only_when_it_starts_it_and_keeps_it_on_loopback(tmp_path, dsprites_file):
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported: validation and the checks
    before Ray import no Ray, and study.tuning.init_ray sets the variable just before it does."""
    code = (
        "import sys, study.run as r, study.tuning as t\n"
        "real = t.init_ray\n"
        "def init(*a, **k):\n"
        "    print('ray imported before init_ray:', 'ray' in sys.modules); real(*a, **k)\n"
        "def started(*a, **k):\n"
        "    import ray._private.ray_constants as c\n"
        "    print('clusters enabled:', c.ENABLE_RAY_CLUSTER); raise SystemExit(0)\n"
        "t.init_ray, t.check_cluster = init, started\n"
        f"sys.exit(r.main(['{SMOKE}', '--num-cpus', '1', '--set', 'storage_path={tmp_path / 's'}', '--set', "
        f"'dataset.path={dsprites_file}']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert "ray imported before init_ray: False" in result.stdout, result.stdout + result.stderr
    assert "clusters enabled: False" in result.stdout, result.stdout + result.stderr


def test_dataset_object_does_not_exist(tmp_path, storage, s3_bucket):
    uri = f"{s3_bucket.uri}/data/absent.npz"
    result = run_cli([SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={uri}"], tmp_path)
    assert_usage_error(result, f"dataset.path: {uri}: no such object (expected a dSprites .npz)")
    assert_nothing_written(storage)


@pytest.mark.parametrize("flag, value", [("--num-cpus", "-1"), ("--num-cpus", "0"), ("--num-gpus", "-2"),
                                          ("--num-cpus", "two")])
def test_a_negative_or_malformed_resource_count_is_one_line(tmp_path, storage, flag, value):
    result = run_cli([SMOKE, flag, value, "--set", f"storage_path={storage}"], tmp_path)

    assert_usage_error(result, flag, "expected an integer")
    assert_nothing_written(storage)


def test_a_huge_number_in_an_override_is_one_line(tmp_path, storage):
    result = run_cli([SMOKE, "--set", "training.lr=1" + "0" * 100_000, "--set", f"storage_path={storage}"], tmp_path)

    line = assert_usage_error(result, "--set training.lr=", "numbers have at most")
    assert len(line) < 400
    assert_nothing_written(storage)


def test_a_huge_number_in_a_spec_file_is_one_line(tmp_path, storage):
    config = tmp_path / "huge.yaml"
    config.write_text(SMOKE.read_text().replace("epochs: 1", "epochs: 1" + "0" * 5000))

    assert_usage_error(run_cli([config, "--set", f"storage_path={storage}"], tmp_path), "huge.yaml", "line")
    assert_nothing_written(storage)
