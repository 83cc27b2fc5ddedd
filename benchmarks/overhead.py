"""Wall time of K trials through ``python -m study.run`` against a plain PyTorch loop doing the same.

Both sides train the same K configurations (conv beta-VAE on dSprites, the grid shipped in the
package; betas 1, 4, 16, ...) on the same rows, one trial at a time with 2 torch threads, with the
same per-epoch validation pass and the same MIG evaluation at the end. Each side is timed as a
user sees it, as a whole subprocess: the plain loop (this script with ``--plain-side``: imports,
data, trials) and the study (imports, Ray start, trials, parquet tables), without the report
(``--no-report``: its figures are not Ray's overhead and the plain loop draws none); so every
pair repeats the same work, imports included. Both sides run with ``OMP_WAIT_POLICY=PASSIVE``
(unless set): on 2 cores shared with other jobs (load 5), spinning OpenMP threads made one 2-thread
training step of this model 14 times slower (3,811 ms vs 273 ms passive), which would measure the
scheduler rather than Ray. Study modes: ``auto`` (a single-worker trial trains inside the Tune
trial) and ``torch_trainer`` (every trial launches a Ray Train TorchTrainer).

The sides are interleaved, N pairs of (plain loop, then one study run per mode), and each
pair's ratio compares two runs minutes apart: a machine whose speed drifts (other jobs on shared
cores; one plain run followed by one study run measured 0.70, 1.16, 1.46 and 1.59 on the same
code) moves both sides of a pair together. The spread over pairs (min-max) says how far to trust
the median.

    python benchmarks/overhead.py                       # 3 pairs of K=2 trials, 3 epochs, 12,000 rows
    python benchmarks/overhead.py --pairs 5 --limit 20000 --modes auto,torch_trainer
    python benchmarks/overhead.py --smoke-test          # 1 pair of 1 tiny trial: checks the script runs

The default size (10,200 train rows) is smaller than the earlier figure in docs/measurements.md
(16,000 train rows: 197.7 s plain + 229.2 s study, 7 minutes a pair on 2 idle cores); 3 pairs took 23 min on 2
idle cores (median ratio 1.026, spread 0.117) and 47 min 49 s on 2 cores shared with other jobs
(load 4.6-9.6). The fixed costs (imports, Ray start) weigh more
in a shorter run, so the ratio reads somewhat higher than at the larger size.

Last line: ``overhead_ratio=<median over pairs of study wall time / plain wall time>`` for the
first mode of ``--modes`` (``auto`` by default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.cli import ArgumentParser, comma_list, directory, int_in  # noqa: E402
from analysis.metrics import compute_mig  # noqa: E402
from datasets.registry import DataError, get_dataset, split_rows  # noqa: E402
from study.spec import SpecError, load_spec  # noqa: E402
from trainables.registry import get_family  # noqa: E402
from trainables.trial import trial_seed  # noqa: E402

CONFIG = REPO / "configs" / "beta_sweep.yaml"
BETAS = [1, 4, 16, 2, 8, 6]
MODES = ("auto", "torch_trainer")  # resources.trainer of the study side


def overrides(args, mode: str, storage: Path, name: str) -> list[str]:
    betas = BETAS[: args.trials]
    return [
        f"name={name}", f"storage_path={storage}", f"search_space.beta.choices={betas}",
        "search.repeats=1", "search.max_concurrent_trials=1", "resources.cpus_per_trial=2",
        f"resources.trainer={mode}", f"training.epochs={args.epochs}", f"dataset.limit={args.limit}",
        f"evaluation.num_train={args.num_train}",
    ]


def plain_loop(args, storage: Path) -> tuple[float, list[float]]:
    """The same trials as a hand-written loop over numpy arrays; returns total and per-trial seconds."""
    start = time.perf_counter()
    spec = load_spec(CONFIG, overrides(args, "auto", storage, "overhead_plain"))
    prepared = get_dataset("dsprites").load(spec.dataset, spec.seed)
    train = prepared.train["image"]
    val = prepared.val["image"]
    torch.set_num_threads(2)
    per_trial = []
    for beta in BETAS[: args.trials]:
        t0 = time.perf_counter()
        seed = trial_seed(spec.seed, 0)
        torch.manual_seed(seed)
        family_config, training = spec.trial_settings({"beta": beta})
        family = get_family("conv_vae")
        model = family.model_cls(family_config, prepared.input_shape)
        opt = torch.optim.Adam(model.parameters(), lr=training.lr)
        rng = np.random.default_rng(seed)
        bs = training.batch_size
        for _ in range(training.epochs):
            model.train()
            order = rng.permutation(len(train))
            for s in range(0, len(order), bs):
                x = torch.from_numpy(train[np.sort(order[s : s + bs])]).float()
                out = model({"image": x})
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                for s in range(0, len(val), bs):
                    model({"image": torch.from_numpy(val[s : s + bs]).float()})

        def representation_fn(x):
            with torch.no_grad():
                return model.encode(torch.from_numpy(x))[0].numpy()

        compute_mig(prepared.ground_truth, representation_fn, random_state=np.random.default_rng(seed),
                    num_train=spec.evaluation.num_train)
        per_trial.append(time.perf_counter() - t0)
    return time.perf_counter() - start, per_trial


def plain_run(args, storage: Path) -> tuple[float, list[float]]:
    """Runs :func:`plain_loop` as a subprocess; returns its wall time and per-trial seconds."""
    cmd = [sys.executable, __file__, "--plain-side", "--trials", str(args.trials), "--epochs", str(args.epochs),
           "--limit", str(args.limit), "--num-train", str(args.num_train), "--storage", str(storage)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"plain loop failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout.splitlines()[-1])["per_trial"]


def study_run(args, mode: str, storage: Path) -> tuple[float, list[float]]:
    """Runs the study as a subprocess in a fresh directory under ``storage`` (a study of the same
    name would resume); returns its wall time and the trials' wall_seconds."""
    name = f"overhead_{mode}"
    storage = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=storage))
    sets = sum((["--set", o] for o in overrides(args, mode, storage, name)), [])
    cmd = [sys.executable, "-m", "study.run", str(CONFIG), "--num-cpus", "2", "--no-report", *sets]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"study.run failed ({mode}):\n{proc.stderr[-3000:]}")
    trials = pd.read_parquet(storage / name / "trials.parquet")
    return seconds, trials["wall_seconds"].tolist()


def seconds_list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def load_average() -> str:
    """The 1-minute load average (how busy the shared cores were), or "?" where unknown."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int_in(1), default=3, help="N, interleaved (plain, study) pairs; at least 1")
    parser.add_argument("--trials", type=int_in(1, len(BETAS)), default=2, help=f"K, trials per side, 1-{len(BETAS)}")
    parser.add_argument("--epochs", type=int_in(1, 100_000), default=3)
    parser.add_argument("--limit", type=int_in(2), default=12_000, help="dSprites rows used (85%% train)")
    parser.add_argument("--num-train", type=int_in(2, 10_000_000), default=5_000, help="samples MIG scores")
    parser.add_argument("--modes", type=comma_list(choices=MODES), default="auto",
                        help="study modes, comma-separated: auto, torch_trainer; the first gives overhead_ratio")
    parser.add_argument("--smoke-test", action="store_true", help="1 pair of 1 trial, 1 epoch, 2,000 rows")
    parser.add_argument("--plain-side", action="store_true", help=argparse.SUPPRESS)  # run one plain side
    parser.add_argument("--storage", type=directory, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.pairs, args.trials, args.epochs, args.limit, args.num_train = 1, 1, 1, 2_000, 500
    _check_study(parser, args)
    if args.plain_side:
        seconds, per_trial = plain_loop(args, args.storage)
        print(json.dumps({"seconds": seconds, "per_trial": per_trial}))
        return 0
    modes = args.modes
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read at torch import by both sides' subprocesses
    storage = Path(tempfile.mkdtemp(prefix="vae-overhead-"))
    print(f"{args.pairs} pairs of {args.trials} trials x {args.epochs} epochs on {args.limit} rows; modes {modes}",
          flush=True)
    ratios: dict[str, list[float]] = {mode: [] for mode in modes}
    for pair in range(1, args.pairs + 1):
        load = load_average()
        plain, plain_trials = plain_run(args, storage)
        print(f"pair {pair}: plain loop {plain:.1f} s (per trial {seconds_list(plain_trials)} s; load {load})",
              flush=True)
        for mode in modes:
            load = load_average()
            seconds, trial_seconds = study_run(args, mode, storage)
            ratios[mode].append(seconds / plain)
            print(f"pair {pair}: study.run [{mode}] {seconds:.1f} s (trial wall_seconds {seconds_list(trial_seconds)}; "
                  f"load {load}); ratio {ratios[mode][-1]:.3f}", flush=True)
    for mode in modes:
        r = ratios[mode]
        print(f"[{mode}] ratios {', '.join(f'{x:.3f}' for x in r)}: min {min(r):.3f}, max {max(r):.3f} "
              f"(spread {max(r) - min(r):.3f}), median {float(np.median(r)):.3f}")
    for mode in modes[1:]:
        print(f"overhead_ratio_{mode}={float(np.median(ratios[mode])):.3f}")
    print(f"overhead_ratio={float(np.median(ratios[modes[0]])):.3f}")
    return 0


def _check_study(parser: ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses (``parser.error``: one line, exit 2) flags the study the sides run would refuse: the
    spec with these overrides, and a ``--limit`` whose val split (15%) would be empty."""
    try:
        spec = load_spec(CONFIG, overrides(args, MODES[0], Path(tempfile.gettempdir()), "overhead_check"))
    except SpecError as err:
        parser.error(f"the study these flags describe is refused: {err}")
    try:
        split_rows(args.limit, spec.dataset.val_fraction, spec.seed)
    except DataError as err:
        parser.error(f"--limit {args.limit}: {err}")


if __name__ == "__main__":
    sys.exit(main())
