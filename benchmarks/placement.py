"""Iteration rate of the two data paths of an in-memory dataset, with a no-op model.

``device``: :class:`datasets.device.DeviceData`, the arrays on the trial's device (here the CPU),
batched by index with a fresh permutation each epoch. ``stream``: the same rows as a materialised
Ray dataset, read as a Tune trial reads it (``iterator().iter_torch_batches``). Both cast the
uint8 images to float32 batches of 64 on the device; the "model" only touches each batch.

    python benchmarks/placement.py                 # the shipped dSprites grid, 3 epochs each
    python benchmarks/placement.py --epochs 5 --batch-size 256

Last line: ``device_over_stream=<device images/s / stream images/s>``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from analysis.cli import ArgumentParser, int_in  # noqa: E402
from datasets.device import DeviceData  # noqa: E402
from datasets.registry import get_dataset  # noqa: E402


def rate(shard, epochs: int, batch_size: int) -> float:
    """Images per second over ``epochs`` passes (the first pass included)."""
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=torch.float32, device="cpu"):
            seen += len(batch["image"])
            batch["image"].sum()  # the no-op model: touch the batch
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int_in(1, 100_000), default=3, help="passes of each path, 1-100000")
    parser.add_argument("--batch-size", type=int_in(1, 65_536), default=64, help="rows per batch, 1-65536")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    entry = get_dataset("dsprites")
    prepared = entry.load(entry.options_cls(name="dsprites", val_fraction=0.1), 0)
    rows = len(prepared.train["image"])
    device = rate(DeviceData(prepared.train, shuffle=True), args.epochs, args.batch_size)
    print(f"device: {device:,.0f} images/s ({rows} rows x {args.epochs} epochs, batch {args.batch_size})", flush=True)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        stream = rate(prepared.to_ray()["train"].iterator(), args.epochs, args.batch_size)
    finally:
        ray.shutdown()
    print(f"stream: {stream:,.0f} images/s (Ray Data, materialised blocks)")
    print(f"device_over_stream={device / stream:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
