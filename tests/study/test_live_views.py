"""The study seen live: its Optuna journal through optuna-dashboard's API, and its TensorBoard files."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, dsprites_data, subprocess_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repeated_study(tmp_path_factory) -> Path:
    """The smoke study with two seeds per configuration (4 trials)."""
    tmp = tmp_path_factory.mktemp("live")
    data = dsprites_data(tmp)
    env = subprocess_env("rlv")
    cmd = [sys.executable, "-m", "study.run", "configs/smoke.yaml", "--num-cpus", "2", "--no-report",
           "--set", f"storage_path={tmp / 'studies'}", "--set", f"dataset.path={data}", "--set", "search.repeats=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return tmp / "studies" / "smoke"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_optuna_dashboard_shows_the_trials_of_the_table(repeated_study):
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    if not dashboard.exists():
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[viz]')")
    port = free_port()
    server = subprocess.Popen([str(dashboard), str(repeated_study / "optuna.journal"), "--host", "127.0.0.1",
                               "--port", str(port), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        (summary,) = get_json(f"http://127.0.0.1:{port}/api/studies", deadline)["study_summaries"]
        assert summary["study_name"] == "smoke" and summary["directions"] == ["maximize"]
        study = get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0", deadline)
    finally:
        server.terminate()
        server.wait(timeout=30)
    seen = {}
    for trial in study["trials"]:
        assert trial["state"] == "Complete"
        (param,) = trial["params"]
        seen[float(param["param_external_value"])] = trial["values"][0]
    trials = pd.read_parquet(repeated_study / "trials.parquet")
    means = trials.groupby("beta")["mig"].mean()  # one Optuna trial per configuration: the mean over repeats
    assert sorted(seen) == sorted(float(b) for b in means.index)  # each configuration once, none doubled
    for beta, value in seen.items():
        assert value == pytest.approx(means[beta], rel=1e-9)


def scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalar summaries of a TensorBoard event file: tag -> [(step, value)]."""
    from tensorboardX.proto import event_pb2

    data, out, i = path.read_bytes(), {}, 0
    while i < len(data):
        (length,) = struct.unpack("Q", data[i : i + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12 : i + 12 + length])
        i += 12 + length + 4
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_curves_are_named_as_the_epochs_table(repeated_study):
    epochs = pd.read_parquet(repeated_study / "epochs.parquet")
    for trial_dir in repeated_study.glob("train_driver_fn_*"):
        (events,) = trial_dir.glob("events.out.tfevents.*")
        tags = scalars(events)
        trial_id = trial_dir.name.split("_")[3]
        rows = epochs[epochs["trial_id"] == trial_id]
        for metric in ("train_loss", "val_elbo", "val_kl", "mig"):
            assert [step for step, _ in tags[metric]] == list(rows["epoch"]), metric  # the epoch is the step
            assert tags[metric][-1][1] == pytest.approx(rows[metric].iloc[-1], rel=1e-5)
        assert "_hparams_/session_start_info" in tags  # hyperparameters in the HParams plugin
        assert not any(tag.startswith("ray/tune/") for tag in tags)
