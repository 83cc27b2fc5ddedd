"""The multitask VAE family: task heads, their losses and scores, the spec's task metrics, the loop,
and the dSprites target columns it trains on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from trainables.families.multitask_vae import (
    MultitaskVAE,
    MultitaskVAEConfig,
    TaskConfig,
    classification_scores,
    regression_mae,
)
from trainables.training import TrainingSpec

INPUT_SHAPE = (1, 16, 16)
NET = {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3, "head_widths": [8]}
TASKS = {
    "y": {"kind": "classify", "classes": 2},
    "m0": {"kind": "regress", "center": 150.0, "scale": 50.0},
    "shape": {"kind": "classify", "classes": 3, "column": "label"},
}


def build(tasks: dict = TASKS, seed: int = 0, **changes) -> MultitaskVAE:
    torch.manual_seed(seed)
    return MultitaskVAE(MultitaskVAEConfig(**NET, tasks=tasks, **changes), INPUT_SHAPE)


def batch(num: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random binary images with targets: ``y`` in {0, 1}, ``m0`` ~ 100-200, ``label`` in {0, 1, 2}."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": (torch.rand(num, *INPUT_SHAPE, generator=generator) < 0.3).float(),
        "y": torch.arange(num).remainder(2).float(),
        "m0": 100.0 + 100.0 * torch.rand(num, generator=generator),
        "label": torch.arange(num).remainder(3).float(),
    }


def zero_head(model: MultitaskVAE, name: str, bias: list[float] | None = None) -> None:
    """Sets a head's output layer to zero weights (and the given bias): its output is constant."""
    last = model.heads[name][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(bias) if bias is not None else torch.zeros_like(last.bias))


# Gradients and weights.


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_a_zero_weight_leaves_its_head_without_gradient(weight):
    tasks = {**TASKS, "y": {**TASKS["y"], "weight": weight}}
    model = build(tasks).train()
    model(batch()).loss.backward()
    head = list(model.heads["y"].parameters())
    assert all(p.grad is not None for p in head)  # still in the graph: DDP needs every gradient
    if weight == 0:
        assert all(torch.count_nonzero(p.grad) == 0 for p in head)
    else:
        assert all(torch.count_nonzero(p.grad) > 0 for p in head)
    for other in ("m0", "shape"):  # the other heads learn either way
        assert all(torch.count_nonzero(p.grad) > 0 for p in model.heads[other].parameters())


def test_loss_is_the_vae_loss_plus_weighted_task_losses():
    tasks = {name: {**task, "weight": w} for (name, task), w in zip(TASKS.items(), [2.0, 0.5, 0.0])}
    model = build(tasks).eval()
    with torch.no_grad():
        out = model(batch())
    terms = {k: float(v) for k, v in out.terms().items()}
    expected = terms["recon_loss"] + model.beta * terms["kl"] + 2.0 * terms["y_loss"] + 0.5 * terms["m0_loss"]
    assert terms["loss"] == pytest.approx(expected, rel=1e-6)
    assert {"y_loss", "m0_loss", "shape_loss"} <= set(terms)


def test_classify_loss_is_the_cross_entropy_of_the_column():
    model = build().eval()
    zero_head(model, "shape", [0.0, math.log(2.0), 0.0])  # p = (1/4, 1/2, 1/4) for every image
    with torch.no_grad():
        out = model(batch(12))
    # labels 0, 1, 2 repeat: mean of -log(1/4), -log(1/2), -log(1/4)
    assert float(out.extra["shape_loss"]) == pytest.approx((2 * math.log(4) + math.log(2)) / 3, rel=1e-6)
    torch.testing.assert_close(out.predictions["shape.pred"], torch.tensor([[0.25, 0.5, 0.25]]).expand(12, 3))
    torch.testing.assert_close(out.predictions["shape.target"], batch(12)["label"])


@pytest.mark.parametrize("loss", ["mse", "gaussian_nll"])
def test_regress_loss_standardises_the_target(loss):
    model = build({"m0": {**TASKS["m0"], "loss": loss}}).eval()
    zero_head(model, "m0")  # predicts the center (150 GeV), log-sigma 0
    data = batch(8)
    with torch.no_grad():
        out = model(data)
    standardised = (data["m0"] - 150.0) / 50.0
    expected = {"mse": standardised.pow(2).mean(),
                "gaussian_nll": (0.5 * math.log(2 * math.pi) + 0.5 * standardised.pow(2)).mean()}[loss]
    assert float(out.extra["m0_loss"]) == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(out.predictions["m0.pred"], torch.full((8,), 150.0))  # original units
    torch.testing.assert_close(model.predict(data)["m0"], torch.full((8,), 150.0))


def test_predict_gives_probabilities_and_values_per_task():
    model = build().eval()
    predicted = model.predict(batch(5))
    assert sorted(predicted) == ["m0", "shape", "y"]
    assert predicted["y"].shape == (5, 2) and predicted["shape"].shape == (5, 3) and predicted["m0"].shape == (5,)
    torch.testing.assert_close(predicted["shape"].sum(dim=1), torch.ones(5))
    torch.testing.assert_close(predicted["y"], model(batch(5)).predictions["y.pred"])


def test_a_missing_target_column_names_the_task():
    model = build()
    data = batch()
    del data["m0"]
    with pytest.raises(ValueError, match=r"tasks\.m0\.column: .*'m0'"):
        model(data)


# Scores, known answers.


def test_binary_scores_known_answer():
    p1 = np.array([0.1, 0.4, 0.35, 0.8])  # sklearn's roc_auc_score example: AUC 0.75
    scores = classification_scores(np.stack([1 - p1, p1], axis=1), np.array([0, 0, 1, 1]))
    assert scores["auc"] == pytest.approx(0.75)
    assert scores["accuracy"] == pytest.approx(0.75)  # argmax predicts 0, 0, 0, 1


def test_three_class_scores_are_one_vs_rest_macro():
    probs = np.array([[0.6, 0.1, 0.3], [0.1, 0.6, 0.3], [0.35, 0.35, 0.3]] * 2)
    target = np.array([0, 1, 2] * 2)
    scores = classification_scores(probs, target)
    # Classes 0 and 1 are ranked perfectly against the rest; class 2's scores are all tied (AUC 1/2).
    assert scores["auc"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert scores["accuracy"] == pytest.approx(2 / 3)  # class-2 rows' argmax is 0
    assert scores["auc"] == pytest.approx(roc_auc_score(target, probs, multi_class="ovr"))


def test_auc_is_nan_when_a_class_is_missing():
    scores = classification_scores(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]))
    assert math.isnan(scores["auc"]) and scores["accuracy"] == pytest.approx(0.5)


def test_mae_known_answer():
    assert regression_mae(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])) == pytest.approx(1.0)


def test_validation_metrics_name_each_task_score():
    model = build()
    predictions = {
        "y.pred": torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]]),
        "y.target": torch.tensor([0.0, 0.0, 1.0, 1.0]),
        "m0.pred": torch.tensor([100.0, 200.0]),
        "m0.target": torch.tensor([110.0, 170.0]),
        "shape.pred": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        "shape.target": torch.tensor([0.0, 1.0, 2.0]),
    }
    metrics = model.validation_metrics(predictions)
    assert metrics == pytest.approx({"y_accuracy": 0.75, "y_auc": 0.75, "m0_mae": 20.0,
                                     "shape_accuracy": 1.0, "shape_auc": 1.0})
    assert {f"val_{k}" for k in metrics} <= set(MultitaskVAE.config_metrics(model.config))


# Config.


def test_config_metrics_per_task_kind():
    config = MultitaskVAEConfig(**NET, tasks={"y": TASKS["y"], "m0": TASKS["m0"]})
    assert MultitaskVAE.config_metrics(config) == (
        "train_y_loss", "val_y_loss", "val_y_accuracy", "val_y_auc", "train_m0_loss", "val_m0_loss", "val_m0_mae")


@pytest.mark.parametrize(("task", "match"), [
    ({"kind": "classify"}, "classes"),
    ({"kind": "classify", "classes": 1}, "classes"),
    ({"kind": "regress", "classes": 3}, "classes"),
    ({"kind": "classify", "classes": 2, "loss": "gaussian_nll"}, "loss"),
    ({"kind": "regress", "weight": -1.0}, "weight"),
    ({"kind": "regress", "scale": 0.0}, "scale"),
    ({"kind": "regress", "loss": "huber"}, "loss"),
    ({"kind": "rank"}, "kind"),
    ({"kind": "regress", "wieght": 1.0}, "wieght"),
])
def test_bad_task_is_refused_naming_the_field(task, match):
    with pytest.raises(ValidationError, match=match):
        MultitaskVAEConfig(**NET, tasks={"t": task})


@pytest.mark.parametrize("name", ["recon", "not-a-name", "_hidden"])
def test_bad_task_name_is_refused(name):
    with pytest.raises(ValidationError, match="task name"):
        MultitaskVAEConfig(**NET, tasks={name: TASKS["m0"]})


def test_column_defaults_to_the_task_name_and_image_is_refused():
    assert TaskConfig(kind="regress").column is None
    with pytest.raises(ValidationError, match="image"):
        MultitaskVAEConfig(**NET, tasks={"m0": {"kind": "regress", "column": "image"}})


def spec(**changes) -> dict:
    base = {
        "name": "t",
        "dataset": {"name": "dsprites"},
        "family": {"name": "multitask_vae", **NET, "tasks": {"y": TASKS["y"], "m0": TASKS["m0"]}},
        "search_space": {"tasks.y.weight": {"type": "float", "low": 0.0, "high": 10.0}},
        "objective": {"metric": ["val_recon_loss", "val_y_auc"], "mode": ["min", "max"]},
        "search": {"algorithm": "nsga2", "num_samples": 2},
        "evaluation": {"metrics": []},
    }
    return {**base, **changes}


def test_spec_accepts_task_objectives_and_searched_weights():
    from study.spec import StudySpec

    study = StudySpec(**spec())
    config, _ = study.trial_settings({"tasks.y.weight": 3.5})
    assert config.tasks["y"].weight == 3.5 and config.tasks["m0"].weight == 1.0


@pytest.mark.parametrize(("changes", "match"), [
    ({"objective": {"metric": "val_z_auc", "mode": "max"}}, "val_z_auc"),
    ({"search_space": {"tasks.y.weight": {"type": "float", "low": -1.0, "high": 1.0}}}, "weight"),
])
def test_spec_refuses_unknown_task_metrics_and_negative_weights(changes, match):
    from study.spec import StudySpec

    with pytest.raises(ValidationError, match=match):
        StudySpec(**spec(**changes))


# Through the training loop (no Ray).


class ColumnShard:
    """A Ray Data shard stand-in yielding every column of a dict of arrays."""

    def __init__(self, columns: dict[str, np.ndarray]):
        self.columns = columns

    def iter_torch_batches(self, batch_size, dtypes, device):
        rows = len(self.columns["image"])
        for start in range(0, rows, batch_size):
            yield {k: torch.as_tensor(v[start : start + batch_size], dtype=dtypes) for k, v in self.columns.items()}


def test_the_loop_reports_task_scores_and_snapshots_predictions(tmp_path):
    from tests.trainables.test_loop import FakeSession
    from trainables.checkpoint import load_snapshots
    from trainables.loop import run_worker
    from trainables.registry import get_family
    from trainables.trial import TrialConfig

    data = {k: v.numpy() for k, v in batch(48, seed=3).items()}
    train = {k: v[:32] for k, v in data.items()}
    val = {k: v[32:] for k, v in data.items()}
    session = FakeSession(tmp_path, train["image"], val["image"])
    session.datasets = {"train": ColumnShard(train), "val": ColumnShard(val)}
    family_config = {**NET, "tasks": TASKS}
    config = TrialConfig(family="multitask_vae", family_config=MultitaskVAEConfig(**family_config), input_shape=INPUT_SHAPE, seed=1,
                         training=TrainingSpec(epochs=2, batch_size=8, lr=1e-3, optimizer="adam"),
                         snapshot_samples=4)
    run_worker(config, session)
    expected = get_family("multitask_vae").reported_metrics(MultitaskVAEConfig(**family_config))
    for report in session.reports:
        assert set(expected) <= set(report)
        assert 0 <= report["val_y_auc"] <= 1 and 0 <= report["val_shape_accuracy"] <= 1
        assert report["val_m0_mae"] > 0
    snapshots = load_snapshots(session.checkpoints[-1])
    assert snapshots["epoch_0002_y"].shape == (4, 2) and snapshots["epoch_0002_m0"].shape == (4,)
    np.testing.assert_array_equal(snapshots["column_m0"], val["m0"][:4])


# dSprites target columns.


@pytest.mark.parametrize("six_columns", [False, True])
def test_dsprites_puts_factor_columns_in_both_splits(tmp_path, six_columns):
    from datasets.registry import get_dataset
    from tests.conftest import write_dsprites_npz

    path = tmp_path / "d.npz"
    write_dsprites_npz(path, num=200, six_columns=six_columns, seed=2)
    raw = np.load(path)
    values = raw["latents_values"][:, -5:] * np.array([1.0, 0.1, 0.5, 0.01, 0.02])  # distinct from classes
    np.savez(path, imgs=raw["imgs"], latents_classes=raw["latents_classes"],
             latents_values=np.concatenate([raw["latents_values"][:, :-5], values], axis=1))
    entry = get_dataset("dsprites")
    prepared = entry.load(entry.options_cls(name="dsprites", path=path, val_fraction=0.25), 0)
    names = ["shape", "scale", "orientation", "pos_x", "pos_y"]
    for split in (prepared.train, prepared.val):
        assert set(names) <= set(split)
        for name in names:
            assert split[name].shape == (len(split["image"]),) and split[name].dtype == np.float32
    # Rows line up: val's factors column holds the classes, the value columns the values of the same rows.
    classes = prepared.val["factors"]
    np.testing.assert_array_equal(prepared.val["shape"], classes[:, 0])
    np.testing.assert_allclose(prepared.val["scale"], classes[:, 1] * 0.1, rtol=1e-6)
    np.testing.assert_allclose(prepared.val["pos_y"], classes[:, 4] * 0.02, rtol=1e-6)
    assert prepared.info["target_columns"] == sorted(names)


def test_dsprites_without_values_has_only_the_shape_column(tmp_path):
    from datasets.registry import get_dataset

    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, imgs=rng.integers(0, 2, size=(20, 64, 64), dtype=np.uint8),
             latents_classes=rng.integers(0, 3, size=(20, 5)))
    entry = get_dataset("dsprites")
    prepared = entry.load(entry.options_cls(name="dsprites", path=path, val_fraction=0.25), 0)
    assert set(prepared.train) == {"image", "shape"}
    assert set(prepared.val) == {"image", "factors", "shape"}
