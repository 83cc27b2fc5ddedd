"""Studies on object storage: a real S3 wire protocol on loopback (moto's server, tests/conftest.py).

A study whose ``storage_path`` is ``s3://...`` writes every file into the bucket (nothing in the
current directory), is read back from the bucket (tables, report, Optuna journal), reruns as a
no-op once finished, and resumes from the bucket after its driver was killed. Bad storage is
refused before Ray with one line and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA, write_dsprites_npz
from tests.study.test_faults import epochs_of, fail_text, kill_ray, study_env  # noqa: F401 (fixture)

SMOKE = str(REPO / "configs" / "smoke.yaml")
TINY = ["dataset.limit=1500", "evaluation.num_train=300"]
TIMEOUT_S = 600


def s3_cmd(storage: str, *overrides: str, config: str = SMOKE) -> list[str]:
    cmd = [sys.executable, "-m", "study.run", config, "--num-cpus", "2", "--set", f"storage_path={storage}"]
    for item in [*TINY, *overrides]:
        cmd += ["--set", item]
    return cmd


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    kill_ray(Path(env["RAY_TMPDIR"]))
    return proc


@pytest.fixture
def s3_env(study_env, s3_bucket, tmp_path) -> dict[str, str]:
    """A study subprocess's environment: the bucket's AWS variables, a working directory of its own
    and an empty HOME (to see what a run writes there)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**study_env, **s3_bucket.env, "HOME": str(home), "VAE_STUDY_WORKDIR": str(tmp_path / "workdir"),
           "PYTHONPATH": str(REPO)}
    env.pop("DSPRITES_PATH", None)
    return env


def data_file(tmp_path: Path) -> Path:
    data = SHARED_DATA / "dsprites_downsampled.npz"
    return data if data.is_file() else write_dsprites_npz(tmp_path / "dsprites.npz", num=3000)


def journal_trials(s3_bucket, key: str, tmp_path: Path) -> list:
    """The Optuna trials of the journal stored at ``key`` (read the way a user would: download, load)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    local = tmp_path / "downloaded.journal"
    s3_bucket.client().download_file(s3_bucket.name, key, str(local))
    return optuna.load_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(str(local)))).trials


@pytest.mark.slow
def test_a_study_on_s3_lives_in_the_bucket_is_read_from_it_and_reruns_as_a_noop(s3_bucket, s3_env, tmp_path):
    from analysis.results import load_epochs, load_info, load_trials

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    storage = f"{s3_bucket.uri}/studies"
    cmd = s3_cmd(storage, f"dataset.path={data_file(tmp_path)}")

    first = run(cmd, s3_env, cwd)

    assert first.returncode == 0, fail_text(first)
    assert list(cwd.iterdir()) == [], "nothing is written to the current directory"
    home = tmp_path / "home"
    written = [p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()]
    assert all(p.startswith((".ray/", ".cache/matplotlib/", ".config/matplotlib/")) for p in written), written
    keys = s3_bucket.keys("studies/smoke/")
    for name in ("spec.json", "data.json", "trials.parquet", "epochs.parquet", "optuna.journal", "report/index.md",
                 "report/index.html", "report/tradeoff.png", "report/traversals.png", "tuner.pkl"):
        assert f"studies/smoke/{name}" in keys, name
    assert sum(k.endswith("/checkpoint.pt") for k in keys) == 2
    assert sum(k.startswith("studies/smoke/trial_status/") for k in keys) == 3  # two trials and current.json
    location = f"{storage}/smoke"
    trials = load_trials(location)
    assert sorted(trials["beta"]) == [1, 4] and set(trials["status"]) == {"TERMINATED"}
    assert all(path.startswith(f"{location}/") for path in trials["checkpoint_path"])
    assert len(load_epochs(location)) == 2 and load_info(location).name == "smoke"
    complete = [t for t in journal_trials(s3_bucket, "studies/smoke/optuna.journal", tmp_path)
                if t.state.name == "COMPLETE"]
    assert sorted(t.params["beta"] for t in complete) == [1, 4]
    by_beta = trials.set_index("beta")["mig"]
    assert all(t.value == pytest.approx(by_beta[t.params["beta"]]) for t in complete)

    rebuilt = subprocess.run([sys.executable, "-m", "study.results", location], cwd=cwd, env=s3_env,
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0 and rebuilt.stdout.split() == [f"{location}/trials.parquet",
                                                                 f"{location}/epochs.parquet"], fail_text(rebuilt)
    out = tmp_path / "report_here"
    report = subprocess.run([sys.executable, "-m", "analysis.report", location, "--out", str(out)], cwd=cwd,
                            env=s3_env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, fail_text(report)
    assert (out / "index.html").is_file() and (out / "traversals.png").stat().st_size > 5_000

    again = run(cmd, s3_env, cwd)

    assert again.returncode == 0, fail_text(again)
    assert "trusted like code" in again.stdout and "resuming study smoke" in again.stdout
    assert sorted(load_trials(location)["trial_id"]) == sorted(trials["trial_id"]), "a finished study runs nothing"
    assert list(cwd.iterdir()) == []


@pytest.mark.slow
def test_resume_from_the_bucket_after_the_driver_was_killed(s3_bucket, s3_env, tmp_path):
    from analysis.results import load_epochs, load_trials

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    epochs = 3
    storage = f"{s3_bucket.uri}/studies"
    cmd = s3_cmd(storage, f"dataset.path={data_file(tmp_path)}", "search_space.beta.choices=[1,2,4]",
                 f"training.epochs={epochs}", "search.max_concurrent_trials=1")
    log = (tmp_path / "first.out").open("w")
    proc = subprocess.Popen(cmd, cwd=cwd, env=s3_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:  # kill once one trial has finished and the next has checkpointed an epoch
            statuses = [k for k in s3_bucket.keys("studies/smoke/trial_status/") if not k.endswith("current.json")]
            finished = [k for k in statuses if b"TERMINATED" in s3_bucket.client().get_object(
                Bucket=s3_bucket.name, Key=k)["Body"].read()]
            checkpoints = [k for k in s3_bucket.keys("studies/smoke/") if k.endswith("/checkpoint.pt")]
            if finished and len(checkpoints) >= 2:
                break
            assert proc.poll() is None, (tmp_path / "first.out").read_text()[-4000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.5)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    kill_ray(Path(s3_env["RAY_TMPDIR"]))

    resumed = run(cmd, s3_env, cwd)

    assert resumed.returncode == 0, fail_text(resumed)
    assert "resuming study smoke" in resumed.stdout
    location = f"{storage}/smoke"
    trials = load_trials(location)
    table = load_epochs(location)
    print("trials:", trials[["trial_id", "beta", "status", "epochs_run"]].to_dict("records"))
    print("epochs per trial:", table.groupby("trial_id")["epoch"].apply(list).to_dict())
    assert sorted(trials["beta"]) == [1, 2, 4] and set(trials["status"]) == {"TERMINATED"}
    assert (trials["epochs_run"] == epochs).all()
    assert not table.duplicated(["trial_id", "epoch"]).any()
    assert table.groupby("trial_id")["epoch"].apply(sorted).map(lambda e: e == [1, 2, 3]).all()
    complete = [t for t in journal_trials(s3_bucket, "studies/smoke/optuna.journal", tmp_path)
                if t.state.name == "COMPLETE"]
    assert sorted(t.params["beta"] for t in complete) == [1, 2, 4]
    assert list(cwd.iterdir()) == []


# ---- bad storage, refused before Ray ---------------------------------------------------------------


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray fails the test."""
    import study.tuning

    def tripwire(*args, **kwargs):
        raise AssertionError("Ray was started for bad storage")

    monkeypatch.setattr(study.tuning, "init_ray", tripwire)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def refuse(capsys, storage: str, data: Path, *fragments: str, field: str = "storage_path") -> None:
    """``study.run`` in-process: exit 2 and one ``error: <field>...`` line holding ``fragments``."""
    import study.run

    code = study.run.main([SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={data}"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {field}"), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_unknown_schemes_and_missing_packages_are_refused(capsys, no_ray, tmp_path):
    data = data_file(tmp_path)
    refuse(capsys, "nosuch://bucket/studies", data, "unknown storage scheme nosuch://")
    if "huggingface_hub" not in sys.modules:
        refuse(capsys, "hf://datasets/someone/studies", data, "pip install huggingface_hub")


def test_a_missing_bucket_is_refused_and_nothing_is_written(capsys, no_ray, s3_bucket, tmp_path):
    refuse(capsys, "s3://vae-no-such-bucket/studies", data_file(tmp_path), "no such bucket")
    refuse(capsys, f"{s3_bucket.uri}/studies", tmp_path / "missing.npz", field="dataset.path")  # before the probe
    assert s3_bucket.keys() == []


def test_an_endpoint_that_does_not_answer_is_refused_within_seconds(capsys, no_ray, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    started = time.monotonic()
    refuse(capsys, f"{s3_bucket.uri}/studies", data_file(tmp_path), "cannot connect to the storage endpoint")
    assert time.monotonic() - started < 30


@pytest.fixture
def auth_server(tmp_path):
    """A moto server that checks credentials after its first request (which makes the bucket)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_refused_credentials_are_refused(capsys, no_ray, s3_bucket, auth_server, monkeypatch, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=auth_server, region_name="us-east-1").create_bucket(Bucket="vae-locked")
    monkeypatch.setenv("AWS_ENDPOINT_URL", auth_server)
    refuse(capsys, "s3://vae-locked/studies", data_file(tmp_path), "access key is not known")
