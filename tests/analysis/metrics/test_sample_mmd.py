"""Kernel MMD^2 sample metric: the estimator's known answers, then the image metric on real digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from analysis.metrics import METRICS
from analysis.metrics.sample_mmd import (
    compute_sample_mmd,
    image_features,
    median_distance,
    mmd2_unbiased,
    sample_mmd_from_images,
)
from datasets.images import convert_channels, resize_square


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """scikit-learn's 1,797 real digits as RGB float32 ``(1797, 3, 16, 16)`` in [0, 1], shuffled."""
    images = (load_digits().images / 16).astype(np.float32)[:, None]
    images = convert_channels(resize_square(images, 16), 3)
    return images[np.random.default_rng(0).permutation(len(images))]


# The estimator (Gretton et al. 2012, eq. 3).


def gaussian_mmd2(sigma: float, dim: int, shift: float) -> float:
    """Population MMD^2 between N(0, I) and N(shift e_1, I) in ``dim`` dimensions for the kernel
    exp(-|a - b|^2 / (2 sigma^2)): 2 (s2 / (s2 + 2))^(d/2) (1 - exp(-shift^2 / (2 (s2 + 2))))."""
    s2 = sigma**2
    return 2 * (s2 / (s2 + 2)) ** (dim / 2) * (1 - np.exp(-(shift**2) / (2 * (s2 + 2))))


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0, 2.0])
def test_unbiased_mmd_matches_the_closed_form_for_gaussians(shift):
    rng = np.random.default_rng(1)
    dim, sigma = 3, 2.0
    x = rng.normal(size=(1500, dim))
    y = rng.normal(size=(1500, dim))
    y[:, 0] += shift
    assert mmd2_unbiased(x, y, [sigma]) == pytest.approx(gaussian_mmd2(sigma, dim, shift), abs=0.006)


def test_unbiased_mmd_equals_the_pairwise_sums_written_out():
    rng = np.random.default_rng(2)
    x, y, widths = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)) + 1, [0.7, 1.5]

    def k(a, b):
        return np.mean([np.exp(-np.sum((a - b) ** 2) / (2 * s * s)) for s in widths])

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(a, b) for a in x for b in y) / (5 * 4)
    assert mmd2_unbiased(x, y, widths) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_mmd_refuses_bad_inputs():
    with pytest.raises(ValueError, match="m, n >= 2"):
        mmd2_unbiased(np.zeros((1, 2)), np.zeros((3, 2)), [1.0])
    with pytest.raises(ValueError, match="bandwidths must be > 0"):
        mmd2_unbiased(np.zeros((3, 2)), np.zeros((3, 2)), [0.0])


def test_median_distance_known_value():
    points = np.array([[0.0], [1.0], [3.0]])  # distances 1, 2, 3
    assert median_distance(points) == pytest.approx(2.0)
    assert median_distance(np.zeros((4, 2))) == 1.0  # all equal: a unit width, not a zero one


# The image metric.


def test_features_are_fixed_and_shaped():
    images = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    first, second = image_features(images), image_features(images)
    assert first["pooled"].shape == (4, 3 * 64) and first["random_conv"].shape == (4, 512)
    np.testing.assert_array_equal(first["random_conv"], second["random_conv"])
    # Pooling a constant image gives the constant.
    np.testing.assert_allclose(image_features(np.full((2, 1, 16, 16), 0.3))["pooled"], 0.3, rtol=1e-6)


def test_two_halves_of_real_digits_score_near_zero_and_a_brightness_shift_grows_it(digits):
    real, other = digits[:600], digits[600:1200]
    same = sample_mmd_from_images(real, other)
    scores = [sample_mmd_from_images(real, np.clip(other + shift, 0, 1)) for shift in (0.05, 0.1, 0.2, 0.4)]
    assert abs(same) < 0.003, same
    assert scores[0] > 5 * abs(same) + 0.005, (same, scores)
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] > 0.3, scores


def test_wrong_digits_and_uniform_noise_score_far_worse_than_right_ones(digits):
    labels = load_digits().target[np.random.default_rng(0).permutation(len(digits))]
    real = digits[:600][labels[:600] < 5]  # digits 0-4
    same_classes = digits[600:][labels[600:] < 5][: len(real)]
    other_classes = digits[600:][labels[600:] >= 5][: len(real)]
    noise = np.random.default_rng(1).random(real.shape, dtype=np.float32)
    right, wrong = sample_mmd_from_images(real, same_classes), sample_mmd_from_images(real, other_classes)
    assert abs(right) < 0.005 and wrong > max(0.02, 10 * abs(right)), (right, wrong)
    assert sample_mmd_from_images(real, noise) > 10 * wrong


def test_public_wrapper_is_seeded_and_registered(digits):
    pool = digits[800:]

    def sample_fn(num, random_state):
        return pool[random_state.choice(len(pool), size=num, replace=False)]

    first = compute_sample_mmd(digits[:800], sample_fn, random_state=np.random.default_rng(5), num_samples=400)
    again = compute_sample_mmd(digits[:800], sample_fn, random_state=np.random.default_rng(5), num_samples=400)
    assert first == again and abs(first["sample_mmd"]) < 0.01
    metric = METRICS["sample_mmd"]
    assert metric.kind == "samples" and metric.keys == {"sample_mmd": "min"}
    assert metric.compute is compute_sample_mmd


def test_wrapper_draws_in_chunks_and_uses_at_most_the_given_images(digits):
    calls = []

    def sample_fn(num, random_state):
        calls.append(num)
        return digits[:num]

    result = compute_sample_mmd(digits[:300], sample_fn, random_state=np.random.default_rng(0), num_samples=1000)
    assert calls == [250, 50]  # 300 held-out images, drawn 250 at a time
    assert abs(result["sample_mmd"]) < 0.02


def test_mismatched_or_non_finite_samples_are_refused(digits):
    with pytest.raises(ValueError, match="must both be"):
        sample_mmd_from_images(digits[:10], digits[:10, :1])
    bad = digits[:10].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sample_mmd_from_images(digits[:10], bad)
    with pytest.raises(ValueError, match="at least 2 held-out images"):
        compute_sample_mmd(digits[:1], lambda n, r: digits[:n], random_state=np.random.default_rng(0))
