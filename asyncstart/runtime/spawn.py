"""Helper processes run cheaply: short-lived ones (``runc create``, ``runc delete``...) to their
end, and a long-lived one (a container's conmon) started and left to its owner.

``anyio.run_process`` goes through asyncio's subprocess transports and a child watcher (a
thread per child on asyncio), which costs over a millisecond of the daemon's CPU per process; a
start runs one or two of them. Here the process is started by :class:`subprocess.Popen`
(vfork and exec, every other descriptor closed), the output asked for goes to an anonymous
memory file (``memfd``: it never fills, so nothing has to read it while the process runs, and
is read once at its end), and its end is awaited on a pidfd, then reaped by that pidfd: no
thread, no transport, no task, on asyncio and trio alike. A long-lived child is started by
:func:`spawn` and reaped by its owner, by a pidfd: nothing else waits for it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import anyio

__all__ = ["read_output", "run_process", "spawn"]


#: ``MFD_NOEXEC_SEAL`` (Linux 6.3; not in :mod:`os` before Python 3.12): a host whose
#: ``vm.memfd_noexec`` is 2 refuses a memory file that could be made executable. Dropped for
#: good the first time a kernel does not know it (EINVAL).
_noexec_seal = 0x0008


def _capture(wanted: int | None) -> int | None:
    """A memory file for a stream asked as ``PIPE``; None for any other choice."""
    global _noexec_seal
    if wanted != subprocess.PIPE:
        return None
    while True:
        try:
            return os.memfd_create("asyncstart-output", os.MFD_CLOEXEC | _noexec_seal)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not _noexec_seal:
                raise
            _noexec_seal = 0


def _read_all(fd: int | None) -> bytes:
    """All a memory file of :func:`_capture` holds (b"" for none)."""
    parts: list[bytes] = []
    offset = 0
    while fd is not None and (chunk := os.pread(fd, 1 << 20, offset)):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


class _Unwatched(subprocess.Popen[bytes]):
    """A Popen that leaves its child alone when it is collected: a Popen's ``__del__`` polls a
    child that still runs, and may reap it behind the pidfd its owner waits on."""

    def __del__(self) -> None:
        pass


def _popen(
    kind: type[subprocess.Popen[bytes]],
    argv: Sequence[str],
    *,
    stdin: int | None,
    stdout: int | None,
    stderr: int | None,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | Mapping[bytes, bytes] | None,
    pass_fds: Sequence[int],
) -> subprocess.Popen[bytes]:
    # vfork + exec: returns as soon as the child has exec'd (as anyio's runner does too); every
    # descriptor but the three and ``pass_fds`` closed in the child.
    return kind(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        pass_fds=pass_fds,
        # dockerd's: what the runtime makes in a container (the mount points it creates in its
        # root, for one) is not narrowed by the umask of the program that embeds us.
        umask=0o022,
    )


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[bytes, bytes] | None = None,
    pass_fds: Sequence[int] = (),
) -> tuple[int, int]:
    """Start ``argv`` and leave it running: its pid, and a memory file that receives what it
    writes to its standard output and error (its stdin is /dev/null; the file is read and
    closed by :func:`read_output`). The child is the caller's to reap, by a pidfd opened on
    the pid (at once: until it is reaped, the pid cannot be another process's)."""
    output = _capture(subprocess.PIPE)
    assert output is not None
    try:
        process = _popen(
            _Unwatched,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
        )
    except BaseException:
        os.close(output)
        raise
    return process.pid, output


def read_output(fd: int) -> bytes:
    """What a child of :func:`spawn` has written to its memory file ``fd``, which is closed."""
    try:
        return _read_all(fd)
    finally:
        os.close(fd)


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
    :class:`subprocess.Popen` takes them (``PIPE``: captured and returned: what the streams
    hold when the process ends; a child it left behind with them may write on, unread).
    Cancelled, the process is killed and reaped first."""
    out = err = None
    try:
        out = _capture(stdout)
        err = _capture(stderr)  # (out is closed below if this fails)
        process = _popen(
            subprocess.Popen,
            argv,
            stdin=stdin,
            stdout=stdout if out is None else out,
            stderr=stderr if err is None else err,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
        )
        try:
            pidfd = os.pidfd_open(process.pid)
        except BaseException:
            process.kill()
            process.wait()
            raise
        try:
            try:
                await anyio.wait_readable(pidfd)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    await anyio.wait_readable(pidfd)
                    process.returncode = _reap(pidfd)
                raise
            # (Reaped here, the Popen must know: it would wait for the pid again otherwise.)
            process.returncode = _reap(pidfd)
        finally:
            os.close(pidfd)
        return subprocess.CompletedProcess(
            list(argv), process.returncode, _read_all(out), _read_all(err)
        )
    finally:
        for fd in (out, err):
            if fd is not None:
                os.close(fd)
