"""Secrets out of logs and stored run output: the :class:`SecretRedactor`.

Two kinds of secret are hidden:

- **Known values**: the configured secrets (JWT secret, database, RabbitMQ and Redis passwords)
  and the values of environment variables whose names say they are secret (``*PASSWORD*``,
  ``*SECRET*``, ``*TOKEN*``, ``*KEY*``, ``*CREDENTIAL*``), also URL-encoded, wherever they appear.
- **Shapes** whatever their value: ``Bearer``/``Basic`` credentials and ``Authorization``
  headers, this scheduler's API keys (``sk_…``), JWTs (``eyJ….….…``), ``password=…`` and its
  kin in query strings, JSON and ``key: value`` text, and the password of a URL
  (``scheme://user:…@host``).

- **The secrets of the runs in progress** in this process (:class:`RunSecrets`): a task's
  ``secret_env`` values and simple encodings of them, registered while the worker executes the
  run and forgotten after it, so memory stays bounded by the runs in hand.

Each becomes ``[REDACTED]``. Values shorter than a few characters are not hidden by value (they
would blank out ordinary words); their shapes still are.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from urllib.parse import quote

from scheduler_application.execution.redaction import secret_variants, values_pattern
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.loader import secrets_keys

MARK = "[REDACTED]"
#: Names of environment variables whose values are secrets.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
#: Shortest configured secret hidden by value; environment values must be longer still.
MIN_CONFIGURED_LENGTH = 4
MIN_ENVIRONMENT_LENGTH = 8
#: Environment values that are settings, not secrets, even under a secret-looking name.
_PLAIN_VALUE = re.compile(
    r"^(?:true|false|yes|no|on|off|none|null|auto|enabled|disabled|[0-9.]+)$", re.IGNORECASE
)

#: Names whose value is a secret in ``name=value``, ``"name": "value"`` and ``name: value``.
_SENSITIVE_NAMES = (
    r"password|passwd|secret|client[_-]?secret|api[_-]?key|apikey|x-api-key|"
    r"access[_-]?token|refresh[_-]?token|id[_-]?token|jwt[_-]?secret|private[_-]?key"
)
#: Names too common in prose ("fencing token: 3") to hide after a bare colon.
_AMBIGUOUS_NAMES = r"token|pwd|auth"
_VALUE = r"(?!\[REDACTED)[^\s\"'&,;}]+"
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers, whatever the scheme.
    (
        re.compile(
            r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token|digest)\s+)?"
            r"[^\s\"',;}]+"
        ),
        r"\1" + MARK,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MARK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MARK),
    (re.compile(r"\bsk_[A-Za-z0-9_-]{8,}"), MARK),
    (
        re.compile(rf"(?i)(\b(?:{_SENSITIVE_NAMES})[\"']?\s*[:=]\s*[\"']?){_VALUE}"),
        r"\1" + MARK,
    ),
    (
        re.compile(
            rf"(?i)((?:\b(?:{_AMBIGUOUS_NAMES})\s*=\s*[\"']?)"
            rf"|(?:[\"'](?:{_AMBIGUOUS_NAMES})[\"']\s*:\s*[\"']?)){_VALUE}"
        ),
        r"\1" + MARK,
    ),
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/\s@]*:)[^@\s/]+(@)"), r"\1" + MARK + r"\2"),
)


class RunSecrets:
    """The ``secret_env`` values of the runs this process executes now; implements
    :class:`~scheduler_application.ports.redaction.SecretScope`. Every :class:`SecretRedactor`
    built with it (the log formatter's, the span processor's, the stored output's) masks them.
    Thread-safe: log lines are formatted on any thread."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    @contextlib.contextmanager
    def hide(self, values: Collection[str]) -> Iterator[None]:
        variants = secret_variants(values)
        if not variants:
            yield
            return
        with self._lock:
            self._counts.update(variants)
            self._pattern = values_pattern(self._counts)
        try:
            yield
        finally:
            with self._lock:
                self._counts.subtract(variants)
                for variant in variants:
                    if self._counts[variant] <= 0:
                        del self._counts[variant]
                self._pattern = values_pattern(self._counts)

    def __len__(self) -> int:
        """How many texts are hidden now (values and their variants)."""
        return len(self._counts)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MARK, text) if pattern is not None else text


#: The process's runs in progress: one per process, like its logging configuration, so that the
#: log formatter installed at start and the redactors built later share it.
PROCESS_RUN_SECRETS = RunSecrets()


class SecretRedactor:
    """Implements :class:`~scheduler_application.ports.redaction.Redactor`."""

    def __init__(
        self, secrets: Iterable[str | None] = (), *, run_secrets: RunSecrets | None = None
    ) -> None:
        self._run_secrets = run_secrets
        values: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < MIN_CONFIGURED_LENGTH:
                continue
            values.add(secret)
            values.add(quote(secret, safe=""))
        ordered = sorted(values, key=len, reverse=True)
        self._values = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        *,
        run_secrets: RunSecrets | None = PROCESS_RUN_SECRETS,
    ) -> SecretRedactor:
        """The configured secrets, the secret-looking environment variables' values and the
        secrets of the runs in progress (``run_secrets``)."""
        environ = os.environ if environ is None else environ
        configured = [
            settings.api.jwt_secret,
            settings.database.password,
            settings.rabbitmq.password,
            settings.redis.password,
            *secrets_keys(settings.secrets.key),
        ]
        from_env = [
            value
            for name, value in environ.items()
            if SECRET_NAME.search(name)
            and len(value) >= MIN_ENVIRONMENT_LENGTH
            and not _PLAIN_VALUE.match(value)
        ]
        return cls([*configured, *from_env], run_secrets=run_secrets)

    def redact(self, text: str) -> str:
        if not text:
            return text
        if self._run_secrets is not None:
            text = self._run_secrets.redact(text)
        if self._values is not None:
            text = self._values.sub(MARK, text)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text
