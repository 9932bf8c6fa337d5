"""Short-lived helper processes (``runc create``, ``runc delete``...) run to their end, cheaply.

``anyio.run_process`` goes through asyncio's subprocess transports and a child watcher (a
thread per child on asyncio), which costs over a millisecond of the daemon's CPU per process; a
start runs one or two of them. Here the process is started by :class:`subprocess.Popen`
(vfork and exec, every other descriptor closed), its output pipes are read as they become
readable, and its end is awaited on a pidfd, then reaped by that pidfd: no thread, no
transport, on asyncio and trio alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO

import anyio

from ..fdio import chunks

__all__ = ["run_process"]


async def _drain(stream: IO[bytes], into: list[bytes]) -> None:
    os.set_blocking(stream.fileno(), False)
    async for chunk in chunks(stream.fileno()):
        into.append(chunk)


def _reap(pidfd: int) -> int:
    """The ended child's status, as :mod:`subprocess` gives it (-N if killed by signal N)."""
    result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    assert result is not None
    return result.si_status if result.si_code == os.CLD_EXITED else -result.si_status


async def run_process(
    argv: Sequence[str],
    *,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to its end: its standard streams, ``cwd``, ``env`` and ``pass_fds`` as
    :class:`subprocess.Popen` takes them (``PIPE``: captured and returned). Cancelled, the
    process is killed and reaped first."""
    # vfork + exec: returns as soon as the child has exec'd (what anyio's runner does too).
    process = subprocess.Popen(  # noqa: ASYNC220
        argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, pass_fds=pass_fds
    )
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        pidfd = os.pidfd_open(process.pid)
    except BaseException:
        process.kill()
        process.wait()
        raise
    try:
        try:
            async with anyio.create_task_group() as tg:
                if process.stdout is not None:
                    tg.start_soon(_drain, process.stdout, out)
                if process.stderr is not None:
                    tg.start_soon(_drain, process.stderr, err)
                await anyio.wait_readable(pidfd)
        except BaseException:
            with anyio.CancelScope(shield=True):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                await anyio.wait_readable(pidfd)
                process.returncode = _reap(pidfd)
            raise
        process.returncode = _reap(pidfd)
    finally:
        os.close(pidfd)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    return subprocess.CompletedProcess(list(argv), process.returncode, b"".join(out), b"".join(err))
