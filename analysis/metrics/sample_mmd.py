"""Sample quality of any generative model: kernel MMD^2 between its samples and held-out images.

One number for VAEs and GANs alike (lower is better, 0 when the two distributions agree): the
unbiased estimate of the squared maximum mean discrepancy (Gretton et al. 2012) on image
features that need no downloaded weights:

* ``pooled``: each channel average-pooled to 8x8 (``C * 64`` values: colour and layout);
* ``random_conv``: the images resized to 32x32 and centred (minus 0.5), one stride-2 conv layer
  of 32 random 5x5 filters (weights ``N(0, 1 / fan_in)`` drawn from the fixed seed
  :data:`FEATURE_SEED`, so every model of every study sees the same features), ReLU, and
  average-pooled to 4x4 (512 values: local edges and strokes).

The kernel is the mean of Gaussian kernels ``exp(-||a - b||^2 / (2 sigma^2))`` over both feature
blocks and the bandwidths ``sigma = m * median`` for ``m`` in :data:`BANDWIDTH_MULTIPLIERS`, where
``median`` is the median pairwise distance between the held-out images' features of that block
(the median heuristic, Gretton et al. 2012, section 8, computed on the held-out images alone so
that all models scored against the same images share one kernel). The kernel is a mean of
characteristic kernels, so the population MMD^2 is 0 only when the feature distributions agree;
kernel values lie in (0, 1], so MMD^2 is at most 2 (the unbiased estimate can dip below 0 by
sampling noise of order ``1 / num_samples``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["compute_sample_mmd", "sample_mmd_from_images", "mmd2_unbiased", "image_features", "median_distance",
           "FEATURE_SEED", "BANDWIDTH_MULTIPLIERS"]

FEATURE_SEED = 20120301  # fixed: the random conv features are part of the metric's definition
BANDWIDTH_MULTIPLIERS = (0.5, 1.0, 2.0)  # around the median: sensitive to both fine and coarse differences
POOLED_SIDE = 8
CONV_INPUT_SIDE = 32
CONV_FILTERS = 32
CONV_KERNEL = 5
CONV_POOLED_SIDE = 4
SAMPLE_CHUNK = 250  # model samples drawn per sample_fn call (bounds a large generator's activations)


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """The two feature blocks of the metric.

    Args:
        images: float ``(N, C, H, W)`` in [0, 1], any C and size.

    Returns:
        ``{"pooled": float64 (N, C * 64), "random_conv": float64 (N, 512)}``.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    channels = x.shape[1]
    pooled = F.adaptive_avg_pool2d(x, POOLED_SIDE).flatten(1)  # (N, C * 64)
    generator = torch.Generator().manual_seed(FEATURE_SEED)
    fan_in = channels * CONV_KERNEL * CONV_KERNEL
    weight = torch.randn(CONV_FILTERS, channels, CONV_KERNEL, CONV_KERNEL, generator=generator) / fan_in**0.5
    small = F.interpolate(x, size=(CONV_INPUT_SIDE, CONV_INPUT_SIDE), mode="bilinear", align_corners=False,
                          antialias=True) - 0.5  # (N, C, 32, 32), centred
    conv = F.relu(F.conv2d(small, weight, stride=2, padding=CONV_KERNEL // 2))  # (N, 32, 16, 16)
    random_conv = F.adaptive_avg_pool2d(conv, CONV_POOLED_SIDE).flatten(1)  # (N, 512)
    return {"pooled": pooled.double().numpy(), "random_conv": random_conv.double().numpy()}


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` squared Euclidean distances, float64, clipped at 0."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_distance(features: np.ndarray) -> float:
    """The median Euclidean distance between distinct rows of ``features`` ``(N, D)``, N >= 2.

    Returns:
        The median over the ``N (N - 1) / 2`` pairs, in feature units; 1.0 when all rows coincide.
    """
    d = _squared_distances(features, features)[np.triu_indices(len(features), k=1)]
    median = float(np.sqrt(np.median(d)))
    return median if median > 0 else 1.0


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float]) -> float:
    """Unbiased MMD^2 between samples ``x`` and ``y`` under the mean of Gaussian kernels.

    ``1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j) - 2/(mn) sum_{i,j} k(x_i, y_j)``
    with ``k(a, b) = mean_s exp(-||a - b||^2 / (2 s^2))``.

    Args:
        x: float ``(m, D)``, m >= 2.
        y: float ``(n, D)``, n >= 2.
        bandwidths: Gaussian kernel widths ``s`` > 0, in feature units.

    Returns:
        The estimate; its expectation is the population MMD^2 (>= 0), the estimate itself can be
        slightly negative.

    Raises:
        ValueError: If a sample has fewer than 2 rows, the widths disagree, or a bandwidth is not > 0.

    References:
        Gretton, Borgwardt, Rasch, Schoelkopf, Smola 2012, "A Kernel Two-Sample Test", JMLR 13,
        eq. 3 (lemma 6).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2 or x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"MMD needs two samples (m, D) and (n, D) with m, n >= 2, but got {x.shape} and {y.shape}")
    if not bandwidths or min(bandwidths) <= 0:
        raise ValueError(f"bandwidths must be > 0, but got {list(bandwidths)}")

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = _squared_distances(a, b)
        return np.mean([np.exp(-d / (2.0 * s * s)) for s in bandwidths], axis=0)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def sample_mmd_from_images(real: np.ndarray, generated: np.ndarray) -> float:
    """The metric on two image arrays: mean over feature blocks of the unbiased MMD^2.

    Args:
        real: Held-out images, float ``(m, C, H, W)`` in [0, 1], m >= 2; they set the bandwidths.
        generated: Model samples, float ``(n, C, H, W)`` in [0, 1], n >= 2, same ``C, H, W``.

    Returns:
        MMD^2, at most 2, about 0 when the feature distributions agree; lower is better.

    Raises:
        ValueError: If the shapes disagree, or ``generated`` holds non-finite values.
    """
    if real.shape[1:] != generated.shape[1:] or real.ndim != 4:
        raise ValueError(f"sample_mmd: held-out images {real.shape[1:]} and samples {generated.shape[1:]} must both "
                         f"be (N, C, H, W) of one shape")
    if not np.isfinite(generated).all():
        raise ValueError("sample_mmd: the model's samples hold non-finite values")
    real_features, generated_features = image_features(real), image_features(generated)
    scores = []
    for name, x in real_features.items():
        median = median_distance(x)
        scores.append(mmd2_unbiased(x, generated_features[name], [m * median for m in BANDWIDTH_MULTIPLIERS]))
    return float(np.mean(scores))


def compute_sample_mmd(images: np.ndarray, sample_fn: Callable[[int, np.random.Generator], np.ndarray], *,
                       random_state: np.random.Generator, num_samples: int = 1000) -> dict[str, float]:
    """Kernel MMD^2 between a model's samples and held-out images.

    Args:
        images: Held-out images, float32 ``(N, C, H, W)`` in [0, 1], N >= 2; the first
            ``min(N, num_samples)`` are used (the same rows for every model of a study).
        sample_fn: ``(num, random_state) -> float32 (num, C, H, W)`` samples of the model in [0, 1].
        random_state: Seeds the model's samples.
        num_samples: Images on each side; > 1.

    Returns:
        ``{"sample_mmd": float}``, see :func:`sample_mmd_from_images`; lower is better.

    Raises:
        ValueError: If fewer than 2 images are given, or the samples do not match the images' shape.

    References:
        Gretton et al. 2012, JMLR 13, eq. 3 (lemma 6); section 8 for the median heuristic.
    """
    num = min(len(images), num_samples)
    if num < 2:
        raise ValueError(f"sample_mmd: needs at least 2 held-out images, but got {len(images)}")
    parts, drawn = [], 0
    while drawn < num:
        parts.append(np.asarray(sample_fn(min(SAMPLE_CHUNK, num - drawn), random_state), dtype=np.float32))
        if len(parts[-1]) == 0:
            raise ValueError("sample_mmd: sample_fn returned no samples")
        drawn += len(parts[-1])
    generated = np.concatenate(parts)[:num]
    return {"sample_mmd": sample_mmd_from_images(np.asarray(images[:num], dtype=np.float32), generated)}
