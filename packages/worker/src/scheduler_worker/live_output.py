"""A running run's output, reported while it runs (``ExecutionService.report_output``) so its
page can follow it. Only complete lines are reported, each with the run's secrets masked: a
secret is never cut in two by a report (a line longer than the executor's output cap never
ends, and so waits for the outcome, which stores the whole output concealed and redacted).
Best effort: a failed report is dropped, the outcome has everything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from scheduler_application.execution.service import ExecutionService, OutputChunk

logger = logging.getLogger("scheduler.worker")


class LiveOutput:
    """What one run printed and has not been reported yet. Its executor keeps at most its
    output cap, and hands over only what it keeps, so this holds no more than that."""

    __slots__ = ("_conceal", "_pending")

    def __init__(self, conceal: Callable[[str], str]) -> None:
        self._conceal = conceal
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self._pending += data

    def take(self) -> str | None:
        """The complete lines written since the last take (concealed), or None."""
        end = self._pending.rfind(b"\n")
        if end < 0:
            return None
        lines = bytes(self._pending[: end + 1])
        del self._pending[: end + 1]
        return self._conceal(lines.decode("utf-8", "replace"))


class OutputReports:
    """Every ``interval`` seconds, one report of the new lines of every run in hand."""

    def __init__(
        self,
        *,
        execution: ExecutionService,
        worker_id: str,
        interval: float,
        in_hand: Callable[[], list[tuple[str, int, LiveOutput]]],
        run_writes: asyncio.Lock | None = None,
    ) -> None:
        """``run_writes``: held while a report is written (see :class:`HeartbeatLoop`)."""
        self._run_writes = run_writes if run_writes is not None else asyncio.Lock()
        self._execution = execution
        self._worker_id = worker_id
        self._interval = interval
        self._in_hand = in_hand

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.report()

    async def report(self) -> None:
        chunks = [
            OutputChunk(run_id=run_id, token=token, text=text)
            for run_id, token, output in self._in_hand()
            if (text := output.take())
        ]
        if not chunks:
            return
        try:
            async with self._run_writes:
                await self._execution.report_output(self._worker_id, chunks)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.debug("live output not reported (%s: %s)", type(error).__name__, error)
