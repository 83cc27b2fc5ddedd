"""Several trials on one GPU: fractional ``gpus_per_trial`` tested with a logical GPU (Ray counts
it; torch here has no CUDA, so the trials opt in to ``resources.cpu_fallback`` explicitly), and the
one-line failure of a trial that asked for a GPU where torch has none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import REPO, dsprites_data, subprocess_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour with logical GPUs")]

TINY = ["dataset.limit=800", "family.filters=[4, 4, 4, 4]", "family.hidden_dim=8", "evaluation.metrics=[]",
        "objective.metric=val_elbo", "evaluation.snapshot_samples=0"]


def run(tmp_path: Path, *sets: str) -> subprocess.CompletedProcess:
    data = dsprites_data(tmp_path, num=1000)
    env = subprocess_env("rg")
    cmd = [sys.executable, "-m", "study.run", "configs/smoke.yaml", "--num-cpus", "2", "--num-gpus", "1",
           "--no-report", "--set", f"storage_path={tmp_path / 'studies'}", "--set", f"dataset.path={data}"]
    for item in [*TINY, *sets]:
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_four_trials_share_one_gpu_at_once(tmp_path):
    proc = run(tmp_path, "search_space.beta.choices=[1, 2, 4, 8]", "resources.gpus_per_trial=0.25",
               "resources.cpus_per_trial=0.5", "resources.cpu_fallback=true", "training.epochs=3")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "studies" / "smoke" / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"}
    assert set(trials["gpu_ids"]) == {"0"}  # each trial saw the GPU Ray gave it
    assert set(trials["device"]) == {"cpu"}  # opted in: no CUDA in this torch
    started, ended = pd.to_datetime(trials["started_at"]), pd.to_datetime(trials["ended_at"])
    assert started.max() < ended.min(), trials[["trial_id", "started_at", "ended_at"]]  # all four at once


def test_a_gpu_trial_without_cuda_is_refused_before_ray_in_one_line(tmp_path):
    proc = run(tmp_path, "search_space.beta.choices=[1]", "resources.gpus_per_trial=0.5", "training.epochs=1")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    (error,) = proc.stderr.strip().splitlines()
    assert error.startswith("error: resources.gpus_per_trial:"), error
    assert "has no CUDA" in error and "resources.cpu_fallback" in error, error
    assert not (tmp_path / "studies").exists() and "Traceback" not in proc.stderr


def test_an_fp16_trial_that_falls_back_to_the_cpu_fails_in_one_line(tmp_path):
    """The spec lets fp16 through for a trial that asks for a GPU; falling back to the CPU, the trial
    meets the CPU's fp16 refusal when it starts (trainables.precision.resolve_precision)."""
    proc = run(tmp_path, "search_space.beta.choices=[1]", "resources.gpus_per_trial=0.5", "resources.cpu_fallback=true",
               "training.precision=fp16", "training.epochs=1")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "studies" / "smoke" / "trials.parquet")
    (error,) = trials["error"]
    assert "training.precision: this trial trains on the CPU, but fp16 trains on CUDA GPUs only" in error, error
    assert "1 trial(s) errored" in proc.stderr.splitlines()[-1]
