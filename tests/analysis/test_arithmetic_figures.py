"""analysis/arithmetic_figures.py on a synthetic arithmetic study: the accuracy table's known
values, both figures for text and image answers, and nothing for another dataset."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis.arithmetic_figures import (
    ACCURACY_FILE,
    EXAMPLES_FILE,
    accuracy_table,
    arithmetic_figures,
    examples_figure,
)
from analysis.results import EvaluationInfo, ObjectiveInfo, StudyInfo
from datasets.arithmetic import encode
from trainables.checkpoint import SNAPSHOT_FILE, TRIAL_FILE

K = 4
QUERIES, ANSWERS = ["12+34", "5-7", "99+99", "0-0"], ["46", "-2", "198", "0"]


def synthetic_trials(checkpoint: Path | None = None) -> pd.DataFrame:
    """3 depths x 3 fractions x 2 repeats; accuracy = fraction + depth / 10 -+ 0.05 by repeat; one errored trial."""
    rows = []
    for depth in (1, 2, 3):
        for fraction in (0.1, 0.25, 0.5):
            for repeat, offset in enumerate((-0.05, 0.05)):
                rows.append({"trial_id": f"d{depth}f{fraction}r{repeat}", "status": "TERMINATED",
                             "encoder_layers": depth, "dataset.train_fraction": fraction, "repeat": repeat,
                             "val_sequence_accuracy": fraction + depth / 10 + offset,
                             "checkpoint_path": str(checkpoint) if checkpoint else None})
    rows.append({"trial_id": "broken", "status": "ERROR", "encoder_layers": 1, "dataset.train_fraction": 0.1,
                 "repeat": 0, "val_sequence_accuracy": 1.0, "checkpoint_path": None})
    return pd.DataFrame(rows)


def snapshots(output: str, input_kind: str) -> dict[str, np.ndarray]:
    """The loop's snapshot layout for 4 fixed rows after epochs 1 and 3 (the last prediction is off in row 1)."""
    rng = np.random.default_rng(0)
    query, answer = encode(QUERIES, 5).astype(np.float32), encode(ANSWERS, 3).astype(np.float32)
    snap = {"column_query": query, "column_answer": answer}
    if input_kind == "image":
        snap["column_query_images"] = rng.integers(0, 256, size=(K, 5, 28, 28)).astype(np.float32)
    if output == "image":
        snap["column_answer_images"] = rng.integers(0, 256, size=(K, 3, 28, 28)).astype(np.float32)
        for epoch in (1, 3):
            snap[f"epoch_{epoch:04d}"] = rng.random((K, 3, 28, 28)).astype(np.float16)
    else:
        wrong = answer.copy()
        wrong[1, 1] = 3.0  # "-3 " instead of "-2 "
        snap["epoch_0001"] = np.zeros_like(answer, dtype=np.float16)
        snap["epoch_0003"] = wrong.astype(np.float16)
    return snap


def fake_study(tmp_path: Path, output: str = "text", input_kind: str = "text",
               dataset: str = "arithmetic") -> tuple[Path, pd.DataFrame, pd.Series, StudyInfo]:
    study_dir = tmp_path / "study"
    checkpoint = study_dir / "trial_0" / "checkpoint_000002"
    checkpoint.mkdir(parents=True)
    metric = "val_readback_accuracy" if output == "image" else "val_sequence_accuracy"
    info = StudyInfo(
        name="study", seed=0, dataset={"name": dataset, "input": input_kind, "output": output},
        families=["seq2seq"], family={"input": input_kind, "output": output},
        searched_params=["encoder_layers", "dataset.train_fraction"],
        search_params=["encoder_layers", "dataset.train_fraction"],
        objective=ObjectiveInfo(metric=[metric], mode=["max"]),
        evaluation=EvaluationInfo(metrics=[], num_train=10, num_test=10),
    )
    np.savez(checkpoint / SNAPSHOT_FILE, **snapshots(output, input_kind))
    (checkpoint / TRIAL_FILE).write_text(json.dumps({"family": "seq2seq",
                                                     "family_config": {"input": input_kind, "output": output}}))
    trials = synthetic_trials(checkpoint).rename(columns={"val_sequence_accuracy": metric})
    return study_dir, trials, trials.iloc[-2], info


def test_accuracy_table_known_values():
    table = accuracy_table(synthetic_trials(), "val_sequence_accuracy")
    assert len(table) == 9 and table["count"].tolist() == [2] * 9  # the errored trial is left out
    row = table[(table["depth"] == 2) & (table["fraction"] == 0.25)].iloc[0]
    assert row["mean"] == pytest.approx(0.45) and row["std"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert (row["min"], row["max"]) == (pytest.approx(0.4), pytest.approx(0.5))
    fixed = accuracy_table(synthetic_trials().drop(columns=["dataset.train_fraction"]), "val_sequence_accuracy",
                           fraction=0.5)
    assert fixed["fraction"].tolist() == [0.5] * 3 and fixed["count"].tolist() == [6] * 3
    with pytest.raises(KeyError, match="dataset.train_fraction"):
        accuracy_table(synthetic_trials().drop(columns=["dataset.train_fraction"]), "val_sequence_accuracy")
    with pytest.raises(KeyError, match="val_readback_accuracy"):
        accuracy_table(synthetic_trials(), "val_readback_accuracy")


@pytest.mark.parametrize("input_kind, output", [("text", "text"), ("image", "text"), ("text", "image")])
def test_report_hook_draws_accuracy_and_examples(tmp_path, input_kind, output):
    study_dir, trials, best, info = fake_study(tmp_path, output, input_kind)
    out = study_dir / "report"
    out.mkdir()
    figures = arithmetic_figures(None, info, trials, best, out)
    assert [path.name for _, path in figures] == [ACCURACY_FILE, EXAMPLES_FILE]
    assert all(path.is_file() and path.stat().st_size > 5_000 for _, path in figures)
    height, width = imread(figures[1][1]).shape[:2]
    columns = {("text", "text"): 3, ("image", "text"): 5 + 2, ("text", "image"): 2 + 3 + 3}[(input_kind, output)]
    assert height > 300 and width > 60 * columns


def test_text_examples_colour_right_and_wrong_predictions():
    fig = examples_figure(snapshots("text", "text"))
    axes = np.array(fig.axes).reshape(K, 3)
    texts = [[ax.texts[0].get_text() for ax in row] for row in axes]
    assert texts[0] == ["'12+34'", "'46 '", "'46 '"] and texts[1] == ["'5-7  '", "'-2 '", "'-3 '"]
    assert axes[0, 2].texts[0].get_color() == "tab:green" and axes[1, 2].texts[0].get_color() == "tab:red"
    assert axes[0, 2].get_title(loc="left") == "predicted (epoch 3)"  # the last snapshot epoch


def test_examples_need_the_query_and_a_prediction():
    snap = snapshots("text", "text")
    with pytest.raises(ValueError, match="column_query"):
        examples_figure({k: v for k, v in snap.items() if k != "column_query"})
    with pytest.raises(ValueError, match="epoch_NNNN"):
        examples_figure({k: v for k, v in snap.items() if not k.startswith("epoch_")})


def test_other_datasets_and_missing_checkpoints_get_no_figure(tmp_path):
    study_dir, trials, best, info = fake_study(tmp_path, dataset="toy")
    assert arithmetic_figures(None, info, trials, best, tmp_path) == []
    study_dir, trials, _, info = fake_study(tmp_path / "b")
    figures = arithmetic_figures(None, info, trials, None, tmp_path)
    assert [path.name for _, path in figures] == [ACCURACY_FILE]
