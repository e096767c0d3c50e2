"""The worker protocol: claim a run under a lease, keep it alive, report how it ended.

Workers reaching the database call these directly; the API's worker endpoints call the same
methods, so both paths share one set of rules. The fencing token is the run's version after the
claim: heartbeats and outcomes carry it, and once the attempt moved on (cancelled, reaped, claimed
again) an old token is refused with :class:`Conflict`.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from scheduler_application.errors import (
    AlreadyExists,
    ApplicationError,
    Conflict,
    Contended,
    NotFound,
    SecretUnreadable,
    Unavailable,
)
from scheduler_application.execution.output_caps import storable_result
from scheduler_application.execution.redaction import conceal_secrets, redact_result
from scheduler_application.execution.retries import (
    Settlement,
    plan_failed_attempt,
    settle_failed_attempt,
)
from scheduler_application.limits.circuits import CircuitBreakers
from scheduler_application.observation import ExecutionObservation
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.redaction import NO_REDACTION, Redactor
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.unit_of_work import (
    NeedsTransaction,
    StatementUnitOfWorkFactory,
    UnitOfWork,
    UnitOfWorkFactory,
)
from scheduler_domain.accounts import Role
from scheduler_domain.errors import (
    DomainError,
    IllegalTransition,
    LeaseLost,
    StaleFencingToken,
)
from scheduler_domain.events import RunEvent
from scheduler_domain.executor_policy import ExecutorPolicy
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import WorkerStatus

T = TypeVar("T")
logger = logging.getLogger("scheduler.execution")
DEFAULT_LEASE = timedelta(seconds=30)
RELEASE_REASON = "released by draining worker"
#: What recording an outcome changes on a run (``finish``, then maybe ``dead_letter``); a lease
#: renewal that landed since the read keeps its ``heartbeat_at``.
OUTCOME_FIELDS = (
    "status",
    "version",
    "finished_at",
    "lease_expires_at",
    "result",
    "error",
    "output",
)


#: Characters of live output a run may accumulate before its outcome (a guard: the worker's
#: executors keep at most ``worker.output_limit_bytes`` of it anyway).
MAX_LIVE_OUTPUT = 1_048_576


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedRun:
    """A run now held by the worker, with what it needs to execute it."""

    run: TaskRun
    executor: str
    params: dict[str, Any]
    timeout_seconds: float | None
    #: The task's ``secret_env``, opened: for the task's process only (never logged).
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    #: Why ``secret_env`` could not be opened (no key, or a key that does not open it): the
    #: run must then fail without being executed.
    secret_error: str | None = None
    #: The task as the claim read it: the outcome counts the run against the circuits of the
    #: limits the run was claimed under without reading the task again.
    task: Task | None = field(default=None, repr=False, compare=False)

    @property
    def token(self) -> int:
        """The fencing token to present with heartbeats and the outcome."""
        return self.run.version

    def context(self) -> ExecutionContext:
        return ExecutionContext(
            run_id=self.run.id,
            task_id=self.run.task_id,
            attempt=self.run.attempt,
            params=dict(self.params),
            timeout_seconds=self.timeout_seconds,
            secret_env=dict(self.secret_env),
        )

    def conceal(self, result: ExecutionResult) -> ExecutionResult:
        """``result`` with this run's secret values (and simple encodings of them) masked."""
        return conceal_secrets(result, self.secret_env.values())

    def conceal_text(self, text: str) -> str:
        """Output text with this run's secret values masked, as :meth:`conceal` does."""
        return self.conceal(ExecutionResult(status="succeeded", output=text)).output or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputChunk:
    """Output a run printed since the last report (complete lines, its secrets masked)."""

    run_id: str
    token: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveRun:
    run_id: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one attempt ended, as its worker reports it (:meth:`ExecutionService.complete_many`)."""

    run_id: str
    token: int
    result: ExecutionResult
    #: The run as the worker's claim returned it, if the worker kept it: the outcome is then
    #: decided on that copy instead of a fresh read. It is only trusted at the token's version,
    #: and the write is conditional on that version, so a run that moved on since is caught
    #: there (and the batch decided again on fresh reads).
    run: TaskRun | None = None
    #: The run's task as the claim read it (``ClaimedRun.task``), kept with the claimed copy:
    #: a success is counted against the circuits of the limits the run was claimed under, with
    #: no read of the task. A failed attempt's retry is always planned on a fresh read.
    task: Task | None = None


#: One answer of :meth:`ExecutionService.complete_many`: what :meth:`ExecutionService.complete`
#: would have returned, or the error it would have raised for that outcome alone.
OutcomeAnswer = Settlement | ApplicationError | DomainError | ValueError
#: In a statement unit of work, the answer of an outcome whose run the write left (it moved on
#: since it was read): decided again on its own, never handed out.
_UNWRITTEN = Conflict("the run moved on before its outcome was written")


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatReply:
    """``stop``: runs the worker must abandon (cancelled, reaped, or claimed by another).
    ``status``: the worker's own status, so it notices an operator's drain."""

    stop: list[str]
    status: WorkerStatus


class ExecutionService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        rng: random.Random | None = None,
        lease: timedelta = DEFAULT_LEASE,
        observer: RunObserver = NO_OBSERVER,
        redactor: Redactor = NO_REDACTION,
        executor_policy: ExecutorPolicy | None = None,
        secret_box: SecretBox | None = None,
        circuits: CircuitBreakers | None = None,
        statement_uow_factory: StatementUnitOfWorkFactory | None = None,
    ) -> None:
        """``statement_uow_factory``: :meth:`claim_many` starts the runs in such a unit of
        work — the claim, its events, the tasks and their owners' roles are one statement,
        durable as it returns, with no ``BEGIN`` or ``COMMIT`` round trip and nothing read
        after it — and fails a run the executor policy refuses in a transaction right after.
        ``circuits`` counts every ended run against its circuit breakers (on by default).
        ``observer`` hears of claims and outcomes; ``redactor`` scrubs secrets from the
        output, error and result of every outcome before it is stored; ``executor_policy``
        (default: the safe defaults) is checked again at every claim against the task owner's
        role as it is now, and a run it refuses is dead-lettered instead of handed out;
        ``secret_box`` opens the ``secret_env`` of a claimed run's task (without one, such a
        run fails)."""
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        self._uow_factory = uow_factory
        self._clock = clock
        self._rng = rng
        self._lease = lease
        self._observed = ExecutionObservation(observer)
        self._redactor = redactor
        self._policy = executor_policy if executor_policy is not None else ExecutorPolicy()
        self._secret_box = secret_box
        self._circuits = circuits if circuits is not None else CircuitBreakers()
        self._statement_uow_factory = statement_uow_factory

    async def claim(self, run_id: str, *, worker_id: str) -> ClaimedRun | None:
        """Take a delivered run; None when it is no longer queued (a duplicate delivery, a
        cancelled run, another worker won): the caller acks the message and drops it."""
        now = self._clock.now()
        try:
            async with self._uow_factory() as uow:
                run = await uow.runs.claim(run_id, worker_id=worker_id, now=now, lease=self._lease)
                return await self._start(uow, run, worker_id)
        except Conflict:
            return None

    async def claim_many(self, run_ids: Sequence[str], *, worker_id: str) -> dict[str, ClaimedRun]:
        """:meth:`claim` for several deliveries in one transaction (the conditional update, the
        claim events and the read of the tasks in one round trip: ``RunRepository.start_many``;
        then the commit). The runs claimed, by id;
        the others (duplicates, cancelled, won by another worker) are absent, and their
        messages are acked and dropped. Should the batch hit a run whose task vanished, or
        lose a race, each run is claimed on its own instead, as :meth:`claim` would."""
        if not run_ids:
            return {}
        now = self._clock.now()
        if self._statement_uow_factory is not None:
            return await self._start_at_once(run_ids, worker_id, now)
        try:
            async with self._uow_factory() as uow:
                started = await uow.runs.start_many(
                    run_ids, worker_id=worker_id, now=now, lease=self._lease
                )
                if not started:
                    return {}
                runs = [run for run, _ in started]
                tasks = {task.id: task for _, task in started if task is not None}
                if all(task is not None for _, task in started):
                    refusals = await self._refusals(uow, runs, tasks)
                    refused = [run for run in runs if run.id in refusals]
                    for run in refused:
                        await self._refuse(uow, run, refusals[run.id], worker_id)
                    await uow.commit()
                    return self._hand_out(runs, tasks, refusals)
        except Conflict:
            pass
        # Rolled back: a task was deleted under us, or the batch lost a race.
        claimed: dict[str, ClaimedRun] = {}
        for run_id in dict.fromkeys(run_ids):
            one = await self.claim(run_id, worker_id=worker_id)
            if one is not None:
                claimed[run_id] = one
        return claimed

    async def _start_at_once(
        self, run_ids: Sequence[str], worker_id: str, now: datetime
    ) -> dict[str, ClaimedRun]:
        """:meth:`claim_many` in a statement unit of work: ``start_many_owned`` (one statement,
        durable as it returns) and nothing read after it — the executor policy decides on the
        owners' roles that statement read. A run it refuses is failed (and dead-lettered) in a
        transaction right after; a worker that dies in between leaves it running under its
        lease, and the reaper's retry is refused again. A run whose task is gone (which one
        statement never returns: the task's deletion takes its runs) is not handed out; its
        lease lapses."""
        assert self._statement_uow_factory is not None
        async with self._statement_uow_factory() as uow:
            started = await uow.runs.start_many_owned(
                run_ids, worker_id=worker_id, now=now, lease=self._lease
            )
            await uow.commit()
        tasks = {task.id: task for _, task, _ in started if task is not None}
        runs = [run for run, task, _ in started if task is not None]
        roles = {task.owner_id: role for _, task, role in started if task is not None}
        refusals = await self._refusals(None, runs, tasks, roles=roles)
        refused = [run for run in runs if run.id in refusals]
        if refused:
            try:
                async with self._uow_factory() as uow:
                    for run in refused:
                        await self._refuse(uow, run, refusals[run.id], worker_id)
                    await uow.commit()
            except (Conflict, NotFound):
                pass  # moved on meanwhile (cancelled, say): no longer ours to fail
            except Exception:
                # The others are started: they must be handed out whatever happens here. The
                # refused ones stay running under this worker's lease (never executed); the
                # reaper ends them, and a retry is refused again.
                logger.warning("could not fail the refused runs; their leases will lapse")
        return self._hand_out(runs, tasks, refusals)

    def _hand_out(
        self, runs: Sequence[TaskRun], tasks: Mapping[str, Task], refusals: Mapping[str, str]
    ) -> dict[str, ClaimedRun]:
        """The runs a batch claim started, observed, and those not refused made ready to run."""
        for run in runs:
            self._observed.claimed(run, tasks[run.task_id].executor)
        self._observe_refused([run for run in runs if run.id in refusals])
        return {
            run.id: _claimed(run, tasks[run.task_id], self._secret_box)
            for run in runs
            if run.id not in refusals
        }

    async def claim_next(self, *, worker_id: str, queues: Sequence[str]) -> ClaimedRun | None:
        """Take the most urgent queued run of ``queues`` (the HTTP worker protocol's poll)."""
        now = self._clock.now()
        try:
            async with self._uow_factory() as uow:
                run = await uow.runs.claim_next(
                    queues=queues, worker_id=worker_id, now=now, lease=self._lease
                )
                return await self._start(uow, run, worker_id)
        except Conflict:
            return None

    async def _start(
        self, uow: UnitOfWork, run: TaskRun | None, worker_id: str
    ) -> ClaimedRun | None:
        if run is None:
            return None
        task = await uow.tasks.get(run.task_id)
        if task is None:
            return None  # the task was deleted under us: roll back, nothing to run
        await uow.events.add(run.claim_event())
        refusal = (await self._refusals(uow, [run], {task.id: task})).get(run.id)
        if refusal is not None:
            await self._refuse(uow, run, refusal, worker_id)
        await uow.commit()
        self._observed.claimed(run, task.executor)
        if refusal is not None:
            self._observe_refused([run])
            return None
        return _claimed(run, task, self._secret_box)

    async def _refusals(
        self,
        uow: UnitOfWork | None,
        runs: Iterable[TaskRun],
        tasks: Mapping[str, Task],
        *,
        roles: Mapping[str, Role | None] | None = None,
    ) -> dict[str, str]:
        """Why the executor policy refuses to run each of ``runs`` now, by run id, with the
        params the run executes with: checked against the task owner's current role — looked
        up only for an executor that some role able to own a task may not use — and, for
        ``python``, the registered callables. A template's subscription is checked as its
        template's author was (an admin or operator chose the executor and the params the
        subscriber fills in): only the callables. ``roles``: the owners' roles, by owner id,
        read already (then nothing is read, and ``uow`` may be None)."""
        known: dict[str, Role | None] = dict(roles) if roles is not None else {}
        refusals: dict[str, str] = {}
        for run in runs:
            task = tasks[run.task_id]
            params = run.params if run.params is not None else task.params
            if task.template_id is not None:
                refusal = self._policy.refusal(task.executor, params, Role.ADMIN)
                if refusal is not None:
                    refusals[run.id] = refusal
                continue
            if self._policy.open_to_every_owner(task.executor):
                if task.executor != "python":
                    continue
                role: Role | None = Role.ADMIN  # any owner may: only the callable is checked
            else:
                if task.owner_id not in known:
                    if uow is None:
                        raise ValueError(f"no role given for owner {task.owner_id}")
                    owner = await uow.users.get(task.owner_id)
                    known[task.owner_id] = owner.role if owner is not None else None
                role = known[task.owner_id]
            refusal = self._policy.refusal(task.executor, params, role)
            if refusal is not None:
                refusals[run.id] = refusal
        return refusals

    async def _refuse(self, uow: UnitOfWork, run: TaskRun, reason: str, worker_id: str) -> None:
        """Fail the claimed ``run`` without running it and dead-letter it: a retry would be
        refused the same way (the owner's role or the registry has to change first)."""
        read_version = run.version
        now = self._clock.now()
        actor = f"worker:{worker_id}"
        finished = _finish(run, run.version, ExecutionResult(status="failed", error=reason), now)
        await uow.events.add(replace(finished, actor=actor))
        await uow.events.add(run.dead_letter(now=now, actor=actor))
        await uow.runs.update(run, expected_version=read_version)

    def _observe_refused(self, runs: Sequence[TaskRun]) -> None:
        for run in runs:
            self._observed.settled(Settlement(run, None), outcome=RunStatus.FAILED)

    async def heartbeat(
        self, worker_id: str, active: Sequence[ActiveRun | tuple[str, int]]
    ) -> HeartbeatReply:
        """Renew the lease of every run the worker holds (``(run_id, token)`` pairs); tell it
        which ones to stop: cancelled, reaped, re-claimed under a newer token — or held by
        another worker, whose lease is never renewed by this one, whatever the token."""
        now = self._clock.now()
        held = [
            item if isinstance(item, ActiveRun) else ActiveRun(run_id=item[0], token=item[1])
            for item in active
        ]
        async with self._uow_factory() as uow:
            worker = await uow.workers.get_for_update(worker_id)
            if worker is None:
                raise NotFound(f"worker {worker_id} is not registered", field="worker_id")
            renewed = await uow.runs.renew_leases(
                [(item.run_id, item.token) for item in held],
                worker_id=worker.id,
                now=now,
                lease=self._lease,
            )
            stop = [item.run_id for item in held if item.run_id not in renewed]
            worker.record_heartbeat(now=now, active_runs=len(held) - len(stop))
            await uow.workers.update(worker)
            await uow.commit()
        return HeartbeatReply(stop=stop, status=worker.status)

    async def report_output(self, worker_id: str, chunks: Sequence[OutputChunk]) -> set[str]:
        """Append live output to runs the worker holds (``running`` under the chunk's token),
        redacted like an outcome's output and within :data:`MAX_LIVE_OUTPUT` characters, in
        one transaction; the ids written. Best effort: the outcome stores the whole output and
        replaces what was appended."""
        written: set[str] = set()
        async with self._uow_factory() as uow:
            for chunk in chunks:
                shown = ExecutionResult(status="succeeded", output=chunk.text)
                text = storable_result(redact_result(self._redactor, shown)).output
                if text and await uow.runs.append_output(
                    chunk.run_id,
                    text,
                    worker_id=worker_id,
                    token=chunk.token,
                    limit=MAX_LIVE_OUTPUT,
                ):
                    written.add(chunk.run_id)
            await uow.commit()
        return written

    async def runs_to_stop(
        self, worker_id: str, active: Sequence[ActiveRun | tuple[str, int]]
    ) -> list[str]:
        """Of the runs the worker holds (``(run_id, token)`` pairs), those it must stop now:
        cancelled (directly, or replaced by a newer slot), reaped or re-claimed. Reads only —
        no lease is renewed, nothing is written — so a worker asks this between heartbeats,
        and a cancellation reaches the run's process within that interval instead of the
        heartbeat's (see ``WorkerOptions.stop_check_interval``)."""
        held = [
            (item.run_id, item.token) if isinstance(item, ActiveRun) else (item[0], item[1])
            for item in active
        ]
        if not held:
            return []
        async with self._uow_factory() as uow:
            kept = await uow.runs.still_held(held, worker_id=worker_id)
        return [run_id for run_id, _ in held if run_id not in kept]

    async def complete(
        self,
        run_id: str,
        token: int,
        result: ExecutionResult,
        *,
        conceal_task_secrets: bool = False,
    ) -> Settlement:
        """Record the outcome; a failure or timeout gets its retry (pending until the backoff
        has passed) or, with no attempts left, is dead-lettered — all in one transaction. The
        one-outcome case of :meth:`complete_many`, decided and written the same way; its error
        is raised rather than answered.

        ``conceal_task_secrets``: mask the values of the task's ``secret_env`` in the result
        here (for outcomes from workers this process did not run: the HTTP protocol); the
        in-process worker masks them itself (:meth:`ClaimedRun.conceal`)."""
        [answer] = await self._complete_batch(
            [Outcome(run_id=run_id, token=token, result=result)],
            trust_claimed_copies=False,
            conceal_task_secrets=conceal_task_secrets,
        )
        if isinstance(answer, Settlement):
            return answer
        raise answer

    async def complete_many(self, outcomes: Sequence[Outcome]) -> list[OutcomeAnswer]:
        """:meth:`complete` for several outcomes in one transaction: the runs are read at
        once (or taken from the claimed copies the outcomes carry), every finish, retry and
        dead letter is decided as :meth:`complete` decides it,
        and all of it — runs (each conditional on the version read), retries, events — is
        written in a few statements and committed together. Answers come in the order of
        ``outcomes``: the settlement, or the error :meth:`complete` would have raised for that
        outcome alone (``Conflict`` for a stale token or a run that moved on, ``NotFound`` for
        a missing run), which never fails the others. Should a run have moved on unseen (a
        claimed copy gone stale, or a change between the read and the write), the batch is
        rolled back and decided again on fresh reads, and if that fails too each outcome is
        recorded on its own with :meth:`complete`. An outage (``Unavailable``) fails the whole
        call.

        With a statement unit of work factory, the batch is first written in one of those:
        the runs' outcomes and their events are one statement (``RunRepository.update_each``),
        durable as it returns, with no ``BEGIN`` or ``COMMIT``; a run it did not write (it
        moved on since the claim) is decided again on its own, as above. A batch that needs
        more — a retry to insert, a circuit to count — raises ``NeedsTransaction`` before any
        write and goes the transactional way, as does one that lost a race (``Contended``: a
        deadlock PostgreSQL broke; nothing of it was written)."""
        if not outcomes:
            return []
        if self._statement_uow_factory is not None:
            try:
                return await self._complete_at_once(outcomes)
            except (NeedsTransaction, Contended):
                pass  # nothing written: a lost race (a deadlock broken) is decided again
        for trust_claimed_copies in (True, False):
            try:
                return await self._complete_batch(outcomes, trust_claimed_copies)
            except (Conflict, AlreadyExists):
                pass
        return [await self._complete_alone(outcome) for outcome in outcomes]

    async def _complete_alone(self, outcome: Outcome) -> OutcomeAnswer:
        """:meth:`complete` of one outcome, its error answered (an outage raised)."""
        try:
            return await self.complete(outcome.run_id, outcome.token, outcome.result)
        except (ApplicationError, DomainError, ValueError) as error:
            if isinstance(error, Unavailable):
                raise
            return error

    async def _complete_at_once(self, outcomes: Sequence[Outcome]) -> list[OutcomeAnswer]:
        """:meth:`complete_many` in a statement unit of work; an outcome whose run was not
        written is recorded again on its own (:meth:`complete`: a fresh read, the answer
        that read gives)."""
        answers = await self._complete_batch(outcomes, trust_claimed_copies=True, at_once=True)
        for index, (outcome, answer) in enumerate(zip(outcomes, answers, strict=True)):
            if answer is _UNWRITTEN:
                answers[index] = await self._complete_alone(outcome)
        return answers

    async def _complete_batch(
        self,
        outcomes: Sequence[Outcome],
        trust_claimed_copies: bool,
        *,
        conceal_task_secrets: bool = False,
        at_once: bool = False,
    ) -> list[OutcomeAnswer]:
        """The outcomes decided and written in one unit of work: a transaction, or with
        ``at_once`` a statement unit of work, where the answer of a run the write left (it
        moved on) is :data:`_UNWRITTEN`."""
        now = self._clock.now()
        runs: dict[str, TaskRun] = {}
        #: Tasks as the claims read them (for the circuits only: retries read them fresh).
        claimed_tasks: dict[str, Task] = {}
        if trust_claimed_copies:
            for outcome in outcomes:
                claimed = outcome.run
                if claimed is not None and claimed.version == outcome.token:
                    runs[outcome.run_id] = copy.copy(claimed)
                    if outcome.task is not None and outcome.task.id == claimed.task_id:
                        claimed_tasks[claimed.task_id] = outcome.task
        units = self._statement_uow_factory if at_once else None
        async with (units or self._uow_factory)() as uow:
            unread = [o.run_id for o in outcomes if o.run_id not in runs]
            if unread:
                runs.update((run.id, run) for run in await uow.runs.get_many(unread))
            tasks: dict[str, Task] = {}
            if conceal_task_secrets:
                tasks = await _tasks_of(uow, runs.values())
            answers: list[OutcomeAnswer] = []
            writes: list[tuple[TaskRun, int]] = []
            events: list[RunEvent] = []
            failed: list[tuple[int, TaskRun, str]] = []
            ended: list[tuple[TaskRun, RunStatus]] = []
            for outcome in outcomes:
                run = runs.get(outcome.run_id)
                if run is None:
                    answers.append(NotFound(f"run {outcome.run_id} not found", field="run_id"))
                    continue
                read_version = run.version
                result = outcome.result
                task = tasks.get(run.task_id)
                if task is not None and task.secret_env:
                    values, _ = open_secret_env(task, self._secret_box)
                    result = conceal_secrets(result, values.values())
                try:
                    result = storable_result(redact_result(self._redactor, result))
                    event = _finish(run, outcome.token, result, now)
                except (ApplicationError, DomainError, ValueError) as error:
                    answers.append(error)
                    continue
                events.append(event)
                writes.append((run, read_version))
                ended.append((run, RunStatus(result.status)))
                if run.failed_attempt:
                    failed.append((len(answers), run, event.actor))
                answers.append(Settlement(run, None))
            if failed:
                if not tasks:
                    tasks = await _tasks_of(uow, [run for _, run, _ in failed])
                for index, run, actor in failed:
                    retry, event = plan_failed_attempt(
                        run, task=tasks.get(run.task_id), now=now, actor=actor, rng=self._rng
                    )
                    if retry is not None:
                        await uow.runs.add(retry)
                    events.append(event)
                    answers[index] = Settlement(run, retry)
            if writes:
                counted = {**claimed_tasks, **tasks}
                unknown = [run for run, _ in writes if run.task_id not in counted]
                if unknown:
                    counted.update(await _tasks_of(uow, unknown))
                await self._circuits.record(
                    uow,
                    [
                        (run, counted[run.task_id], status)
                        for run, status in ended
                        if run.task_id in counted
                    ],
                    now=now,
                )
                if at_once:
                    written = await uow.runs.update_each(
                        writes, fields=OUTCOME_FIELDS, events=events
                    )
                    answers = [
                        _UNWRITTEN
                        if isinstance(answer, Settlement) and answer.run.id not in written
                        else answer
                        for answer in answers
                    ]
                else:
                    await uow.runs.update_many(writes, fields=OUTCOME_FIELDS, events=events)
                await uow.commit()
        for outcome, answer in zip(outcomes, answers, strict=True):
            if isinstance(answer, Settlement):
                self._observed.settled(answer, outcome=RunStatus(outcome.result.status))
        return answers

    async def release(self, run_id: str, token: int, *, reason: str = RELEASE_REASON) -> Settlement:
        """Give back a run a draining worker will not finish: the attempt is ``lost`` and its
        retry (an ordinary next attempt, or the dead letters) is due at once."""
        now = self._clock.now()
        async with self._uow_factory() as uow:
            run = await _held_run(uow, run_id)
            read_version = run.version
            actor = f"worker:{run.worker_id}"
            _fenced(lambda: run.check_token(token))
            event = replace(_fenced(lambda: run.lose(now=now, reason=reason)), actor=actor)
            await uow.events.add(event)
            retry = await self._settle(uow, run, now=now, actor=actor, delay=timedelta(0))
            await uow.runs.update(run, expected_version=read_version)
            await uow.commit()
        self._observed.settled(Settlement(run, retry), outcome=RunStatus.LOST)
        return Settlement(run, retry)

    async def _settle(
        self,
        uow: UnitOfWork,
        run: TaskRun,
        *,
        now: datetime,
        actor: str,
        delay: timedelta | None = None,
    ) -> TaskRun | None:
        if not run.failed_attempt:
            return None
        task: Task | None = await uow.tasks.get(run.task_id)
        return await settle_failed_attempt(
            uow, run, task=task, now=now, actor=actor, rng=self._rng, delay=delay
        )


async def _tasks_of(uow: UnitOfWork, runs: Iterable[TaskRun]) -> dict[str, Task]:
    ids = list(dict.fromkeys(run.task_id for run in runs))
    return {task.id: task for task in await uow.tasks.get_many(ids)}


async def _held_run(uow: UnitOfWork, run_id: str) -> TaskRun:
    run = await uow.runs.get(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found", field="run_id")
    return run


def _finish(run: TaskRun, token: int, result: ExecutionResult, now: datetime) -> RunEvent:
    """The reported outcome applied to ``run`` (in memory), fenced by ``token``."""
    return _fenced(
        lambda: run.finish(
            RunStatus(result.status),
            token=token,
            now=now,
            result=result.result or None,
            error=result.error,
            output=result.output,
        )
    )


def _claimed(run: TaskRun, task: Task, secret_box: SecretBox | None) -> ClaimedRun:
    secret_env, secret_error = open_secret_env(task, secret_box)
    return ClaimedRun(
        run=run,
        executor=task.executor,
        params=dict(run.params if run.params is not None else task.params),
        timeout_seconds=task.timeout.total_seconds() if task.timeout is not None else None,
        secret_env=secret_env,
        secret_error=secret_error,
        task=task,
    )


def open_secret_env(task: Task, secret_box: SecretBox | None) -> tuple[dict[str, str], str | None]:
    """The task's ``secret_env`` opened, or nothing and why it could not be."""
    if not task.secret_env:
        return {}, None
    if secret_box is None:
        return {}, "the task has secret_env, but this server has no secrets.key to open it"
    try:
        return {name: secret_box.open(sealed) for name, sealed in task.secret_env.items()}, None
    except SecretUnreadable:
        return {}, "the task's secret_env cannot be opened with the configured secrets.key"


def _fenced(action: Callable[[], T]) -> T:
    """Run a transition; a stale token or a run that moved on is the caller's Conflict."""
    try:
        return action()
    except StaleFencingToken as error:
        raise Conflict(error.message, field="token") from None
    except (IllegalTransition, LeaseLost) as error:
        raise Conflict(error.message, field="status") from None
