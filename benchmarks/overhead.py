"""Wall time of K trials through ``python -m study.run`` against a plain in-process PyTorch loop.

Both sides train the same K configurations (conv beta-VAE on dSprites, betas 1, 4, 16, ...)
on the same rows, one trial at a time with 2 torch threads, with the same per-epoch
validation pass and the same MIG evaluation at the end. The study is timed as a user sees
it (the whole subprocess: imports, Ray start, trials, parquet tables), without the report
(``--no-report``: its figures are not Ray's overhead and the plain loop draws none). It runs in
two modes: ``auto`` (a single-worker trial trains inside the Tune trial) and
``torch_trainer`` (every trial launches a Ray Train TorchTrainer).

    python benchmarks/overhead.py                      # K=2, about 8 minutes on 2 cores
    python benchmarks/overhead.py --trials 3 --epochs 4

Last line: ``overhead_ratio=<study wall time / plain wall time>`` for the ``auto`` mode.
"""

from __future__ import annotations

import argparse
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

from analysis.metrics import compute_mig  # noqa: E402
from datasets.registry import get_dataset  # noqa: E402
from study.spec import load_spec  # noqa: E402
from trainables.loop import trial_seed  # noqa: E402
from trainables.registry import get_family  # noqa: E402

CONFIG = REPO / "configs" / "beta_sweep.yaml"
BETAS = [1, 4, 16, 2, 8, 6]


def overrides(args, mode: str, storage: Path) -> list[str]:
    betas = BETAS[: args.trials]
    return [
        f"name=overhead_{mode}", f"storage_path={storage}", f"search_space.beta.choices={betas}",
        "search.repeats=1", "search.max_concurrent_trials=1", "resources.cpus_per_trial=2",
        f"resources.trainer={mode}", f"training.epochs={args.epochs}", f"dataset.limit={args.limit}",
        f"evaluation.num_train={args.num_train}",
    ]


def plain_loop(args, storage: Path) -> tuple[float, list[float]]:
    """The same trials as a hand-written loop over numpy arrays; returns total and per-trial seconds."""
    start = time.perf_counter()
    spec = load_spec(CONFIG, overrides(args, "auto", storage))
    prepared = get_dataset("dsprites").load(spec.dataset_options(), spec.seed)
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


def study_run(args, mode: str, storage: Path) -> tuple[float, list[float]]:
    """Runs the study as a subprocess; returns its wall time and the trials' wall_seconds."""
    cmd = [sys.executable, "-m", "study.run", str(CONFIG), "--num-cpus", "2", "--no-report", *sum((["--set", o] for o in overrides(args, mode, storage)), [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"study.run failed ({mode}):\n{proc.stderr[-3000:]}")
    trials = pd.read_parquet(storage / f"overhead_{mode}" / "trials.parquet")
    return seconds, trials["wall_seconds"].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2, help="K, trials per side")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=20_000, help="dSprites rows used (80%% train)")
    parser.add_argument("--num-train", type=int, default=5_000, help="samples MIG scores")
    parser.add_argument("--modes", default="auto,torch_trainer")
    args = parser.parse_args()
    os.environ.setdefault("DSPRITES_PATH", str(REPO.parent / "shared" / "data" / "dsprites_downsampled.npz"))
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    storage = Path(tempfile.mkdtemp(prefix="vae-overhead-"))
    plain, plain_trials = plain_loop(args, storage)
    print(f"plain loop: {plain:.1f} s for {args.trials} trials (per trial {', '.join(f'{t:.1f}' for t in plain_trials)} s)", flush=True)
    ratios = {}
    for mode in args.modes.split(","):
        seconds, trial_seconds = study_run(args, mode, storage)
        ratios[mode] = seconds / plain
        print(f"study.run [{mode}]: {seconds:.1f} s (trial wall_seconds {', '.join(f'{t:.1f}' for t in trial_seconds)}); "
              f"ratio {ratios[mode]:.3f}", flush=True)
    for mode, ratio in ratios.items():
        if mode != "auto":
            print(f"overhead_ratio_{mode}={ratio:.3f}")
    if "auto" in ratios:
        print(f"overhead_ratio={ratios['auto']:.3f}")


if __name__ == "__main__":
    main()
