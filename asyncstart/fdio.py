"""Descriptors: reading a non-blocking one (a pipe, a FIFO, a pty) as it becomes readable;
writing all of some bytes to a blocking one."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator

import anyio

__all__ = ["chunks", "write_all"]


async def chunks(fd: int, size: int = 65536) -> AsyncIterator[bytes]:
    """What ``fd`` gives, chunk by chunk, until its end: end of file, or ``EIO`` (a pty whose
    other side has closed). The descriptor must be non-blocking."""
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, size)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        if not chunk:
            return
        yield chunk


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the blocking descriptor ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
