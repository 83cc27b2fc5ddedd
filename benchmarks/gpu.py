"""Trials packed on one GPU: total and per-trial images/s, GPU utilisation and memory.

For K in {1, 2, 4, 8} trials sharing one GPU (``resources.gpus_per_trial = 1/K``) and each
precision (fp32, bf16), runs ``configs/beta_sweep_gpu.yaml`` as a real study (K betas, one seed,
a short step budget, data resident on the device) and reads each trial's ``train_images_per_s``
from ``trials.parquet`` (the last epoch's rate, so start-up is excluded); ``nvidia-smi`` is
sampled every second meanwhile for utilisation and memory. Needs a CUDA build of torch and a
GPU; on a machine without one it says so and exits 2.

    python benchmarks/gpu.py                      # the dSprites grid shipped in the package
    python benchmarks/gpu.py --variant full --steps 20000

Last line: ``packing_speedup=<best total images/s / K=1 images/s>`` (same precision as the best).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.cli import ArgumentParser, comma_list, int_in  # noqa: E402

CONFIG = REPO / "configs" / "beta_sweep_gpu.yaml"
BETAS = [1, 2, 4, 6, 8, 16, 32, 64]
PRECISIONS = ("fp32", "bf16", "fp16")  # training.precision


class GpuSampler(threading.Thread):
    """Samples ``nvidia-smi`` (utilisation %, memory MiB of GPU 0) every ``interval`` seconds."""

    def __init__(self, interval: float = 1.0):
        super().__init__(daemon=True)
        self.interval, self.samples, self._stop = interval, [], threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, mem = (float(v) for v in out.stdout.split(",")[:2])
                self.samples.append((util, mem))
            self._stop.wait(self.interval)

    def stop(self) -> tuple[float, float]:
        """Mean utilisation (%) and peak memory (MiB) over the samples."""
        self._stop.set()
        self.join(timeout=5)
        if not self.samples:
            return float("nan"), float("nan")
        return sum(u for u, _ in self.samples) / len(self.samples), max(m for _, m in self.samples)


def run_packed(k: int, precision: str, steps: int, variant: str, storage: Path) -> dict:
    name = f"gpu_k{k}_{precision}"
    sets = [f"name={name}", f"storage_path={storage}", f"search_space.beta.choices={BETAS[:k]}", "search.repeats=1",
            f"resources.gpus_per_trial={1 / k}", "resources.cpus_per_trial=1", f"training.steps={steps}",
            f"training.precision={precision}", f"dataset.variant={variant}", "evaluation.metrics=[]",
            "objective.metric=val_elbo", "evaluation.snapshot_samples=0", "training.max_failures=0"]
    cmd = [sys.executable, "-m", "study.run", str(CONFIG), "--no-report"]
    for item in sets:
        cmd += ["--set", item]
    sampler = GpuSampler()
    sampler.start()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    util, memory = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"K={k} {precision}: study.run exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    trials = pd.read_parquet(storage / name / "trials.parquet")
    per_trial = trials["train_images_per_s"].astype(float)
    return {"K": k, "precision": precision, "total_img_s": per_trial.sum(), "per_trial_img_s": per_trial.mean(),
            "gpu_util_pct": util, "gpu_mem_mib": memory, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int_in(1, 100_000_000), default=6000,
                        help="step budget per trial (default 6000)")
    parser.add_argument("--variant", choices=["grid", "full"], default="grid")
    parser.add_argument("--ks", type=comma_list(int_in(1, len(BETAS))), default="1,2,4,8",
                        help=f"trials packed on the GPU, comma-separated, each 1-{len(BETAS)}")
    parser.add_argument("--precisions", type=comma_list(choices=PRECISIONS), default="fp32,bf16",
                        help=f"comma-separated, of {', '.join(PRECISIONS)}")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"error: benchmarks/gpu.py needs a GPU and a CUDA build of torch (torch {torch.__version__} sees none)",
              file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; {args.steps} steps per trial", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vae-study-gpu-") as storage:
        for precision in args.precisions:
            for k in args.ks:
                row = run_packed(k, precision, args.steps, args.variant, Path(storage))
                rows.append(row)
                print(f"K={k} {precision}: total {row['total_img_s']:,.0f} img/s, per trial "
                      f"{row['per_trial_img_s']:,.0f}, GPU util {row['gpu_util_pct']:.0f}%, "
                      f"memory {row['gpu_mem_mib']:,.0f} MiB, wall {row['wall_s']:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    best = table.loc[table["total_img_s"].idxmax()]
    single = table[(table["K"] == 1) & (table["precision"] == best["precision"])]["total_img_s"].iloc[0]
    print(f"packing_speedup={best['total_img_s'] / single:.2f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    sys.exit(main())
