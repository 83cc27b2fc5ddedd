"""No study lost to a second driver or a signal: one driver per study, SIGTERM like Ctrl-C, a second
signal exits at once, and the local Ray goes with its driver (SIGKILL included)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.study.test_faults import _ray_pids, fail_text, kill_ray, run_study, study_cmd, study_env  # noqa: F401

pytestmark = pytest.mark.slow


def start(cmd: list[str], env: dict[str, str], out: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out.open("w"), stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(study_dir: Path, proc: subprocess.Popen, index: int = 1, timeout_s: float = 600) -> None:
    """Until some trial has written checkpoint ``index`` (epoch ``index + 1``)."""
    deadline = time.monotonic() + timeout_s
    while not list(study_dir.glob(f"*/checkpoint_{index:06d}")):
        assert proc.poll() is None, f"the study ended first: {proc.returncode}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)


def seconds_until_ray_is_gone(ray_tmp: Path, limit_s: float = 60) -> float:
    started = time.monotonic()
    while _ray_pids(ray_tmp):
        assert time.monotonic() - started < limit_s, f"Ray processes still run: {_ray_pids(ray_tmp)}"
        time.sleep(0.2)
    return time.monotonic() - started


def test_two_drivers_on_one_study_one_runs_one_is_refused(tmp_path, study_env):
    storage = tmp_path / "studies"
    cmd = study_cmd(storage, "search_space.beta.choices=[1,4]", "training.epochs=2")
    other = {**study_env, "RAY_TMPDIR": study_env["RAY_TMPDIR"] + "b"}
    Path(other["RAY_TMPDIR"]).mkdir(exist_ok=True)
    first = start(cmd, study_env, tmp_path / "first.out")
    time.sleep(1)
    second = start(cmd, other, tmp_path / "second.out")
    try:
        codes = sorted([first.wait(timeout=600), second.wait(timeout=600)])
        errors = {p.returncode: p.stderr.read() for p in (first, second)}
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
        kill_ray(Path(other["RAY_TMPDIR"]))
    assert codes == [0, 2], errors
    refusal = errors[2].strip().splitlines()
    assert len(refusal) == 1 and "in use by study.run (pid" in refusal[0], refusal
    trials = pd.read_parquet(storage / "smoke" / "trials.parquet")
    assert sorted(trials["beta"]) == [1, 4] and set(trials["status"]) == {"TERMINATED"}
    assert not (storage / "smoke" / ".vae-study.lock").exists()


def test_sigterm_stops_the_study_like_ctrl_c_and_the_same_command_completes_the_grid(tmp_path, study_env):
    storage = tmp_path / "studies"
    study_dir = storage / "smoke"
    cmd = study_cmd(storage, "search_space.beta.choices=[1,4]", "search.repeats=2", "training.epochs=4",
                    "search.max_concurrent_trials=1")
    proc = start(cmd, study_env, tmp_path / "first.out")
    wait_for_checkpoint(study_dir, proc)
    proc.terminate()  # SIGTERM, as Kubernetes, Slurm and pre-emption send it
    code = proc.wait(timeout=120)
    stderr = proc.stderr.read()
    gone = seconds_until_ray_is_gone(Path(study_env["RAY_TMPDIR"]))
    print(f"\nSIGTERM: exit {code}; Ray gone {gone:.1f} s later")
    assert code == 143, stderr[-3000:]
    assert any(line.startswith("interrupted: run the same command to resume") for line in stderr.splitlines())
    assert "Traceback" not in stderr
    interrupted = pd.read_parquet(study_dir / "trials.parquet")  # the tables of what finished were written
    assert "INCOMPLETE" in set(interrupted["status"])

    resumed = run_study(cmd, study_env)

    assert resumed.returncode == 0, fail_text(resumed)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    epochs = pd.read_parquet(study_dir / "epochs.parquet")
    # every grid point exactly `repeats` times, each trial once, every epoch once
    assert trials.groupby("beta")["repeat"].apply(sorted).to_dict() == {1: [0, 1], 4: [0, 1]}
    assert set(trials["status"]) == {"TERMINATED"} and trials["trial_id"].nunique() == 4
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 4 * 4


def test_a_second_signal_exits_at_once_without_a_traceback(tmp_path, study_env):
    storage = tmp_path / "studies"
    cmd = study_cmd(storage, "search_space.beta.choices=[1,4]", "training.epochs=6", "search.max_concurrent_trials=1")
    proc = start(cmd, study_env, tmp_path / "first.out")
    wait_for_checkpoint(storage / "smoke", proc)
    proc.send_signal(2)
    time.sleep(1)
    sent = time.monotonic()
    proc.send_signal(2)
    code = proc.wait(timeout=60)
    took = time.monotonic() - sent
    stderr = proc.stderr.read()
    gone = seconds_until_ray_is_gone(Path(study_env["RAY_TMPDIR"]))
    print(f"\ntwo SIGINTs 1 s apart: exit {code} {took:.1f} s after the second; Ray gone {gone:.1f} s later")
    assert code == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert any(line.startswith("interrupted: run the same command to resume") for line in stderr.splitlines())
    assert gone < 30


def test_the_local_ray_ends_with_a_killed_driver(tmp_path, study_env):
    storage = tmp_path / "studies"
    cmd = study_cmd(storage, "training.epochs=6")
    proc = start(cmd, study_env, tmp_path / "first.out")
    wait_for_checkpoint(storage / "smoke", proc)
    assert _ray_pids(Path(study_env["RAY_TMPDIR"]))
    proc.kill()
    proc.wait(timeout=30)
    gone = seconds_until_ray_is_gone(Path(study_env["RAY_TMPDIR"]))
    print(f"\nSIGKILL of the driver: every process of its Ray gone {gone:.1f} s later")
    assert gone < 30


def test_an_address_where_no_cluster_answers_is_refused_within_seconds(tmp_path, study_env):
    started = time.monotonic()
    proc = subprocess.run([*study_cmd(tmp_path / "studies"), "--address", "127.0.0.1:1"], cwd=REPO, env=study_env,
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 2 and took < 30, (took, proc.stderr)
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "no Ray cluster answers" in proc.stderr
    assert not (tmp_path / "studies").exists()
