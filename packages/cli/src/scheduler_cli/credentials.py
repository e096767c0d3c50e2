"""Where ``scheduler login`` keeps its tokens: one JSON file that only its owner can read.

The file is ``$XDG_CONFIG_HOME/scheduler/credentials.json`` (``~/.config/scheduler/…`` when
that is unset), mode 0600 in a 0700 directory, and holds one session per API URL plus the URL
used by default. Every change is written to a new 0600 file that then replaces the old one, so
a reader never sees half a file and the secret is never readable by others, whatever the umask.
Changes happen under an advisory lock, so two commands refreshing the same session at once do
not both spend its refresh token (which the server would take for theft).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scheduler_cli.errors import CliError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, writes stay atomic
    fcntl = None  # type: ignore[assignment]

FILE_NAME = "credentials.json"
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
#: Refresh an access token this long before it expires, so it does not expire in flight.
EXPIRY_MARGIN_SECONDS = 30.0


def config_directory(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/scheduler``; the XDG spec says to ignore a relative value."""
    base = environ.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        home = environ.get("HOME") or str(Path.home())
        base = os.path.join(home, ".config")
    return Path(base) / "scheduler"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A login at one API: who, and the token pair (expiry times in Unix seconds)."""

    api_url: str
    username: str
    user_id: str
    role: str
    access_token: str
    access_expires_at: float
    refresh_token: str
    refresh_expires_at: float

    @classmethod
    def from_tokens(
        cls, tokens: Mapping[str, Any], *, api_url: str, username: str, now: float
    ) -> Session:
        """From the body of ``/auth/login`` or ``/auth/refresh``."""
        try:
            return cls(
                api_url=api_url,
                username=username,
                user_id=str(tokens["user_id"]),
                role=str(tokens["role"]),
                access_token=str(tokens["access_token"]),
                access_expires_at=now + float(tokens["expires_in"]),
                refresh_token=str(tokens["refresh_token"]),
                refresh_expires_at=now + float(tokens["refresh_expires_in"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CliError(f"the server's token answer lacks {error}") from None

    def renewed(self, tokens: Mapping[str, Any], *, now: float) -> Session:
        return Session.from_tokens(tokens, api_url=self.api_url, username=self.username, now=now)

    def access_valid(self, now: float) -> bool:
        return now < self.access_expires_at - EXPIRY_MARGIN_SECONDS

    def refresh_valid(self, now: float) -> bool:
        return now < self.refresh_expires_at


class CredentialStore:
    """The credentials file. Reads are cheap and lock-free; changes go through ``locked()``."""

    def __init__(self, *, directory: Path) -> None:
        self._directory = directory
        self._depth = 0

    @property
    def path(self) -> Path:
        return self._directory / FILE_NAME

    def default_url(self) -> str | None:
        default = self._read().get("default")
        return default if isinstance(default, str) else None

    def get(self, api_url: str) -> Session | None:
        entry = self._read().get("sessions", {}).get(api_url)
        if not isinstance(entry, dict):
            return None
        try:
            return Session(**{**entry, "api_url": api_url})
        except TypeError:
            return None  # written by another version: as good as logged out

    def save(self, session: Session, *, make_default: bool) -> None:
        with self.locked():
            data = self._read()
            entry = asdict(session)
            del entry["api_url"]
            data.setdefault("sessions", {})[session.api_url] = entry
            if make_default or not data.get("default"):
                data["default"] = session.api_url
            self._write(data)

    def forget(self, api_url: str) -> Session | None:
        """Remove the session for ``api_url``. The default URL stays, so the next command
        still talks to that server (and says "not logged in" there)."""
        with self.locked():
            session = self.get(api_url)
            data = self._read()
            if data.get("sessions", {}).pop(api_url, None) is not None:
                self._write(data)
            return session

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's lock for a read-modify-write; re-entrant within this store."""
        if self._depth or fcntl is None:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._ensure_directory()
        fd = os.open(self._directory / f"{FILE_NAME}.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._depth += 1
            yield
        finally:
            self._depth = 0
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise CliError(f"cannot read {self.path}: {error.strerror or error}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise CliError(f"{self.path} is not valid JSON; delete it and log in again") from None
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        self._ensure_directory()
        fd, temporary = tempfile.mkstemp(prefix=".credentials-", dir=self._directory)
        try:
            os.fchmod(fd, FILE_MODE)  # mkstemp already uses 0600; say so explicitly
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
                handle.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _ensure_directory(self) -> None:
        try:
            self._directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        except OSError as error:
            raise CliError(f"cannot create {self._directory}: {error.strerror or error}") from None
