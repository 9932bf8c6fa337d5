"""dockerd's json-file log format: one JSON object per line, ``{"log", "stream", "time"}``.

The writer is fed raw output chunks as the container produces them; the reader serves
``docker logs`` from the file, following it while the container runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Set
from pathlib import Path
from typing import BinaryIO

import anyio

from .. import errors

__all__ = ["MAX_LINE", "ContainerLogs", "JsonFileWriter", "check_arguments", "read_log"]

#: As dockerd: a longer line is logged in parts of this size, so memory stays bounded whatever
#: the container prints.
MAX_LINE = 16 * 1024

#: How often a followed log is read again while the container runs.
_FOLLOW_POLL = 0.02


def _entry(data: bytes, stream: str) -> bytes:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    entry = {"log": data.decode(errors="replace"), "stream": stream, "time": now}
    return json.dumps(entry).encode() + b"\n"


class JsonFileWriter:
    """Appends output chunks to a json-file log, one entry per line (or 16 KiB part).

    A line that has not ended yet is kept per stream until its newline arrives, or written as
    it is by :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        # A local append-only file: writes of a few lines never stall the event loop noticeably.
        # Readable by the daemon's user and group only: a container's output is its own.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._file: BinaryIO = os.fdopen(fd, "ab")
        self._pending: dict[str, bytes] = {}

    def write(self, stream: str, chunk: bytes) -> None:
        """Log the complete lines of ``chunk`` (``stream`` is ``stdout`` or ``stderr``)."""
        *lines, pending = (self._pending.get(stream, b"") + chunk).split(b"\n")
        for line in lines:
            self._file.write(_entry(line + b"\n", stream))
        while len(pending) >= MAX_LINE:
            self._file.write(_entry(pending[:MAX_LINE], stream))
            pending = pending[MAX_LINE:]
        self._pending[stream] = pending
        # Flushed per chunk: a reader following the file sees each line as soon as it is out.
        self._file.flush()

    def close(self) -> None:
        """Log what is left of unfinished lines (without a newline) and close the file."""
        try:
            for stream, pending in self._pending.items():
                if pending:
                    self._file.write(_entry(pending, stream))
            self._pending.clear()
        finally:
            self._file.close()


def _entry_time(text: str) -> float:
    """An entry's ``time`` (RFC 3339 in UTC) in seconds since the epoch."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _select(
    lines: list[bytes], streams: Set[str], since: float, until: float, timestamps: bool
) -> list[tuple[str, bytes]]:
    chosen = []
    for line in lines:
        entry = json.loads(line)
        if entry["stream"] not in streams:
            continue
        at = _entry_time(entry["time"])
        if (since and at < since) or (until and at > until):
            continue
        data = entry["log"].encode()
        if timestamps:
            data = entry["time"].encode() + b" " + data
        chosen.append((entry["stream"], data))
    return chosen


def _complete(data: bytes) -> bytes:
    """The whole lines of ``data``: a line still being written is read on the next pass."""
    return data[: data.rfind(b"\n") + 1]


async def read_log(
    path: Path,
    *,
    streams: Set[str],
    follow: bool,
    tail: str | int,
    since: float,
    until: float,
    timestamps: bool,
    running: Callable[[], bool],
) -> AsyncIterator[tuple[str, bytes]]:
    """``docker logs`` from a json-file log: ``(stream, bytes)`` per entry, in file order.

    ``streams`` are the streams wanted; ``since``/``until`` are seconds since the epoch (0:
    unbounded); ``tail`` keeps the last N entries of what is already logged (``"all"``, ``""``
    or a negative number: all); ``timestamps`` puts each entry's time and a space before it.
    ``follow`` goes on reading what is appended, every 20 ms, until ``until`` has passed or
    ``running()`` says the container has stopped and everything it logged has been read.
    A missing file is an empty log.
    """
    file = anyio.Path(path)
    try:
        data = await file.read_bytes()
    except FileNotFoundError:
        data = b""
    complete = _complete(data)
    offset = len(complete)
    backlog = _select(complete.splitlines(), streams, since, until, timestamps)
    if str(tail).isdigit():
        backlog = backlog[-int(tail) :] if int(tail) else []
    for item in backlog:
        yield item
    while follow and not (until and time.time() > until):
        # Asked before reading: whatever was logged before the container stopped is then read.
        was_running = running()
        try:
            async with await anyio.open_file(file, "rb") as log:
                await log.seek(offset)
                data = await log.read()
        except FileNotFoundError:
            data = b""
        complete = _complete(data)
        offset += len(complete)
        for item in _select(complete.splitlines(), streams, since, until, timestamps):
            yield item
        if not was_running and not complete:
            return
        if not complete:
            await anyio.sleep(_FOLLOW_POLL)


def check_arguments(*, stdout: bool, stderr: bool, tail: str | int) -> None:
    """dockerd's 400s for ``docker logs`` arguments, raised before anything is read."""
    if not (stdout or stderr):
        raise errors.InvalidParameter("Bad parameters: you must choose at least one stream")
    text = str(tail)
    # (A number too long to convert would fail the read half-way, after the headers.)
    if tail not in ("all", "") and (not text.lstrip("-").isdigit() or len(text) > 19):
        raise errors.InvalidParameter(f"invalid value for tail: {text[:40]}")


class ContainerLogs:
    """A container's log as ``async for stream, data in logs``.

    ``tty``: the output is one raw stream (a terminal's), not stdout and stderr apart.
    """

    def __init__(self, lines: AsyncIterator[tuple[str, bytes]], *, tty: bool) -> None:
        self._lines = lines
        self.tty = tty

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self._lines

    async def aclose(self) -> None:
        """Stop reading (a follow ends here)."""
        close = getattr(self._lines, "aclose", None)
        if close is not None:
            await close()
