"""In-memory fakes of every port, for unit tests here and in the components above.

They honour the ports' contracts (transactions, uniqueness, fencing, leases, priorities) and
record what they saw, so tests assert on outcomes rather than on mocked calls::

    store = InMemoryStore()
    uow_factory = InMemoryUnitOfWorkFactory(store)
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
"""

from typing import TYPE_CHECKING

from scheduler_application.testing.clock import FakeClock
from scheduler_application.testing.coordination import InMemoryLeaseStore, InMemoryRateLimiter
from scheduler_application.testing.executor import OPEN_EXECUTOR_POLICY, FakeExecutor
from scheduler_application.testing.observer import FakeRedactor, RecordingObserver
from scheduler_application.testing.secrets import FakeSecretBox, RecordingSecretScope
from scheduler_application.testing.security import FakePasswordHasher, FakeTokenCodec
from scheduler_application.testing.store import InMemoryStore, Transaction
from scheduler_application.testing.tracing import RecordedSpan, RecordingTracer
from scheduler_application.testing.unit_of_work import (
    InMemoryUnitOfWork,
    InMemoryUnitOfWorkFactory,
)

__all__ = [
    "OPEN_EXECUTOR_POLICY",
    "FakeClock",
    "FakeExecutor",
    "FakePasswordHasher",
    "FakeRedactor",
    "FakeSecretBox",
    "FakeTokenCodec",
    "InMemoryLeaseStore",
    "InMemoryRateLimiter",
    "InMemoryStore",
    "InMemoryUnitOfWork",
    "InMemoryUnitOfWorkFactory",
    "RecordedSpan",
    "RecordingObserver",
    "RecordingSecretScope",
    "RecordingTracer",
    "Transaction",
]

if TYPE_CHECKING:  # mypy proves the fakes still honour the ports they stand in for
    from scheduler_application import ports

    def _conforms(
        clock: FakeClock,
        factory: InMemoryUnitOfWorkFactory,
        limiter: InMemoryRateLimiter,
        leases: InMemoryLeaseStore,
        hasher: FakePasswordHasher,
        codec: FakeTokenCodec,
        executor: FakeExecutor,
        observer: RecordingObserver,
        redactor: FakeRedactor,
        tracer: RecordingTracer,
        box: FakeSecretBox,
        scope: RecordingSecretScope,
    ) -> None:
        _clock: ports.Clock = clock
        _factory: ports.UnitOfWorkFactory = factory
        _limiter: ports.RateLimiter = limiter
        _leases: ports.LeaseStore = leases
        _hasher: ports.PasswordHasher = hasher
        _codec: ports.TokenCodec = codec
        _executor: ports.Executor = executor
        _observer: ports.RunObserver = observer
        _redactor: ports.Redactor = redactor
        _tracer: ports.Tracer = tracer
        _box: ports.SecretBox = box
        _scope: ports.SecretScope = scope
