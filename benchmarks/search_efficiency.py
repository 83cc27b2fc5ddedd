"""Epochs each search method spends to find a top-decile configuration, against the full grid.

One real study objective: ``mlp_vae`` on the toy two-moons data (``datasets`` ``toy``, 3,000
points, 10% held out), maximising ``val_elbo`` (nats per point, ``-(val_recon_loss + val_kl)``
over the held-out rows). One search space of 72 points (``GRID``: beta x latent_dim x lr x
hidden width), every trial trained for the same ``MAX_EPOCHS``.

1. The reference: the whole grid is trained, each point for ``MAX_EPOCHS`` epochs with the
   project's dataset loader and model family and a small direct loop (Adam, batch 256, one torch
   thread, seed 0 for the data split, the initialisation and the batch order; ``val_elbo`` after
   every epoch, with the same fixed noise draws every epoch). The target is the grid's
   90th-percentile final ``val_elbo``: a method "finds" it with a trial whose final reported value
   is at least that.
2. The methods: random search, TPE, random + ASHA and TPE + ASHA, each run ``--seeds`` times
   (searcher seeds 0, 1, ...) through the platform's own machinery: Ray Tune with
   ``OptunaSearch`` (Optuna ``RandomSampler`` / ``TPESampler`` with Optuna's defaults, seeded),
   Tune's ``ASHAScheduler`` (``time_attr="training_iteration"``, grace period 1, reduction
   factor 3: rungs at 1, 3, 9, 27 epochs), one trial at a time, ``--trials`` trials per run (a
   third of the grid by default), over the grid's values as categorical choices.

This is a tabular benchmark: a trial does not train again; its function trainable reports,
epoch by epoch with ``tune.report``, the learning curve the grid recorded for its
configuration. Training is seeded and deterministic (fixed seeds, one thread, CPU), so running
that configuration again would produce the same curve; what the benchmark measures is the
search, not the noise of retraining (as in the tabular benchmarks of Klein & Hutter 2019).
Epochs are counted as the trials would have spent them.

Figures per method (medians over seeds): ``epochs to target``, the epochs of every trial
started before and including the first one that reaches the target, in start order
(concurrency 1); ``inf`` for a run that never does, so a median of ``inf`` means fewer than
half of the runs found it; ``best``, the best final reported ``val_elbo`` of the run; ``epochs
spent``, the run's total. A Tune function trial costs 3-4 s here when each trial
starts its own actor, 0.5-0.7 s with ``reuse_actors=True`` (measured on the shared 2-core
machine), which the runs use: the default run (the grid, 1.5-3 minutes, then 4 methods x 5
seeds x 24 trials, 2-3 minutes) takes about 4-5 minutes on the shared 2 cores, well inside 30.

TPE starts with Optuna's default 10 random trials, drawn by a ``RandomSampler`` of the same
seed: TPE and random search propose the same first 10 configurations, and differ only after.

    python benchmarks/search_efficiency.py                 # the full benchmark
    python benchmarks/search_efficiency.py --quick         # 9 epochs, 2 seeds, 12 trials: 1-2 minutes
    python benchmarks/search_efficiency.py --curves /tmp/grid_curves.json   # reuse a grid run

Last line: ``epochs_ratio=<TPE+ASHA median epochs to target / the grid's total epochs>``.

References:
    Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning", MLSys,
    arXiv:1810.05934 (ASHA). Bergstra et al. 2011, "Algorithms for Hyper-Parameter
    Optimization", NeurIPS (TPE). Akiba et al. 2019, "Optuna", KDD, arXiv:1907.10902.
    Klein & Hutter 2019, "Tabular Benchmarks for Joint Architecture and Hyperparameter
    Optimization", arXiv:1905.04970.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

# Before anything imports ray: every Ray listener on 127.0.0.1 (shared/RAY_NOTES.md).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial json/csv/tensorboard files
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no per-run configuration box

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.cli import ArgumentParser, int_in, output_file  # noqa: E402

FAMILY = "mlp_vae"
METRIC, MODE = "val_elbo", "max"
# 3 x 3 x 4 x 2 = 72 points. Betas around the plain VAE, latent sizes below, at and above the data's
# 2 dimensions, learning rates over 1.5 decades of Adam's usual range, a thin and a wide MLP.
GRID: dict[str, list] = {
    "beta": [0.25, 1.0, 4.0],
    "latent_dim": [1, 2, 4],
    "lr": [3e-4, 1e-3, 3e-3, 1e-2],
    "hidden_dim": [16, 64],
}
MAX_EPOCHS = 27  # 3^3: ASHA's rungs at 1, 3, 9 and 27 epochs with reduction factor 3
QUICK_EPOCHS = 9
BATCH_SIZE = 256  # 11 steps per epoch over the 2,700 training points
DATA_SEED = 0  # split, initialisation and batch order: the same for every grid point
EVAL_SEED = 1234  # the noise of the sampled z in the val ELBO: the same draws every epoch
TARGET_QUANTILE = 0.9
REDUCTION_FACTOR = 3
METHODS = ("random", "tpe", "random+asha", "tpe+asha")


# ----------------------------------------------------------------------------- the reference grid


def grid_points() -> list[dict]:
    """Every configuration of ``GRID``, in a fixed order (last key fastest)."""
    return [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]


def key(config: dict) -> str:
    """A configuration's identity in the curves table (its values in ``GRID`` order)."""
    return json.dumps([config[name] for name in GRID])


def train_curve(config: dict, data, epochs: int) -> list[float]:
    """Trains one grid point; returns its ``val_elbo`` after each of ``epochs`` epochs.

    Args:
        config: A grid point (``beta``, ``latent_dim``, ``lr``, ``hidden_dim``).
        data: ``datasets.registry.PreparedData`` of the toy set (``image`` float32 ``(N, 2)``).
        epochs: Epochs to train (>= 1).

    Returns:
        ``epochs`` floats: ``-(recon_loss + kl)`` averaged over the validation rows, in nats per
        point (a one-sample ELBO estimate; ``-inf`` if training diverged to NaN).
    """
    import torch

    from trainables.registry import get_family

    family = get_family(FAMILY)
    model_config = family.config_cls(latent_dim=config["latent_dim"], beta=config["beta"],
                                     hidden_widths=(config["hidden_dim"], config["hidden_dim"]))
    torch.manual_seed(DATA_SEED)
    model = family.model_cls(model_config, data.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    train = torch.from_numpy(data.train["image"])  # (N_train, 2)
    val = {"image": torch.from_numpy(data.val["image"])}  # (N_val, 2): one batch
    order = torch.Generator().manual_seed(DATA_SEED)
    curve = []
    for _ in range(epochs):
        model.train()
        permutation = torch.randperm(len(train), generator=order)
        for start in range(0, len(train), BATCH_SIZE):
            output = model({"image": train[permutation[start : start + BATCH_SIZE]]})
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(EVAL_SEED)
            output = model(val)
            elbo = -(output.recon_loss + output.kl).item()  # one host sync per epoch
        curve.append(elbo if np.isfinite(elbo) else float("-inf"))
    return curve


def run_grid(epochs: int, curves_path: Path | None) -> tuple[dict[str, list[float]], bool]:
    """The learning curve of every grid point, and whether it was read from ``curves_path``.

    Args:
        epochs: Epochs per grid point.
        curves_path: A JSON file of curves: read when it holds this ``GRID`` and ``epochs``, else
            (and when it does not exist) written after training; None: train, write nothing.

    Returns:
        ``({config key: epochs floats}, read)``.
    """
    import torch

    from datasets.registry import get_dataset

    if curves_path is not None and curves_path.is_file():
        saved = json.loads(curves_path.read_text())
        if saved["grid"] == GRID and saved["epochs"] == epochs:
            print(f"grid curves read from {curves_path}", flush=True)
            return saved["curves"], True
        print(f"{curves_path} holds another grid or epoch count: training the grid again", flush=True)
    torch.set_num_threads(1)
    entry = get_dataset("toy")
    data = entry.load(entry.options_cls(name="toy", kind="moons"), DATA_SEED)
    curves, start = {}, time.perf_counter()
    for i, config in enumerate(grid_points(), start=1):
        curves[key(config)] = train_curve(config, data, epochs)
        if i % 12 == 0:
            print(f"grid: {i}/{len(grid_points())} points trained, {time.perf_counter() - start:.0f} s", flush=True)
    if curves_path is not None:
        curves_path.write_text(json.dumps({"grid": GRID, "epochs": epochs, "curves": curves}))
    return curves, False


# ----------------------------------------------------------------------------- searches through Tune


def tabular_trainable(config: dict, *, curves: dict[str, list[float]]) -> None:
    """A Tune function trainable that reports the tabulated curve of its configuration, epoch by epoch."""
    from ray import tune

    for epoch, value in enumerate(curves[key(config)], start=1):
        tune.report({METRIC: value, "epoch": epoch})


def _ledger_callback():
    from ray import tune

    class Ledger(tune.Callback):
        """Trial ids in the order Tune started them."""

        def __init__(self):
            self.started: list[str] = []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started.append(trial.trial_id)

    return Ledger()


def run_search(method: str, seed: int, curves: dict, epochs: int, num_trials: int, storage: Path) -> list[tuple]:
    """One seeded run of ``method``; returns ``(config key, epochs run, final value)`` per trial, in start order."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    sampler_cls = optuna.samplers.TPESampler if method.startswith("tpe") else optuna.samplers.RandomSampler
    scheduler = None
    if method.endswith("+asha"):
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1,
                                  reduction_factor=REDUCTION_FACTOR)
    ledger = _ledger_callback()
    tuner = tune.Tuner(
        tune.with_parameters(tabular_trainable, curves=curves),
        param_space={name: tune.choice(values) for name, values in GRID.items()},
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=OptunaSearch(sampler=sampler_cls(seed=seed)),
                                    scheduler=scheduler, num_samples=num_trials, max_concurrent_trials=1,
                                    reuse_actors=True),  # one actor for all trials: 0.5-0.7 s per trial, not 3-4 s
        run_config=tune.RunConfig(name=f"{method.replace('+', '_')}-{seed}", storage_path=str(storage), verbose=0,
                                  callbacks=[ledger]),
    )
    results = tuner.fit()
    by_id = {}
    for result in results:
        if result.error is not None:
            raise RuntimeError(f"{method} seed {seed}: trial failed: {result.error}")
        by_id[result.metrics["trial_id"]] = (key(result.config), int(result.metrics["training_iteration"]),
                                             float(result.metrics[METRIC]))
    if sorted(by_id) != sorted(ledger.started):
        raise RuntimeError(f"{method} seed {seed}: started {len(ledger.started)} trials, got {len(by_id)} results")
    return [by_id[trial_id] for trial_id in ledger.started]


# ----------------------------------------------------------------------------- figures


def epochs_to_target(trials: list[tuple], target: float) -> float:
    """Epochs of all trials up to and including the first whose final value reaches ``target``; inf if none."""
    spent = 0
    for _, epochs, value in trials:
        spent += epochs
        if value >= target:
            return float(spent)
    return float("inf")


def main(argv: list[str] | None = None) -> int:
    args, epochs, seeds, num_trials = _arguments(argv)
    start = time.perf_counter()
    curves, read = run_grid(epochs, args.curves)
    finals = np.array([curve[-1] for curve in curves.values()])
    target = float(np.quantile(finals, TARGET_QUANTILE))
    grid_epochs = len(curves) * epochs
    grid_seconds = time.perf_counter() - start
    how = "read from file" if read else "trained"
    print(f"grid: {len(curves)} points x {epochs} epochs = {grid_epochs} epochs, {how} in {grid_seconds:.0f} s; final "
          f"{METRIC}: best {finals.max():.4f}, median {np.median(finals):.4f}, worst {finals.min():.4f}; target "
          f"(90th percentile) {target:.4f}, reached by {int((finals >= target).sum())} points", flush=True)
    rows = _run_methods(curves, epochs, seeds, num_trials, target)
    print()
    _print_table(rows, finals, grid_epochs, grid_seconds)
    print(f"(medians over {seeds} searcher seeds; {num_trials} trials per run; target {METRIC} >= {target:.4f}; "
          f"total {time.perf_counter() - start:.0f} s)")
    tpe_asha = next(row for row in rows if row["method"] == "tpe+asha")
    print(f"epochs_ratio={float(np.median(tpe_asha['found'])) / grid_epochs:.4f}")
    return 0


def _arguments(argv: list[str] | None) -> tuple[argparse.Namespace, int, int, int]:
    """The command line, and the epochs, searcher seeds and trials per run it sets (``--quick`` or not)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs, 2 seeds, 12 trials per run")
    parser.add_argument("--seeds", type=int_in(1, 1000), default=None,
                        help="searcher seeds per method (default 5; --quick 2)")
    parser.add_argument("--trials", type=int_in(1, 100_000), default=None,
                        help="trials per search run (default a third of the grid; --quick 12)")
    parser.add_argument("--curves", type=curves_file, default=None,
                        help="JSON file of the grid's curves: read if it matches the grid, else trained and written")
    args = parser.parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else MAX_EPOCHS
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    num_trials = args.trials if args.trials is not None else (12 if args.quick else len(grid_points()) // 3)
    return args, epochs, seeds, num_trials


def curves_file(text: str) -> Path:
    """``--curves``: a JSON file of curves that :func:`run_grid` wrote (read), or a new file in an
    existing folder (written); ``~`` expanded.

    Raises:
        argparse.ArgumentTypeError: If it is a folder, its folder is missing, or it exists and does not
            hold ``{"grid", "epochs", "curves"}``.
    """
    path = output_file(text)
    if not path.exists():
        return path
    try:
        saved = json.loads(path.read_text())
        ok = isinstance(saved, dict) and {"grid", "epochs", "curves"} <= saved.keys()
    except (OSError, UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{path}: not a curves file this benchmark wrote (expected JSON with grid, "
                                         "epochs and curves); remove it or name another file")
    return path


def _run_methods(curves: dict, epochs: int, seeds: int, num_trials: int, target: float) -> list[dict]:
    """Every method of :data:`METHODS` over ``seeds`` searcher seeds, on a local Ray of 2 CPUs.

    Returns:
        One row per method: per seed, ``found`` (epochs to ``target``, inf if never), ``best``
        (best final value), ``spent`` (epochs run), ``trials`` and ``seconds`` (wall time of the run).
    """
    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per run
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="search_efficiency_") as storage:
            for method in METHODS:
                found, bests, spent, trials_run, seconds = [], [], [], [], []
                for seed in range(seeds):
                    began = time.perf_counter()
                    trials = run_search(method, seed, curves, epochs, num_trials, Path(storage))
                    seconds.append(time.perf_counter() - began)
                    found.append(epochs_to_target(trials, target))
                    bests.append(max(value for _, _, value in trials))
                    spent.append(sum(e for _, e, _ in trials))
                    trials_run.append(len(trials))
                rows.append({"method": method, "found": found, "best": bests, "spent": spent, "trials": trials_run,
                             "seconds": seconds})
                print(f"{method}: epochs to target per seed {found}, {np.mean(seconds):.1f} s per run", flush=True)
    finally:
        ray.shutdown()
    return rows


def _print_table(rows: list[dict], finals: np.ndarray, grid_epochs: int, grid_seconds: float) -> None:
    """The comparison table: the full grid's line, then each method's medians over its seeds."""
    print(f"{'method':<12} {'found':>6} {'epochs to target':>17} {'/ grid':>7} {'best ' + METRIC:>14} "
          f"{'epochs spent':>13} {'trials':>7} {'s/run':>6}")
    print(f"{'grid':<12} {'':>6} {grid_epochs:>17} {1.0:>7.3f} {finals.max():>14.4f} {grid_epochs:>13} "
          f"{len(finals):>7} {grid_seconds:>6.0f}")
    for row in rows:
        median = float(np.median(row["found"]))
        print(f"{row['method']:<12} {sum(np.isfinite(row['found'])):>3}/{len(row['found']):<2} {median:>17.0f} "
              f"{median / grid_epochs:>7.3f} {np.median(row['best']):>14.4f} {np.median(row['spent']):>13.0f} "
              f"{np.median(row['trials']):>7.0f} {np.median(row['seconds']):>6.1f}")


if __name__ == "__main__":
    sys.exit(main())
