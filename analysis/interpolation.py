"""Latent interpolation: linear and spherical paths between two codes, decoded into a figure.

For a VAE the endpoints are the posterior means of two held-out images; for a GAN (a model
without ``encode``) two standard-normal codes of its ``latent_dim``. Either way the path is
decoded with the model's ``generate(z)`` (the means of p(x | z) for a VAE, the generator's
images for a GAN; see :class:`trainables.protocol.ModelAbilities`). Under a standard-normal prior,
codes of high dimension concentrate near the sphere of radius ``sqrt(latent_dim)``; the
midpoint of a straight line between two such codes falls well inside it (``sqrt(1/2)`` of the
radius for orthogonal codes), where the decoder saw few codes, which spherical interpolation
avoids (White 2016).

References:
    White 2016, "Sampling Generative Networks", arXiv:1609.04468, section 2.1 (slerp);
    Shoemake 1985, "Animating rotation with quaternion curves", SIGGRAPH (the slerp formula).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainables.protocol import supports

__all__ = ["lerp", "slerp", "interpolation_grid", "interpolation_figure", "study_interpolation_figure"]

NUM_STEPS = 8
FIGURE_FILE = "interpolation.png"
NOISE_SEED = 0  # the GAN's two endpoint codes


def _check(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, t = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(t, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"endpoints must be two vectors (D,) of one size, but got {a.shape} and {b.shape}")
    if t.ndim != 1:
        raise ValueError(f"t must be a vector (T,) of fractions, but got shape {t.shape}")
    return a, b, t


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points ``(1 - t) a + t b`` on the straight line from ``a`` to ``b``.

    Args:
        a: float ``(D,)`` start.
        b: float ``(D,)`` end.
        t: float ``(T,)`` fractions of the way; 0 gives ``a``, 1 gives ``b``.

    Returns:
        float64 ``(T, D)``.
    """
    a, b, t = _check(a, b, t)
    return (1.0 - t)[:, None] * a + t[:, None] * b


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation: the great-circle path between the directions of ``a`` and ``b``,
    with the norm moving linearly from ``|a|`` to ``|b|``.

    With ``|a| == |b|`` this is the slerp of White (2016): every point has that norm. In general
    the norm of each point lies between the endpoints' norms. Parallel endpoints give the straight
    line (the limit of the formula); antiparallel ones, where no great circle is preferred, turn
    through the axis direction least aligned with ``a`` (a fixed choice). A zero endpoint gives
    the straight line.

    Args:
        a: float ``(D,)`` start.
        b: float ``(D,)`` end.
        t: float ``(T,)`` fractions of the way; 0 gives ``a``, 1 gives ``b`` exactly.

    Returns:
        float64 ``(T, D)``.

    References:
        White 2016, arXiv:1609.04468, section 2.1; Shoemake 1985.
    """
    a, b, t = _check(a, b, t)
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0 or norm_b == 0:
        return lerp(a, b, t)
    u, v = a / norm_a, b / norm_b
    cos = float(np.clip(u @ v, -1.0, 1.0))
    angle = np.arccos(cos)
    if angle < 1e-6:
        return lerp(a, b, t)
    if np.pi - angle < 1e-6:  # antiparallel: any great circle joins them; pick one through an axis
        axis = np.zeros_like(u)
        axis[np.argmin(np.abs(u))] = 1.0
        w = axis - (axis @ u) * u
        w /= np.linalg.norm(w)
        directions = np.cos(np.pi * t)[:, None] * u + np.sin(np.pi * t)[:, None] * w
    else:
        directions = (np.sin((1.0 - t) * angle)[:, None] * u + np.sin(t * angle)[:, None] * v) / np.sin(angle)
    out = ((1.0 - t) * norm_a + t * norm_b)[:, None] * directions
    out[t == 0.0] = a  # exact endpoints, free of rounding
    out[t == 1.0] = b
    return out


def interpolation_grid(decode: Callable[[np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray,
                       steps: int = NUM_STEPS) -> np.ndarray:
    """Decoded lerp and slerp paths between two codes.

    Args:
        decode: Codes float32 ``(T, D)`` -> images float ``(T, C, H, W)`` in [0, 1].
        a: ``(D,)`` start code.
        b: ``(D,)`` end code.
        steps: Points per path, >= 2, ``t = 0, 1/(steps-1), ..., 1``.

    Returns:
        float32 ``(2, steps, C, H, W)``: row 0 the linear path, row 1 the spherical one.
    """
    t = np.linspace(0.0, 1.0, steps)
    rows = [decode(path(a, b, t).astype(np.float32)) for path in (lerp, slerp)]
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


def interpolation_figure(grid: np.ndarray, title: str = ""):
    """A matplotlib figure of ``grid`` ``(2, T, C, H, W)``: rows lerp and slerp, columns t from 0 to 1."""
    import matplotlib.pyplot as plt

    rows, steps = grid.shape[:2]
    fig, axes = plt.subplots(rows, steps, figsize=(1.2 * steps + 0.6, 1.3 * rows + 0.5), squeeze=False)
    t = np.linspace(0.0, 1.0, steps)
    for r, name in enumerate(["lerp", "slerp"][:rows]):
        for c in range(steps):
            ax = axes[r, c]
            image = np.clip(grid[r, c], 0.0, 1.0)  # (C, H, W)
            if image.shape[0] == 1:
                ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(image.transpose(1, 2, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == rows - 1:
                ax.set_xlabel(f"t={t[c]:.2f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _endpoints(model, info, checkpoint: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, Callable, str]:
    """``(a, b, decode, what)``: posterior means of two held-out images for a VAE (the first two rows the
    trial kept in its snapshots, else the first two of the rebuilt validation split), or two prior
    draws for a GAN."""
    import torch

    def as_numpy(fn):
        def run(z: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return fn(torch.from_numpy(z)).float().numpy()
        return run

    if not supports(model, "encode"):
        generator = torch.Generator().manual_seed(NOISE_SEED)
        codes = torch.randn(2, model.latent_dim, generator=generator).numpy()
        return codes[0], codes[1], as_numpy(model.generate), "two standard-normal codes"
    from analysis.results import local_copy
    from trainables.checkpoint import load_snapshots

    with local_copy(checkpoint) as directory:
        kept = load_snapshots(directory).get("inputs") if directory is not None else None  # rows the trial kept
    if kept is not None and len(kept) >= 2:
        images = np.asarray(kept[:2], dtype=np.float32)  # (2, C, H, W)
    else:  # rebuild the held-out rows from the spec (in-memory datasets)
        from analysis.checkpoints import load_prepared

        prepared = load_prepared(info)
        images = np.asarray(prepared.val["image"][:2], dtype=np.float32)  # (2, C, H, W)
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(images))
    mu = mu.numpy()
    return mu[0], mu[1], as_numpy(model.generate), "posterior means of the first two held-out images"


def _interpolates(model) -> bool:
    """Whether ``model`` can be interpolated: it generates from codes, and has either an encoder
    (the endpoints of a VAE) or a ``latent_dim`` to draw prior codes of (a GAN's)."""
    return supports(model, "generate") and (supports(model, "encode") or supports(model, "latent_dim"))


def study_interpolation_figure(study, info, trials, best, out: Path) -> list[tuple[str, Path]]:
    """Report figure (``analysis.report.EXTRA_FIGURES``): lerp and slerp for the best trial.

    Args:
        study (StudyDir | None): The study directory (unused).
        info (StudyInfo | None): The study's :class:`~analysis.results.StudyInfo` (its dataset, for a VAE's images).
        trials (pandas.DataFrame | None): The trials table (unused).
        best (pandas.Series | None): The best trial's row, or None.
        out: The report directory; the figure goes to ``out / "interpolation.png"``.

    Returns:
        ``[(title, path)]``, or ``[]`` when there is no best trial with a checkpoint, the model
        does not read images ``(C, H, W)``, or it has no codes to interpolate (the abilities
        ``generate`` and ``encode`` or ``latent_dim`` of :class:`trainables.protocol.ModelAbilities`).

    Raises:
        datasets.registry.DataError: If a VAE's dataset cannot be loaded here (the report lists
            the figure as skipped).
    """
    from analysis.checkpoints import load_trial_model
    from analysis.results import is_directory

    checkpoint = None if best is None else best.get("checkpoint_path")
    if not is_directory(checkpoint):
        return []
    model, trial = load_trial_model(checkpoint)
    if len(trial["input_shape"]) != 3 or not _interpolates(model):
        return []
    a, b, decode, what = _endpoints(model, info, checkpoint)
    grid = interpolation_grid(decode, a, b)
    fig = interpolation_figure(grid, f"best trial {best['trial_id']} ({trial['family']}): {what}")
    from analysis.plots import save_figure

    path = save_figure(fig, Path(out) / FIGURE_FILE)
    return [("Latent interpolation of the best trial (rows: linear, spherical)", path)]
