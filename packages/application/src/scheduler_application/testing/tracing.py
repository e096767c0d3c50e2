"""A :class:`~scheduler_application.ports.tracing.Tracer` that records its spans, with real
W3C ``traceparent`` strings, so tests can follow one trace through the use cases."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from scheduler_application.ports.tracing import Attributes, AttributeValue, Span, SpanKind


@dataclass(slots=True)
class RecordedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: SpanKind
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    error: str | None = None
    ended: bool = False

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def set_error(self, description: str) -> None:
        self.error = description


def parse_traceparent(traceparent: str) -> tuple[str, str]:
    """``(trace id, span id)`` of a W3C ``traceparent``."""
    version, trace_id, span_id, _flags = traceparent.split("-")
    if version != "00" or len(trace_id) != 32 or len(span_id) != 16:
        raise ValueError(f"not a traceparent: {traceparent!r}")
    return trace_id, span_id


class RecordingTracer:
    """Records every span in ``spans`` (in the order they were opened)."""

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []
        self._ids = itertools.count(1)
        self._current: contextvars.ContextVar[RecordedSpan | None] = contextvars.ContextVar(
            "recording_tracer_span", default=None
        )

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
        if parent is not None:
            trace_id, parent_id = parse_traceparent(parent)
        elif not root and (current := self._current.get()) is not None:
            trace_id, parent_id = current.trace_id, current.span_id
        else:
            trace_id, parent_id = f"{next(self._ids):032x}", None
        span = RecordedSpan(
            name=name,
            trace_id=trace_id,
            span_id=f"{next(self._ids):016x}",
            parent_id=parent_id,
            kind=kind,
            attributes=dict(attributes or {}),
            links=list(links),
        )
        self.spans.append(span)
        token = self._current.set(span)
        try:
            yield span
        except BaseException as error:
            span.error = span.error or f"{type(error).__name__}: {error}"
            raise
        finally:
            self._current.reset(token)
            span.ended = True

    def current_traceparent(self) -> str | None:
        current = self._current.get()
        return None if current is None else current.traceparent

    def start_trace(
        self, name: str, *, attributes: Attributes | None = None, links: Sequence[str] = ()
    ) -> str | None:
        with self.span(name, root=True, attributes=attributes, links=links) as span:
            return span.traceparent

    def named(self, name: str) -> list[RecordedSpan]:
        return [span for span in self.spans if span.name == name]
