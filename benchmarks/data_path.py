"""The HDF5 data path: Ray Data throughput against plain h5py, and memory against file size.

1. Throughput: images/s of the jets train split streamed through Ray Data
   (:class:`datasets.hdf5.HDF5Datasource` read tasks -> ``iter_torch_batches``) against a plain
   in-process h5py reader that reads the same contiguous train blocks in the same order, applies
   the same preprocessing (the :class:`datasets.jets.JetPreprocessor` fitted at load) and yields
   the same torch batches, on the largest synthetic file (or ``--throughput-file``). The page
   cache is warmed first; each path runs ``--epochs`` epochs and the last one is compared (the
   first Ray epoch also pays for starting its workers; every Ray epoch pays ~0.3 s to start
   its execution, which a 1 GB file's ~1 s epoch feels). Prints ``ratio=<Ray img/s / plain
   img/s>`` (target >= 0.8).

2. Memory: peak RSS, summed over the driver and every Ray process it started (GCS, raylet,
   workers, read tasks; sampled by a thread every ``--sample-s`` seconds with psutil), of loading
   and training a tiny conv VAE for one epoch over synthetic files of ``--sizes-gb`` (written by
   ``python -m datasets.jets synth``'s generator, uncompressed so that file size = data size, under
   ``--workdir`` and reused when present). Each size runs in a fresh process with a fresh Ray.
   Prints ``rss_ratio=<peak RSS of the largest / of the smallest>`` (target <= 1.2).

Images are resized 125 -> 32 inside the preprocessing (read tasks) so that one epoch of an 8 GB
file fits a 2-core budget; ``--image-size 128 --image-mode pad`` reads full-size images.

    python benchmarks/data_path.py                              # 1 GB and 8 GB, ~10 min on 2 cores
    python benchmarks/data_path.py --sizes-gb 0.05 0.2          # smoke test, ~2 min
    python benchmarks/data_path.py --throughput-file ../shared/data/qg_jets_pythia.h5  # gzip demo file
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import h5py  # noqa: E402
import torch  # noqa: E402

from datasets.jets import IMAGE_KEY, SCALAR_KEYS, JetsOptions, load_jets, write_synthetic  # noqa: E402

ROW_BYTES = 125 * 125 * 3 * 4 + 3 * 4  # one synthetic jet on disk, uncompressed


def synthetic_file(workdir: Path, size_gb: float) -> Path:
    """An uncompressed synthetic jets file of about ``size_gb`` GB, written once and reused."""
    rows = max(100, int(size_gb * 1e9 / ROW_BYTES))
    path = workdir / f"jets_{size_gb:g}gb.h5"
    if path.is_file():
        try:
            with h5py.File(path, "r") as f:
                if f[IMAGE_KEY].shape[0] == rows and f[IMAGE_KEY].compression is None:
                    return path
        except (OSError, KeyError):
            pass
    start = time.perf_counter()
    write_synthetic(path, rows, seed=0, chunk_rows=256, compression=None)
    print(f"wrote {path} ({rows} jets, {path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s",
          flush=True)
    return path


def jets_options(path: Path, args) -> JetsOptions:
    """The loader's options; ``block_rows`` by default 512, fewer for files under 5,120 jets (10 blocks)."""
    block_rows = args.block_rows
    if block_rows is None:
        with h5py.File(path, "r") as f:
            block_rows = min(512, max(1, f[IMAGE_KEY].shape[0] // 10))
    return JetsOptions(name="jets", path=path, image_size=args.image_size, image_mode=args.image_mode,
                       block_rows=block_rows, stats_rows=args.stats_rows, val_fraction=0.1,
                       read_concurrency=args.read_concurrency)


def init_ray(args) -> None:
    import ray
    import ray.data

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def ray_epoch(train, batch_size: int) -> tuple[int, float, float]:
    """Images, seconds and seconds to the first batch of one pass of ``iter_torch_batches`` over
    the streamed train split."""
    start, seen, first = time.perf_counter(), 0, None
    for batch in train.iter_torch_batches(batch_size=batch_size, dtypes=torch.float32):
        first = time.perf_counter() - start if first is None else first
        seen += len(batch["image"])
    return seen, time.perf_counter() - start, first


def plain_batches(path: Path, ranges, pre, batch_size: int):
    """Torch batches (same columns as the Ray path) read by h5py in the driver, block by block."""
    with h5py.File(path, "r") as f:
        for start, stop in ranges:
            for a in range(start, stop, batch_size):
                b = min(a + batch_size, stop)
                columns = pre({key: f[key][a:b] for key in (IMAGE_KEY, *SCALAR_KEYS)})
                yield {name: torch.from_numpy(value) for name, value in columns.items()}


def plain_epoch(path: Path, ranges, pre, batch_size: int) -> tuple[int, float, float]:
    start, seen, first = time.perf_counter(), 0, None
    for batch in plain_batches(path, ranges, pre, batch_size):
        first = time.perf_counter() - start if first is None else first
        seen += len(batch["image"])
    return seen, time.perf_counter() - start, first


def throughput(path: Path, args) -> float:
    """Prints images/s of both paths per epoch; returns the last epochs' ratio Ray / plain."""
    prepared = load_jets(jets_options(path, args), seed=0)
    build = prepared.ray_datasets
    ranges, pre = build.args[1], build.args[3]  # the loader's train blocks (in order) and preprocessor
    print(f"throughput: {path} ({prepared.info['num_train']} train jets), batch {args.batch_size}, "
          f"preprocessing {args.image_mode} to {args.image_size}x{args.image_size}, log1p, /max, clip", flush=True)
    plain_epoch(path, ranges, pre, args.batch_size)  # warms the page cache
    init_ray(args)
    train = build()["train"]
    rates = {"ray": [], "plain": []}
    for epoch in range(1, args.epochs + 1):
        for name, run in (("ray", lambda: ray_epoch(train, args.batch_size)),
                          ("plain", lambda: plain_epoch(path, ranges, pre, args.batch_size))):
            seen, seconds, first = run()
            assert seen == prepared.info["num_train"], (name, seen)
            rates[name].append(seen / seconds)
            print(f"  epoch {epoch} {name:5s}: {seen / seconds:8.0f} images/s ({seconds:.1f} s, first batch after "
                  f"{first:.2f} s)", flush=True)
    import ray

    ray.shutdown()
    print(f"ray_data_images_per_s={rates['ray'][-1]:.0f}")
    print(f"plain_h5py_images_per_s={rates['plain'][-1]:.0f}")
    return rates["ray"][-1] / rates["plain"][-1]


class RSSSampler(threading.Thread):
    """Peak of the summed RSS (bytes) of this process and all its descendants (the Ray processes)."""

    def __init__(self, interval_s: float):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process()
        self.interval_s = interval_s
        self.peak = 0
        self.peak_processes = 0
        self.samples = 0
        self.done = threading.Event()

    def sample(self) -> int:
        import psutil

        total, count = 0, 0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
                count += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if total > self.peak:
            self.peak, self.peak_processes = total, count
        self.samples += 1
        return total

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.sample()


def rss_child(path: Path, args) -> dict:
    """One epoch over ``path`` in this (fresh) process; returns its memory and time figures."""
    from trainables.registry import get_family

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sampler = RSSSampler(args.sample_s)
    sampler.start()
    start = time.perf_counter()
    prepared = load_jets(jets_options(path, args), seed=0)  # validation scan + train statistics
    load_s = time.perf_counter() - start
    init_ray(args)
    baseline = sampler.sample()  # the idle Ray instance and the driver
    family = get_family("conv_vae")
    model = family.model_cls(family.config_cls(latent_dim=4, filters=(8, 8, 16), hidden_dim=32),
                             prepared.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = prepared.to_ray()["train"]
    epoch_start = time.perf_counter()
    seen = 0
    for batch in train.iter_torch_batches(batch_size=args.batch_size, dtypes=torch.float32):
        loss = model(batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(batch["image"])
    epoch_s = time.perf_counter() - epoch_start
    sampler.sample()
    sampler.done.set()
    assert seen == prepared.info["num_train"], (seen, prepared.info["num_train"])
    return {"file_gb": path.stat().st_size / 1e9, "rows": prepared.info["num_train"], "load_s": load_s,
            "epoch_s": epoch_s, "images_per_s": seen / epoch_s, "peak_rss_gb": sampler.peak / 1e9,
            "baseline_rss_gb": baseline / 1e9, "processes": sampler.peak_processes, "samples": sampler.samples,
            "loss": float(loss)}


def main() -> int:
    args = _parser().parse_args()
    if args.rss_child is not None:
        print("RESULT " + json.dumps(rss_child(args.rss_child, args)), flush=True)
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes_gb)
    files = {size: synthetic_file(args.workdir, size) for size in sizes}
    print(f"preprocessing in the read tasks: {args.image_mode} 125 -> {args.image_size}, log1p, "
          f"/ per-channel train max, clip to [0, 1]", flush=True)
    if not args.skip_throughput:
        ratio = throughput(args.throughput_file or files[sizes[-1]], args)
        print(f"ratio={ratio:.2f}  (Ray Data / plain h5py images/s; target >= 0.8)", flush=True)
    if args.skip_rss:
        return 0
    results = {}
    for size, path in files.items():
        r = results[size] = _rss_in_a_fresh_process(path, args)
        if r is None:
            return 1
        print(f"rss: {path.name}: {r['file_gb']:.2f} GB, {r['rows']} train jets, load {r['load_s']:.0f} s, "
              f"epoch {r['epoch_s']:.0f} s ({r['images_per_s']:.0f} images/s), peak RSS {r['peak_rss_gb']:.2f} GB "
              f"over {r['processes']} processes (idle Ray + driver {r['baseline_rss_gb']:.2f} GB)", flush=True)
    small, large = results[sizes[0]], results[sizes[-1]]
    print(f"rss_ratio={large['peak_rss_gb'] / small['peak_rss_gb']:.2f}  (peak RSS {sizes[-1]:g} GB file / "
          f"{sizes[0]:g} GB file; target <= 1.2; above the idle baseline: "
          f"{(large['peak_rss_gb'] - large['baseline_rss_gb']):.2f} vs "
          f"{(small['peak_rss_gb'] - small['baseline_rss_gb']):.2f} GB)")
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main` (``--rss-child``, hidden, runs :func:`rss_child`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 8.0], help="synthetic file sizes (GB)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vae-study-data-path"),
                        help="where the synthetic files are written (and reused)")
    parser.add_argument("--throughput-file", type=Path, default=None,
                        help="file of the throughput part (default: the largest synthetic file)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--image-mode", choices=["pad", "crop", "resize"], default="resize")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--block-rows", type=int, default=None,
                        help="rows per read task / split block (default 512, or a tenth of a smaller file)")
    parser.add_argument("--stats-rows", type=int, default=2048)
    parser.add_argument("--read-concurrency", type=int, default=JetsOptions.model_fields["read_concurrency"].default,
                        help="Ray Data read tasks at once (dataset.read_concurrency)")
    parser.add_argument("--epochs", type=int, default=2, help="throughput epochs per path (the last is compared)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training epoch")
    parser.add_argument("--sample-s", type=float, default=0.25, help="RSS sampling interval")
    parser.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def _rss_in_a_fresh_process(path: Path, args) -> dict | None:
    """:func:`rss_child`'s figures for ``path``, run in a fresh Python (and Ray) with ``args``'
    settings; None after printing the child's output tails when it failed."""
    cmd = [sys.executable, __file__, "--rss-child", str(path), "--image-size", str(args.image_size),
           "--image-mode", args.image_mode, "--batch-size", str(args.batch_size), "--stats-rows",
           str(args.stats_rows), "--num-cpus", str(args.num_cpus), "--threads", str(args.threads),
           "--sample-s", str(args.sample_s), "--read-concurrency", str(args.read_concurrency),
           *(["--block-rows", str(args.block_rows)] if args.block_rows else [])]
    env = {**os.environ, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", f"/tmp/rdp{os.getpid()}")}
    Path(env["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-3000:] + proc.stderr[-5000:], file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    sys.exit(main())
