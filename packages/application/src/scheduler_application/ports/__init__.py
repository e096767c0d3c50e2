"""Ports: the protocols the use cases depend on. Adapters live in scheduler_infrastructure,
in-memory fakes in :mod:`scheduler_application.testing`."""

from scheduler_application.ports.clock import Clock
from scheduler_application.ports.coordination import LeaseStore, RateLimiter
from scheduler_application.ports.executor import ExecutionContext, ExecutionResult, Executor
from scheduler_application.ports.observer import NO_OBSERVER, NullObserver, RunObserver
from scheduler_application.ports.queue import (
    Delivery,
    RunInsertingQueue,
    RunMessage,
    RunQueue,
    TransactionalRunQueue,
)
from scheduler_application.ports.redaction import (
    NO_REDACTION,
    NO_SECRET_SCOPE,
    NoRedaction,
    NoSecretScope,
    Redactor,
    SecretScope,
)
from scheduler_application.ports.repositories import (
    ApiKeyRepository,
    DecisionRepository,
    Page,
    RefreshTokenRepository,
    RunEventRepository,
    RunFilter,
    RunRepository,
    TaskFilter,
    TaskRepository,
    UserRepository,
    WorkerRepository,
)
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.security import PasswordHasher, TokenCodec
from scheduler_application.ports.tracing import NO_TRACER, Span, SpanKind, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

__all__ = [
    "NO_OBSERVER",
    "NO_REDACTION",
    "NO_SECRET_SCOPE",
    "NO_TRACER",
    "ApiKeyRepository",
    "Clock",
    "DecisionRepository",
    "Delivery",
    "ExecutionContext",
    "ExecutionResult",
    "Executor",
    "LeaseStore",
    "NoRedaction",
    "NoSecretScope",
    "NullObserver",
    "Page",
    "PasswordHasher",
    "RateLimiter",
    "Redactor",
    "RefreshTokenRepository",
    "RunEventRepository",
    "RunFilter",
    "RunInsertingQueue",
    "RunMessage",
    "RunObserver",
    "RunQueue",
    "RunRepository",
    "SecretBox",
    "SecretScope",
    "Span",
    "SpanKind",
    "TaskFilter",
    "TaskRepository",
    "TokenCodec",
    "Tracer",
    "TransactionalRunQueue",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UserRepository",
    "WorkerRepository",
]
