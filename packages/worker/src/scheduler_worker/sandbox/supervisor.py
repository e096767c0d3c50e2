"""The first process of every sandboxed run, started fresh by the worker with
``python -I -S .../sandbox/supervisor.py WATCH_FD STATUS_FD`` (standard library only: nothing
of the worker, and none of its memory, is in this interpreter).

It reads its spec (JSON) from stdin, then forks the task process, which, before it execs the
task's program:

- becomes the leader of its own process group (the unit the worker terminates);
- restores the default dispositions of the signals Python ignores (SIGPIPE, SIGXFSZ);
- sets its resource limits (``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_NPROC``, ``RLIMIT_NOFILE``;
  no core dumps);
- with ``"network": "none"``, enters a new network namespace and brings up its loopback: the
  task reaches nothing outside itself (this needs root, so it happens before the next step);
- drops to the unprivileged user when the spec names one; when that uid is the run's alone
  (``exclusive``), kills every other process of the uid (what an earlier holder left);
- asks to be SIGKILLed if the supervisor dies (``PR_SET_PDEATHSIG``, set after the user
  change, which would clear it);
- changes to its working directory and execs with exactly the spec's environment.

The supervisor stays behind as the task group's keeper: it reports on ``STATUS_FD`` (one JSON
line each) the task's pid (``started``), a failure to start it (``failed``, with the stage:
``cwd``, ``exec`` or ``setup``) and its exit status (``exited``, negative for a signal). When
``WATCH_FD`` reaches end-of-file — the worker closed it after the run, or the worker died, even
by ``kill -9`` — it SIGKILLs the task's whole process group, and with an exclusive uid every
process of that uid (so also those that left the group with ``setsid``), and exits. So nothing
a run started outlives the run or the worker (with a shared uid, a process that left the group
itself survives). The spec's ``hold_fds`` (the uid's lock) stay open here until then.
It is also the subreaper of the task's descendants, so their zombies do not linger.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: the name, then the flags at the start of a 24-byte union
#: kill(-1) passes: a process forking while signalled may leave a child for the next pass.
_KILL_PASSES = 20
#: How long a sweep of a uid waits for the processes it SIGKILLed to be gone.
_GONE_SECONDS = 2.0
_LIMITS = {
    "cpu": resource.RLIMIT_CPU,
    "as": resource.RLIMIT_AS,
    "nproc": resource.RLIMIT_NPROC,
    "nofile": resource.RLIMIT_NOFILE,
}


def main() -> None:
    watch_fd, status_fd = int(sys.argv[1]), int(sys.argv[2])
    spec: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    libc = ctypes.CDLL(None, use_errno=True)
    # Orphans of the task are reparented here and reaped below, so a finished group leaves no
    # zombies behind even when PID 1 does not reap.
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    keep = [int(fd) for fd in spec.get("keep_fds", ())]
    hold = tuple(int(fd) for fd in spec.get("hold_fds", ()))
    errors_r, errors_w = os.pipe()  # close-on-exec: end-of-file tells the exec happened
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(errors_r)
        _become_task(spec, libc, parent, errors_w, closing=(watch_fd, status_fd, *hold), keep=keep)
    os.close(errors_w)
    with contextlib.suppress(OSError):  # the child does it too; whichever comes first
        os.setpgid(pid, pid)
    _report(status_fd, {"event": "started", "pid": pid})
    user = spec.get("user") or {}
    owned = int(user["uid"]) if user.get("exclusive") else None
    threading.Thread(target=_keep_watch, args=(watch_fd, pid, owned), daemon=True).start()
    # The task's stdio and descriptors are its own: the worker sees their end-of-file when
    # the task group closes them, not when the supervisor does.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for fd in keep:
        os.close(fd)
    failure = _read_all(errors_r)
    if failure:
        _report(status_fd, {"event": "failed", **json.loads(failure)})
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if reaped == pid:
            returncode = os.waitstatus_to_exitcode(status)
            _report(status_fd, {"event": "exited", "returncode": returncode})
    threading.Event().wait()  # until the watcher ends the group and this process


def _become_task(
    spec: dict[str, Any],
    libc: Any,
    parent: int,
    errors_w: int,
    *,
    closing: tuple[int, ...],
    keep: list[int],
) -> None:
    stage = "setup"
    try:
        os.setpgid(0, 0)
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        for fd in closing:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # stdin was the spec's pipe
        os.close(null)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        for name, value in spec.get("limits", {}).items():
            if isinstance(value, list):
                soft, hard = value
            else:  # a CPU limit's hard value is a second later: SIGXCPU first, SIGKILL after
                soft, hard = value, value + 1 if name == "cpu" else value
            resource.setrlimit(_LIMITS[name], (soft, hard))
        if spec.get("network") == "none":
            _isolate_network(libc)
        user = spec.get("user")
        if user is not None:
            os.setgroups(user["groups"])
            os.setgid(user["gid"])
            os.setuid(user["uid"])
            if user.get("exclusive"):
                _kill_all_of_my_uid()
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the supervisor died before the request took effect
            os._exit(1)
        for fd in keep:
            os.set_inheritable(fd, True)
        stage = "cwd"
        os.chdir(spec["cwd"])
        stage = "exec"
        _exec(spec["argv"], spec["env"])
    except OSError as exc:
        failure = {"stage": stage, "errno": exc.errno, "message": exc.strerror or str(exc)}
        os.write(errors_w, json.dumps(failure).encode())
    except BaseException as exc:
        failure = {"stage": stage, "errno": 0, "message": f"{type(exc).__name__}: {exc}"}
        os.write(errors_w, json.dumps(failure).encode())
    os._exit(127)


def _exec(argv: list[str], env: dict[str, str]) -> None:
    """``execvpe``, except that a folder of ``PATH`` this user may not search counts as not
    holding the program (``execvpe`` would report "permission denied" for any program)."""
    program = argv[0]
    if "/" in program:
        os.execve(program, argv, env)  # noqa: S606 - running the task's program is the point
    denied: OSError | None = None
    for folder in os.get_exec_path(env):
        candidate = os.path.join(folder, program)
        try:
            os.execve(candidate, argv, env)  # noqa: S606 - as above
        except OSError as exc:
            if exc.errno == errno.EACCES and denied is None and os.path.exists(candidate):
                denied = exc
            elif exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                raise
    if denied is not None:
        raise denied
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _isolate_network(libc: Any) -> None:
    """A new network namespace with only a loopback, which is brought up."""
    if libc.unshare(_CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"unshare(CLONE_NEWNET) failed: {os.strerror(number)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        current = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, current)[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def _kill_all_of_my_uid() -> None:
    """SIGKILL every process of this process's uid but itself (``kill(-1)`` as that uid), and
    return once none of them is left but zombies (at most :data:`_GONE_SECONDS`): a process
    SIGKILLed is not gone until the kernel has run it to its exit, and until then it still
    holds its files, sockets and locks. A zombie holds nothing but its pid; ``kill(-1)`` still
    reaches it, so it alone does not end the passes."""
    for _ in range(_KILL_PASSES):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return  # nothing else of this uid
        except PermissionError:
            return
    deadline = time.monotonic() + _GONE_SECONDS
    while _live_processes_of(os.getuid()) and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        time.sleep(0.001)


def _live_processes_of(uid: int) -> bool:
    """Whether a process of ``uid`` other than this one is alive (not a zombie)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as status:
                fields = dict(
                    line.split(b":", 1) for line in status.read().splitlines() if b":" in line
                )
        except OSError:
            continue  # gone meanwhile
        state = fields.get(b"State", b"").strip()[:1]
        real_uid = fields.get(b"Uid", b"").split()[:1]
        if real_uid == [str(uid).encode()] and state not in (b"Z", b"X"):
            return True
    return False


def _kill_uid(uid: int) -> None:
    """End every process of ``uid`` from a short-lived child that takes that uid."""
    try:
        helper = os.fork()
    except OSError:
        return
    if helper == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            _kill_all_of_my_uid()
        finally:
            os._exit(0)
    with contextlib.suppress(ChildProcessError):  # the main thread may reap it first
        os.waitpid(helper, 0)


def _keep_watch(watch_fd: int, pgid: int, owned_uid: int | None) -> None:
    with contextlib.suppress(OSError):
        while os.read(watch_fd, 4096):
            pass
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)
    if owned_uid is not None:
        _kill_uid(owned_uid)
    os._exit(0)


def _report(fd: int, event: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the worker is gone; the watcher ends everything
        os.write(fd, json.dumps(event).encode() + b"\n")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65_536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


if __name__ == "__main__":
    main()
