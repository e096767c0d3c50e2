"""Capped capture of a task's output: keep the first bytes, count the rest, never block."""

from __future__ import annotations

import codecs
from collections.abc import Callable

from scheduler_application.execution.output_caps import DEFAULT_OUTPUT_LIMIT, cap_text

__all__ = ["DEFAULT_OUTPUT_LIMIT", "CappedOutput", "capped_text"]


class CappedOutput:
    """Keeps at most ``limit`` bytes of a byte stream and counts what it had to drop.

    Writes past the cap cost one addition, so a reader can keep draining a chatty child
    (and so keep it from blocking on a full pipe) without holding its output in memory.
    """

    __slots__ = ("_buffer", "_tee", "dropped", "limit")

    def __init__(self, limit: int, *, tee: Callable[[bytes], None] | None = None) -> None:
        """``tee`` hears every byte kept, as it is kept (the run's live output)."""
        self.limit = max(0, limit)
        self._buffer = bytearray()
        self._tee = tee
        self.dropped = 0

    def write(self, data: bytes) -> None:
        room = self.limit - len(self._buffer)
        kept = data if len(data) <= room else data[: max(room, 0)]
        if kept:
            self._buffer += kept
            if self._tee is not None:
                self._tee(kept)
        self.dropped += len(data) - len(kept)

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
