"""One-line errors for the command lines (``study.run``, ``analysis.report``, ``analysis.rescore``)."""

from __future__ import annotations

__all__ = ["MAX_ERROR_CHARS", "one_line"]

MAX_ERROR_CHARS = 300  # an error line longer than this is cut, with a mark that it was


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` as one printable line of at most ``limit`` characters.

    Line breaks and other control characters are escaped (``\\n``), so a value quoted in the
    message cannot break the line; a longer message is cut and ends with ``... (N more chars)``.
    """
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(message))
    if len(text) <= limit:
        return text
    more = f"... ({len(text) - limit} more chars)"
    return text[: max(0, limit - len(more))] + more
