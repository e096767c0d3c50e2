"""Webhook subscriptions and the Standard Webhooks signature (https://www.standardwebhooks.com).

A delivery carries three headers: ``webhook-id`` (the event's id, the same on every retry: a
receiver deduplicates on it), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with
the base64 bytes of the subscription's ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from urllib.parse import urlsplit

from scheduler_domain.errors import ValidationError
from scheduler_domain.events import EventCursor, LoggedEvent, check_kind
from scheduler_domain.ids import new_id
from scheduler_domain.status import RunStatus

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: Random bytes of a generated secret (Standard Webhooks: between 24 and 64).
SECRET_BYTES = 32
MAX_URL_LENGTH = 2048
MAX_EVENT_TYPES = 50
MAX_DESCRIPTION = 200
#: A kind of the event log the test endpoint sends.
TEST_EVENT = "webhook.test"
#: Recorded in the event log when a subscription is switched off after sustained failure.
WEBHOOK_DISABLED = "webhook.disabled"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (its base64 part decoded)."""
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValidationError("a signing secret is 'whsec_' and base64", field="secret") from None


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def check_url(url: str, *, field_name: str = "url") -> str:
    """An absolute http(s) URL with a host and no credentials (where it may connect is the
    outbound policy's business, judged on the addresses it resolves to)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"a URL of at most {MAX_URL_LENGTH} characters", field=field_name)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("an absolute http:// or https:// URL", field=field_name)
    if parts.username or parts.password:
        raise ValidationError("a URL without user:password@", field=field_name)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationError("the URL's port is not a number 1-65535", field=field_name) from None
    return url


def check_event_types(types: Iterable[str]) -> tuple[str, ...]:
    """Kinds of the event log (``run.failed``, ``task.created``), or a whole area
    (``run.*``); none means every kind."""
    found: list[str] = []
    for kind in types:
        pattern = kind.removesuffix(".*") if isinstance(kind, str) else kind
        try:
            check_kind(pattern if "." in pattern else f"{pattern}.any")
        except ValidationError:
            raise ValidationError(
                f"{kind!r} is not an event type (like 'run.failed' or 'run.*')",
                field="event_types",
            ) from None
        if kind not in found:
            found.append(kind)
    if len(found) > MAX_EVENT_TYPES:
        raise ValidationError(f"at most {MAX_EVENT_TYPES} event types", field="event_types")
    return tuple(found)


class DeliveryStatus(StrEnum):
    #: Failed and due to be tried again.
    RETRYING = "retrying"
    DELIVERED = "delivered"
    #: Given up: a 4xx (not 408/429), a refused destination, or no attempts left.
    FAILED = "failed"


@dataclass(slots=True, kw_only=True)
class WebhookSubscription:
    """Where the events of one owner's tasks go, and how far delivery got (``cursor``)."""

    owner_id: str
    url: str
    secret: str = field(repr=False)
    event_types: tuple[str, ...] = ()
    task_id: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    description: str = ""
    enabled: bool = True
    created_at: datetime
    updated_at: datetime
    cursor: EventCursor
    #: Failed attempts since the last success, and when that streak began.
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    #: The event at the head of the queue is not tried again before this.
    next_attempt_at: datetime | None = None
    #: Attempts made at the head event (the one after ``cursor``).
    head_attempts: int = 0
    disabled_reason: str | None = None
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        check_url(self.url)
        self.event_types = check_event_types(self.event_types)
        if len(self.description) > MAX_DESCRIPTION:
            raise ValidationError(f"at most {MAX_DESCRIPTION} characters", field="description")

    def matches(self, event: LoggedEvent) -> bool:
        """Whether this subscription wants ``event`` (its owner's visibility is applied when
        reading the log)."""
        if self.task_id is not None and event.task_id != self.task_id:
            return False
        if self.statuses and (event.to_status is None or event.to_status not in self.statuses):
            return False
        if not self.event_types:
            return True
        area = event.kind.split(".", 1)[0]
        return event.kind in self.event_types or f"{area}.*" in self.event_types


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivery:
    """One event's delivery to one subscription: the delivery log's row."""

    webhook_id: str
    event_id: str
    event_kind: str
    status: DeliveryStatus
    attempts: int
    response_code: int | None
    latency_ms: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    id: str = field(default_factory=new_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``min(base * 2**(attempt-1), max)`` plus up to
    ``jitter`` of it, ``max_attempts`` tries per event. A receiver's ``Retry-After`` replaces
    the computed delay (capped at ``max_delay``)."""

    base_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(hours=1)
    jitter: float = 0.2
    max_attempts: int = 8

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> timedelta:
        if retry_after is not None and retry_after >= 0:
            return min(timedelta(seconds=retry_after), self.max_delay)
        base = min(self.base_delay * (2 ** max(attempt - 1, 0)), self.max_delay)
        spread: float = (rng or random).random() * self.jitter
        result: timedelta = base * (1 + spread)
        return result

    def schedule(self) -> Sequence[timedelta]:
        """The delays before each retry, without jitter (for the docs and the CLI)."""
        return [
            min(self.base_delay * 2 ** (n - 1), self.max_delay) for n in range(1, self.max_attempts)
        ]


def retryable(status_code: int | None) -> bool:
    """Whether a delivery that got ``status_code`` (None: no answer) is worth trying again:
    no answer, a timeout or a 5xx, and 408/429; never another 4xx or a 3xx (redirects are
    not followed)."""
    if status_code is None:
        return True
    return status_code >= 500 or status_code in (408, 429)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.utcoffset() is None:
        return None
    return max((when - now).total_seconds(), 0.0)


def should_disable(
    subscription: WebhookSubscription, *, now: datetime, failures: int, window: timedelta
) -> bool:
    """Sustained failure: at least ``failures`` failed attempts in a row, the first of them
    at least ``window`` ago."""
    return (
        failures > 0
        and subscription.consecutive_failures >= failures
        and subscription.failing_since is not None
        and now - subscription.failing_since >= window
    )
