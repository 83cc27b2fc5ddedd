"""Local paths and URIs as pyarrow filesystems: the one place that resolves a storage location.

A location is a local path (``~`` expanded, made absolute) or a URI (``s3://bucket/key``,
``gs://``, ``abfs://``, ``hdfs://``; other schemes through an installed fsspec implementation).
Study directories (:class:`analysis.results.StudyDir`) and data files (``dataset.path``) are both
opened here. Credentials and endpoints come only from each cloud's standard environment and
config files (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``~/.aws``): none are read from a spec, none are written.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["StorageError", "is_uri", "open_location", "first_line", "SCHEME_PACKAGES"]

# Packages that bring the filesystems of the usual schemes, named in the error when one is missing.
SCHEME_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "abfss": "adlfs",
                   "az": "adlfs", "hf": "huggingface_hub", "http": "aiohttp", "https": "aiohttp"}


class StorageError(ValueError):
    """A storage location that cannot be used (unknown scheme, missing package, refused); one line."""


def is_uri(location: str | os.PathLike) -> bool:
    """Whether ``location`` names object storage (``scheme://...``) rather than a local path."""
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def open_location(location: str | os.PathLike) -> tuple[pafs.FileSystem, str, str]:
    """The filesystem of a local path or URI, the path inside it, and the canonical location.

    Local paths are made absolute with ``~`` expanded (``file://`` too). A URI goes to pyarrow's
    own filesystems (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``), else to an installed fsspec
    implementation of its scheme. Credentials and endpoints come from each cloud's standard
    environment and config files only (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

    Returns:
        ``(filesystem, path, location)``: ``location`` is the absolute local path or the URI
        without a trailing slash.

    Raises:
        StorageError: If the scheme is unknown or the package its filesystem needs is not installed.
    """
    text = os.fspath(location)
    if not is_uri(text):
        local = os.path.realpath(os.path.expanduser(text.removeprefix("file://")))  # no error on a symlink loop
        return pafs.LocalFileSystem(), local, local
    text = text.rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(text)  # pyarrow's own filesystems, else fsspec's
    except ImportError:
        raise StorageError(_missing_package(text)) from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        fs, path = _fsspec_filesystem(text)
    except (OSError, pa.ArrowException) as err:
        raise StorageError(f"{text}: cannot open the storage ({first_line(err)})") from None
    return fs, path.rstrip("/"), text


def _missing_package(uri: str) -> str:
    scheme = uri.split("://", 1)[0].lower()
    package = SCHEME_PACKAGES.get(scheme)
    hint = f"pip install {package}" if package else f"install the fsspec filesystem of {scheme}://"
    return f"{uri}: the {scheme}:// scheme needs a package that is not installed ({hint})"


def _fsspec_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    scheme = uri.split("://", 1)[0].lower()
    try:
        import fsspec

        fs = fsspec.filesystem(scheme)
    except ImportError:
        raise StorageError(_missing_package(uri)) from None
    except ValueError:
        raise StorageError(f"{uri}: unknown storage scheme {scheme}://; expected a local path or a URI such as "
                           "s3://bucket/prefix, gs://, abfs://") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), fs._strip_protocol(uri)


def first_line(err: BaseException) -> str:
    """An error's first line, at most 200 characters; S3's error codes as words."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    for code, words in _AWS_ERRORS.items():
        if f"AWS Error {code}" in text:
            return words
    return text[:200]


_AWS_ERRORS = {  # pyarrow's S3 messages name the AWS error code; say what it means
    "NO_SUCH_BUCKET": "no such bucket",
    "ACCESS_DENIED": "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws",
    "INVALID_ACCESS_KEY_ID": "the access key is not known: check AWS_ACCESS_KEY_ID or ~/.aws",
    "SIGNATURE_DOES_NOT_MATCH": "the secret key is wrong: check AWS_SECRET_ACCESS_KEY or ~/.aws",
    "NETWORK_CONNECTION": "cannot connect to the storage endpoint (check AWS_ENDPOINT_URL and the network)",
    "UNKNOWN (HTTP status 403)": "access denied: check the credentials",
}
