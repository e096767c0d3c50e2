"""Capped capture of a task's output: keep the first bytes, count the rest, never block."""

from __future__ import annotations

import codecs

from scheduler_application.execution.output_caps import DEFAULT_OUTPUT_LIMIT, cap_text

__all__ = ["DEFAULT_OUTPUT_LIMIT", "CappedOutput", "capped_text"]


class CappedOutput:
    """Keeps at most ``limit`` bytes of a byte stream and counts what it had to drop.

    Writes past the cap cost one addition, so a reader can keep draining a chatty child
    (and so keep it from blocking on a full pipe) without holding its output in memory.
    """

    __slots__ = ("_buffer", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._buffer = bytearray()
        self.dropped = 0

    def write(self, data: bytes) -> None:
        room = self.limit - len(self._buffer)
        if len(data) <= room:
            self._buffer += data
            return
        if room > 0:
            self._buffer += data[:room]
        self.dropped += len(data) - max(room, 0)

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def text(self, *, complete: bool = True) -> str | None:
        """The output as UTF-8 (invalid bytes replaced), with a marker when truncated.

        ``complete=False`` says the source was abandoned after the cap, so the number of
        dropped bytes is a lower bound. ``None`` when nothing was captured.
        """
        if not self.dropped:
            return self._buffer.decode("utf-8", "replace") if self._buffer else None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(bytes(self._buffer), final=False)
        split = len(decoder.getstate()[0])  # a character cut in two by the cap is dropped whole
        dropped = self.dropped + split
        amount = f"{dropped} bytes" if complete else f"at least {dropped} bytes"
        return f"{text}\n[output truncated: {amount} dropped]"


def capped_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, with the same marker as captured output
    (the rule the server applies to HTTP workers' outcomes)."""
    return cap_text(text, limit) or ""
