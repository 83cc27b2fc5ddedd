"""How a study's costs grow with its number of trials: N = 10, 100, 1,000 trivially small trials.

Each study is a real ``python -m study.run`` (a fresh process and a local Ray on 2 CPUs, two trials
at a time) of ``configs/toy_beta_sweep.yaml`` made trivially small: ``mlp_vae`` on 400 toy-moon
points, one epoch, TPE over beta and latent_dim with ``N`` samples, no end-of-trial metric and no
report (the report is timed on its own). Per N it prints:

* ``wall_s``: the study process, from its start to its exit (Ray's start-up included);
* ``training_s``: the seconds the trials spent in their epochs (``epoch_seconds`` summed over
  ``epochs.parquet``, divided by the 2 trials that run at a time);
* ``bookkeeping_per_trial_s``: ``(wall_s - training_s) / N``, everything a trial costs besides
  training (actor, data hand-over, checkpoint, status files, Tune, the searcher, the tables);
* ``driver_peak_rss_mb``: the study process's own peak resident memory (its Ray is not counted);
* ``tables_s``: rebuilding ``trials.parquet`` and ``epochs.parquet`` from the study's files
  (:func:`study.results.write_results`, in this process);
* ``report_s``: :func:`analysis.report.write_report` without the model figures, in this process;
* ``journal_kb``, ``trials_kb``, ``epochs_kb``: file sizes.

Costs must grow linearly: the ratios of consecutive Ns are printed. The last line is
``bookkeeping_per_trial_s=...`` at the largest N.

    python benchmarks/scale.py                       # N = 10, 100, 1000 (about 20-30 minutes on 2 cores)
    python benchmarks/scale.py --sizes 10 50         # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.cli import ArgumentParser, directory, int_in  # noqa: E402

CONFIG = REPO / "configs" / "toy_beta_sweep.yaml"
CONCURRENT = 2  # trials at a time: 2 CPUs, one each


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_in(1, 100_000), nargs="+", default=[10, 100, 1000],
                        help="numbers of trials")
    parser.add_argument("--workdir", type=directory, default=None, help="where the studies go (default: a temp dir)")
    return parser.parse_args(argv)


def _overrides(n: int, storage: Path) -> list[str]:
    sets = [f"storage_path={storage}", f"name=scale_{n}", "dataset.n=400", "training.epochs=1",
            "training.batch_size=128", f"search.num_samples={n}", f"search.max_concurrent_trials={CONCURRENT}",
            "evaluation.metrics=[]", "evaluation.snapshot_samples=0"]
    return [item for pair in (("--set", s) for s in sets) for item in pair]


def _run_study(n: int, storage: Path, ray_tmp: Path) -> tuple[float, float, str]:
    """Runs the study; returns ``(wall seconds, driver peak RSS in MB, the study's last lines)``."""
    import psutil

    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "study.run", str(CONFIG), "--num-cpus", str(CONCURRENT), "--no-report",
           *_overrides(n, storage)]
    log = storage / f"scale_{n}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        watched, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.2)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"error: the study of {n} trials exited {proc.returncode}; see {log}")
    return wall, peak / 2**20, log.read_text().strip().splitlines()[-1]


def _measure(n: int, storage: Path, ray_tmp: Path) -> dict[str, float]:
    import pandas as pd

    from analysis.report import write_report
    from analysis.results import StudyDir
    from study.results import write_results

    wall, rss, _ = _run_study(n, storage, ray_tmp)
    study = StudyDir(storage / f"scale_{n}")
    started = time.perf_counter()
    write_results(study)
    tables = time.perf_counter() - started
    started = time.perf_counter()
    write_report(study, model_figures=False)
    report = time.perf_counter() - started
    epochs = pd.read_parquet(study.path("epochs.parquet"))
    training = float(epochs["epoch_seconds"].sum()) / CONCURRENT
    sizes = {name: Path(study.path(file)).stat().st_size / 1024 for name, file in
             (("journal_kb", "optuna.journal"), ("trials_kb", "trials.parquet"), ("epochs_kb", "epochs.parquet"))}
    return {"n": n, "wall_s": wall, "training_s": training, "bookkeeping_per_trial_s": (wall - training) / n,
            "driver_peak_rss_mb": rss, "tables_s": tables, "report_s": report, **sizes}


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vae-scale-")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths
    rows = []
    try:
        for n in args.sizes:
            row = _measure(n, workdir, ray_tmp)
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for before, after in zip(rows, rows[1:]):
        growth = after["n"] / before["n"]
        ratios = {k: after[k] / before[k] for k in ("wall_s", "tables_s", "report_s", "journal_kb", "trials_kb")
                  if before[k] > 0}
        print(f"N {before['n']} -> {after['n']} (x{growth:g}): " + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items()))
    print(f"bookkeeping_per_trial_s={rows[-1]['bookkeeping_per_trial_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
