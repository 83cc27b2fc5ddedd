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
])
def test_metric_requirements(metric, family, has_factors, expected):
    reason = metric_requirement(metric, has_factors=has_factors, model_cls=get_family(family).model_cls)
    assert reason is None if expected is None else expected in reason
