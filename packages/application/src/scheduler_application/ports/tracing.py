"""Tracing: one trace per run, carried across processes as a W3C ``traceparent``.

The use cases open spans around the steps of a run's life — created, published, consumed,
executed — and store the ``traceparent`` of the span a run was created in on the run (and so
on its queue message). A process that picks the run up continues that trace from the string,
so the API request (or the dispatcher's tick), the publish, the worker's consume and the
execution are one trace, whichever processes and queue carried it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from typing import Protocol

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]


class SpanKind(Enum):
    INTERNAL = "internal"
    PRODUCER = "producer"
    CONSUMER = "consumer"


class Span(Protocol):
    """An open span: what happened in it can be added while it lasts."""

    @property
    def traceparent(self) -> str | None:
        """This span's context as a W3C ``traceparent`` (None when not recorded)."""
        ...

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def set_error(self, description: str) -> None:
        """Mark the span failed (the run failed, or the step raised)."""
        ...


class Tracer(Protocol):
    """Opens spans. ``span`` is a context manager; inside it the span is the current one,
    so spans opened by instrumented libraries (SQL, Redis, AMQP, HTTP) nest under it.

    ``parent``: a ``traceparent`` to continue (a run's, a message's); None continues the
    current span, or starts a new trace with ``root=True`` (a run created by the dispatcher
    gets a trace of its own). ``links``: other spans this one follows from without being
    their child (the dispatcher tick that fired a slot, the upstream runs of a dependency).
    An exception leaving the block marks the span failed and propagates.
    """

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        root: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        links: Sequence[str] = (),
    ) -> contextlib.AbstractContextManager[Span]: ...

    def current_traceparent(self) -> str | None:
        """The current span's ``traceparent``, or None outside any recorded span."""
        ...

    def start_trace(
        self, name: str, *, attributes: Attributes | None = None, links: Sequence[str] = ()
    ) -> str | None:
        """Begin a new trace for something created now (a run the dispatcher fired): record
        a span ``name`` marking it and return its ``traceparent``, to be stored with it."""
        ...


class _NoSpan:
    traceparent = None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def set_error(self, description: str) -> None:
        return None


class _NoTracer:
    """Tracing off: no spans, no context, next to no cost."""

    _span = _NoSpan()

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        root: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        links: Sequence[str] = (),
    ) -> Iterator[Span]:
        yield self._span

    def current_traceparent(self) -> str | None:
        return None

    def start_trace(
        self, name: str, *, attributes: Attributes | None = None, links: Sequence[str] = ()
    ) -> str | None:
        return None


NO_TRACER: Tracer = _NoTracer()
