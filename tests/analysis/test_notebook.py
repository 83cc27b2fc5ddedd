"""The exploration notebook executes top to bottom against a real smoke study."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_notebook_executes(smoke_study, monkeypatch):
    study_dir, _, _ = smoke_study
    monkeypatch.setenv("VAE_STUDY_DIR", str(study_dir))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebook shows figures inline
    path = REPO / "analysis" / "notebooks" / "explore_study.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the trade-off, Pareto and learning-curve figures are shown"
    text = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| beta |" in text and "mig" in text
