"""Wall time of each disentanglement metric on a cheap 10-dim representation of dSprites.

The dataset is the downsampled dSprites grid (3 x 6 x 10 x 16 x 16 factor values, one image
per combination). Its observations carry their row index instead of pixels
(``RowIndexedData``), so that "encoding" is a table look-up and the times are those of the
metrics, not of a network or of copying images. The representation (``SyntheticEncoder``)
maps a row's five factors, scaled to [0, 1], to a 10-dim code like a fairly disentangled
VAE's mean code: latents 0-4 each follow one factor, lightly mixed with the others
(off-diagonal weights N(0, 0.1^2)), plus noise of std 0.05; latents 5-7 are collapsed (std
0.02 noise around 0); latents 8-9 are weak noisy mixtures of all factors.

Every metric runs with its module's defaults (num_train=10,000 codes; num_test=5,000 where
there is a test set; FactorVAE and BetaVAE: 10,000 training and 5,000 evaluation votes or
points of 64 observations), each from its own ``np.random.default_rng(seed)``, so the
defined and the fast DCI score the same samples. The suite total uses the fast DCI; the
defined DCI is timed too, outside the total, for the fast-vs-defined differences. The
target, a suite of <= 30 s on 2 cores, is met without lowering any sample count: the only
settings chosen for speed are the fast DCI classifier and the vectorised observation look-up.

    python benchmarks/metrics.py                # ~2.5 minutes on 2 cores: suite ~8 s, defined DCI ~2.4 min
    python benchmarks/metrics.py --smoke-test   # 1,000 codes, ~20 s

Last line: ``suite_seconds=<total wall time of the suite, fast DCI>``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.cli import ArgumentParser, existing_file, int_in, one_line  # noqa: E402
from analysis.metrics.dci import FAST_TREE_PARAMS, compute_dci  # noqa: E402
from analysis.metrics.gaussian_tc import compute_gaussian_tc  # noqa: E402
from analysis.metrics.mig import compute_mig  # noqa: E402
from analysis.metrics.modularity_explicitness import compute_modularity_explicitness  # noqa: E402
from analysis.metrics.sap import compute_sap  # noqa: E402
from datasets.base import ArrayGroundTruthData  # noqa: E402
from datasets.dsprites import GRID_PATH, load_dsprites  # noqa: E402
from datasets.registry import DataError  # noqa: E402

try:
    from analysis.metrics.factor_vae import compute_factor_vae  # noqa: E402
except ImportError:
    compute_factor_vae = None
try:
    from analysis.metrics.beta_vae import compute_beta_vae  # noqa: E402
except ImportError:
    compute_beta_vae = None

DATA = os.environ.get("DSPRITES_DOWNSAMPLED") or str(GRID_PATH)  # default: the grid shipped in the package
LATENT_DIM = 10


class RowIndexedData(ArrayGroundTruthData):
    """dSprites whose observations are their row indices, float32 ``(B, 1, 1, 1)``.

    Sampling follows ``ArrayGroundTruthData`` (factors: random rows; observations: a random
    row among those with the wanted factors). On a full factor grid, where that row is
    unique, it is found by one vectorised index look-up instead of a Python loop over rows,
    which would otherwise dominate the FactorVAE and BetaVAE times (1.9 million look-ups).
    """

    def __init__(self, data: ArrayGroundTruthData):
        super().__init__(
            np.arange(len(data), dtype=np.float32)[:, None, None, None],  # (N, C, H, W) = (N, 1, 1, 1)
            data.factors,
            data.factors_num_values,
            data.factor_names,
        )
        keys = np.ravel_multi_index(self.factors.T, self.factors_num_values)  # (N,) mixed-radix index
        self._row_of_key = None
        if len(np.unique(keys)) == len(keys) == np.prod(self.factors_num_values):  # the full grid, once each
            self._row_of_key = np.empty(len(keys), dtype=np.int64)
            self._row_of_key[keys] = np.arange(len(keys))

    def sample_observations_from_factors(self, factors: np.ndarray, random_state: np.random.Generator) -> np.ndarray:
        if self._row_of_key is None:
            return super().sample_observations_from_factors(factors, random_state)
        return self.observations(self._row_of_key[np.ravel_multi_index(np.asarray(factors).T, self.factors_num_values)])


class SyntheticEncoder:
    """Row indices ``(B, 1, 1, 1)`` -> 10-dim codes ``(B, 10)`` made from the rows' factors.

    Deterministic, as a VAE's mean code is: each row's code, noise included, is drawn once.

    Args:
        factors: int ``(N, 5)``, the factors of each row.
        factors_num_values: Values of each factor, to scale them to [0, 1].
        seed: Seeds the mixing weights and the noise.
    """

    def __init__(self, factors: np.ndarray, factors_num_values: list[int], seed: int = 0):
        rng = np.random.default_rng(seed)
        scaled = factors / (np.asarray(factors_num_values) - 1.0)  # (N, 5) in [0, 1]
        k = factors.shape[1]
        weights = np.zeros((k, LATENT_DIM))  # (5, 10): factors -> latents
        weights[:, :k] = np.eye(k) + rng.normal(0.0, 0.1, (k, k)) * (1 - np.eye(k))  # light mixing
        weights[:, 8:] = rng.normal(0.0, 0.3, (k, 2))  # two weak mixtures
        noise_std = np.array([0.05] * k + [0.02] * 3 + [0.3] * 2)  # (10,)
        self.table = scaled @ weights + rng.normal(size=(len(factors), LATENT_DIM)) * noise_std  # (N, 10)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.table[x.reshape(len(x)).astype(np.int64)]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=existing_file, default=DATA,
                        help="dSprites .npz (default: $DSPRITES_DOWNSAMPLED, else the grid shipped in the package)")
    parser.add_argument("--seed", type=int_in(0), default=0, help="seeds the codes and every metric, >= 0")
    parser.add_argument("--smoke-test", action="store_true", help="1,000 codes / 200 votes, to check it runs")
    args = parser.parse_args(argv)

    try:
        source = load_dsprites(args.data)
    except DataError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    data = RowIndexedData(source)
    encoder = SyntheticEncoder(data.factors, data.factors_num_values, seed=args.seed)
    n_train, n_test, n_votes, n_eval = (1000, 500, 200, 100) if args.smoke_test else (10_000, 5_000, 10_000, 5_000)
    common = {"num_train": n_train}
    split = {"num_train": n_train, "num_test": n_test}
    votes = {"num_train": n_votes, "num_eval": n_eval}

    suite: list[tuple[str, object, dict]] = [
        ("mig", compute_mig, common),
        ("sap", compute_sap, split),
        ("dci_fast", compute_dci, {**split, "fast": True}),
        ("modularity_explicitness", compute_modularity_explicitness, split),
        ("gaussian_tc", compute_gaussian_tc, common),
    ]
    for name, fn in (("factor_vae", compute_factor_vae), ("beta_vae", compute_beta_vae)):
        if fn is None:
            print(f"{name}: skipped (module not found)")
        else:
            suite.append((name, fn, {**votes, "num_variance_estimate": n_train} if name == "factor_vae" else votes))

    print(
        f"data: {args.data.name}, {len(data)} rows, factors {data.factors_num_values}; "
        f"codes: {LATENT_DIM}-dim synthetic (seed {args.seed}); num_train={n_train}, num_test={n_test}"
    )
    print(
        "classifiers: SAP LinearSVC(C=0.01, class_weight='balanced') per (latent, factor); "
        "DCI defined GradientBoostingClassifier() per factor, fast ExtraTreesClassifier("
        + ", ".join(f"{k}={v}" for k, v in FAST_TREE_PARAMS.items())
        + "); explicitness one-vs-rest LogisticRegression(solver='liblinear') per factor"
    )

    def run(name: str, fn, kwargs: dict) -> tuple[float, dict]:
        start = time.perf_counter()
        result = fn(data, encoder, random_state=np.random.default_rng(args.seed), **kwargs)
        seconds = time.perf_counter() - start
        scores = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
        print(f"{name:<24s} {seconds:7.2f} s  {scores}", flush=True)
        return seconds, result

    seconds, results = {}, {}
    for name, fn, kwargs in suite:
        seconds[name], results[name] = run(name, fn, kwargs)
    defined_seconds, defined = run("dci_defined (not in suite)", compute_dci, {**split, "fast": False})
    fast = results["dci_fast"]
    diffs = ", ".join(f"{k}={abs(fast[k] - defined[k]):.4f}" for k in defined)
    print(f"dci fast vs defined |difference|: {diffs}; fast is x{defined_seconds / seconds['dci_fast']:.1f} faster")
    print(f"suite_seconds={sum(seconds.values()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
