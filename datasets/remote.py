"""Data files at a URI: the checks, reads, listings and seekable files of the dataset loaders.

``dataset.path`` (and ``DSPRITES_PATH``, ``JETS_PATH``, ``MNIST_PATH``, ``FACES_PATH``) name a
local path or a URI (``s3://bucket/key``, ``gs://...``; see :mod:`datasets.storage`, the one
resolver of both). A local path stays a :class:`~pathlib.Path` and is read as before; a URI stays
a string and is read here:

* in-memory datasets (dSprites, MNIST, images) read whole objects (:func:`read_object`) in the
  driver, which hands the rows to the trials through Ray's object store as for local files;
* HDF5 files are opened through :class:`BlockCachedFile`, a seekable read-only file object that
  h5py accepts, which fetches aligned blocks by ranged reads and keeps the last few in an LRU
  cache: only the row ranges read (and the file's metadata) cross the network, so a file larger
  than any node's disk streams from the bucket. Each Ray Data read task opens its own.

Credentials and endpoints come from each cloud's standard environment (for S3 ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...), on every node that runs read tasks. What a study read is fingerprinted
by :func:`datasets.registry.uri_fingerprint` (URI, size, ETag).
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Literal, Union

import pyarrow.fs as pafs

from datasets.registry import DataError
from datasets.storage import StorageError, first_line, is_uri, open_location

__all__ = ["Location", "location_of", "given_location", "require", "read_object", "list_objects", "child",
           "name_of", "exists", "BlockCachedFile", "BLOCK_BYTES", "CACHE_BLOCKS"]

Location = Union[Path, str]  # a local Path, or a URI string
# Block size and cache of BlockCachedFile (benchmarks/data_path.py counts the ranged reads): a read
# costs a round trip (AWS's S3 performance guidelines: 100-200 ms to the first byte) and then
# streams at tens to hundreds of MB/s, so 4 MiB blocks turn the many small reads of HDF5 metadata,
# chunk indexes and compressed chunks (~0.2 MB each in the ML4SCI files) into few requests, while
# a read task's first block costs little next to its rows (96-256 MB a task). 8 blocks (32 MiB an
# open file) keep the metadata and the small scalar datasets (y, m0, pt) cached while the image
# rows, read once an epoch in pieces of a block or more, bypass the cache.
BLOCK_BYTES = 4 << 20
CACHE_BLOCKS = 8


def location_of(text: str | os.PathLike) -> Location:
    """A local path as a :class:`~pathlib.Path` with ``~`` expanded; a URI as the string without a
    trailing slash."""
    text = os.fspath(text)
    return text.rstrip("/") if is_uri(text) else Path(text).expanduser()


def given_location(path: str | os.PathLike | None, env_var: str) -> tuple[Location, str] | None:
    """``(location, where)`` of ``dataset.path``, else of ``$env_var``; None when neither is set.

    ``where`` (``"dataset.path"`` or the variable's name) starts the loaders' error lines.
    """
    if path is not None:
        return location_of(path), "dataset.path"
    if os.environ.get(env_var):
        return location_of(os.environ[env_var]), env_var
    return None


def _open(uri: str, where: str | None) -> tuple[pafs.FileSystem, str, str]:
    try:
        return open_location(uri)
    except StorageError as err:
        raise DataError(f"{where}: {err}" if where else str(err)) from None


def _info(fs: pafs.FileSystem, path: str, uri: str, prefix: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as err:
        raise DataError(f"{prefix}{uri}: cannot be read ({first_line(err)})") from None


def require(uri: str, kind: Literal["object", "prefix"], expected: str, where: str | None = None) -> str:
    """Checks that ``uri`` names an existing object (a file) or prefix (a folder); returns the URI.

    Args:
        uri: The location, ``scheme://bucket/key``.
        kind: ``object`` for a file, ``prefix`` for a folder of objects.
        expected: What the loader wants there, for the message (``"a dSprites .npz"``).
        where: ``"dataset.path"`` or the environment variable that gave the URI, or None.

    Raises:
        DataError: One line naming ``where``, the URI and ``expected``, if the scheme is unknown or
            its package missing, the bucket or object does not exist, it is of the other kind, or
            the storage cannot be reached.
    """
    fs, path, uri = _open(uri, where)
    prefix = f"{where}: " if where else ""
    info = _info(fs, path, uri, prefix)
    if info.type == pafs.FileType.NotFound:
        bucket = path.split("/", 1)[0]
        if "/" in path and _info(fs, bucket, uri, prefix).type == pafs.FileType.NotFound:
            raise DataError(f"{prefix}{uri}: no such bucket {bucket!r} (expected {expected})")
        raise DataError(f"{prefix}{uri}: no such {'object' if kind == 'object' else 'prefix'} (expected {expected})")
    if kind == "object" and info.type != pafs.FileType.File:
        raise DataError(f"{prefix}{uri}: a prefix (folder), not an object (expected {expected})")
    if kind == "prefix" and info.type != pafs.FileType.Directory:
        raise DataError(f"{prefix}{uri}: an object, not a prefix (folder) (expected {expected})")
    return uri


def read_object(uri: str) -> bytes:
    """The whole object at ``uri``.

    Raises:
        DataError: If it does not exist or cannot be read (one line naming the URI).
    """
    fs, path, uri = _open(uri, None)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise DataError(f"{uri}: no such object") from None
    except OSError as err:
        raise DataError(f"{uri}: cannot be read ({first_line(err)})") from None


def list_objects(uri: str) -> list[tuple[str, int]]:
    """Every object below the prefix ``uri`` (recursively), as ``(key relative to the prefix, bytes)``
    sorted by key.

    Raises:
        DataError: If the prefix cannot be listed.
    """
    fs, path, uri = _open(uri, None)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as err:
        raise DataError(f"{uri}: cannot be listed ({first_line(err)})") from None
    base = path.rstrip("/") + "/"
    return sorted((info.path[len(base):], info.size) for info in infos
                  if info.type == pafs.FileType.File and info.path.startswith(base))


def child(location: Location, name: str) -> Location:
    """``location / name`` for a local folder, ``location + "/" + name`` for a prefix."""
    return f"{location}/{name}" if is_uri(location) else Path(location) / name


def name_of(location: Location) -> str:
    """The last part of a path or URI (``"t10k-images-idx3-ubyte.gz"``)."""
    return PurePosixPath(str(location)).name if is_uri(location) else Path(location).name


def exists(location: Location) -> bool:
    """Whether ``location`` is an existing file or object.

    Raises:
        DataError: If the storage cannot be reached or the scheme is unknown.
    """
    if not is_uri(location):
        return Path(location).is_file()
    fs, path, uri = _open(str(location), None)
    return _info(fs, path, uri, "").type == pafs.FileType.File


class BlockCachedFile(io.RawIOBase):
    """A read-only, seekable binary file over an object in storage, read in cached blocks.

    h5py opens it as a file (``h5py.File(BlockCachedFile(uri), "r")``): HDF5 reads its metadata
    and small datasets in many small pieces, here served from aligned blocks of ``block_bytes``
    fetched by one ranged read each (consecutive missing blocks in one read) and kept in an LRU
    cache of ``cache_blocks`` blocks; a read of ``block_bytes`` or more (rows of a large dataset,
    read once per epoch) goes straight from storage into h5py's buffer, uncached. Memory: at most
    ``block_bytes * cache_blocks`` per open file.

    Args:
        uri: The object, ``scheme://bucket/key``.
        block_bytes: Bytes per block, > 0.
        cache_blocks: Blocks kept, > 0.

    Attributes:
        requests: Ranged reads made so far.
        bytes_fetched: Bytes they returned.

    Raises:
        DataError: If the object does not exist or cannot be opened (one line naming the URI).
    """

    def __init__(self, uri: str, *, block_bytes: int = BLOCK_BYTES, cache_blocks: int = CACHE_BLOCKS):
        super().__init__()
        if block_bytes <= 0 or cache_blocks <= 0:
            raise ValueError(f"block_bytes and cache_blocks must be > 0, but got ({block_bytes}, {cache_blocks})")
        fs, path, self.name = _open(uri, None)
        try:
            self._file = fs.open_input_file(path)  # a HEAD request: the size
            self._size = self._file.size()
        except FileNotFoundError:
            raise DataError(f"{self.name}: no such object") from None
        except OSError as err:
            raise DataError(f"{self.name}: cannot be opened ({first_line(err)})") from None
        self.block_bytes, self.cache_blocks = block_bytes, cache_blocks
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self.requests = 0
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"{self.name}: negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self._blocks.clear()
        super().close()

    def readinto(self, buffer) -> int:
        """Reads up to ``len(buffer)`` bytes at the position; returns how many (0 at the end)."""
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._pos))
        if count >= self.block_bytes:
            self._fetch_into(view[:count], self._pos)
        elif count:
            self._copy_cached(view[:count], self._pos)
        self._pos += count
        return count

    def _fetch_into(self, view: memoryview, offset: int) -> None:
        """One ranged read of ``len(view)`` bytes at ``offset`` straight into ``view``."""
        try:
            self._file.seek(offset)
            done = 0
            while done < len(view):
                got = self._file.readinto(view[done:])
                if not got:
                    raise OSError(f"object ended at byte {offset + done} of {self._size}")
                done += got
        except OSError as err:
            raise OSError(f"{self.name}: read of {len(view)} bytes at {offset} failed ({first_line(err)})") from None
        self.requests += 1
        self.bytes_fetched += len(view)

    def _copy_cached(self, view: memoryview, offset: int) -> None:
        """Copies ``[offset, offset + len(view))`` from cached blocks, fetching the missing ones."""
        first, last = offset // self.block_bytes, (offset + len(view) - 1) // self.block_bytes
        missing = [i for i in range(first, last + 1) if i not in self._blocks]
        if missing:  # consecutive: one read covers them all
            start = missing[0] * self.block_bytes
            data = bytearray(min((missing[-1] + 1) * self.block_bytes, self._size) - start)
            self._fetch_into(memoryview(data), start)
            for i in missing:
                self._blocks[i] = bytes(data[(i - missing[0]) * self.block_bytes:(i - missing[0] + 1) * self.block_bytes])
        done = 0
        for i in range(first, last + 1):
            block = self._blocks[i]
            self._blocks.move_to_end(i)
            lo = offset + done - i * self.block_bytes
            n = min(len(block) - lo, len(view) - done)
            view[done:done + n] = block[lo:lo + n]
            done += n
        while len(self._blocks) > max(self.cache_blocks, last - first + 1):
            self._blocks.popitem(last=False)
