"""The Prometheus adapter: one registry per process holding every scheduler metric.

:class:`PrometheusMetrics` implements the application's
:class:`~scheduler_application.ports.observer.RunObserver` and the API's request observer, and
renders the text exposition format for ``/metrics``. In ``scheduler run`` the components share
one instance (it lives on :class:`~scheduler_infrastructure.resources.Resources`), so one scrape
sees them all.

Label values come from small fixed sets. Those that come from data (executor and queue names)
pass a :class:`BoundedLabel`: past its limit new values are reported as ``other``, so no label
grows with the number of runs, tasks or workers. The fixed sets (triggers, statuses, reasons,
dependencies) are created at zero, so ``rate()`` and alerts see a series from the start.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from threading import Lock
from typing import Any, ParamSpec

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from scheduler_domain.events import SkipReason
from scheduler_domain.run import RunTrigger
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import WorkerStatus

logger = logging.getLogger("scheduler.metrics")
P = ParamSpec("P")

OTHER = "other"
#: Attempt outcomes counted by ``scheduler_runs_finished_total``.
FINISHED_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.TIMED_OUT,
    RunStatus.LOST,
    RunStatus.CANCELLED,
)
DEPENDENCIES = ("database", "broker", "redis")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no route matched (404s, scanners): never the raw path.
UNMATCHED_ROUTE = "unmatched"

RUN_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


#: Series per gauge of circuits and limits (their names come from tasks' URLs and operators).
_MAX_SERIES = 200
#: Request series remembered for the next request (methods, templates and statuses seen).
_MAX_REQUEST_SERIES = 1_000
_CIRCUIT_LEVEL = {"closed": 0.0, "open": 1.0, "half_open": 0.5}


def never_raises(method: Callable[P, None]) -> Callable[P, None]:
    """Observing must not fail the use case that reports (it has committed already): a bug
    here is logged, not raised."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            logger.exception("recording metric %s failed", method.__name__)

    return guarded


class BoundedLabel:
    """Admits at most ``limit`` distinct values (the ``known`` ones first); later new values
    become ``other``."""

    def __init__(self, limit: int, known: Iterable[str] = ()) -> None:
        self._limit = limit
        self._seen = set(known)
        self._lock = Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


class PrometheusMetrics:
    """Every metric of one process, in its own registry (never the global default one, so
    tests and several instances do not collide)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
        max_executors: int = 32,
        max_queues: int = 100,
        max_routes: int = 200,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self._executor = BoundedLabel(max_executors)
        self._queue = BoundedLabel(max_queues)
        self._route = BoundedLabel(max_routes, known=[UNMATCHED_ROUTE])
        self._status = BoundedLabel(len(RunStatus) + 1, known=[s.value for s in RunStatus])
        self._reason = BoundedLabel(len(SkipReason) + 1, known=[s.value for s in SkipReason])
        self._trigger = BoundedLabel(len(RunTrigger) + 1, known=[t.value for t in RunTrigger])
        self._dependency = BoundedLabel(len(DEPENDENCIES) + 2, known=DEPENDENCIES)
        self._worker_sources: list[Callable[[], int]] = []
        #: The request series by (method, route template, status) as the API reports them.
        self._request_series: dict[tuple[str, str | None, int], tuple[Any, Any]] = {}

        self.runs_created_total = Counter(
            "scheduler_runs_created_total", "Runs created, by trigger.", ["trigger"], registry=r
        )
        self.runs_finished_total = Counter(
            "scheduler_runs_finished_total",
            "Attempts that ended, by outcome (before any dead-lettering).",
            ["status"],
            registry=r,
        )
        self.run_duration_seconds = Histogram(
            "scheduler_run_duration_seconds",
            "Execution time of attempts their executor finished, by executor and outcome.",
            ["executor", "status"],
            buckets=RUN_DURATION_BUCKETS,
            registry=r,
        )
        self.run_queue_wait_seconds = Histogram(
            "scheduler_run_queue_wait_seconds",
            "Time from a run being queued to a worker claiming it.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.schedule_lateness_seconds = Histogram(
            "scheduler_schedule_lateness_seconds",
            "Time from a schedule slot to its run being fired (created).",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.slots_skipped_total = Counter(
            "scheduler_slots_skipped_total",
            "Schedule slots (and dependency evaluations) that produced no run, by reason.",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "scheduler_queue_depth", "Messages waiting in each queue.", ["queue"], registry=r
        )
        self.workers = Gauge(
            "scheduler_workers", "Registered workers, by status.", ["status"], registry=r
        )
        self.worker_active_runs = Gauge(
            "scheduler_worker_active_runs",
            "Runs this worker process is executing now.",
            registry=r,
        )
        self.retries_total = Counter(
            "scheduler_retries_total",
            "Retries the retry policy granted to failed, timed-out or lost attempts.",
            registry=r,
        )
        self.dead_lettered_total = Counter(
            "scheduler_dead_lettered_total",
            "Failed attempts with no attempts left, moved to the dead letters.",
            registry=r,
        )
        self.leases_expired_total = Counter(
            "scheduler_leases_expired_total",
            "Running attempts whose worker stopped renewing the lease (found by the reaper).",
            registry=r,
        )
        self.rate_limited_total = Counter(
            "scheduler_rate_limited_total",
            "Runs held back by a task or queue rate limit.",
            registry=r,
        )
        self.runs_held_total = Counter(
            "scheduler_runs_held_total",
            "Pending runs held by a gate: fair_share, circuit_open, limit_concurrency.",
            ["reason"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "scheduler_circuit_open",
            "Circuit breakers: 0 closed, 1 open, 0.5 half-open (probing).",
            ["circuit"],
            registry=r,
        )
        self.limit_in_flight = Gauge(
            "scheduler_limit_in_flight",
            "Runs queued or running bound to each named shared limit.",
            ["limit"],
            registry=r,
        )
        self.dependency_unavailable_total = Counter(
            "scheduler_dependency_unavailable_total",
            "Operations that failed because a dependency could not be reached.",
            ["dependency"],
            registry=r,
        )
        self.http_requests_total = Counter(
            "scheduler_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_duration_seconds = Histogram(
            "scheduler_http_request_duration_seconds",
            "HTTP request latency, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        for trigger in RunTrigger:
            self.runs_created_total.labels(trigger.value)
        for status in FINISHED_STATUSES:
            self.runs_finished_total.labels(status.value)
        for reason in SkipReason:
            self.slots_skipped_total.labels(reason.value)
        for dependency in DEPENDENCIES:
            self.dependency_unavailable_total.labels(dependency)

    # -- RunObserver -----------------------------------------------------------------------------

    @never_raises
    def run_created(self, trigger: str, count: int = 1) -> None:
        self.runs_created_total.labels(self._trigger(trigger)).inc(count)

    @never_raises
    def run_started(self, *, queue_wait: float) -> None:
        self.run_queue_wait_seconds.observe(max(queue_wait, 0.0))

    @never_raises
    def run_finished(
        self, *, status: str, executor: str | None = None, duration: float | None = None
    ) -> None:
        label = self._status(status)
        self.runs_finished_total.labels(label).inc()
        if executor is not None and duration is not None:
            self.run_duration_seconds.labels(self._executor(executor), label).observe(
                max(duration, 0.0)
            )

    @never_raises
    def retry_scheduled(self) -> None:
        self.retries_total.inc()

    @never_raises
    def dead_lettered(self) -> None:
        self.dead_lettered_total.inc()

    @never_raises
    def lease_expired(self) -> None:
        self.leases_expired_total.inc()

    @never_raises
    def slot_skipped(self, reason: str, count: int = 1) -> None:
        self.slots_skipped_total.labels(self._reason(reason)).inc(count)

    @never_raises
    def schedule_lateness(self, seconds: float) -> None:
        self.schedule_lateness_seconds.observe(max(seconds, 0.0))

    @never_raises
    def rate_limited(self) -> None:
        self.rate_limited_total.inc()

    @never_raises
    def dependency_unavailable(self, dependency: str) -> None:
        self.dependency_unavailable_total.labels(self._dependency(dependency)).inc()

    @never_raises
    def queue_depths(self, depths: Mapping[str, int]) -> None:
        totals: dict[str, int] = {}
        for queue, depth in depths.items():
            label = self._queue(queue)
            totals[label] = totals.get(label, 0) + depth
        self.queue_depth.clear()
        for label, depth in totals.items():
            self.queue_depth.labels(label).set(depth)

    @never_raises
    def workers_by_status(self, counts: Mapping[str, int]) -> None:
        for status in WorkerStatus:
            self.workers.labels(status.value).set(counts.get(status.value, 0))

    @never_raises
    def run_held(self, reason: str) -> None:
        self.runs_held_total.labels(reason).inc()

    @never_raises
    def circuit_states(self, states: Mapping[str, str]) -> None:
        self.circuit_open.clear()
        for name, state in sorted(states.items())[:_MAX_SERIES]:
            self.circuit_open.labels(name).set(_CIRCUIT_LEVEL.get(state, 0.0))

    @never_raises
    def limits_in_flight(self, counts: Mapping[str, int]) -> None:
        self.limit_in_flight.clear()
        for name, count in sorted(counts.items())[:_MAX_SERIES]:
            self.limit_in_flight.labels(name).set(count)

    # -- worker, API -----------------------------------------------------------------------------

    def watch_active_runs(self, source: Callable[[], int]) -> None:
        """Report ``source()`` (summed over every watched worker of the process) as the active
        runs gauge, read at scrape time."""
        self._worker_sources.append(source)
        sources = self._worker_sources
        self.worker_active_runs.set_function(lambda: float(sum(s() for s in sources)))

    @never_raises
    def observe_request(
        self, *, method: str, route: str | None, status: int, seconds: float
    ) -> None:
        """One answered HTTP request; ``route`` is the template (``/api/v1/runs/{run_id}``)."""
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            verb = method.upper() if method.upper() in HTTP_METHODS else OTHER
            template = self._route(route) if route else UNMATCHED_ROUTE
            code = str(status) if 100 <= status <= 599 else OTHER
            series = (
                self.http_requests_total.labels(verb, template, code),
                self.http_request_duration_seconds.labels(verb, template, code),
            )
            # Every request looks its series up here, not in the client's label machinery;
            # bounded, since a method is whatever a client sends.
            if len(self._request_series) < _MAX_REQUEST_SERIES:
                self._request_series[key] = series
        count, duration = series
        count.inc()
        duration.observe(max(seconds, 0.0))

    # -- exposition ------------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (Prometheus text by default), and its
        content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
