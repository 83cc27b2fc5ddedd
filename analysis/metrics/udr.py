"""Unsupervised Disentanglement Ranking (UDR): how alike the seeds of one configuration learn.

A configuration that disentangles learns, seed after seed, the same latents up to permutation and
sign; an entangled one learns a different mixture each time. UDR scores a model by how one-to-one
its informative latents match those of the other seeds of its configuration; it needs no factors.

Definition (disentanglement_lib, ``evaluation/udr/metrics/udr.py``, ``compute_udr_sklearn``):

1. Each model's codes (posterior means of the same ``N`` inputs) are standardised per latent
   (zero mean, unit variance; a constant latent stays 0), and latents whose mean KL from the prior
   is at most ``kl_threshold`` (0.01 nats) are zeroed.
2. For each ordered pair of models ``(i, j)``, ``i != j``, a similarity matrix ``R (D_i, D_j)``:
   ``lasso``, the absolute coefficients of a multi-output lasso (``alpha = 0.1``) regressing model
   ``j``'s codes on model ``i``'s; or ``spearman``, the absolute Spearman rank correlations.
3. ``R`` keeps the rows and columns of informative latents (mean KL above ``kl_threshold``).
4. Relative strength: each row ``a`` scores ``max_b R[a, b]^2 / sum_b R[a, b]`` (0 for an all-zero
   row), each column likewise; the pair's score ``matrix[i, j]`` is the mean of the row mean and
   the column mean (1 for a permutation matrix of ones; lower when a latent spreads over several).
5. Model ``j``'s score is the median of ``matrix[i, j]`` over the other models ``i``.

Two departures, both only where disentanglement_lib fails or leaves a choice: a pair in which
either model has no informative latent scores 0 (disentanglement_lib raises on the empty matrix),
and the latents zeroed in step 1 use ``kl_threshold`` (disentanglement_lib fixes 0.01 there, its
default threshold). The diagonal of ``matrix`` is NaN (a model is not compared with itself).

Scale: Spearman scores are in [0, 1]: 1 for the same code up to permutation and sign when its
latents are uncorrelated; the sampling correlations of independent latents count against it
(about 0.89 for 5 latents on 1,000 rows). The lasso shrinks a coefficient of a unit-variance code
by ``alpha`` and zeroes small ones, so the same code scores ``1 - alpha`` (0.9) under ``lasso``;
coefficients of strongly correlated latents can exceed 1, and so, rarely, can a lasso score
(disentanglement_lib does not clip; neither does this module).

References:
    Duan, Matthey, Saraiva, Watters, Burgess, Lerchner, Higgins 2020, "Unsupervised Model Selection
    for Variational Disentangled Representation Learning", ICLR, arXiv:1905.12614, sec. 3 (the
    UDR_ij score from the similarity matrix, relative strength, the median over P other seeds).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from sklearn.linear_model import Lasso

__all__ = [
    "KL_THRESHOLD",
    "LASSO_ALPHA",
    "UDR_NUM_SAMPLES",
    "UDRResult",
    "codes_and_kl",
    "compute_udr",
    "configuration_groups",
    "udr_from_codes",
]

LASSO_ALPHA = 0.1  # disentanglement_lib's lasso_correlation_matrix
KL_THRESHOLD = 0.01  # nats; disentanglement_lib's kl_filter_threshold
UDR_NUM_SAMPLES = 1_000  # held-out rows encoded by every model of a study (disentanglement_lib's tests use 1,000)
Correlation = Literal["lasso", "spearman"]


@dataclass(frozen=True)
class UDRResult:
    """UDR of a group of models (the seeds of one configuration).

    Attributes:
        scores: float64 ``(num_models,)``: model ``j``'s UDR, the median of ``matrix[:, j]`` over
            the other models; in [0, 1] (see the module docstring for the lasso's scale).
        matrix: float64 ``(num_models, num_models)``: ``matrix[i, j]`` the relative-strength score of
            the pair with model ``i``'s codes as regressors and model ``j``'s as targets (symmetric
            under ``spearman``); NaN on the diagonal.
    """

    scores: np.ndarray
    matrix: np.ndarray


def udr_from_codes(codes: Sequence[np.ndarray], kl: Sequence[np.ndarray], *, correlation: Correlation = "lasso",
                   kl_threshold: float = KL_THRESHOLD, random_state: np.random.Generator) -> UDRResult:
    """UDR of models from their codes of the same inputs and their mean KL per latent.

    Args:
        codes: One float array ``(num_samples, latent_dim_i)`` per model: posterior means of the same
            ``num_samples`` inputs, row for row (latent dimensions may differ between models).
        kl: One float array ``(latent_dim_i,)`` per model: the mean over those inputs of the KL
            divergence of each latent's posterior from the prior, in nats, >= 0.
        correlation: ``lasso`` (UDR_L) or ``spearman`` (UDR_S).
        kl_threshold: Latents with mean KL at most this many nats are ignored, >= 0.
        random_state: Seeds the lasso (its coordinate descent is cyclic, so the result does not
            depend on it; kept for the uniform metric signature).

    Returns:
        The per-model scores and the pairwise matrix.

    Raises:
        ValueError: If fewer than 2 models are given, ``codes`` and ``kl`` differ in length or
            shape, the codes are not 2-D with one row count >= 2, ``correlation`` is unknown, or
            ``kl_threshold < 0``.

    References:
        arXiv:1905.12614, sec. 3; disentanglement_lib ``evaluation/udr/metrics/udr.py``.
    """
    codes = [np.asarray(c, dtype=np.float64) for c in codes]
    kl = [np.asarray(k, dtype=np.float64) for k in kl]
    _check_inputs(codes, kl, correlation, kl_threshold)
    informative = [k > kl_threshold for k in kl]
    standard = [_standardise(c) * mask for c, mask in zip(codes, informative)]  # (N, D_i), ignored latents 0
    seed = int(random_state.integers(2**31))
    num_models = len(codes)
    matrix = np.full((num_models, num_models), np.nan)
    for i in range(num_models):
        for j in range(num_models):
            if i == j:
                continue
            similarity = (_lasso_matrix(standard[i], standard[j], seed) if correlation == "lasso"
                          else _spearman_matrix(standard[i], standard[j]))  # (D_i, D_j)
            matrix[i, j] = _relative_strength(similarity[informative[i]][:, informative[j]])
    scores = np.array([np.median(np.delete(matrix[:, j], j)) for j in range(num_models)])
    return UDRResult(scores=scores, matrix=matrix)


def _check_inputs(codes: list[np.ndarray], kl: list[np.ndarray], correlation: str, kl_threshold: float) -> None:
    if len(codes) < 2:
        raise ValueError(f"UDR compares models: give codes of >= 2 models, but got {len(codes)}")
    if len(kl) != len(codes):
        raise ValueError(f"one KL vector per model: got {len(codes)} code arrays and {len(kl)} KL vectors")
    if correlation not in ("lasso", "spearman"):
        raise ValueError(f"`correlation` must be 'lasso' or 'spearman', but got {correlation!r}")
    if not kl_threshold >= 0:
        raise ValueError(f"`kl_threshold >= 0` must hold, but got kl_threshold={kl_threshold}")
    rows = {c.shape[0] if c.ndim == 2 else None for c in codes}
    if None in rows or len(rows) != 1 or rows.pop() < 2:
        raise ValueError(f"codes must be 2-D (num_samples, latent_dim) with one num_samples >= 2, but got shapes "
                         f"{[c.shape for c in codes]}")
    for index, (c, k) in enumerate(zip(codes, kl)):
        if k.shape != (c.shape[1],):
            raise ValueError(f"kl of model {index} must have shape ({c.shape[1]},), but got {k.shape}")


def _standardise(codes: np.ndarray) -> np.ndarray:
    """Each column minus its mean over its standard deviation; a constant column becomes 0."""
    centred = codes - codes.mean(axis=0)
    scale = codes.std(axis=0)
    return centred / np.where(scale > 0, scale, 1.0)


def _lasso_matrix(inputs: np.ndarray, targets: np.ndarray, seed: int) -> np.ndarray:
    """``|W| (D_in, D_out)``: absolute coefficients of the lasso regressing ``targets`` on ``inputs``."""
    model = Lasso(alpha=LASSO_ALPHA, random_state=seed).fit(inputs, targets)
    return np.abs(np.atleast_2d(model.coef_)).T  # coef_ (D_out, D_in)


def _spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|rho| (D_a, D_b)``: absolute Spearman correlations (Pearson's of average ranks) of the
    columns of ``a`` with those of ``b``; 0 for a constant column."""
    ranks_a = rankdata(a, axis=0)
    ranks_b = rankdata(b, axis=0)
    ranks_a -= ranks_a.mean(axis=0)
    ranks_b -= ranks_b.mean(axis=0)
    norms = np.outer(np.linalg.norm(ranks_a, axis=0), np.linalg.norm(ranks_b, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(norms > 0, ranks_a.T @ ranks_b / norms, 0.0)
    return np.abs(rho)


def _relative_strength(similarity: np.ndarray) -> float:
    """Mean over rows of ``max^2 / sum`` and over columns likewise, averaged (0 for an empty matrix).

    Args:
        similarity: ``(D_a, D_b)`` non-negative similarities of the informative latents.
    """
    if similarity.size == 0:
        return 0.0

    def side(axis: int) -> float:
        peak, total = similarity.max(axis=axis), similarity.sum(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.mean(np.where(total > 0, peak**2 / total, 0.0)))

    return (side(1) + side(0)) / 2


# --- a study's UDR: the seeds of each configuration, encoded on the same held-out rows ---------

def codes_and_kl(model: torch.nn.Module, images: np.ndarray, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A model's posterior means of ``images`` and its mean KL per latent on them.

    The KL of latent ``d`` for one input is that of ``N(mu_d, exp(logvar_d))`` from ``N(0, 1)``:
    ``(mu_d^2 + exp(logvar_d) - logvar_d - 1) / 2`` nats, averaged over the inputs.

    Args:
        model: A module with ``encode(x) -> (mu, logvar)``, in eval mode, on the CPU.
        images: float32 ``(N, ...)`` model inputs.
        batch_size: Inputs encoded at a time.

    Returns:
        ``codes`` float64 ``(N, latent_dim)`` and ``kl`` float64 ``(latent_dim,)`` in nats.
    """
    means, kls = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))
            mu, logvar = model.encode(x)  # (B, D) each
            mu, logvar = mu.double(), logvar.double()
            means.append(mu.numpy())
            kls.append((0.5 * (mu**2 + logvar.exp() - logvar - 1)).sum(dim=0).numpy())  # (D,) summed over rows
    return np.concatenate(means), np.sum(kls, axis=0) / len(images)


def configuration_groups(trials: pd.DataFrame, params: Sequence[str]) -> list[pd.Index]:
    """The finished trials with a checkpoint, grouped by configuration (equal values of ``params``).

    Args:
        trials: The trials table (``status``, ``checkpoint_path`` and the ``params`` columns).
        params: The searched parameters; repeats of a configuration differ only in ``repeat``/``seed``.

    Returns:
        One index of ``trials`` rows per configuration, in the table's order.
    """
    done = trials[(trials["status"] == "TERMINATED") & trials["checkpoint_path"].notna()]
    by = [p for p in params if p in done]
    if not by:
        return [done.index] if len(done) else []
    return [group.index for _, group in done.groupby(by, dropna=False, sort=False)]


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def compute_udr(trials: pd.DataFrame, info: Any, *, random_state: np.random.Generator, study: Any = None,
                num_samples: int = UDR_NUM_SAMPLES, correlation: Correlation = "lasso",
                kl_threshold: float = KL_THRESHOLD, batch_size: int = 256,
                warn: Callable[[str], None] = _stderr_line) -> pd.DataFrame:
    """A study's UDR: each finished trial scored against the other seeds of its configuration.

    Every model encodes the same held-out rows: the first ``num_samples`` validation rows of the
    study's data (the split recomputed from the study's seed; streamed data read without Ray).

    Args:
        trials: The study's trials table (``trial_id``, ``status``, ``checkpoint_path`` and the
            searched parameters' columns).
        info (analysis.results.StudyInfo): The study's information (its data, seed, searched parameters).
        random_state: Seeds the lasso (see :func:`udr_from_codes`).
        study (analysis.results.StudyDir | None): The study directory, to resolve checkpoint paths stored
            relative to it; None when ``checkpoint_path`` already holds locations (``load_trials``).
        num_samples: Held-out rows every model encodes, >= 2.
        correlation: ``lasso`` or ``spearman``.
        kl_threshold: Latents with mean KL at most this many nats are ignored.
        batch_size: Rows encoded at a time.
        warn: Called with one line per configuration left without a score.

    Returns:
        A copy of ``trials`` with a ``udr`` column: the score of each finished trial with a
        checkpoint; NaN for the others and for a configuration with a single such trial.

    Raises:
        ValueError: If no configuration has 2 finished trials with a checkpoint, or
            ``num_samples < 2``.
        FileNotFoundError: If a checkpoint is missing.
        datasets.registry.DataError: If the study's data cannot be read here.
    """
    # analysis.checkpoints imports analysis.results, which imports this package: imported on use.
    from analysis.checkpoints import load_prepared, load_trial_model
    from analysis.results import resolve_checkpoint

    if num_samples < 2:
        raise ValueError(f"`num_samples >= 2` must hold, but got num_samples={num_samples}")
    groups = configuration_groups(trials, info.searched_params)
    if not any(len(group) >= 2 for group in groups):
        raise ValueError("udr compares the seeds of a configuration, but no configuration has 2 finished trials "
                         "with a checkpoint (search.repeats >= 2)")
    images = np.asarray(load_prepared(info).val_rows(num_samples)["image"], dtype=np.float32)  # (N, ...)
    result = trials.copy()
    result["udr"] = np.nan
    for group in groups:
        if len(group) < 2:
            config = ", ".join(f"{p}={trials.loc[group[0], p]}" for p in info.searched_params if p in trials)
            warn(f"warning: udr: configuration ({config}) has 1 finished seed; its udr is NaN")
            continue
        codes, kl = [], []
        for index in group:
            stored = trials.loc[index, "checkpoint_path"]
            model, _ = load_trial_model(resolve_checkpoint(study, stored) if study is not None else stored)
            trial_codes, trial_kl = codes_and_kl(model, images, batch_size=batch_size)
            codes.append(trial_codes)
            kl.append(trial_kl)
        scores = udr_from_codes(codes, kl, correlation=correlation, kl_threshold=kl_threshold,
                                random_state=random_state).scores
        result.loc[group, "udr"] = scores
    return result
