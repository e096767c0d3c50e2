"""Task code a hostile user runs where the deployer lets users run python (registered with
``executors.python.allow = ["hostile_tasks:*"]`` by the hostile-user tests). Each function
tries one way out of the sandbox and returns (or prints) whatever it finds."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
import time
from typing import Any


def environment() -> dict[str, str]:
    return dict(os.environ)


def ancestors() -> list[str]:
    """The environment, command line and memory maps of every ancestor process."""
    found: list[str] = []
    pid = os.getppid()
    while pid > 1:
        for name in ("environ", "cmdline", "maps"):
            found.append(_read(f"/proc/{pid}/{name}"))
        found.append(_read_memory(pid))
        stat = _read(f"/proc/{pid}/stat")
        try:
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            break
    found.append(_read("/proc/1/environ"))
    return found


def every_process() -> list[str]:
    """The environment of every process on the machine that can be read."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            text = _read(f"/proc/{entry}/environ")
            if not text.startswith("<"):
                found.append(text)
    return found


def descriptors() -> list[str]:
    """Every descriptor this process holds, and what a read of each gives now (made
    non-blocking first: a pipe with nothing in it yet must not stop the others being read)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        target = _readlink(f"/proc/self/fd/{fd}")
        found.append(f"{fd} -> {target}")
        if int(fd) > 2:
            try:
                os.set_blocking(int(fd), False)
                found.append(os.read(int(fd), 65536).decode(errors="replace"))
            except OSError as error:
                found.append(f"<{error}>")
    return found


def interpreter() -> list[str]:
    """Strings held by this interpreter's objects (introspection)."""
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            found.extend(str(v)[:200] for v in obj.values() if isinstance(v, str))
    return found[:20000]


def files(*paths: str) -> dict[str, str]:
    return {path: _read(path) for path in paths}


def identity() -> dict[str, Any]:
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}


def connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as error:
        return f"refused: {error}"


def hard_exit() -> None:
    os._exit(3)


def segfault() -> None:
    ctypes.string_at(0)


def eat_memory() -> int:
    hoard = []
    for _ in range(64):
        hoard.append(bytearray(256 * 1024 * 1024))  # 16 GiB in all, unless stopped
    return len(hoard)


def fork_bomb(limit: int = 3000) -> int:
    """Forks up to ``limit`` sleeping children (bounded, so a broken limit cannot take the
    machine down); returns how many it got."""
    made = 0
    for _ in range(limit):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
    return made


def spin() -> None:
    while True:
        pass


def kill_everyone(*markers: str) -> list[str]:
    """SIGKILL every process whose command line holds one of ``markers`` (the scheduler's
    binaries, other users' tasks) — what ``kill -9 -1`` would do to them, aimed so that a
    sandbox that failed cannot take the test runner or the database down with them."""
    answers = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        cmdline = _read(f"/proc/{entry}/cmdline").replace("\0", " ")
        if any(marker in cmdline for marker in markers):
            try:
                os.kill(int(entry), signal.SIGKILL)
                answers.append(f"killed {entry}")
            except OSError as error:
                answers.append(f"refused {entry}: {error}")
    return answers


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20).decode(errors="replace")
    except OSError as error:
        return f"<{path}: {error}>"


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError as error:
        return f"<{error}>"


def _read_memory(pid: int) -> str:
    """A few KiB of each readable mapping of another process."""
    chunks = []
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
            for line in list(maps)[:200]:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                mem.seek(start)
                chunks.append(mem.read(min(end - start, 65536)).decode("latin-1"))
    except (OSError, ValueError, OverflowError) as error:
        return f"<mem of {pid}: {error}>"
    return "".join(chunks)
