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

3. From a bucket (``--uri s3://bucket/prefix``): the largest file is uploaded to
   ``<uri>/<file name>`` (unless an object of that name and size is there), then (1) streams it
   from the bucket too: ``bucket_ratio=<bucket img/s / local file img/s>`` through Ray Data, the
   read tasks opening the object through :class:`datasets.remote.BlockCachedFile`; and (2) runs the
   memory part on the object: the peak RSS of the driver alone and of all processes while loading
   (the validation scan reads the whole object once) and training one epoch, against
   ``--memory-budget-gb`` (the object must be larger: it never fits the driver's budget).

   Credentials and the endpoint come from the standard ``AWS_*`` variables. When
   ``AWS_ENDPOINT_URL`` names a loopback address (``http://127.0.0.1:PORT``) where nothing listens,
   the benchmark starts moto's S3 server there (test credentials, bucket created), and stops it at
   the end; it never starts a server on another address. moto (5.x) reads a whole object for every
   ranged GET; the server started here serves ranges from the stored file instead (``_serve_s3``),
   as a real store does, so that the figure measures the reader and not moto's copies. The server
   shares the machine's cores with Ray: on a 2-core machine it takes CPU the reads would use.

Images are resized 125 -> 32 inside the preprocessing (read tasks) so that one epoch of an 8 GB
file fits a 2-core budget; ``--image-size 128 --image-mode pad`` reads full-size images.

    python benchmarks/data_path.py                              # 1 GB and 8 GB, ~10 min on 2 cores
    python benchmarks/data_path.py --sizes-gb 0.05 0.2          # smoke test, ~2 min
    python benchmarks/data_path.py --throughput-file ../shared/data/qg_jets_pythia.h5  # gzip demo file
    AWS_ENDPOINT_URL=http://127.0.0.1:5123 python benchmarks/data_path.py --sizes-gb 0.25 1.5 \
        --uri s3://vae-bench/jets --memory-budget-gb 1          # a loopback bucket, ~10 min
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import h5py  # noqa: E402
import torch  # noqa: E402

from analysis.cli import ArgumentParser, directory, existing_file, float_in, int_in  # noqa: E402
from datasets.hdf5 import open_hdf5  # noqa: E402
from datasets.jets import IMAGE_KEY, SCALAR_KEYS, JetsOptions, _datasets, load_jets, write_synthetic  # noqa: E402
from datasets.remote import BlockCachedFile  # noqa: E402
from datasets.storage import is_uri, open_location  # noqa: E402

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


def jets_options(path: Path | str, args) -> JetsOptions:
    """The loader's options; ``block_rows`` by default 512, fewer for files under 5,120 jets (10 blocks)."""
    block_rows = args.block_rows
    if block_rows is None:
        with open_hdf5(path) as f:
            block_rows = min(512, max(1, f[IMAGE_KEY].shape[0] // 10))
    return JetsOptions(name="jets", path=str(path), image_size=args.image_size, image_mode=args.image_mode,
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


def plain_batches(path: Path | str, ranges, pre, batch_size: int, counts: dict | None = None,
                  cached: bool = False):
    """Torch batches (same columns as the Ray path) read by h5py in the driver, block by block; an
    object at a URI (or with ``cached`` a local file) through one :class:`BlockCachedFile` (its
    ranged reads added to ``counts``)."""
    if is_uri(path) or cached:
        handle = BlockCachedFile(str(path))
        f = h5py.File(handle, "r")
    else:
        handle, f = None, h5py.File(path, "r")
    with f:
        for start, stop in ranges:
            for a in range(start, stop, batch_size):
                b = min(a + batch_size, stop)
                columns = pre({key: f[key][a:b] for key in (IMAGE_KEY, *SCALAR_KEYS)})
                yield {name: torch.from_numpy(value) for name, value in columns.items()}
    if handle is not None:
        handle.close()
        if counts is not None:
            counts["requests"] = counts.get("requests", 0) + handle.requests
            counts["bytes"] = counts.get("bytes", 0) + handle.bytes_fetched


def plain_epoch(path: Path | str, ranges, pre, batch_size: int, counts: dict | None = None,
                cached: bool = False) -> tuple[int, float, float]:
    start, seen, first = time.perf_counter(), 0, None
    for batch in plain_batches(path, ranges, pre, batch_size, counts, cached):
        first = time.perf_counter() - start if first is None else first
        seen += len(batch["image"])
    return seen, time.perf_counter() - start, first


def throughput(path: Path, args, uri: str | None = None) -> dict[str, float]:
    """Prints images/s of each path per epoch; returns the last epochs' images/s by path.

    Paths: ``ray`` (Ray Data over the local file), ``plain`` (h5py in the driver over the local
    file) and, with ``uri`` (the same file in a bucket), ``ray_bucket``, ``plain_bucket`` and
    ``plain_fileobj`` (h5py over a :class:`BlockCachedFile` of the local file: the reader's own cost,
    without the network or the server); the bucket's raw transfer rate is printed first.
    """
    prepared = load_jets(jets_options(path, args), seed=0)
    build = prepared.ray_datasets
    ranges, pre = build.args[1], build.args[3]  # the loader's train blocks (in order) and preprocessor
    print(f"throughput: {path} ({prepared.info['num_train']} train jets), batch {args.batch_size}, "
          f"preprocessing {args.image_mode} to {args.image_size}x{args.image_size}, log1p, /max, clip", flush=True)
    plain_epoch(path, ranges, pre, args.batch_size)  # warms the page cache
    init_ray(args)
    paths = {"ray": lambda train=build()["train"]: ray_epoch(train, args.batch_size),
             "plain": lambda: plain_epoch(path, ranges, pre, args.batch_size)}
    counts: dict[str, int] = {}
    if uri is not None:  # the same split and preprocessing, read from the bucket
        print(f"  transfer: {transfer_mb_s(uri):.0f} MB/s (the object read whole by 24 MiB ranged reads, one at a "
              f"time, no HDF5)", flush=True)
        bucket = functools.partial(_datasets, uri, *build.args[1:], **build.keywords)()["train"]
        paths["ray_bucket"] = lambda: ray_epoch(bucket, args.batch_size)
        paths["plain_bucket"] = lambda: plain_epoch(uri, ranges, pre, args.batch_size, counts)
        paths["plain_fileobj"] = lambda: plain_epoch(path, ranges, pre, args.batch_size, cached=True)
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for epoch in range(1, args.epochs + 1):
        for name, run in paths.items():
            seen, seconds, first = run()
            assert seen == prepared.info["num_train"], (name, seen)
            rates[name].append(seen / seconds)
            print(f"  epoch {epoch} {name:12s}: {seen / seconds:8.0f} images/s ({seconds:.1f} s, first batch after "
                  f"{first:.2f} s)", flush=True)
    import ray

    ray.shutdown()
    print(f"ray_data_images_per_s={rates['ray'][-1]:.0f}")
    print(f"plain_h5py_images_per_s={rates['plain'][-1]:.0f}")
    if uri is not None:
        print(f"bucket_ray_data_images_per_s={rates['ray_bucket'][-1]:.0f}")
        print(f"bucket_plain_h5py_images_per_s={rates['plain_bucket'][-1]:.0f}  (driver reader: "
              f"{counts['requests'] / args.epochs:.0f} ranged reads, {counts['bytes'] / args.epochs / 1e9:.2f} GB "
              f"per epoch for a {path.stat().st_size / 1e9:.2f} GB file)")
        print(f"fileobj_plain_h5py_images_per_s={rates['plain_fileobj'][-1]:.0f}  (h5py over BlockCachedFile of the "
              f"local file: {rates['plain_fileobj'][-1] / rates['plain'][-1]:.2f} x plain h5py)")
    return {name: values[-1] for name, values in rates.items()}


def transfer_mb_s(uri: str, piece: int = 24 << 20) -> float:
    """MB/s of reading the object at ``uri`` whole, ``piece`` bytes per ranged read, one at a time."""
    fs, path, _ = open_location(uri)
    start = time.perf_counter()
    with fs.open_input_file(path) as handle:
        size = handle.size()
        for offset in range(0, size, piece):
            handle.read_at(min(piece, size - offset), offset)
    return size / 1e6 / (time.perf_counter() - start)


class RSSSampler(threading.Thread):
    """Peak of the summed RSS (bytes) of this process and all its descendants (the Ray processes)."""

    def __init__(self, interval_s: float):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process()
        self.interval_s = interval_s
        self.peak = 0
        self.peak_processes = 0
        self.driver_peak = 0  # this process alone
        self.samples = 0
        self.done = threading.Event()

    def sample(self) -> int:
        import psutil

        total, count = 0, 0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                rss = process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            count += 1
            if process.pid == self.root.pid:
                self.driver_peak = max(self.driver_peak, rss)
        if total > self.peak:
            self.peak, self.peak_processes = total, count
        self.samples += 1
        return total

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.sample()


def rss_child(path: Path | str, args) -> dict:
    """One epoch over ``path`` (a local file or a URI) in this (fresh) process; returns its memory
    and time figures."""
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
    fs, inner, _ = open_location(path)
    return {"file_gb": fs.get_file_info(inner).size / 1e9, "rows": prepared.info["num_train"], "load_s": load_s,
            "epoch_s": epoch_s, "images_per_s": seen / epoch_s, "peak_rss_gb": sampler.peak / 1e9,
            "driver_peak_rss_gb": sampler.driver_peak / 1e9, "baseline_rss_gb": baseline / 1e9, "processes": sampler.peak_processes, "samples": sampler.samples,
            "loss": float(loss)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve_s3 is not None:
        return _serve_s3(args.serve_s3)
    if args.rss_child is not None:
        print("RESULT " + json.dumps(rss_child(args.rss_child, args)), flush=True)
        return 0
    problem = _check_args(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes_gb)
    files = {size: synthetic_file(args.workdir, size) for size in sizes}
    server = _loopback_s3_server() if args.uri else None
    try:
        uri = upload(files[sizes[-1]], args.uri, created=server is not None) if args.uri else None
        print(f"preprocessing in the read tasks: {args.image_mode} 125 -> {args.image_size}, log1p, "
              f"/ per-channel train max, clip to [0, 1]", flush=True)
        if not args.skip_throughput:
            rates = throughput(args.throughput_file or files[sizes[-1]], args, uri)
            print(f"ratio={rates['ray'] / rates['plain']:.2f}  (Ray Data / plain h5py images/s; target >= 0.8)",
                  flush=True)
            if uri is not None:
                print(f"bucket_ratio={rates['ray_bucket'] / rates['ray']:.2f}  (Ray Data from the bucket / from the "
                      f"local file, images/s)", flush=True)
        return 0 if args.skip_rss else memory(files, args, uri)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


def memory(files: dict[float, Path], args, uri: str | None) -> int:
    """The memory part: each local file, then the object at ``uri``, in a fresh process each."""
    results = {}
    for size, path in files.items():
        r = results[size] = _rss_in_a_fresh_process(path, args)
        if r is None:
            return 1
        print(f"rss: {path.name}: {r['file_gb']:.2f} GB, {r['rows']} train jets, load {r['load_s']:.0f} s, "
              f"epoch {r['epoch_s']:.0f} s ({r['images_per_s']:.0f} images/s), peak RSS {r['peak_rss_gb']:.2f} GB "
              f"over {r['processes']} processes (idle Ray + driver {r['baseline_rss_gb']:.2f} GB)", flush=True)
    sizes = sorted(files)
    small, large = results[sizes[0]], results[sizes[-1]]
    print(f"rss_ratio={large['peak_rss_gb'] / small['peak_rss_gb']:.2f}  (peak RSS {sizes[-1]:g} GB file / "
          f"{sizes[0]:g} GB file; target <= 1.2; above the idle baseline: "
          f"{(large['peak_rss_gb'] - large['baseline_rss_gb']):.2f} vs "
          f"{(small['peak_rss_gb'] - small['baseline_rss_gb']):.2f} GB)")
    if uri is None:
        return 0
    r = _rss_in_a_fresh_process(uri, args)
    if r is None:
        return 1
    budget = args.memory_budget_gb
    print(f"rss_bucket: {uri}: {r['file_gb']:.2f} GB object, load {r['load_s']:.0f} s (reads it whole once: the "
          f"NaN scan), epoch {r['epoch_s']:.0f} s ({r['images_per_s']:.0f} images/s), peak RSS of the driver "
          f"{r['driver_peak_rss_gb']:.2f} GB, of all {r['processes']} processes {r['peak_rss_gb']:.2f} GB (idle Ray + "
          f"driver {r['baseline_rss_gb']:.2f} GB)", flush=True)
    print(f"bucket_driver_peak_rss_gb={r['driver_peak_rss_gb']:.2f}  (budget {budget:g} GB < object "
          f"{r['file_gb']:.2f} GB; {'within' if r['driver_peak_rss_gb'] <= budget else 'OVER'} budget; all processes "
          f"{r['peak_rss_gb']:.2f} GB, {r['peak_rss_gb'] / large['peak_rss_gb']:.2f} x the local {sizes[-1]:g} GB "
          f"file's)")
    return 0


def _check_args(args) -> str | None:
    """The first bad combination of flags as one line (``--uri: ...``), or None (each flag's own range
    is checked where argparse reads it)."""
    checks = [
        (args.uri is None or (is_uri(args.uri) and args.uri.split("://", 1)[1].strip("/")),
         f"--uri: expected a URI such as s3://bucket/prefix, but got {args.uri!r}"),
        (args.uri is None or args.skip_rss or max(args.sizes_gb) > args.memory_budget_gb,
         f"--memory-budget-gb: the streamed object ({max(args.sizes_gb):g} GB, the largest --sizes-gb) must be "
         f"larger than the budget ({args.memory_budget_gb:g} GB)"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main` (``--rss-child`` and ``--serve-s3``, hidden, run
    :func:`rss_child` and the loopback S3 server)."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gb", type=float_in(0, 10_000, low_open=True), nargs="+", default=[1.0, 8.0],
                        help="synthetic file sizes (GB), each > 0")
    parser.add_argument("--workdir", type=directory, default="/tmp/vae-study-data-path",
                        help="where the synthetic files are written (and reused)")
    parser.add_argument("--throughput-file", type=existing_file, default=None,
                        help="file of the throughput part (default: the largest synthetic file)")
    parser.add_argument("--uri", default=None,
                        help="also stream the largest file from <uri>/<its name> (uploaded unless there), e.g. "
                             "s3://bucket/prefix; a loopback AWS_ENDPOINT_URL gets a moto server")
    parser.add_argument("--memory-budget-gb", type=float_in(0, 100_000, low_open=True), default=1.0,
                        help="the driver's memory budget that the object streamed from --uri exceeds (GB)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--image-size", type=int_in(4, 1024), default=32)
    parser.add_argument("--image-mode", choices=["pad", "crop", "resize"], default="resize")
    parser.add_argument("--batch-size", type=int_in(1, 65_536), default=128)
    parser.add_argument("--block-rows", type=int_in(1), default=None,
                        help="rows per read task / split block (default 512, or a tenth of a smaller file)")
    parser.add_argument("--stats-rows", type=int_in(1, 1_000_000), default=2048)
    parser.add_argument("--read-concurrency", type=int_in(1),
                        default=JetsOptions.model_fields["read_concurrency"].default,
                        help="Ray Data read tasks at once (dataset.read_concurrency)")
    parser.add_argument("--epochs", type=int_in(1, 1000), default=2,
                        help="throughput epochs per path (the last is compared)")
    parser.add_argument("--num-cpus", type=int_in(1), default=2, help="CPUs of the local Ray")
    parser.add_argument("--threads", type=int_in(1), default=1, help="torch threads of the training epoch")
    parser.add_argument("--sample-s", type=float_in(0, 60, low_open=True), default=0.25,
                        help="RSS sampling interval (seconds)")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-s3", type=int, default=None, help=argparse.SUPPRESS)
    return parser


# The bucket: a loopback moto server when AWS_ENDPOINT_URL names one, and the upload.

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _loopback_s3_server() -> subprocess.Popen | None:
    """Starts moto's S3 server (:func:`_serve_s3`, a child process) on the loopback endpoint that
    ``AWS_ENDPOINT_URL`` names, with test credentials; None when the endpoint is not on loopback
    or something already listens there."""
    endpoint = urllib.parse.urlsplit(os.environ.get("AWS_ENDPOINT_URL", ""))
    if endpoint.hostname not in LOOPBACK or endpoint.port is None or _listening(endpoint.port):
        return None
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
        os.environ.setdefault(key, value)
    server = subprocess.Popen([sys.executable, __file__, "--serve-s3", str(endpoint.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _listening(endpoint.port):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"error: the loopback S3 server on port {endpoint.port} did not start")
        time.sleep(0.2)
    print(f"started moto's S3 server on 127.0.0.1:{endpoint.port} (pid {server.pid})", flush=True)
    return server


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _serve_s3(port: int) -> int:
    """moto's S3 server on 127.0.0.1:``port`` until terminated, serving ranged GETs of a large
    object from its stored file (moto 5.x copies the whole object for every GET, then slices it)."""
    import logging
    import mmap

    from moto.s3 import models, responses
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    ranged = threading.local()
    whole = models.FakeKey.value

    def value(key):  # a read-only map of the spilled file: slicing copies only the range
        buffer = key._value_buffer
        if getattr(ranged, "on", False) and getattr(buffer, "_rolled", False):
            return mmap.mmap(buffer.fileno(), 0, access=mmap.ACCESS_READ)
        return whole.fget(key)

    get_object = responses.S3Response.get_object

    def ranged_get_object(response):
        ranged.on = "range" in response.headers
        try:
            return get_object(response)
        finally:
            ranged.on = False

    models.FakeKey.value = property(value, whole.fset)
    responses.S3Response.get_object = ranged_get_object
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    threading.Event().wait()
    return 0


def upload(file: Path, prefix: str, *, created: bool) -> str:
    """``<prefix>/<file name>``, uploaded from ``file`` unless an object of that size is there
    (the bucket is created when this benchmark started its server)."""
    import pyarrow.fs as pafs

    uri = f"{prefix.rstrip('/')}/{file.name}"
    fs, path, uri = open_location(uri)
    bucket = path.split("/", 1)[0]
    if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
        if not created:
            raise SystemExit(f"error: --uri: no such bucket {bucket!r}")
        endpoint = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"])
        pafs.S3FileSystem(endpoint_override=endpoint.netloc, scheme=endpoint.scheme,
                          allow_bucket_creation=True).create_dir(bucket)
    if fs.get_file_info(path).size == file.stat().st_size:
        print(f"bucket: {uri} is there ({file.stat().st_size / 1e9:.2f} GB)", flush=True)
        return uri
    start = time.perf_counter()
    pafs.copy_files(str(file), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    seconds = time.perf_counter() - start
    print(f"bucket: uploaded {file} to {uri} ({file.stat().st_size / 1e9:.2f} GB in {seconds:.0f} s)", flush=True)
    return uri


def _rss_in_a_fresh_process(path: Path | str, args) -> dict | None:
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
