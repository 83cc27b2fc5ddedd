"""The end-of-trial evaluation handed to the loop: known answers, and loud failure on a hole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.evaluation import Evaluator, MetricUnavailable, metric_requirement
from datasets.base import ArrayGroundTruthData
from trainables.registry import get_family


class IdentityCode(torch.nn.Module):
    """A 'model' whose code is the factors themselves (read back from the image): MIG near 1."""

    def encode(self, x):
        factors = x[:, 0, 0, :2] * 10.0  # (B, 2): the factors were written into the first pixels
        return factors, torch.zeros_like(factors)


def factor_images(num: int = 400, seed: int = 0) -> ArrayGroundTruthData:
    rng = np.random.default_rng(seed)
    factors = rng.integers(0, 10, size=(num, 2))
    images = np.zeros((num, 1, 4, 4), dtype=np.float32)
    images[:, 0, 0, :2] = factors / 10.0
    return ArrayGroundTruthData(images, factors, [10, 10], ["a", "b"])


def test_identity_code_scores_mig_near_one():
    evaluate = Evaluator(["mig"], num_train=400, seed=0, ground_truth=factor_images())
    scores = evaluate(IdentityCode(), torch.device("cpu"), lambda num: np.zeros((num, 1, 4, 4), np.float32))
    assert scores["mig"] > 0.85  # the discretised MI estimate of 400 samples stays below the exact 1


def test_mig_without_factors_raises():
    evaluate = Evaluator(["mig"], num_train=100, seed=0, ground_truth=None)
    with pytest.raises(MetricUnavailable, match="ground-truth factors"):
        evaluate(IdentityCode(), torch.device("cpu"), lambda num: np.zeros((num, 1, 4, 4), np.float32))


def test_sample_metric_of_a_model_without_samples_raises():
    evaluate = Evaluator(["sample_mmd"], num_train=10, seed=0)
    with pytest.raises(MetricUnavailable, match="sample"):
        evaluate(IdentityCode(), torch.device("cpu"), lambda num: np.zeros((num, 1, 4, 4), np.float32))


@pytest.mark.parametrize("metric, family, has_factors, expected", [
    ("mig", "conv_vae", True, None),
    ("mig", "conv_vae", False, "ground-truth factors"),
    ("mig", "dcgan", True, "no encoder"),
    ("sample_mmd", "dcgan", False, None),
    ("sample_mmd", "conv_vae", False, None),
    ("udr", "conv_vae", False, None),  # no factors needed
    ("udr", "dcgan", False, "no encoder"),
    ("probe", "conv_vae", False, None),
    ("probe", "dcgan", False, "no encoder"),
])
def test_metric_requirements(metric, family, has_factors, expected):
    reason = metric_requirement(metric, has_factors=has_factors, model_cls=get_family(family).model_cls)
    assert reason is None if expected is None else expected in reason


def test_num_test_reaches_each_metric_under_its_own_keyword(monkeypatch):
    import dataclasses

    from analysis.metrics import METRICS

    seen = {}

    def spy(name):
        def compute(dataset, representation_fn, *, random_state, **sizes):
            seen[name] = sizes
            return {key: 0.5 for key in METRICS[name].keys}
        return compute

    names = ["mig", "beta_vae", "factor_vae", "dci", "sap", "modularity_explicitness"]
    for name in names:
        monkeypatch.setitem(METRICS, name, dataclasses.replace(METRICS[name], compute=spy(name)))
    evaluate = Evaluator(names, num_train=40, seed=0, ground_truth=factor_images(), num_test=7)
    evaluate(IdentityCode(), torch.device("cpu"), lambda num: np.zeros((num, 1, 4, 4), np.float32))
    assert seen == {"mig": {"num_train": 40}, "beta_vae": {"num_train": 40, "num_eval": 7},
                    "factor_vae": {"num_train": 40, "num_eval": 7}, "dci": {"num_train": 40, "num_test": 7},
                    "sap": {"num_train": 40, "num_test": 7}, "modularity_explicitness": {"num_train": 40, "num_test": 7}}
    seen.clear()
    Evaluator(["beta_vae"], num_train=40, seed=0, ground_truth=factor_images())(
        IdentityCode(), torch.device("cpu"), lambda num: np.zeros((num, 1, 4, 4), np.float32))
    assert seen == {"beta_vae": {"num_train": 40}}  # None: the metric's own default


def test_every_held_out_size_keyword_is_a_parameter_of_its_metric():
    import inspect

    from analysis.metrics import METRICS

    sized = {name: metric.test_size for name, metric in METRICS.items() if metric.test_size is not None}
    assert set(sized) == {"beta_vae", "factor_vae", "dci", "dci_fast", "sap", "modularity_explicitness"}
    for name, keyword in sized.items():
        assert keyword in inspect.signature(METRICS[name].compute).parameters, name


@pytest.mark.parametrize("metric, varying, expected", [
    ("mig", 0, "every ground-truth factor is constant"),
    ("beta_vae", 0, "every ground-truth factor is constant"),  # fixing a constant factor fixes nothing
    ("factor_vae", 0, "every ground-truth factor is constant"),
    ("gaussian_tc", 0, None),  # scores the codes alone
    ("sample_mmd", 0, None),
    ("mig", 1, None),
    ("mig", None, None),  # not known: not checked
])
def test_metrics_scoring_codes_against_factors_need_a_factor_that_varies(metric, varying, expected):
    reason = metric_requirement(metric, has_factors=True, model_cls=get_family("factor_vae").model_cls,
                                varying_factors=varying)
    assert reason is None if expected is None else expected in reason


def test_a_factor_metric_on_constant_factors_raises_instead_of_scoring():
    data = factor_images()
    constant = ArrayGroundTruthData(data.images, np.zeros_like(data.factors), [1, 1], ["a", "b"])
    evaluate = Evaluator(["beta_vae"], num_train=40, seed=0, ground_truth=constant)
    with pytest.raises(MetricUnavailable, match="constant"):
        evaluate(IdentityCode(), torch.device("cpu"), lambda num: np.zeros((num, 1, 4, 4), np.float32))
def labelled_rows(num_rows: int = 600, seed: int = 0):
    """``held_out(num, column="image")`` over rows whose first pixels hold two factors and whose
    ``y`` is whether factor ``a`` exceeds 4 (a label the IdentityCode's latent 0 carries)."""
    data = factor_images(num_rows, seed)
    columns = {"image": data.images.astype(np.float32), "y": (data.factors[:, 0] > 4).astype(np.float32)}
    return lambda num, column="image": columns[column][:num]


def test_probe_reads_the_label_column_of_the_held_out_rows():
    evaluate = Evaluator(["probe"], num_train=600, seed=0, probe_label="y")
    scores = evaluate(IdentityCode(), torch.device("cpu"), labelled_rows())
    assert set(scores) == {"probe_auc", "probe_accuracy"}
    assert scores["probe_auc"] > 0.99  # the label is a threshold of latent 0


def test_probe_without_a_label_column_raises():
    with pytest.raises(MetricUnavailable, match="probe_label"):
        Evaluator(["probe"], num_train=100, seed=0)(IdentityCode(), torch.device("cpu"), labelled_rows())
    with pytest.raises(MetricUnavailable, match="no column 'label'"):
        Evaluator(["probe"], num_train=100, seed=0, probe_label="label")(IdentityCode(), torch.device("cpu"),
                                                                          labelled_rows())


def test_study_level_metrics_are_left_to_the_study(monkeypatch):
    import dataclasses

    from analysis.metrics import METRICS

    def refuse(*args, **kwargs):
        raise AssertionError("udr computed per trial")

    monkeypatch.setitem(METRICS, "udr", dataclasses.replace(METRICS["udr"], compute=refuse))
    evaluate = Evaluator(["mig", "udr"], num_train=400, seed=0, ground_truth=factor_images())
    scores = evaluate(IdentityCode(), torch.device("cpu"), lambda num: np.zeros((num, 1, 4, 4), np.float32))
    assert set(scores) == {"mig"}
