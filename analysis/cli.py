"""One-line errors for the command lines (``study.run``, ``analysis.report``, ``analysis.rescore``,
``study.results``, ``benchmarks/*.py``).

:class:`ArgumentParser` is argparse's parser with the house's contract for a bad flag: one line,
``error: argument --epochs: expected an integer >= 1, but got '0'``, and exit code 2 (argparse
prints a usage line first). The ``type=`` functions below check a flag's value where argparse
reads it, so every refusal has that one form: :func:`int_in`, :func:`float_in`,
:func:`comma_list`, :func:`existing_file`, :func:`directory`, :func:`output_file` (paths with
``~`` expanded).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NoReturn, TypeVar

__all__ = ["MAX_ERROR_CHARS", "one_line", "shorten", "ArgumentParser", "int_in", "float_in", "comma_list",
           "existing_file", "directory", "output_file"]

T = TypeVar("T")

MAX_ERROR_CHARS = 320  # an error line longer than this is cut, with a mark that it was


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` as one printable line of at most ``limit`` characters.

    Line breaks and other control characters are escaped (``\\n``), so a value quoted in the
    message cannot break the line. A longer message keeps its head and its tail (where the
    expectation usually stands) around ``...(N chars)...``.
    """
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(message))
    if len(text) <= limit:
        return text
    tail = limit // 2
    cut = f" ...({len(text) - limit} chars)... "
    head = max(0, limit - tail - len(cut))
    return text[:head] + cut + text[len(text) - tail:]


def shorten(value: object, limit: int = 60) -> str:
    """``repr``-free text of ``value`` cut to ``limit`` characters (``abc...xyz``), for quoting input."""
    text = str(value)
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr, ``error: <message>``, exit code 2.

    Subparsers (``add_subparsers``) are of the same class, so their errors are one line too; ``-h``
    prints the usual help.
    """

    def error(self, message: str) -> NoReturn:
        """Prints ``error: <message>`` as one bounded line and exits with status 2."""
        self.exit(2, f"error: {one_line(message)}\n")


def _bounds(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"<= {high:g}" if high is not None else "a value"


def int_in(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (None: unbounded on that side).

    Raises:
        argparse.ArgumentTypeError: From the returned function, naming the bounds and the value given.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer {_bounds(low, high)}, but got {shorten(repr(text))}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]``, or ``(low, high]`` with ``low_open``.

    Raises:
        argparse.ArgumentTypeError: From the returned function, naming the bounds and the value given.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        below = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a number {_bounds(low, high, low_open)}, but got "
                                             f"{shorten(repr(text))}")
        return value

    parse.__name__ = "number"
    return parse


def comma_list(item: Callable[[str], T] = str, *, choices: Collection[str] | None = None) -> Callable[[str], list[T]]:
    """An argparse ``type``: comma-separated values (``1,2,4``), each parsed by ``item`` and, with
    ``choices``, one of them; at least one value.

    Raises:
        argparse.ArgumentTypeError: From the returned function, naming the first bad value.
    """

    def parse(text: str) -> list[T]:
        parts = [part.strip() for part in text.split(",")]
        if not text.strip() or any(not part for part in parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated values, but got {shorten(repr(text))}")
        values = []
        for part in parts:
            if choices is not None and part not in choices:
                raise argparse.ArgumentTypeError(f"expected comma-separated values of {', '.join(choices)}, but got "
                                                 f"{shorten(repr(part))}")
            try:
                values.append(item(part))
            except (argparse.ArgumentTypeError, ValueError) as err:
                raise argparse.ArgumentTypeError(f"{shorten(repr(part))} in {shorten(repr(text))}: {err}") from None
        return values

    parse.__name__ = "list"
    return parse


def _local(text: str) -> Path:
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a local path, but got {shorten(repr(text))}")
    return Path(os.path.expanduser(text))


def existing_file(text: str) -> Path:
    """An argparse ``type``: a file that exists (``~`` expanded).

    Raises:
        argparse.ArgumentTypeError: If nothing is there, or a directory.
    """
    path = _local(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path}: {'a directory, not a file' if path.is_dir() else 'no such file'}")
    return path


def directory(text: str) -> Path:
    """An argparse ``type``: a directory that exists or can be created (``~`` expanded).

    Raises:
        argparse.ArgumentTypeError: If the path, or the nearest of its parents that exists, is not a
            directory.
    """
    path = _local(text)
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise argparse.ArgumentTypeError(f"{path}: {where}; expected a directory")
    return path


def output_file(text: str) -> Path:
    """An argparse ``type``: a file to read when it exists and to write otherwise (``~`` expanded).

    Raises:
        argparse.ArgumentTypeError: If the path is a directory or its folder does not exist.
    """
    path = _local(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: a directory, not a file")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no such folder {path.absolute().parent}")
    return path
