"""``python -m analysis.report`` refuses tables it cannot report on: one line naming the file and the
columns, exit code 2, nothing written (the end-to-end report is tested on a real study in
tests/study/test_run_e2e.py)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from analysis.results import TRIALS_FILE, StudyDir
from study.spec import load_spec
from tests.conftest import REPO


@pytest.mark.parametrize("columns, fragment", [
    ({"trial_id": ["a", "b"], "status": ["TERMINATED"] * 2, "beta": [1, 4]}, "no metric column"),
    ({"beta": [1, 4], "mig": [0.1, 0.2]}, "no column 'trial_id', 'status'"),
])
def test_a_table_without_the_needed_columns_is_refused_and_nothing_is_written(tmp_path, columns, fragment):
    study = tmp_path / "smoke"
    StudyDir(study).write_table(TRIALS_FILE, pd.DataFrame(columns), load_spec(REPO / "configs" / "smoke.yaml").info())
    proc = subprocess.run([sys.executable, "-m", "analysis.report", str(study)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {study / 'trials.parquet'}:") and fragment in line, line
    assert sorted(p.name for p in study.iterdir()) == ["trials.parquet"]
