"""Tasks' ``secret_env`` encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256, a random IV
per value, a timestamp): the :class:`~scheduler_application.ports.secrets.SecretBox` adapter.

``secrets.key`` holds one key, or several separated by commas during a rotation: the first
seals, every one opens (``MultiFernet``). To rotate: put a new key first, keep the old one
after it, restart; values written from then on use the new key. Drop the old key only once no
stored value needs it any more (every task's secrets set again); ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from scheduler_application.errors import SecretUnreadable


class FernetSecretBox:
    """Implements :class:`~scheduler_application.ports.secrets.SecretBox`."""

    def __init__(self, *, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise SecretUnreadable("a secret cannot be opened with the configured key") from None


def generate_key() -> str:
    """A new random key for ``secrets.key``."""
    return Fernet.generate_key().decode("ascii")
