"""Domain facts turned into :class:`~scheduler_application.ports.observer.RunObserver` calls,
written once for the use cases that share them (outcomes, the reaper, releases)."""

from __future__ import annotations

from collections import OrderedDict

from scheduler_application.execution.retries import Settlement
from scheduler_application.ports.observer import RunObserver
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus

#: Claimed runs whose executor is remembered until their outcome, per service instance.
MAX_REMEMBERED = 10_000
#: The executor label of an outcome whose claim this process did not see.
UNKNOWN_EXECUTOR = "unknown"
#: Outcomes an executor reports; only these have a meaningful execution time.
_EXECUTED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT})


def _seconds(run: TaskRun) -> float | None:
    if run.started_at is None or run.finished_at is None:
        return None
    return max((run.finished_at - run.started_at).total_seconds(), 0.0)


def observe_settlement(
    observer: RunObserver,
    settlement: Settlement,
    *,
    outcome: RunStatus,
    executor: str | None = None,
) -> None:
    """An attempt ended with ``outcome`` (its status before any dead-lettering), and maybe got
    a retry or went to the dead letters."""
    executed = outcome in _EXECUTED
    observer.run_finished(
        status=outcome.value,
        executor=(executor or UNKNOWN_EXECUTOR) if executed else None,
        duration=_seconds(settlement.run) if executed else None,
    )
    if settlement.retry is not None:
        observer.retry_scheduled()
        observer.run_created(RunTrigger.RETRY.value)
    if settlement.dead_lettered:
        observer.dead_lettered()


class ExecutionObservation:
    """What the worker protocol reports: claims (with their queue wait) and outcomes.

    It remembers the executor of each run claimed through it until the outcome (at most
    :data:`MAX_REMEMBERED`), so a run's duration is labelled with its executor without reading
    the task again; an outcome whose claim went through another process is ``unknown``."""

    def __init__(self, observer: RunObserver) -> None:
        self._observer = observer
        self._executors: OrderedDict[str, str] = OrderedDict()

    def claimed(self, run: TaskRun, executor: str) -> None:
        if run.queued_at is not None and run.started_at is not None:
            wait = (run.started_at - run.queued_at).total_seconds()
            self._observer.run_started(queue_wait=max(wait, 0.0))
        self._executors[run.id] = executor
        while len(self._executors) > MAX_REMEMBERED:
            self._executors.popitem(last=False)

    def settled(self, settlement: Settlement, *, outcome: RunStatus) -> None:
        executor = self._executors.pop(settlement.run.id, None)
        observe_settlement(self._observer, settlement, outcome=outcome, executor=executor)
