"""What ``study.run`` checks before Ray starts and before anything is written.

The storage location is probed (a marker written and deleted), an existing study directory must
hold this very study (same spec, same data, started here, not writable by others), the data is
loaded and every family's config is checked against it. Each refusal is one line naming the
field, file or location (:class:`UsageError`, :class:`~datasets.registry.DataError`,
:class:`~analysis.results.StorageError`).
"""

from __future__ import annotations

import os
import socket
import stat
import zlib
from pathlib import Path

from analysis.cli import shorten
from analysis.results import SPEC_FILE, StudyDir, StudyFileError
from datasets.registry import DataError, Fingerprint, PreparedData, get_dataset
from datasets.storage import StorageError
from study.spec import SpecError, StudySpec

__all__ = ["UsageError", "check_address", "check_local_gpus", "open_study", "check_study_dir", "check_trusted", "check_same_data", "check_same_place", "load_data"]


class UsageError(ValueError):
    """Bad input found after the spec itself validated (storage, study directory, cluster)."""


def open_study(spec: StudySpec) -> StudyDir:
    """The study's directory at ``storage_path/name``.

    Raises:
        analysis.results.StorageError: ``storage_path: ...`` when the scheme is unknown or its
            filesystem package is missing.
    """
    try:
        return StudyDir(spec.study_location)
    except StorageError as err:
        raise StorageError(f"storage_path: {err}") from None


def check_study_dir(spec: StudySpec, study: StudyDir, overwrite: bool) -> bool:
    """Checks where the study will be written; returns True when it resumes an earlier run.

    Raises:
        UsageError: If the study directory holds something other than a vae-study study (with or
            without ``overwrite``: only a study is ever deleted), a study with another spec
            (unless ``overwrite``), or a corrupt ``spec.json``.
    """
    if study.is_empty():
        return False
    if not study.is_file(SPEC_FILE):
        raise UsageError(f"storage_path: {study} exists and is not a vae-study study; choose another name "
                         "(--overwrite deletes only a study)")
    try:
        changed = spec.differences(study)
    except StudyFileError as err:
        raise UsageError(f"{err}; the study directory cannot be resumed or overwritten") from None
    if overwrite or not changed:
        return not overwrite
    raise UsageError(f"{study} holds a study with another spec (differs in {', '.join(changed[:5])}); "
                     "use another name, or --overwrite to discard it")


def check_trusted(study: StudyDir) -> None:
    """Refuses to resume from a study directory someone else could have planted code in.

    Resuming loads Ray Tune's pickled state (``tuner.pkl``, the searcher's state, the trials'
    state), which runs code: like ssh with a private key, the directory and every such file must
    be owned by this user and not writable by group or others. Object storage has no owners or
    modes to check: resuming from a bucket prefix trusts it like code (``study.run`` says so).

    Raises:
        UsageError: Naming the first file or directory that fails.
    """
    if study.remote:
        return
    root = Path(study.root)
    uid = os.getuid() if hasattr(os, "getuid") else None
    paths = [root, *sorted(p for p in root.rglob("*") if p.is_dir() or p.suffix in (".pkl", ".json"))]
    for path in paths:
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise UsageError(f"{path}: a symbolic link in the study directory; resume trusts the directory like "
                             "code and refuses it")
        if uid is not None and info.st_uid != uid:
            raise UsageError(f"{path}: owned by uid {info.st_uid}, not by you ({uid}); resume loads pickled state "
                             "from the study directory and trusts it like code")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UsageError(f"{path}: writable by group or others (mode {stat.filemode(info.st_mode)}); resume "
                             "loads pickled state from the study directory and trusts it like code (chmod go-w)")


def check_same_data(study: StudyDir, fingerprint: Fingerprint) -> None:
    """Refuses to resume a study on other data than it started with (path, size, digest).

    Raises:
        UsageError: If ``data.json`` records another source, size or digest, or cannot be read.
    """
    try:
        record = study.read_data_record()
    except StudyFileError as err:
        raise UsageError(f"{err}; use --overwrite to start afresh") from None
    saved = record.fingerprint if record is not None else None
    if saved is None or not saved.differs(fingerprint):
        return
    raise UsageError(
        f"dataset: the study started on {saved.path} ({saved.size} bytes, {_digest(saved)}) but the data "
        f"now read is {fingerprint.path} ({fingerprint.size} bytes, {_digest(fingerprint)}); resume on the "
        "same data, or --overwrite to start afresh"
    )


def _digest(fingerprint: Fingerprint) -> str:
    """``sha256 <12 hex>``, or ``ETag <12 chars>`` for an object whose store gave one."""
    return f"{'ETag' if fingerprint.scope == 'etag' else 'sha256'} {fingerprint.sha256[:12]}"


def check_same_place(study: StudyDir) -> None:
    """Refuses to resume a study from another location than it started in.

    Tune's saved searcher state names the study's Optuna journal by its location: resumed from a
    copy, the search would write into the original's journal (or fail where that is gone).
    Reading a moved study (report, rescore, ``load_trials``) works anywhere.

    Raises:
        UsageError: If ``data.json`` records another ``started_in`` location.
    """
    record = study.read_data_record()
    started_in = record.started_in if record is not None else None
    if started_in is not None and started_in != study.location:
        raise UsageError(f"{study}: the study was started in {started_in}, and its saved search state names "
                         "files there; resume it from that location, or --overwrite to start afresh")


def load_data(spec: StudySpec) -> PreparedData:
    """Loads and checks the data, and checks every family's configs against it (before Ray).

    Raises:
        DataError: If the data cannot be read (including a corrupt HDF5 chunk or a dangling
            external link).
        UsageError: If a family's config does not fit the data or a metric cannot be computed.
    """
    options = spec.dataset
    try:
        prepared = get_dataset(options.name).load(options, spec.seed)
    except (OSError, RuntimeError, KeyError, zlib.error) as err:  # h5py/numpy/zlib read errors the loader did not name
        where = options.path or f"dataset {options.name!r}"
        raise DataError(f"{where}: cannot be read ({type(err).__name__}: {shorten(err, 200)})") from None
    try:
        spec.check_data(prepared.describe())
    except ValueError as err:
        raise UsageError(str(err)) from None
    return prepared


def check_address(address: str | None, timeout_s: float = 10.0) -> None:
    """Refuses a Ray address that nothing answers at (``ray.init`` would retry for minutes).

    Args:
        address: ``--address`` or ``$RAY_ADDRESS``: ``HOST:PORT`` (the GCS), ``ray://HOST:PORT``,
            or ``auto``/None (not checked here).
        timeout_s: How long a TCP connection may take.

    Raises:
        UsageError: If the address is malformed or refuses or ignores a connection.
    """
    if not address or address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    where = f"--address {address}"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{where}: expected HOST:PORT of a Ray cluster's head (e.g. 127.0.0.1:6379), or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UsageError(f"{where}: no Ray cluster answers there ({reason}); start one with `ray start --head`, or "
                         "leave --address out to run on a local Ray") from None


def check_local_gpus(spec: StudySpec, address: str | None) -> None:
    """Refuses GPU trials on a local Ray whose torch has no CUDA (unless the study opts in to
    ``resources.cpu_fallback``): every trial would fail the same way. On a cluster (``address``) the
    nodes' torch may differ from the driver's; a trial there fails with one line instead.

    Raises:
        UsageError: Naming ``resources.gpus_per_trial`` and the torch build.
    """
    resources = spec.resources
    if address or resources.gpus_per_trial == 0 or resources.cpu_fallback:
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"resources.gpus_per_trial: {resources.gpus_per_trial} GPU per trial, but torch "
                         f"{torch.__version__} on this machine has no CUDA; install a CUDA build of torch, or set "
                         "resources.cpu_fallback: true to train on the CPU")


BAD_INPUT = (SpecError, DataError, UsageError, StudyFileError, StorageError)  # exit code 2, one line
