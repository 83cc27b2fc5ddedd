"""The study directory: its one owner. File names, JSON records, parquet tables, provenance columns.

A study lives at ``storage_path/name``: a local directory or a prefix in object storage
(``s3://bucket/studies/NAME``, ``gs://...``, ``abfs://...``; anything pyarrow's filesystems or, through
them, fsspec's resolve). :class:`StudyDir` is the filesystem seam: every read and write of a study's
files goes through it, locally or remotely alike. What it holds:

* ``spec.json`` (the validated spec, read by ``study.spec.StudySpec.load`` alone; its presence marks
  the directory as a study), ``data.json`` (:class:`DataRecord`), ``trial_status/<trial_id>.json``
  (:class:`TrialStatus`) and ``trial_status/current.json`` (the trials Tune holds);
* Ray Tune's trial directories (``params.json``, ``result.json``, ``error.txt``,
  ``checkpoint_NNNNNN/`` with the loop's ``trial.json``), read as JSON only;
* ``trials.parquet`` and ``epochs.parquet``, built from the above by :func:`write_tables`, whose
  schema metadata (key ``vae_study``) carries the :class:`StudyInfo` the analysis needs;
* ``report/``, ``optuna.journal``.

A study directory is data: everything here reads parquet and JSON only, never a pickle (Ray Tune's
``tuner.pkl`` and experiment-state blobs are left alone; only a resume loads them, see ``study.run``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analysis.metrics import metric_mode
from datasets.registry import DatasetOptions, Fingerprint, get_dataset
from datasets.storage import StorageError, first_line, open_location
from trainables.checkpoint import PROVENANCE_FIELDS, TRIAL_FILE
from trainables.trial import REPEAT_KEY, trial_seed

__all__ = [
    "SPEC_FILE", "DATA_FILE", "STATUS_DIR", "CURRENT_FILE", "TRIALS_FILE", "EPOCHS_FILE", "REPORT_DIR",
    "JOURNAL_FILE", "LOCK_FILE", "TUNE_FIELDS", "FINAL_STATUSES", "StudyFileError", "StudyLocked", "StudyLock",
    "StudyDir", "StudyInfo",
    "DataRecord", "TrialStatus", "build_tables", "write_tables", "load_trials",
    "load_epochs", "load_info", "best_trial", "resolve_checkpoint", "local_copy", "read_json", "is_directory", "require_columns",
]

SPEC_FILE = "spec.json"  # the validated spec a study ran with; also marks a directory as a vae-study study
DATA_FILE = "data.json"  # the data source, its fingerprint, row counts and preprocessing statistics
STATUS_DIR = "trial_status"  # trial_status/<trial_id>.json: written by the driver as Tune reports
CURRENT_FILE = "current.json"  # trial_status/current.json: the ids of the trials Tune holds
TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
REPORT_DIR = "report"
JOURNAL_FILE = "optuna.journal"  # the study's Optuna storage: optuna-dashboard STUDY/optuna.journal
LOCK_FILE = ".vae-study.lock"  # who holds the study (StudyLock)
LOCK_HEARTBEAT_S = 30.0  # a holder in object storage rewrites its lock this often
LOCK_STALE_S = 120.0  # a lock in object storage without a heartbeat this long is taken over
LOCK_SETTLE_S = 2.0  # written, then read back after this long: the last writer holds it
PROBE_TIMEOUT_S = 20.0  # a storage location that does not answer a write in this time is refused
METADATA_KEY = b"vae_study"  # parquet schema metadata: the StudyInfo as JSON
FINAL_STATUSES = ("TERMINATED", "ERROR")
# Keys Tune adds to every result; not metrics of ours.
TUNE_FIELDS = frozenset({
    "timestamp", "date", "hostname", "node_ip", "pid", "time_this_iter_s", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "done", "trial_id", "should_checkpoint",
    "experiment_tag", "config", "training_iteration", "time_total_s",
})  # fmt: skip

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class StudyFileError(ValueError):
    """A file of a study directory is missing, unreadable or corrupt; the message names it."""


def _within(timeout_s: float, call, where: str) -> None:
    """Runs ``call()`` in a daemon thread; its exception is raised here, and a storage that does not
    answer within ``timeout_s`` seconds is a StorageError (the thread is left to die with the process)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as err:  # handed to the caller
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True, name="vae-study-probe")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise StorageError(f"{where}: no answer from the storage within {timeout_s:g} s (check the endpoint, "
                           "the network and the credentials)")
    if outcome[0] is not None:
        raise outcome[0]


# --- records -------------------------------------------------------------------------------------

class TrialStatus(BaseModel):
    """``trial_status/<trial_id>.json``: a trial's status as Tune last reported it."""

    model_config = _FROZEN
    trial_id: str
    status: Literal["RUNNING", "TERMINATED", "ERROR"]
    trial_dir: str  # the name of Tune's trial directory in the study directory


class DataRecord(BaseModel):
    """``data.json``: what the study read. Dataset-specific facts (row counts, preprocessing
    statistics computed on train rows, channel names, ...) follow as further keys (:attr:`facts`).

    Attributes:
        source: The data's path or URI, or a description of generated data.
        fingerprint: Size and digest of what was read (a resume on other data is refused).
        started_in: The study location the study started in (a copy is not resumed).
        channels: Names of the image channels, when the dataset names them (jets).
    """

    model_config = ConfigDict(frozen=True, extra="allow")
    source: str
    fingerprint: Fingerprint | None = None
    started_in: str | None = None
    channels: list[str] | None = None

    @property
    def facts(self) -> dict[str, Any]:
        """The dataset-specific keys (JSON values)."""
        return dict(self.model_extra or {})


class ObjectiveInfo(BaseModel):
    """The objective metrics of a study, each with ``min`` or ``max``."""

    model_config = _FROZEN
    metric: list[str] = Field(min_length=1)
    mode: list[Literal["min", "max"]] = Field(min_length=1)


class EvaluationInfo(BaseModel):
    """The end-of-trial evaluation settings (``evaluation`` in the spec)."""

    model_config = _FROZEN
    metrics: list[str]
    num_train: int = Field(gt=0)
    num_test: int = Field(gt=0)


class StudyInfo(BaseModel):
    """What the analysis knows of a study besides its tables, stored in their parquet metadata.

    Written by ``study`` from the validated spec (the analysis never reads ``spec.json``).

    Attributes:
        name: The study name.
        seed: The study seed (split, sampler and trial seeds derive from it).
        dataset: The validated ``dataset`` section as JSON values (:meth:`dataset_options`).
        families: The families the study trains.
        family: The fixed ``family`` values (without ``name``).
        searched_params: Search-space parameters that vary.
        search_params: Every search-space parameter (fixed ones included).
        objective: The objective metrics and modes.
        evaluation: The end-of-trial evaluation settings.
    """

    model_config = _FROZEN
    name: str
    seed: int = Field(ge=0)
    dataset: dict[str, Any]
    families: list[str]
    family: dict[str, Any]
    searched_params: list[str]
    search_params: list[str]
    objective: ObjectiveInfo
    evaluation: EvaluationInfo

    def dataset_options(self) -> DatasetOptions:
        """The dataset section as its dataset's validated options (loads the data again with the seed)."""
        return get_dataset(self.dataset["name"]).options_cls(**self.dataset)


@dataclass(frozen=True)
class TrialFiles:
    """One Tune trial directory of a study, read as JSON."""

    trial_id: str
    name: str  # the directory's name in the study directory
    reports: list[dict[str, Any]]  # result.json, one mapping per report
    params: dict[str, Any]  # params.json: the sampled configuration (with the repeat index)
    error: str | None  # the last error line of error.txt
    checkpoint: str | None  # TRIAL_DIR/checkpoint_NNNNNN of the latest checkpoint, relative to the study


# --- the study directory -------------------------------------------------------------------------

class StudyDir:
    """A study directory, local or in object storage: every read and write of its files.

    Args:
        location: A local path (``~`` expanded) or a URI (``s3://bucket/studies/NAME``).

    Raises:
        StorageError: If the location's scheme is unknown or its filesystem package is missing.
    """

    def __init__(self, location: str | os.PathLike):
        self.fs, self.root, self.location = open_location(location)
        self.remote = not isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"StudyDir({self.location!r})"

    def __str__(self) -> str:
        return self.location

    @property
    def name(self) -> str:
        """The study directory's last path component."""
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    def path(self, *parts: str) -> str:
        """The path of ``parts`` inside the filesystem (``root/a/b``)."""
        return "/".join([self.root, *parts]) if parts else self.root

    def uri(self, *parts: str) -> str:
        """The location of ``parts`` (a local path or a URI)."""
        return "/".join([self.location, *parts]) if parts else self.location

    def _info(self, *parts: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path(*parts))
        except OSError as err:
            raise StudyFileError(f"{self.uri(*parts)}: cannot be read ({first_line(err)})") from None

    def exists(self, *parts: str) -> bool:
        """Whether ``parts`` (a file or a directory) exists."""
        return self._info(*parts).type != pafs.FileType.NotFound

    def is_file(self, *parts: str) -> bool:
        return self._info(*parts).type == pafs.FileType.File

    def is_dir(self, *parts: str) -> bool:
        """Whether ``parts`` is a directory (in object storage: a prefix holding objects)."""
        info = self._info(*parts)
        return info.type == pafs.FileType.Directory

    def listdir(self, *parts: str) -> list[pafs.FileInfo]:
        """The entries directly under ``parts`` (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True, recursive=False)
        try:
            return list(self.fs.get_file_info(selector))
        except OSError as err:
            raise StudyFileError(f"{self.uri(*parts)}: cannot be listed ({first_line(err)})") from None

    def is_empty(self) -> bool:
        """Whether the study directory is missing or holds nothing (but, maybe, its lock)."""
        return not self.exists() or all(entry.base_name == LOCK_FILE for entry in self.listdir())

    def has_tune_state(self) -> bool:
        """Whether Ray Tune saved an experiment's state here (``experiment_state-*.json``)."""
        return any(e.base_name.startswith("experiment_state-") and e.base_name.endswith(".json")
                   for e in self.listdir())

    def clear(self, keep: tuple[str, ...] = ()) -> None:
        """Deletes everything in the study directory but the top-level entries named in ``keep``."""
        for entry in self.listdir():
            if entry.base_name not in keep:
                self.delete(entry.base_name)

    def read_bytes(self, *parts: str) -> bytes:
        """A file's bytes.

        Raises:
            FileNotFoundError: If it does not exist.
            StudyFileError: If it cannot be read.
        """
        try:
            with self.fs.open_input_stream(self.path(*parts)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri(*parts)}: no such file") from None
        except OSError as err:
            if not self.exists(*parts):
                raise FileNotFoundError(f"{self.uri(*parts)}: no such file") from None
            raise StudyFileError(f"{self.uri(*parts)}: not readable ({first_line(err)})") from None

    def read_text(self, *parts: str) -> str:
        """A UTF-8 text file (undecodable bytes replaced)."""
        return self.read_bytes(*parts).decode("utf-8", errors="replace")

    def read_json(self, *parts: str) -> Any:
        """A JSON file.

        Raises:
            FileNotFoundError: If it does not exist.
            StudyFileError: If it is not UTF-8 JSON.
        """
        data = self.read_bytes(*parts)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise StudyFileError(f"{self.uri(*parts)}: not valid JSON ({first_line(err)})") from None

    def write_bytes(self, *parts: str, data: bytes) -> None:
        """Writes a file whole: locally to a temporary name, then renamed; an object is one PUT."""
        path = self.path(*parts)
        if self.remote:  # objects need no directories (and create_dir would leave marker objects)
            with self.fs.open_output_stream(path) as stream:
                stream.write(data)
            return
        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_text(self, *parts: str, text: str) -> None:
        self.write_bytes(*parts, data=text.encode("utf-8"))

    def write_json(self, *parts: str, value: Any) -> None:
        self.write_text(*parts, text=json.dumps(value, indent=2, default=str))

    def delete(self, *parts: str) -> None:
        """Deletes a file or a directory with everything under it (nothing when missing)."""
        info = self._info(*parts)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(*parts))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(*parts))

    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        """Checks that the study location can be written, leaving nothing behind: locally, a
        temporary directory is made and removed in the nearest existing ancestor; in object
        storage, a marker object is written and deleted (the prefix may keep an empty directory
        marker), within ``timeout_s`` seconds.

        Raises:
            StorageError: One line naming the location and why (no such bucket, access denied,
                an endpoint that does not answer, read-only, a part of the path is a file, ...).
        """
        try:
            if self.remote:
                _within(timeout_s, self._probe_object, f"storage_path: {self.location}")
            else:
                self._probe_local()
        except StorageError:
            raise
        except (OSError, RuntimeError, ValueError, pa.ArrowException) as err:  # EACCES, EROFS, ELOOP, no bucket
            reason = err.strerror if isinstance(err, OSError) and err.strerror else first_line(err)
            raise StorageError(f"storage_path: {self.location} cannot be created or written ({reason})") from None

    def _probe_object(self) -> None:
        name = f".vae-study-probe-{uuid.uuid4().hex[:12]}"
        self.write_bytes(name, data=b"probe")
        self.fs.delete_file(self.path(name))

    def _probe_local(self) -> None:
        probe = self.root
        while True:  # the nearest existing ancestor (a symlink loop or a long name raises)
            try:
                mode = os.stat(probe).st_mode
                break
            except (FileNotFoundError, NotADirectoryError):
                probe = os.path.dirname(probe)
        if not stat.S_ISDIR(mode):
            what = "study directory" if probe == self.root else "directory"
            raise StorageError(f"storage_path: {probe} is a file; expected a {what}")
        os.rmdir(tempfile.mkdtemp(prefix=".vae-study-probe-", dir=probe))

    @contextlib.contextmanager
    def local(self, *parts: str) -> Iterator[Path]:
        """A local directory holding ``parts``: itself when local, else a temporary download."""
        if not self.remote:
            yield Path(self.path(*parts))
            return
        with tempfile.TemporaryDirectory(prefix="vae-study-") as tmp:
            pafs.copy_files(self.path(*parts), tmp, source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            yield Path(tmp)

    def upload(self, local_dir: Path, *parts: str) -> None:
        """Copies the files of a local directory to ``parts`` (no-op when that is the same place)."""
        target = self.path(*parts)
        if not self.remote and Path(target).resolve() == Path(local_dir).resolve():
            return
        if not self.remote:
            os.makedirs(target, exist_ok=True)
        pafs.copy_files(str(local_dir), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    # --- parquet tables ---------------------------------------------------------------------------

    def read_table(self, name: str) -> pd.DataFrame:
        """A parquet table of the study.

        Raises:
            FileNotFoundError: If it does not exist.
            StudyFileError: If it is not a readable parquet table.
        """
        if not self.is_file(name):
            raise FileNotFoundError(f"{self.uri(name)}: no such file (run the study, or python -m study.results)")
        try:
            return pq.read_table(self.path(name), filesystem=self.fs).to_pandas()
        except (OSError, pa.ArrowException, ValueError) as err:
            raise StudyFileError(f"{self.uri(name)}: not a readable parquet table ({first_line(err)})") from None

    def write_table(self, name: str, frame: pd.DataFrame, info: StudyInfo) -> None:
        """Writes a parquet table whole (temporary name, then rename) with ``info`` in its metadata."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               METADATA_KEY: info.model_dump_json()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(name, data=sink.getvalue().to_pybytes())

    def read_info(self) -> StudyInfo:
        """The :class:`StudyInfo` stored with ``trials.parquet``.

        Raises:
            FileNotFoundError: If there is no ``trials.parquet``.
            StudyFileError: If its metadata is missing or from an older vae-study.
        """
        if not self.is_file(TRIALS_FILE):
            raise FileNotFoundError(f"{self.uri(TRIALS_FILE)}: no such file (run the study, or python -m study.results)")
        try:
            with self.fs.open_input_file(self.path(TRIALS_FILE)) as handle:
                raw = (pq.read_schema(handle).metadata or {}).get(METADATA_KEY)
            return StudyInfo.model_validate_json(raw or b"null")
        except (OSError, pa.ArrowException) as err:
            raise StudyFileError(f"{self.uri(TRIALS_FILE)}: not a readable parquet table ({first_line(err)})") from None
        except ValidationError:
            raise StudyFileError(f"{self.uri(TRIALS_FILE)}: no study information in its metadata (written by an older "
                                 "vae-study?); rebuild the tables with python -m study.results STUDY") from None

    # --- records ----------------------------------------------------------------------------------

    def read_data_record(self) -> DataRecord | None:
        """``data.json``, or None when the study has none yet.

        Raises:
            StudyFileError: If it is corrupt.
        """
        if not self.is_file(DATA_FILE):
            return None
        try:
            return DataRecord.model_validate(self.read_json(DATA_FILE))
        except ValidationError as err:
            raise StudyFileError(f"{self.uri(DATA_FILE)}: not a data record ({first_line(err)})") from None

    def write_data_record(self, record: DataRecord) -> None:
        self.write_json(DATA_FILE, value=record.model_dump())  # numpy scalars among the facts as text

    def write_status(self, status: TrialStatus, current: list[str]) -> None:
        """Records a trial's status and the ids of the trials Tune holds now (an errored trial restarted
        with ``--restart-errored`` is replaced by a new one, whose old directory must not count)."""
        self.write_text(STATUS_DIR, f"{status.trial_id}.json", text=status.model_dump_json())
        self.write_json(STATUS_DIR, CURRENT_FILE, value={"trial_ids": list(current)})

    def trial_statuses(self) -> dict[str, TrialStatus]:
        """``trial_id -> TrialStatus`` from ``trial_status/*.json`` (unreadable records skipped)."""
        statuses = {}
        for entry in self.listdir(STATUS_DIR):
            if not entry.base_name.endswith(".json") or entry.base_name == CURRENT_FILE:
                continue
            try:
                status = TrialStatus.model_validate(self.read_json(STATUS_DIR, entry.base_name))
            except (ValidationError, StudyFileError, FileNotFoundError):
                continue
            statuses[status.trial_id] = status
        return statuses

    def current_trials(self) -> set[str] | None:
        """The ids of the trials Tune holds (``trial_status/current.json``), or None when not recorded."""
        if not self.is_file(STATUS_DIR, CURRENT_FILE):
            return None
        record = self.read_json(STATUS_DIR, CURRENT_FILE)
        ids = record.get("trial_ids") if isinstance(record, dict) else None
        return set(ids) if isinstance(ids, list) else None

    def provenance(self, checkpoint: str | None) -> dict[str, Any]:
        """What the trial stamped in its checkpoint's ``trial.json``: one value per provenance field
        (None when absent; ``gpu_ids`` comma-joined, ``""`` on the CPU)."""
        stamp: dict[str, Any] = {}
        if checkpoint is not None and self.is_file(checkpoint, TRIAL_FILE):
            try:
                record = self.read_json(checkpoint, TRIAL_FILE)
            except StudyFileError:
                record = {}
            stamp = record.get("provenance") if isinstance(record, dict) else None
            stamp = stamp if isinstance(stamp, dict) else {}
        row = {key: stamp.get(key) for key in PROVENANCE_FIELDS}
        if isinstance(row.get("gpu_ids"), list):
            row["gpu_ids"] = ",".join(str(i) for i in row["gpu_ids"])
        return row

    # --- Tune's trial directories -----------------------------------------------------------------

    def trials(self) -> list[TrialFiles]:
        """The Tune trial directories (holding ``params.json``) that count, by trial id: a directory
        of a trial Tune replaced (an errored trial restarted) is left out."""
        names = [entry.base_name for entry in self.listdir() if entry.type == pafs.FileType.Directory]
        marks = self.fs.get_file_info([self.path(name, "params.json") for name in names]) if names else []
        names = [name for name, mark in zip(names, marks) if mark.type == pafs.FileType.File]
        by_dir = {status.trial_dir: status.trial_id for status in self.trial_statuses().values()}
        current = self.current_trials()
        found = []
        for name in sorted(names):
            files = self._trial_files(name, by_dir.get(name))
            if current is None or files.trial_id in current:
                found.append(files)
        return found

    def _trial_files(self, name: str, trial_id: str | None) -> TrialFiles:
        reports = _current_lineage(self._reports(name))
        if trial_id is None:
            reported = reports[-1].get("trial_id") if reports else None
            trial_id = str(reported) if reported else name
        params = self.read_json(name, "params.json")
        checkpoints = sorted(e.base_name for e in self.listdir(name) if e.base_name.startswith("checkpoint_")
                             and e.type == pafs.FileType.Directory)
        return TrialFiles(trial_id=trial_id, name=name, reports=reports,
                          params=dict(params) if isinstance(params, dict) else {}, error=self._error_line(name),
                          checkpoint=f"{name}/{checkpoints[-1]}" if checkpoints else None)

    def _reports(self, name: str) -> list[dict[str, Any]]:
        """``result.json`` of a trial: one JSON object per line; a torn last line is skipped."""
        if not self.is_file(name, "result.json"):
            return []
        rows = []
        for line in self.read_text(name, "result.json").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def _error_line(self, name: str) -> str | None:
        if not self.is_file(name, "error.txt"):
            return None
        lines = [ln.strip() for ln in self.read_text(name, "error.txt").splitlines() if ln.strip()]
        causes = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and ":" in ln]
        return (causes[-1] if causes else lines[-1] if lines else "error")[:500]


# --- one writer per study ------------------------------------------------------------------------

class StudyLocked(StudyFileError):
    """Another process holds the study (its driver, a table rebuild, a rescore); the message names it."""


class Holder(BaseModel):
    """Who holds a study's lock (``.vae-study.lock``): written by the holder, read by whoever is refused."""

    model_config = _FROZEN
    token: str  # unique per acquisition
    purpose: str  # "study.run", "study.results", "analysis.rescore", "analysis.report"
    host: str
    pid: int
    started_at: float  # Unix time the lock was taken
    heartbeat_at: float  # Unix time of the holder's last heartbeat (object storage)

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.started_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.purpose} (pid {self.pid} on {self.host}, since {since})"

    def alive(self, now: float) -> bool:
        """Whether the holder may still run: on this host, its process exists; elsewhere, its
        heartbeat is younger than :data:`LOCK_STALE_S`."""
        if self.host == platform.node():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:  # another user's process of that pid
                return True
            return True
        return now - self.heartbeat_at < LOCK_STALE_S


class StudyLock:
    """An exclusive lock on a study, so that one process at a time writes it.

    Locally an OS lock (``fcntl.flock`` on ``.vae-study.lock``), released by the kernel when the holder
    dies, however it dies. In object storage, which has no locks, a lock object created when absent
    (or stale) and read back after :data:`LOCK_SETTLE_S` seconds: of two processes that wrote it at
    once, the one whose token is there holds it. The holder rewrites it every :data:`LOCK_HEARTBEAT_S`
    seconds; a lock whose holder is gone (a dead process on this host, or no heartbeat for
    :data:`LOCK_STALE_S` seconds) is taken over.

    Args:
        study: The study directory.
        purpose: What takes it (named to whoever is refused).
        create: Create the study directory when it is missing (a new study); else a missing
            study is a FileNotFoundError.
    """

    def __init__(self, study: StudyDir, purpose: str, *, create: bool = False):
        self.study = study
        self.create = create
        self.holder = Holder(token=uuid.uuid4().hex, purpose=purpose, host=platform.node(), pid=os.getpid(),
                             started_at=time.time(), heartbeat_at=time.time())
        self._handle = None
        self._created: list[Path] = []  # directories the lock made (removed again while empty)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Takes the lock.

        Raises:
            StudyLocked: If a live holder has it; the message names it.
            FileNotFoundError: If the study does not exist (and is not to be created).
        """
        if not self.create and not self.study.exists():
            raise FileNotFoundError(f"{self.study}: no such study directory")
        if self.study.remote:
            self._acquire_object()
        else:
            self._acquire_local()

    def _refusal(self, holder: Holder | None) -> StudyLocked:
        who = holder.describe() if holder is not None else "another process"
        return StudyLocked(f"{self.study}: in use by {who}; one process at a time writes a study (wait for it to "
                           "end, or stop it)")

    def _acquire_local(self) -> None:
        path = Path(self.study.path(LOCK_FILE))
        existing = path.parent
        while not existing.exists():
            existing = existing.parent
        self._created = [p for p in [path.parent, *path.parent.parents] if p not in existing.parents and p != existing]
        while True:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _holder(handle.read())
                handle.close()
                raise self._refusal(holder) from None
            try:  # a holder that released meanwhile unlinked the file it locked: lock the new one
                if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(self.holder.model_dump_json())
        handle.flush()
        self._handle = handle

    def _acquire_object(self) -> None:
        current = self._read_object()
        if current is not None and current.alive(time.time()):
            raise self._refusal(current)
        self.study.write_text(LOCK_FILE, text=self.holder.model_dump_json())
        time.sleep(LOCK_SETTLE_S)  # a process that wrote at the same time has written by now
        current = self._read_object()
        if current is None or current.token != self.holder.token:
            raise self._refusal(current)
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="vae-study-lock")
        self._heartbeat.start()

    def _read_object(self) -> Holder | None:
        try:
            return _holder(self.study.read_text(LOCK_FILE))
        except FileNotFoundError:
            return None

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            self.holder = self.holder.model_copy(update={"heartbeat_at": time.time()})
            try:
                self.study.write_text(LOCK_FILE, text=self.holder.model_dump_json())
            except (OSError, StudyFileError):  # a missed beat; the next one tries again
                continue

    def release(self) -> None:
        """Gives the lock up (deleting the lock file or object when it is still ours)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.study.path(LOCK_FILE))
                for directory in self._created:  # a study refused before anything else was written leaves nothing
                    os.rmdir(directory)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        if self._heartbeat is not None:
            self._stop.set()
            self._heartbeat.join(timeout=10)
            self._heartbeat = None
            current = self._read_object()
            if current is not None and current.token == self.holder.token:
                self.study.delete(LOCK_FILE)


def _holder(text: str) -> Holder | None:
    try:
        return Holder.model_validate_json(text)
    except ValidationError:
        return None


# --- the tables ----------------------------------------------------------------------------------

def _current_lineage(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports of the trial's run that counts: when a trial ran an epoch again (restarted
    without a checkpoint of it, after an interruption or a lost node), the later report of that epoch
    replaces the earlier one, so every epoch appears once, in order."""
    if not reports or any("epoch" not in report for report in reports):
        return reports
    by_epoch: dict[Any, dict[str, Any]] = {}
    for report in reports:
        by_epoch.pop(report["epoch"], None)
        by_epoch[report["epoch"]] = report
    return sorted(by_epoch.values(), key=lambda report: report["epoch"])


def _cell(value: Any) -> Any:
    """Config values as parquet-friendly scalars (lists and dicts as JSON text)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _trial_row(study: StudyDir, trial: TrialFiles, status: str | None, seed: int) -> dict[str, Any]:
    """One row of ``trials.parquet``: id, status, error, config, repeat/seed, last and best metrics,
    epochs run, wall time, checkpoint (relative to the study directory) and provenance."""
    if status not in FINAL_STATUSES:
        # Not ended in Tune's eyes: errored (and the driver died before recording it), or
        # interrupted. A trial restarted after a failure keeps its error.txt but ends TERMINATED.
        status = "ERROR" if trial.error is not None else "INCOMPLETE"
    config = dict(trial.params)
    repeat = int(config.pop(REPEAT_KEY, 0))
    row: dict[str, Any] = {"trial_id": trial.trial_id, "status": status, "error": trial.error}
    row.update({k: _cell(v) for k, v in config.items()})
    row.update({"repeat": repeat, "seed": trial_seed(seed, repeat)})
    row.update(_metric_columns(trial.reports))
    last = trial.reports[-1] if trial.reports else {}
    row["epochs_run"] = int(last.get("epoch", 0))
    row["wall_seconds"] = float(last.get("time_total_s", float("nan")))
    row["checkpoint_path"] = trial.checkpoint
    for key, value in study.provenance(trial.checkpoint).items():
        if value is not None or key not in row:  # node_id is also reported each epoch: a missing stamp keeps it
            row[key] = value
    return row


def _metric_columns(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The last value of every reported metric, and ``best_<metric>`` over the reports for each
    metric with a known direction."""
    history = pd.DataFrame(reports)
    names = [c for c in history.columns if c not in TUNE_FIELDS and c != "epoch"]
    last = reports[-1] if reports else {}
    columns = {name: last[name] for name in names if name in last}
    for name in names:
        try:
            mode = metric_mode(name)
        except KeyError:
            continue
        values = pd.to_numeric(history[name], errors="coerce")
        if values.notna().any():
            columns[f"best_{name}"] = values.max() if mode == "max" else values.min()
    return columns


def _epoch_rows(trial: TrialFiles) -> pd.DataFrame | None:
    history = pd.DataFrame(trial.reports)
    if not len(history) or "epoch" not in history:
        return None
    epochs = history[["epoch"] + [c for c in history.columns if c not in TUNE_FIELDS and c != "epoch"]].copy()
    epochs.insert(0, "trial_id", trial.trial_id)
    return epochs


def build_tables(study: StudyDir, info: StudyInfo) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reads a study directory's JSON into the trials and epochs tables (see the module docstring).

    Args:
        study: The study directory.
        info: The study's information (its seed derives each trial's seed).

    Returns:
        ``(trials, epochs)``: one row per trial; one row per trial and reported epoch.

    Raises:
        StudyFileError: If a file of the study is corrupt or cannot be read.
    """
    statuses = study.trial_statuses()
    trials = study.trials()
    rows = [_trial_row(study, t, statuses[t.trial_id].status if t.trial_id in statuses else None, info.seed)
            for t in trials]
    current = study.current_trials()
    seen = {t.trial_id for t in trials}
    for trial_id, status in statuses.items():  # errored before Tune made its directory
        if trial_id not in seen and (current is None or trial_id in current):
            rows.append({"trial_id": trial_id, "status": status.status, "error": None})
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["trial_id", "status", "error"])
    frames = [frame for frame in map(_epoch_rows, trials) if frame is not None]
    epochs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "epoch"])
    return table, epochs


def write_tables(study: StudyDir, info: StudyInfo) -> tuple[str, str]:
    """Builds and writes ``trials.parquet`` and ``epochs.parquet``; returns their locations."""
    trials, epochs = build_tables(study, info)
    study.write_table(TRIALS_FILE, trials, info)
    study.write_table(EPOCHS_FILE, epochs, info)
    return study.uri(TRIALS_FILE), study.uri(EPOCHS_FILE)


# --- reading a study (Jupyter, report, rescore) ----------------------------------------------------

def _study_of(study: str | os.PathLike | StudyDir) -> StudyDir:
    """A :class:`StudyDir` from a study location, or from the location of one of its parquet tables."""
    if isinstance(study, StudyDir):
        return study
    text = os.fspath(study).rstrip("/")
    if text.endswith(".parquet"):
        text = text.rsplit("/", 1)[0] if "/" in text else "."
    return StudyDir(text)


def load_trials(study: str | os.PathLike | StudyDir, *, resolve_checkpoints: bool = True) -> pd.DataFrame:
    """``trials.parquet`` of a study (a local directory, a URI, or the parquet file itself).

    Args:
        study: The study location or its ``trials.parquet``.
        resolve_checkpoints: Turn ``checkpoint_path`` (stored relative to the study directory)
            into a location that exists where the table is read (see :func:`resolve_checkpoint`);
            False keeps the stored values (for rewriting the table).

    Returns:
        One row per trial (see ``docs/analysis.md`` for the columns).

    Raises:
        FileNotFoundError: If the table does not exist.
        StudyFileError: If it is not a readable parquet file.
    """
    study = _study_of(study)
    trials = study.read_table(TRIALS_FILE)
    if resolve_checkpoints and "checkpoint_path" in trials:
        trials["checkpoint_path"] = [resolve_checkpoint(study, value) for value in trials["checkpoint_path"]]
    return trials


def require_columns(table: pd.DataFrame, columns: list[str], where: str) -> None:
    """Refuses a table that lacks columns a reader needs.

    Raises:
        StudyFileError: ``where: no column(s) ...``, naming every missing one.
    """
    missing = [column for column in columns if column not in table]
    if missing:
        raise StudyFileError(f"{where}: no column {', '.join(repr(c) for c in missing)} (expected the table "
                             "python -m study.results writes)")


def load_epochs(study: str | os.PathLike | StudyDir) -> pd.DataFrame:
    """``epochs.parquet`` of a study: one row per trial and epoch.

    Raises:
        FileNotFoundError: If the file does not exist.
        StudyFileError: If it is not a readable parquet file.
    """
    return _study_of(study).read_table(EPOCHS_FILE)


def load_info(study: str | os.PathLike | StudyDir) -> StudyInfo:
    """The :class:`StudyInfo` stored with a study's tables (name, seed, dataset, searched
    parameters, objective, evaluation).

    Raises:
        FileNotFoundError: If the study has no ``trials.parquet``.
        StudyFileError: If the table or its metadata cannot be read.
    """
    return _study_of(study).read_info()


def resolve_checkpoint(study: StudyDir | str | os.PathLike, stored: Any) -> str | None:
    """A trial's checkpoint location as found in ``study``.

    ``stored`` is ``TRIAL_DIR/checkpoint_NNNNNN`` relative to the study directory; tables from
    before that was so hold an absolute path, which is kept when it exists and otherwise looked
    for as its last two parts in the study (a study copied from a cluster).

    Returns:
        The location as a string (a local path or a URI); None when there is none (None, NaN); an
        absolute path that exists nowhere is returned unchanged, so readers skip it as missing.
    """
    study = _study_of(study)
    if not isinstance(stored, str):
        return None
    path = Path(stored)
    if not path.is_absolute():
        return study.uri(*path.parts)
    if not path.exists() and study.is_dir(*path.parts[-2:]):
        return study.uri(*path.parts[-2:])
    return stored


def is_directory(location: Any) -> bool:
    """Whether ``location`` (a local path or a URI; anything else is not) is an existing directory."""
    if not isinstance(location, (str, os.PathLike)):
        return False
    fs, path, _ = open_location(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def read_json(location: str | os.PathLike) -> Any:
    """One JSON file anywhere (a local path or a URI), e.g. a checkpoint's ``trial.json``.

    Raises:
        FileNotFoundError: If it does not exist.
        StudyFileError: If it is not UTF-8 JSON.
    """
    text = os.fspath(location)
    parent, _, name = text.rstrip("/").rpartition("/")
    return StudyDir(parent or ".").read_json(name)


@contextlib.contextmanager
def local_copy(location: str | os.PathLike | None) -> Iterator[Path | None]:
    """A local directory with the files of ``location`` (a checkpoint, say): the directory itself
    when local, a temporary download when in object storage; None when it does not exist (or
    ``location`` is None)."""
    if not is_directory(location):
        yield None
        return
    fs, path, _ = open_location(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        yield None
        return
    if isinstance(fs, pafs.LocalFileSystem):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="vae-study-") as tmp:
        pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield Path(tmp)


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The finished trial with the best ``metric``, or None when no finished trial reported it."""
    done = trials[trials["status"] == "TERMINATED"] if "status" in trials else trials
    if metric not in done or done[metric].notna().sum() == 0:
        return None
    index = done[metric].idxmax() if mode == "max" else done[metric].idxmin()
    return done.loc[index]

