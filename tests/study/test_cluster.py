"""A study on a Ray cluster: submitted with ``ray job submit``, and spread over two nodes.

Every cluster here is local and on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the
dashboard on 127.0.0.1), writes under its own short ``RAY_TMPDIR`` and a temporary ``HOME``
(``ray start`` writes its auth token to ``~/.ray``), and is stopped in a ``finally``. It is
stopped by process id, never with ``ray stop``: that kills every Ray process of the user on
the machine, other people's clusters included.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, SHARED_DATA, write_dsprites_npz

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while choosing)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _pids_under(path: Path) -> list[int]:
    """Processes of the cluster whose RAY_TMPDIR is ``path``, and all their descendants.

    A Ray process names ``path`` in its command line or carries ``RAY_TMPDIR=path`` in its
    environment (inherited from ``ray start``); dashboard modules rename themselves
    (setproctitle), which hides both, so descendants of those processes count too.
    """
    import psutil

    roots = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        if proc.pid == os.getpid():
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        environ = proc.info["environ"] or {}
        if str(path) in cmdline or environ.get("RAY_TMPDIR") == str(path):
            roots.append(proc)
    pids = {p.pid for p in roots}
    for proc in roots:
        try:
            pids.update(child.pid for child in proc.children(recursive=True))
        except psutil.Error:
            pass
    pids.discard(os.getpid())
    return sorted(pids)


def _stop_processes_under(path: Path, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, the processes of the cluster whose temporary directory is ``path``.

    Not ``ray stop``: that ends every Ray process of the user on the machine.
    """
    import psutil

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_under(path)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=grace_s)


def _data_file(tmp: Path) -> Path:
    data = SHARED_DATA / "dsprites_downsampled.npz"
    return data if data.is_file() else write_dsprites_npz(tmp / "dsprites.npz", num=3000)


def _base_env(home: Path, ray_tmp: Path, data: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(home), "RAY_TMPDIR": str(ray_tmp), "DSPRITES_PATH": str(data),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_DISABLE_USAGE_STATS": "1", "PYTHONUNBUFFERED": "1",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def short_tmp():
    """A short directory under /tmp (Ray's socket paths must stay under about 107 characters)."""
    path = Path("/tmp") / f"rc{os.getpid()}_{time.monotonic_ns() % 10**6}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_head(tmp_path, short_tmp):
    """A head started with ``ray start --head`` on loopback (2 CPUs); yields its address and env."""
    ray_tmp = short_tmp
    home = tmp_path / "home"
    home.mkdir()
    env = _base_env(home, ray_tmp, _data_file(tmp_path))
    gcs, dashboard, client, agent_http, agent_grpc, metrics = _free_ports(6)
    cmd = ["ray", "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={ray_tmp}"]
    try:
        # `ray start` turns token authentication on only when a token already exists (ray.init()
        # of a new local cluster makes one; `ray start` does not): make it first, in the temporary HOME.
        token = subprocess.run(["ray", "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                               timeout=120)
        assert token.returncode == 0, token.stderr[-2000:]
        assert (home / ".ray" / "auth_token").is_file()
        env["RAY_AUTH_MODE"] = "token"
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield {"dashboard": f"http://127.0.0.1:{dashboard}", "gcs": f"127.0.0.1:{gcs}", "env": env,
               "ray_tmp": ray_tmp, "home": home}
    finally:
        _stop_processes_under(ray_tmp)
    assert not _pids_under(ray_tmp), "processes of the head still run after stopping it"


def _listeners_not_on_loopback(pids: list[int]) -> list[str]:
    """Listening sockets of ``pids`` bound to anything but 127.0.0.1 (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    wanted = {str(p) for p in pids}
    bad = []
    for line in out.splitlines():
        owners = set(re.findall(r"pid=(\d+)", line))
        fields = line.split()
        local = fields[3] if len(fields) >= 4 else ""
        if owners & wanted and not local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")):
            bad.append(line)
    return bad


def test_job_submit_leaves_same_parquet_columns_as_local_run(ray_head, smoke_study, tmp_path):
    local_dir, _, _ = smoke_study
    env = ray_head["env"]
    storage = tmp_path / "studies"
    if shutil.which("ss"):
        assert not _listeners_not_on_loopback(_pids_under(ray_head["ray_tmp"]))
    # Without the token the job API refuses the client.
    stranger_home = tmp_path / "stranger"
    stranger_home.mkdir()
    stranger = {**env, "HOME": str(stranger_home)}
    stranger.pop("RAY_AUTH_MODE")
    refused = subprocess.run(["ray", "job", "list", "--address", ray_head["dashboard"]], env=stranger,
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0, refused.stdout[-2000:]

    submit = ["ray", "job", "submit", "--address", ray_head["dashboard"], "--working-dir", str(REPO),
              "--", "python", "-m", "study.run", "configs/smoke.yaml", "--set", f"storage_path={storage}"]
    proc = subprocess.run(submit, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    job_id = re.search(r"Job '([^']+)' submitted successfully", proc.stdout).group(1)
    status = subprocess.run(["ray", "job", "status", "--address", ray_head["dashboard"], job_id],
                            env=env, capture_output=True, text=True, timeout=120)
    assert f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr
    logs = subprocess.run(["ray", "job", "logs", "--address", ray_head["dashboard"], "--follow", job_id],
                          env=env, capture_output=True, text=True, timeout=120)
    assert "best trial by mig" in logs.stdout, logs.stdout[-3000:]

    job_trials = pd.read_parquet(storage / "smoke" / "trials.parquet")
    local_trials = pd.read_parquet(local_dir / "trials.parquet")
    assert list(job_trials.columns) == list(local_trials.columns)
    assert set(job_trials["status"]) == {"TERMINATED"}
    assert sorted(job_trials["beta"]) == sorted(local_trials["beta"])
    job_epochs = pd.read_parquet(storage / "smoke" / "epochs.parquet")
    local_epochs = pd.read_parquet(local_dir / "epochs.parquet")
    assert list(job_epochs.columns) == list(local_epochs.columns)
    # node-specific values: the job's trials ran on the head started above
    head_node_ids = set(job_epochs["node_id"])
    assert len(head_node_ids) == 1 and head_node_ids.isdisjoint(set(local_epochs["node_id"]))


@pytest.fixture
def two_node_cluster(ray_tmpdir, tmp_path, monkeypatch):
    """A head and one worker node (1 CPU each) on loopback, in this process; shut down after."""
    from ray.cluster_utils import Cluster

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # an earlier ray.init() in this process sets it
    gcs, agent_head = _free_ports(2)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "gcs_server_port": gcs, "include_dashboard": False, "dashboard_agent_listen_port": agent_head,
        })
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster, home
    finally:
        if cluster is not None:
            cluster.shutdown()
        _stop_processes_under(ray_tmpdir)
        leftover = _pids_under(ray_tmpdir)
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
    assert not leftover, "processes of the two-node cluster still run after shutting it down"


def test_two_nodes_each_train_a_trial(two_node_cluster, tmp_path, ray_tmpdir):
    cluster, home = two_node_cluster
    node_ids = {node.node_id for node in cluster.list_all_nodes()}
    assert len(node_ids) == 2
    storage = tmp_path / "studies"
    env = _base_env(home, ray_tmpdir, _data_file(tmp_path))
    cmd = [sys.executable, "-m", "study.run", "configs/smoke.yaml", "--address", cluster.address,
           "--set", f"storage_path={storage}", "--set", "search.max_concurrent_trials=2", "--no-report"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    trials = pd.read_parquet(storage / "smoke" / "trials.parquet")
    epochs = pd.read_parquet(storage / "smoke" / "epochs.parquet")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}
    # one trial per node: each node's CPU holds one trial, and the data reached both
    assert set(trials["node_id"]) == node_ids
    assert set(epochs["node_id"]) == node_ids
    assert (trials["train_rows"] > 0).all() and (epochs["train_rows"] > 0).all()


def _checkpoints_by_trial(bucket, prefix: str) -> dict[str, list[tuple[int, str]]]:
    """Trial directory -> ``[(checkpoint index, node id that wrote it), ...]`` from the bucket's ``trial.json``s
    (Tune keeps the last checkpoint only: index N is epoch N + 1)."""
    import json

    found: dict[str, list[tuple[int, str]]] = {}
    for key in bucket.keys(prefix):
        parts = key.split("/")
        if parts[-1] != "trial.json" or not parts[-2].startswith("checkpoint_"):
            continue
        try:
            stamp = json.loads(bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read())["provenance"]
        except bucket.client().exceptions.NoSuchKey:  # an older checkpoint deleted since the listing
            continue
        found.setdefault(parts[-3], []).append((int(parts[-2].split("_")[1]), stamp["node_id"]))
    return {name: sorted(items) for name, items in found.items()}


def test_a_lost_node_resumes_its_trial_from_its_checkpoint_in_the_bucket(two_node_cluster, s3_bucket, tmp_path,
                                                                         ray_tmpdir):
    """The worker node is removed while its trial trains; the trial restarts from its last checkpoint
    (in the bucket) on a fresh node, the study completes, and the tables hold one row per trial and epoch."""
    from analysis.results import load_epochs, load_trials

    cluster, home = two_node_cluster
    head_id = cluster.head_node.node_id
    worker = next(node for node in cluster.list_all_nodes() if node.node_id != head_id)
    epochs = 8
    storage = f"{s3_bucket.uri}/studies"
    env = {**_base_env(home, ray_tmpdir, _data_file(tmp_path)), **s3_bucket.env,
           "VAE_STUDY_WORKDIR": str(tmp_path / "workdir")}
    cmd = [sys.executable, "-m", "study.run", "configs/smoke.yaml", "--address", cluster.address, "--no-report",
           "--set", f"storage_path={storage}", "--set", "search.max_concurrent_trials=2", "--set",
           f"training.epochs={epochs}", "--set", "training.max_failures=2", "--set", "dataset.limit=1500",
           "--set", "evaluation.num_train=300"]
    log = (tmp_path / "study.out").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while True:  # remove the worker once its trial has checkpointed two epochs
            on_worker = {name: items[-1][0] + 1 for name, items in _checkpoints_by_trial(
                s3_bucket, "studies/smoke/").items() if items and items[-1][1] == worker.node_id}
            if any(done >= 2 for done in on_worker.values()):
                break
            assert proc.poll() is None, (worker.node_id, _checkpoints_by_trial(s3_bucket, "studies/smoke/"))
            assert time.monotonic() < deadline, "no trial checkpointed on the worker node in time"
            time.sleep(0.2)
        (lost, before), = on_worker.items()
        cluster.remove_node(worker)
        cluster.add_node(num_cpus=1)
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "study.out").read_text()
    assert code == 0, output[-5000:]

    location = f"{storage}/smoke"
    trials = load_trials(location)
    table = load_epochs(location)
    after = _checkpoints_by_trial(s3_bucket, "studies/smoke/")
    lost_id = trials.loc[trials["checkpoint_path"].str.contains(lost, regex=False), "trial_id"].item()
    rows = table[table["trial_id"] == lost_id].sort_values("epoch")
    print(f"\nlost trial {lost_id} ({lost}): {before} epochs checkpointed when the node {worker.node_id[:8]} was "
          f"removed; epochs by node after the study: {list(zip(rows['epoch'], rows['node_id'].str[:8]))}; last "
          f"checkpoint: epoch {after[lost][-1][0] + 1} on {after[lost][-1][1][:8]}")
    assert set(trials["status"]) == {"TERMINATED"} and len(trials) == 2
    assert (trials["epochs_run"] == epochs).all()
    assert not table.duplicated(["trial_id", "epoch"]).any()
    assert table.groupby("trial_id")["epoch"].apply(sorted).map(lambda e: e == list(range(1, epochs + 1))).all()
    assert len(table) == 2 * epochs  # nothing lost, nothing doubled
    # Resumed from its checkpoint, not from scratch: the epochs after the loss ran elsewhere and
    # continue the numbering; the epochs before it keep the removed node's id. The newest checkpoint
    # in the bucket may not have reached the driver when the node went (uploaded, not yet reported),
    # so the trial resumes after it or, at most one epoch earlier, after the one before it.
    moved = rows.loc[rows["node_id"] != worker.node_id, "epoch"]
    resumed_at = int(moved.min())
    assert before >= 2 and before <= resumed_at <= before + 1, (resumed_at, before)
    assert set(rows.loc[rows["epoch"] < resumed_at, "node_id"]) == {worker.node_id}
    assert (moved == range(resumed_at, epochs + 1)).all()
    result_lines = s3_bucket.client().get_object(Bucket=s3_bucket.name, Key=f"studies/smoke/{lost}/result.json")[
        "Body"].read().decode().strip().splitlines()
    assert len(result_lines) == epochs, "a restart from scratch would have reported the early epochs again"
    # Every trial's files are in the bucket, whichever node trained it.
    keys = s3_bucket.keys("studies/smoke/")
    for trial_dir in {p.split("/")[0] for p in trials["checkpoint_path"].str.removeprefix(f"{location}/")}:
        for name in ("params.json", "result.json"):
            assert f"studies/smoke/{trial_dir}/{name}" in keys, (trial_dir, name)
        assert any(k.startswith(f"studies/smoke/{trial_dir}/checkpoint_") and k.endswith("checkpoint.pt") for k in keys)
