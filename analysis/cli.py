"""One-line errors for the command lines (``study.run``, ``analysis.report``, ``analysis.rescore``)."""

from __future__ import annotations

__all__ = ["MAX_ERROR_CHARS", "one_line", "shorten"]

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
