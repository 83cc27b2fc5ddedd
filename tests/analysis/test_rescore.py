"""``analysis.rescore``: metrics from saved checkpoints, written into trials.parquet, idempotent."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.rescore import rescore
from analysis.results import SPEC_FILE, TRIALS_FILE, StudyDir
from study.spec import StudySpec
from tests.conftest import REPO, write_dsprites_npz
from trainables.checkpoint import save_checkpoint
from trainables.trial import TrialConfig, build_model


@pytest.fixture
def study_dir(tmp_path):
    """A study directory as study.run leaves it: spec.json, trials.parquet, two checkpoints."""
    data = write_dsprites_npz(tmp_path / "dsprites.npz", num=400)
    spec_data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    spec_data["dataset"]["path"] = str(data)
    spec_data["storage_path"] = str(tmp_path)
    spec_data["evaluation"]["num_train"] = 300
    spec = StudySpec(**spec_data)
    study = tmp_path / "smoke"
    study.mkdir()
    (study / SPEC_FILE).write_text(spec.model_dump_json())
    rows = []
    for i, beta in enumerate([1.0, 4.0]):
        family_config, training = spec.trial_settings({"beta": beta})
        config = TrialConfig("conv_vae", family_config, training,
                             (1, 64, 64), seed=100 + i)
        model = build_model(config)
        ckpt = study / f"trial{i}" / "checkpoint_000000"
        ckpt.mkdir(parents=True)
        save_checkpoint(str(ckpt), model, [__import__("torch").optim.Adam(model.parameters())], 1, config, {})
        rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "beta": beta, "seed": 100 + i,
                     "checkpoint_path": str(ckpt), "mig": 0.5})
    rows.append({"trial_id": "t2", "status": "ERROR", "beta": 8.0, "seed": 102, "checkpoint_path": None, "mig": np.nan})
    StudyDir(study).write_table(TRIALS_FILE, pd.DataFrame(rows), spec.info())
    return study


def test_rescore_adds_columns_and_is_idempotent(study_dir):
    first = rescore(study_dir, ["mig"], progress=lambda line: None)
    written = pd.read_parquet(study_dir / "trials.parquet")
    assert list(written.columns) == list(first.columns)
    finished = written[written["status"] == "TERMINATED"]
    assert finished["mig"].between(0, 1).all()
    assert not (finished["mig"] == 0.5).any(), "the stored placeholder was not replaced"
    assert np.isnan(written.loc[written["trial_id"] == "t2", "mig"]).all()
    second = rescore(study_dir, ["mig"], progress=lambda line: None)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(written, pd.read_parquet(study_dir / "trials.parquet"))


def test_rescore_keeps_metadata(study_dir):
    import pyarrow.parquet as pq

    rescore(study_dir, ["mig"], progress=lambda line: None)
    meta = json.loads(pq.read_schema(study_dir / "trials.parquet").metadata[b"vae_study"])
    assert meta["searched_params"] == ["beta"]


def test_cli_unknown_metric_exits_2(study_dir):
    before = (study_dir / "trials.parquet").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "analysis.rescore", str(study_dir), "--metrics", "mig,nope"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "nope" in proc.stderr and "Traceback" not in proc.stderr
    assert (study_dir / "trials.parquet").read_bytes() == before


def test_rescore_sizes_come_from_the_arguments_else_the_spec(study_dir, monkeypatch):
    import dataclasses

    from analysis.metrics import METRICS

    seen = []

    def spy(dataset, representation_fn, *, random_state, **sizes):
        seen.append(sizes)
        return {"sap": 0.25}

    monkeypatch.setitem(METRICS, "sap", dataclasses.replace(METRICS["sap"], compute=spy))
    rescore(study_dir, ["sap"], num_test=9, progress=lambda line: None)
    rescore(study_dir, ["sap"], progress=lambda line: None)
    rescore(study_dir, ["sap"], num_train=50, progress=lambda line: None)
    assert seen == [{"num_train": 300, "num_test": 9}] * 2 + [{"num_train": 300, "num_test": 5000}] * 2 + \
        [{"num_train": 50, "num_test": 5000}] * 2


@pytest.mark.parametrize("flag", ["--num-train", "--num-test"])
def test_cli_refuses_sample_sizes_below_one(study_dir, flag):
    before = (study_dir / "trials.parquet").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "analysis.rescore", str(study_dir), "--metrics", "mig", flag, "0"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {flag}: expected a positive number of samples (got 0); "
                                                "omit it for the study's"]
    assert (study_dir / "trials.parquet").read_bytes() == before


def test_a_table_without_study_information_is_refused_with_the_rebuild_command(study_dir):
    import pyarrow.parquet as pq

    table = pq.read_table(study_dir / "trials.parquet")
    pq.write_table(table.replace_schema_metadata({b"vae_study": b'{"name": "smoke"}'}), study_dir / "trials.parquet")
    proc = subprocess.run([sys.executable, "-m", "analysis.rescore", str(study_dir), "--metrics", "mig"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "python -m study.results" in proc.stderr and "trials.parquet" in proc.stderr


def test_a_table_without_checkpoints_is_refused_naming_the_column(study_dir):
    trials = pd.read_parquet(study_dir / "trials.parquet")
    from analysis.results import TRIALS_FILE, StudyDir, load_info

    StudyDir(study_dir).write_table(TRIALS_FILE, trials.drop(columns=["checkpoint_path"]), load_info(study_dir))
    before = (study_dir / "trials.parquet").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "analysis.rescore", str(study_dir), "--metrics", "mig"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert "no column 'checkpoint_path'" in proc.stderr
    assert (study_dir / "trials.parquet").read_bytes() == before


@pytest.mark.parametrize("argv, fragment", [
    pytest.param(["s", "--metrics", "mig", "--num-train", "x"], "argument --num-train:", id="not-a-number"),
    pytest.param(["s"], "--metrics", id="missing-metrics"),
])
def test_cli_refuses_bad_flags_in_one_line(capsys, argv, fragment):
    from analysis.rescore import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
@pytest.fixture
def seeds_study(tmp_path):
    """A study with search.repeats 2: beta 1 has two finished seeds, beta 4 one (its other seed errored)."""
    import torch

    data = write_dsprites_npz(tmp_path / "dsprites.npz", num=400)
    spec_data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    spec_data["dataset"]["path"] = str(data)
    spec_data["storage_path"] = str(tmp_path)
    spec_data["search"]["repeats"] = 2
    spec_data["evaluation"].update(metrics=["mig", "udr"], num_train=300)
    spec = StudySpec(**spec_data)
    study = tmp_path / "smoke"
    rows = []
    for i, (beta, repeat, status) in enumerate([(1.0, 0, "TERMINATED"), (1.0, 1, "TERMINATED"),
                                                (4.0, 0, "TERMINATED"), (4.0, 1, "ERROR")]):
        family_config, training = spec.trial_settings({"beta": beta})
        torch.manual_seed(i)  # each seed its own initial weights
        config = TrialConfig("conv_vae", family_config, training, (1, 64, 64), seed=100 + repeat)
        model = build_model(config)
        ckpt = study / f"trial{i}" / "checkpoint_000000"
        ckpt.mkdir(parents=True)
        save_checkpoint(str(ckpt), model, [torch.optim.Adam(model.parameters())], 1, config, {})
        rows.append({"trial_id": f"t{i}", "status": status, "beta": beta, "repeat": repeat, "seed": 100 + repeat,
                     "checkpoint_path": f"trial{i}/checkpoint_000000" if status == "TERMINATED" else None})
    (study / SPEC_FILE).write_text(spec.model_dump_json())
    StudyDir(study).write_table(TRIALS_FILE, pd.DataFrame(rows), spec.info())
    return study


def test_rescore_udr_scores_each_seed_against_the_others_of_its_configuration(seeds_study, capsys):
    first = rescore(seeds_study, ["udr"], progress=lambda line: None)
    assert "warning: udr: configuration (beta=4.0) has 1 finished seed; its udr is NaN" in capsys.readouterr().err
    udr = first.set_index("trial_id")["udr"]
    assert np.isfinite(udr[["t0", "t1"]]).all() and (udr[["t0", "t1"]] >= 0).all() and (udr[["t0", "t1"]] <= 1).all()
    assert np.isnan(udr[["t2", "t3"]]).all()
    assert "mig" not in first  # per-trial metrics only when asked
    written = pd.read_parquet(seeds_study / "trials.parquet")
    pd.testing.assert_frame_equal(written, first)
    second = rescore(seeds_study, ["udr"], progress=lambda line: None)
    pd.testing.assert_frame_equal(first, second)  # seeded: the same values again


def test_rescore_udr_combines_with_per_trial_metrics(seeds_study):
    trials = rescore(seeds_study, ["mig", "udr"], progress=lambda line: None)
    finished = trials[trials["trial_id"].isin(["t0", "t1"])]
    assert finished["mig"].between(0, 1).all() and finished["udr"].notna().all()


def test_rescore_udr_of_one_seed_per_configuration_is_refused(study_dir):
    proc = subprocess.run([sys.executable, "-m", "analysis.rescore", str(study_dir), "--metrics", "udr"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [("error: udr compares the seeds of a configuration, but no configuration "
                                                 "has 2 finished trials with a checkpoint (search.repeats >= 2)")]


def test_rescore_refuses_metrics_scored_during_training_only(study_dir):
    before = (study_dir / "trials.parquet").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "analysis.rescore", str(study_dir), "--metrics", "probe"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "probe is scored during training only" in proc.stderr and "udr" in proc.stderr
    assert (study_dir / "trials.parquet").read_bytes() == before
