"""Caps on what a worker reports: an outcome's output and error text are cut to a byte budget,
with a marker saying how much was dropped (the in-process executors mark their captured output
the same way), so a worker cannot fill the database with one outcome."""

from __future__ import annotations

#: The default budget of a run's output, as ``worker.output_limit_bytes``.
DEFAULT_OUTPUT_LIMIT = 65_536
#: An error is a message, not a log: a few kilobytes say what went wrong.
DEFAULT_ERROR_LIMIT = 4_096


def cap_text(text: str | None, limit: int, *, what: str = "output") -> str | None:
    """``text`` cut to at most ``limit`` UTF-8 bytes, then ``[<what> truncated: N bytes
    dropped]``; a character the cut would split is dropped whole. None stays None."""
    if text is None:
        return None
    encoded = text.encode("utf-8", "replace")
    limit = max(0, limit)
    if len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode("utf-8", "ignore")
    dropped = len(encoded) - len(kept.encode("utf-8"))
    return f"{kept}\n[{what} truncated: {dropped} bytes dropped]"
