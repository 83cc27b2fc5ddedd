"""Fault tolerance of ``python -m study.run``: a killed driver, a killed worker, a NaN loss, a bad resource ask.

Each test runs real studies in subprocesses on a tiny smoke config. Every subprocess gets its own
short ``RAY_TMPDIR``; whatever Ray processes are left behind (a SIGKILLed driver leaves its
GCS, raylet and workers running) are found by that path in their command line or environment
and killed, on failure too, so concurrent Ray instances of other tests are left alone.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, SHARED_DATA, write_dsprites_npz

pytestmark = pytest.mark.slow

SMOKE = "configs/smoke.yaml"
TINY = ["dataset.limit=1500", "evaluation.num_train=300"]
STUDY_TIMEOUT_S = 600
_counter = itertools.count()


def _ray_pids(ray_tmp: Path) -> list[int]:
    """Processes (other than this one) whose command line or ``RAY_TMPDIR`` names ``ray_tmp``."""
    marker = str(ray_tmp).encode()
    env_marker = b"RAY_TMPDIR=" + marker + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes() + b"\0"
        except OSError:  # gone, or not ours
            continue
        if marker + b"/" in cmdline or cmdline.replace(b"\0", b" ").endswith(marker) or env_marker in environ:
            found.append(int(entry.name))
    return found


def kill_ray(ray_tmp: Path, timeout_s: float = 30.0) -> list[int]:
    """SIGKILLs every process left from the Ray instance under ``ray_tmp``; returns their pids."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        pids = _ray_pids(ray_tmp)
        if not pids:
            return sorted(killed)
        if time.monotonic() > deadline:
            raise AssertionError(f"Ray processes under {ray_tmp} survived SIGKILL: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


@pytest.fixture
def study_env(tmp_path):
    """Environment for a ``study.run`` subprocess, with its own short RAY_TMPDIR (cleaned up afterwards)."""
    data = SHARED_DATA / "dsprites_downsampled.npz"
    if not data.is_file():
        data = write_dsprites_npz(tmp_path / "dsprites.npz", num=3000)
    ray_tmp = Path("/tmp") / f"rf{os.getpid()}_{next(_counter)}"
    ray_tmp.mkdir(exist_ok=True)
    env = {**os.environ, "DSPRITES_PATH": str(data), "RAY_TMPDIR": str(ray_tmp),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1",
           "VAE_STUDY_CACHE": str(tmp_path / "cache")}
    for name in ("RAY_ADDRESS", "VAE_STUDY_FAULT"):
        env.pop(name, None)
    try:
        yield env
    finally:
        kill_ray(ray_tmp)
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)


def study_cmd(storage: Path, *overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "study.run", SMOKE, "--num-cpus", "2", *flags, "--set", f"storage_path={storage}"]
    for item in [*TINY, *overrides]:
        cmd += ["--set", item]
    return cmd


def run_study(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=STUDY_TIMEOUT_S)
    kill_ray(Path(env["RAY_TMPDIR"]))  # a clean exit leaves nothing; this makes sure
    return proc


def fail_text(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def result_lines(study_dir: Path) -> dict[str, list[dict]]:
    """Each trial's reported results (its ``result.json`` lines), keyed by trial id."""
    out: dict[str, list[dict]] = {}
    for path in sorted(study_dir.glob("*/result.json")):
        lines = []
        for raw in path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:  # a line being written
                break
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def raw_results(study_dir: Path) -> dict[str, str]:
    """Each trial's ``result.json`` text, keyed by trial id."""
    out = {}
    for path in study_dir.glob("*/result.json"):
        text = path.read_text()
        if text.strip():
            out[json.loads(text.splitlines()[0])["trial_id"]] = text
    return out


def last_checkpoint_epoch(study_dir: Path, trial_id: str) -> int | None:
    """The epoch saved in the newest checkpoint in the trial's directory."""
    from trainables.checkpoint import load_checkpoint

    (trial_dir,) = [p.parent for p in study_dir.glob("*/result.json") if trial_id in p.parent.name]
    checkpoints = sorted(trial_dir.glob("checkpoint_*/checkpoint.pt"))
    return int(load_checkpoint(checkpoints[-1].parent)["epoch"]) if checkpoints else None


def epochs_of(lines: list[dict]) -> list[int]:
    return [int(r["epoch"]) for r in lines if "epoch" in r]


def test_resume_after_killed_driver(tmp_path, study_env):
    epochs = 3
    storage = tmp_path / "studies"
    study_dir = storage / "smoke"
    cmd = study_cmd(storage, "search_space.beta.choices=[1,2,4,8]", f"training.epochs={epochs}",
                    "search.max_concurrent_trials=1")
    log = (tmp_path / "first.out").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=study_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        while True:
            results = result_lines(study_dir) if study_dir.is_dir() else {}
            done = {t for t, lines in results.items() if epochs in epochs_of(lines)}
            running = {t for t, lines in results.items() if t not in done and epochs_of(lines)}
            if done and running:
                break
            if proc.poll() is not None:
                output = (tmp_path / "first.out").read_text()[-5000:]
                pytest.fail(f"the study ended before it could be killed:\n{output}")
            assert time.monotonic() < deadline, "no trial finished within the time limit"
            time.sleep(0.1)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    killed = kill_ray(Path(study_env["RAY_TMPDIR"]))
    before = result_lines(study_dir)
    before_raw = raw_results(study_dir)
    done = {t for t, lines in before.items() if epochs in epochs_of(lines)}
    interrupted = {t for t, lines in before.items() if t not in done}
    checkpointed = {t: last_checkpoint_epoch(study_dir, t) for t in interrupted}
    print(f"\nbefore the kill: {len(done)} trial(s) completed, epochs reported per trial "
          f"{ {t: epochs_of(lines) for t, lines in sorted(before.items())} }, "
          f"last checkpointed epoch of the unfinished {checkpointed}; killed {len(killed)} Ray process(es)")

    resumed = run_study(cmd, study_env)

    assert resumed.returncode == 0, fail_text(resumed)
    assert "resuming study smoke" in resumed.stdout, resumed.stdout[-3000:]
    after = result_lines(study_dir)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    table = pd.read_parquet(study_dir / "epochs.parquet")
    print(f"after resume: epochs reported per trial { {t: epochs_of(lines) for t, lines in sorted(after.items())} }")
    print("trials.parquet:", trials[["trial_id", "beta", "status", "epochs_run"]].to_dict("records"))
    print("epochs.parquet rows per trial:", table.groupby("trial_id")["epoch"].apply(list).to_dict())

    assert len(trials) == 4 and trials["trial_id"].nunique() == 4, trials[["trial_id", "beta", "status"]]
    assert sorted(trials["beta"]) == [1, 2, 4, 8]
    assert set(trials["status"]) == {"TERMINATED"}, trials[["trial_id", "status", "error"]]
    assert (trials["epochs_run"] == epochs).all()
    by_id = trials.set_index("trial_id")
    for trial_id in done:
        assert trial_id in by_id.index, f"completed trial {trial_id} lost on resume"
        assert raw_results(study_dir)[trial_id] == before_raw[trial_id], f"completed trial {trial_id} was run again"
        final = before[trial_id][-1]
        for metric in ("mig", "val_elbo", "val_recon_loss", "val_kl"):
            assert by_id.loc[trial_id, metric] == final[metric], (trial_id, metric)
    assert not table.duplicated(["trial_id", "epoch"]).any(), table[table.duplicated(["trial_id", "epoch"], keep=False)]
    assert table.groupby("trial_id")["epoch"].apply(sorted).map(lambda e: e == list(range(1, epochs + 1))).all()
    assert set(table["trial_id"]) == set(trials["trial_id"])
    # The Optuna journal survived the kill: the resumed study continued the same Optuna study, each
    # configuration told once, with the value the table holds.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = optuna.load_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(
        str(study_dir / "optuna.journal"))))
    complete = [t for t in journal.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print("journal:", [(t.number, t.state.name, t.params, t.value) for t in journal.trials])
    assert sorted(t.params["beta"] for t in complete) == [1, 2, 4, 8]
    by_beta = trials.set_index("beta")["mig"]
    for t in complete:
        assert t.value == pytest.approx(by_beta[t.params["beta"]], rel=1e-9)
    for trial_id in interrupted:
        old, new = epochs_of(before[trial_id]), epochs_of(after[trial_id])
        assert new[: len(old)] == old and new == list(range(1, epochs + 1)), (trial_id, old, new)
        if old:
            # Every epoch reports with its checkpoint, so the last reported epoch is the last checkpointed one
            # (a checkpoint written just before the kill may be one epoch ahead of result.json).
            assert checkpointed[trial_id] is not None and checkpointed[trial_id] >= old[-1], (trial_id, checkpointed)
            assert raw_results(study_dir)[trial_id].startswith(before_raw[trial_id])
            assert new[len(old)] == old[-1] + 1, (trial_id, old, new)


def test_killed_worker_restarts_from_checkpoint(tmp_path, study_env):
    storage = tmp_path / "studies"
    env = {**study_env, "VAE_STUDY_FAULT": "kill:beta=4:1"}
    cmd = study_cmd(storage, "search_space.beta.choices=[1,4]", "training.epochs=2", "training.max_failures=1")

    proc = run_study(cmd, env)

    assert proc.returncode == 0, fail_text(proc)
    study_dir = storage / "smoke"
    trials = pd.read_parquet(study_dir / "trials.parquet")
    table = pd.read_parquet(study_dir / "epochs.parquet")
    assert sorted(trials["beta"]) == [1, 4]
    assert set(trials["status"]) == {"TERMINATED"}, trials[["trial_id", "status", "error"]]
    assert (trials["epochs_run"] == 2).all()
    (hit,) = trials.loc[trials["beta"] == 4, "trial_id"]
    assert sorted(table.loc[table["trial_id"] == hit, "epoch"]) == [1, 2]
    assert epochs_of(result_lines(study_dir)[hit]) == [1, 2]


def test_nan_loss_errors_the_trial_then_restart_errored(tmp_path, study_env):
    storage = tmp_path / "studies"
    study_dir = storage / "smoke"
    cmd = study_cmd(storage, "search_space.beta.choices=[1,4]", "training.epochs=1")

    proc = run_study(cmd, {**study_env, "VAE_STUDY_FAULT": "nan:beta=4:1"})

    assert proc.returncode == 1, fail_text(proc)  # a hole: the study ran, a trial errored
    trials = pd.read_parquet(study_dir / "trials.parquet").set_index("beta")
    assert trials.loc[1, "status"] == "TERMINATED"
    for metric in ("mig", "val_elbo", "train_loss"):
        assert math.isfinite(trials.loc[1, metric]), metric
    assert trials.loc[4, "status"] == "ERROR"
    error = trials.loc[4, "error"]
    assert "FloatingPointError" in error and "non-finite" in error, error
    summary = [line for line in proc.stderr.splitlines() if "left holes" in line]
    assert len(summary) == 1 and "1 trial(s) errored" in summary[0], proc.stderr
    assert (study_dir / "report" / "index.md").is_file()
    healthy = trials.loc[1, "trial_id"]
    healthy_results = raw_results(study_dir)[healthy]

    rerun = run_study(study_cmd(storage, "search_space.beta.choices=[1,4]", "training.epochs=1",
                                flags=("--restart-errored",)), study_env)

    assert rerun.returncode == 0, fail_text(rerun)
    assert "resuming study smoke" in rerun.stdout
    again = pd.read_parquet(study_dir / "trials.parquet").set_index("beta")
    assert len(again) == 2
    assert set(again["status"]) == {"TERMINATED"}, again[["trial_id", "status", "error"]]
    # Tune restarts an errored trial as a new trial (Trial.reset(): a new trial_id) that replaces the old one.
    assert again.loc[1, "trial_id"] == trials.loc[1, "trial_id"]
    assert pd.isna(again.loc[4, "error"]) and math.isfinite(again.loc[4, "mig"])
    table = pd.read_parquet(study_dir / "epochs.parquet")
    assert sorted(table.loc[table["trial_id"] == again.loc[4, "trial_id"], "epoch"]) == [1]
    assert not table.duplicated(["trial_id", "epoch"]).any()
    assert raw_results(study_dir)[healthy] == healthy_results  # the finished trial was not run again


def _too_many_gpus(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A study asking for a GPU per trial on this GPU-less machine: caught after Ray starts."""
    storage = tmp_path / "studies"
    proc = run_study(study_cmd(storage, "resources.gpus_per_trial=1"), env)
    assert not (storage / "smoke").exists()  # nothing written (the test itself deletes nothing)
    return proc


def test_more_gpus_than_the_cluster_has(tmp_path, study_env):
    proc = _too_many_gpus(tmp_path, study_env)

    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, fail_text(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: resources.gpus_per_trial: "), errors[0]
    assert proc.stderr.splitlines()[-1] == errors[0]


def test_more_gpus_than_the_cluster_has_one_stderr_line(tmp_path, study_env):
    proc = _too_many_gpus(tmp_path, study_env)

    assert proc.returncode == 2, fail_text(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: resources.gpus_per_trial: "), lines[0]


def test_ctrl_c_exits_130_and_the_same_command_resumes(tmp_path, study_env):
    storage = tmp_path / "studies"
    study_dir = storage / "smoke"
    cmd = study_cmd(storage, "search_space.beta.choices=[1,2,4]", "training.epochs=2",
                    "search.max_concurrent_trials=1")
    log = (tmp_path / "first.out").open("w")
    errors = tmp_path / "first.err"
    with errors.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=study_env, stdout=log, stderr=err)
        try:
            deadline = time.monotonic() + STUDY_TIMEOUT_S
            while not any(epochs_of(lines) for lines in (result_lines(study_dir) if study_dir.is_dir() else {}).values()):
                assert proc.poll() is None, (tmp_path / "first.out").read_text()[-3000:]
                assert time.monotonic() < deadline, "no trial reported within the time limit"
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            code = proc.wait(timeout=STUDY_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            log.close()
    kill_ray(Path(study_env["RAY_TMPDIR"]))
    stderr = errors.read_text()
    assert code == 130, f"exit {code}\n{(tmp_path / 'first.out').read_text()[-3000:]}\n{stderr[-3000:]}"
    assert "interrupted: run the same command to resume" in stderr, stderr[-3000:]
    assert "finished" not in (tmp_path / "first.out").read_text().splitlines()[-1]

    resumed = run_study(cmd, study_env)

    assert resumed.returncode == 0, fail_text(resumed)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert sorted(trials["beta"]) == [1, 2, 4] and set(trials["status"]) == {"TERMINATED"}
