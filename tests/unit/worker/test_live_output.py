"""The worker's live output: complete lines only, each report concealed, then sent in one call."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler_application.execution.service import OutputChunk
from scheduler_worker.live_output import LiveOutput, OutputReports


def test_only_complete_lines_are_taken_and_each_is_concealed() -> None:
    output = LiveOutput(lambda text: text.replace("hunter2", "****"))
    output.write(b"first\npass")
    assert output.take() == "first\n"
    output.write(b"word=hunter")
    assert output.take() is None  # the secret is still cut in two: not reported yet
    output.write("2 \u00e9\n".encode())
    assert output.take() == "password=**** \u00e9\n"
    assert output.take() is None


class RecordingExecution:
    def __init__(self, *, fail: bool = False) -> None:
        self.reports: list[tuple[str, list[OutputChunk]]] = []
        self.fail = fail

    async def report_output(self, worker_id: str, chunks: Sequence[OutputChunk]) -> set[str]:
        self.reports.append((worker_id, list(chunks)))
        if self.fail:
            raise ConnectionError("database gone")
        return {c.run_id for c in chunks}


async def test_one_report_carries_every_run_with_new_lines_and_a_failure_is_dropped() -> None:
    quiet, chatty = LiveOutput(str), LiveOutput(str)
    chatty.write(b"hello\n")
    execution = RecordingExecution()
    reports = OutputReports(
        execution=execution,  # type: ignore[arg-type]
        worker_id="w-1",
        interval=0.5,
        in_hand=lambda: [("r1", 3, quiet), ("r2", 4, chatty)],
    )
    await reports.report()
    await reports.report()  # nothing new: no call
    assert execution.reports == [("w-1", [OutputChunk(run_id="r2", token=4, text="hello\n")])]

    execution.fail = True
    chatty.write(b"more\n")
    await reports.report()  # logged and dropped: the outcome carries the whole output
    assert len(execution.reports) == 2
