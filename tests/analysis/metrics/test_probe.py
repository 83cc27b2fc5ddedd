"""Known answers for the linear probe of a label on the latent means."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics.probe import compute_probe, probe_from_codes


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_a_label_linear_in_one_latent_scores_auc_near_one():
    codes = rng(1).normal(size=(2000, 6))
    labels = (codes[:, 3] > 0.2).astype(np.float32)  # jets store y as float32 0/1
    scores = probe_from_codes(codes, labels, random_state=rng())
    assert scores["probe_auc"] > 0.99 and scores["probe_accuracy"] > 0.97, scores


def test_a_label_independent_of_the_codes_scores_auc_near_one_half():
    generator = rng(2)
    codes = generator.normal(size=(2000, 6))
    labels = generator.integers(0, 2, size=2000)
    scores = probe_from_codes(codes, labels, random_state=rng())
    assert abs(scores["probe_auc"] - 0.5) < 0.06 and abs(scores["probe_accuracy"] - 0.5) < 0.06, scores


def test_three_classes_score_one_vs_rest_auc():
    codes = rng(3).normal(size=(3000, 4))
    labels = np.digitize(codes[:, 0], [-0.5, 0.5])  # 0, 1, 2 along one latent
    scores = probe_from_codes(codes, labels, random_state=rng())
    assert scores["probe_auc"] > 0.95 and scores["probe_accuracy"] > 0.85, scores


def test_the_same_generator_seed_gives_the_same_scores():
    generator = rng(4)
    codes = generator.normal(size=(500, 3))
    labels = (codes[:, 0] + generator.normal(size=500) > 0).astype(int)
    assert probe_from_codes(codes, labels, random_state=rng(7)) == probe_from_codes(codes, labels, random_state=rng(7))


def test_compute_probe_encodes_in_batches_row_for_row():
    generator = rng(5)
    images = generator.normal(size=(700, 1, 2, 2)).astype(np.float32)
    labels = (images[:, 0, 1, 1] > 0).astype(int)
    calls = []

    def encode(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x.reshape(len(x), -1)  # (B, 4) codes: the pixels

    scores = compute_probe(images, labels, encode, random_state=rng(), batch_size=256)
    assert calls == [256, 256, 188]
    assert scores["probe_auc"] > 0.99


@pytest.mark.parametrize("labels, match", [
    (np.zeros(100), ">= 2 classes"),
    (np.r_[np.zeros(99), 1.0], "each class in both parts"),
    (np.r_[np.zeros(50), np.full(50, 0.5)], "whole numbers"),
    (np.zeros(99), r"shapes \(100, 2\) and \(99,\)"),
])
def test_labels_a_probe_cannot_score_are_refused(labels, match):
    with pytest.raises(ValueError, match=match):
        probe_from_codes(np.zeros((100, 2)), labels, random_state=rng())
