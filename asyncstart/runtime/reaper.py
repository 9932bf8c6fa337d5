"""Exit monitoring of container inits, without a process per container.

The daemon makes itself a *child subreaper*: ``runc run --detach`` forks the container's init and
exits, and the orphaned init is re-parented to the daemon. A pidfd opened on it at create time
becomes readable when it dies; it is then reaped with ``waitid`` on that pidfd, so every exit code
is delivered (a signal gives 128 + signal) with no polling. The cost: a daemon restart loses the
parent link, so a reopened daemon learns *that* a process ended (pidfd) but not its code; a
per-container monitor process would keep it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio

__all__ = ["InitProcess", "child_subreaper", "exit_code", "reap", "reap_exec_leftovers"]

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

#: Holders of :func:`child_subreaper` in this process (daemons may open and close in several
#: threads at once: counted and switched under ``_lock``), and whether it was a subreaper
#: before the first of them.
_holders = 0
_was_subreaper = False
_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)


def _forked() -> None:
    global _holders, _lock
    _holders, _lock = 0, threading.Lock()  # (a child process holds nothing of its parent's)


os.register_at_fork(after_in_child=_forked)


def _prctl(option: int, arg: int | ctypes.c_int) -> None:
    argument = ctypes.byref(arg) if isinstance(arg, ctypes.c_int) else arg
    if _libc.prctl(option, argument, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


@contextlib.contextmanager
def child_subreaper() -> Iterator[None]:
    """This process the reaper of its orphaned descendants (the containers' inits, conmon)
    while held — by any number of daemons at once — and as it was before once the last lets
    go: a program that embeds the engine does not stay the reaper of what its other children
    leave behind."""
    global _holders, _was_subreaper
    with _lock:
        if _holders == 0:
            flag = ctypes.c_int(0)
            _prctl(_PR_GET_CHILD_SUBREAPER, flag)
            _was_subreaper = bool(flag.value)
            _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and not _was_subreaper:
                _prctl(_PR_SET_CHILD_SUBREAPER, 0)


def exit_code(pidfd: int) -> int:
    """Reap the process behind ``pidfd`` and return its exit code: 128 + signal if killed, 255
    if unknown (it is not this process's child, as after a daemon restart).

    By the pidfd, never by a pid number, which may have been reused.
    """
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return 255
    if result is None:
        return 255
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return 128 + result.si_status


async def reap(pid: int, pidfd: int = -1) -> None:
    """Collect a dead container init that is this daemon's child, so no zombie is left; a
    process that is not its child is someone else's to reap. Waits up to 2 s for the death
    (``runc delete`` kills; the death follows shortly)."""
    if pid <= 0:
        return
    owned = pidfd < 0
    if owned:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
    try:
        with anyio.move_on_after(2):
            await anyio.wait_readable(pidfd)
        exit_code(pidfd)
    finally:
        if owned:
            os.close(pidfd)


@dataclass(slots=True)
class InitProcess:
    """A container's init as the daemon knows it: its pid and a pidfd on it."""

    pid: int = 0
    pidfd: int = -1
    #: Cancelled to stop watching for the exit (the container is deleted).
    watch: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def open(self, pid: int) -> None:
        """Take ``pid`` under watch (``ProcessLookupError`` if it is already gone)."""
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)

    async def wait(self) -> int:
        """Wait for the exit, reap it and return its exit code."""
        await anyio.wait_readable(self.pidfd)
        return exit_code(self.pidfd)

    async def reap(self) -> None:
        """Reap it if nobody did (it never started, or no one was waiting for it)."""
        await reap(self.pid, self.pidfd)

    def close(self) -> None:
        """Let go of the pidfd."""
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
        self.pidfd = -1


def reap_exec_leftovers() -> int:
    """Reap the runtime's exec helpers that were orphaned to the daemon and died: a zombie in
    a container's pid namespace holds that namespace (its init cannot finish dying) until it
    is reaped. Only zombies of a nested pid namespace that are not its init (pid 1 there) are
    taken: never a container's init (its exit monitor reaps it) nor a runtime command of the
    daemon's own namespace (its awaiting task does). How many were reaped."""
    reaped = 0
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as file:
                fields = dict(
                    line.split(":", 1) for line in file.read().splitlines() if ":" in line
                )
        except OSError:
            continue
        nspid = fields.get("NSpid", "").split()
        if (
            fields.get("PPid", "").strip() == me
            and fields.get("State", "").strip().startswith("Z")
            and len(nspid) > 1
            and nspid[-1] != "1"
        ):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry), os.WNOHANG)
                reaped += 1
    return reaped
