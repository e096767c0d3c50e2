"""The run page's output stream: what a running run adds, sent from the page's offset; a reset
when the outcome replaced the text; the end once the run is final; bounded messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scheduler_api.console.output import CHUNK, follow_output
from scheduler_domain.status import RunStatus


@dataclass
class Seen:
    output: str | None
    status: RunStatus


class ChangingRun:
    """A RunService stand-in whose run reads as each of ``states`` in turn (then the last)."""

    def __init__(self, *states: Seen) -> None:
        self.states = list(states)

    async def get(self, run_id: str, *, principal: Any) -> Seen:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


async def messages(runs: ChangingRun, offset: int) -> list[tuple[str | None, Any]]:
    stream = follow_output(
        runs,  # type: ignore[arg-type]
        principal=None,  # type: ignore[arg-type]
        run_id="r",
        offset=offset,
        max_seconds=30,
        poll_seconds=0,
    )
    return [(m.event, json.loads(str(m.data))) async for m in stream if m.event]


async def test_added_lines_are_sent_from_the_offset_and_a_replaced_text_resets() -> None:
    runs = ChangingRun(
        Seen("one\n", RunStatus.RUNNING),
        Seen("one\n", RunStatus.RUNNING),
        Seen("one\ntwo\n", RunStatus.RUNNING),
        Seen("one\n[REDACTED]\n", RunStatus.SUCCEEDED),
    )
    assert await messages(runs, offset=4) == [
        ("output", {"at": 4, "next": 8, "text": "two\n"}),
        ("reset", {"at": 0}),
        ("output", {"at": 0, "next": 15, "text": "one\n[REDACTED]\n"}),
        ("end", {"status": "succeeded"}),
    ]


async def test_a_long_output_goes_in_bounded_messages() -> None:
    text = "<script>x</script>" + "y" * (2 * CHUNK)
    sent = await messages(ChangingRun(Seen(text, RunStatus.FAILED)), offset=0)
    pieces = [data["text"] for event, data in sent if event == "output"]
    assert all(len(p) <= CHUNK for p in pieces)
    assert "".join(pieces) == text
    assert sent[-1] == ("end", {"status": "failed"})
