"""An *insecure* stand-in for the secret box, and a scope that records what it hid. Tests only."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from scheduler_application.errors import SecretUnreadable


@dataclass
class FakeSecretBox:
    """Seals as ``fake:<key>:<base64 of the reversed text>``: no plaintext in what it stores,
    opened only by a box with the same ``key``. Records how many values it sealed and opened."""

    key: str = "k1"
    sealed: int = 0
    opened: int = 0

    def seal(self, plaintext: str) -> str:
        self.sealed += 1
        body = base64.b64encode(plaintext[::-1].encode()).decode()
        return f"fake:{self.key}:{body}"

    def open(self, sealed: str) -> str:
        prefix = f"fake:{self.key}:"
        if not sealed.startswith(prefix):
            raise SecretUnreadable("a secret cannot be opened with the configured key")
        try:
            text = base64.b64decode(sealed[len(prefix) :], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretUnreadable("a secret cannot be opened with the configured key") from None
        self.opened += 1
        return text[::-1]


@dataclass
class RecordingSecretScope:
    """Keeps the values it hides while their ``with`` lasts (``hidden``) and every set it was
    given (``history``)."""

    hidden: Counter[str] = field(default_factory=Counter)
    history: list[tuple[str, ...]] = field(default_factory=list)

    @contextlib.contextmanager
    def hide(self, values: Collection[str]) -> Iterator[None]:
        items = tuple(values)
        self.history.append(items)
        self.hidden.update(items)
        try:
            yield
        finally:
            self.hidden.subtract(items)
            self.hidden += Counter()  # drop the zeros
