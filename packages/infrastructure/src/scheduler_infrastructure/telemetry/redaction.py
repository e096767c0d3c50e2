"""Secrets out of logs and stored run output: the :class:`SecretRedactor`.

Two kinds of secret are hidden:

- **Known values**: the configured secrets (JWT secret, database, RabbitMQ and Redis passwords)
  and the values of environment variables whose names say they are secret (``*PASSWORD*``,
  ``*SECRET*``, ``*TOKEN*``, ``*KEY*``, ``*CREDENTIAL*``), also URL-encoded, wherever they appear.
- **Shapes** whatever their value: ``Bearer``/``Basic`` credentials and ``Authorization``
  headers, this scheduler's API keys (``sk_…``), JWTs (``eyJ….….…``), ``password=…`` and its
  kin in query strings, JSON and ``key: value`` text, and the password of a URL
  (``scheme://user:…@host``).

Each becomes ``[REDACTED]``. Values shorter than a few characters are not hidden by value (they
would blank out ordinary words); their shapes still are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from scheduler_infrastructure.config import Settings

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


class SecretRedactor:
    """Implements :class:`~scheduler_application.ports.redaction.Redactor`."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
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
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> SecretRedactor:
        """The configured secrets and the secret-looking environment variables' values."""
        environ = os.environ if environ is None else environ
        configured = [
            settings.api.jwt_secret,
            settings.database.password,
            settings.rabbitmq.password,
            settings.redis.password,
        ]
        from_env = [
            value
            for name, value in environ.items()
            if SECRET_NAME.search(name)
            and len(value) >= MIN_ENVIRONMENT_LENGTH
            and not _PLAIN_VALUE.match(value)
        ]
        return cls([*configured, *from_env])

    def redact(self, text: str) -> str:
        if not text:
            return text
        if self._values is not None:
            text = self._values.sub(MARK, text)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text
