"""``docker logs`` from a container's log and its rotated files, off the event loop.

The log is read in dockerd's json-file format, which this engine's own writer produces, and
in conmon's k8s-file format, which conmon (podman's monitor) writes for the containers it
monitors; each line says which it is, so one file may hold both (see :mod:`.jsonfile`). Both
have one entry per line, which is all the reading below relies on.

Every read and every line parsed happens in a worker thread, a bounded chunk at a time, so a
log of any size neither stalls the loop nor fills memory: the loop only hands each chunk's
entries on. ``tail`` is found from the end, reading backwards by blocks until enough lines are
counted (through the rotated files if the current one holds too few), so ``--tail 5`` of a
100 MB log reads a block or two.

As dockerd (``loggerutils.LogFile.ReadLogs``): the log is what was written when the call came
(the current file up to its size then, the rotated files before it, oldest first); ``tail``
counts the last lines of those files whatever their stream, ``since``/``until`` then apply (an
entry after ``until`` ends it all; once an entry is at or after ``since``, later ones are not
checked, timestamps need not be monotonic), then the streams asked for. ``follow`` reads on
from there and survives rotations.

The writer renames files while we read: a file is known by its identity (device and inode),
never by its name. Rotations only move a file to a higher index (``.1`` -> ``.2``) or delete
it, so a file is found again by looking upwards from where it was last seen, and its
neighbour is opened, then the file checked to be still where it was (otherwise a rotation
came between: again).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from .._log import get_logger
from .jsonfile import LogQuery, Selection, rotated_name

__all__ = ["read_log", "read_log_chunks"]

log = get_logger("asyncstart.logs")

#: Bytes read forward per chunk (a chunk's entries are parsed and handed on at once).
_CHUNK = 256 * 1024
#: Bytes read per step when looking for the start of a tail, backwards.
_BLOCK = 64 * 1024
#: An entry longer than this is skipped (the writer's are at most 16 KiB of output, escaped).
_MAX_ENTRY = 4 * 1024 * 1024
#: How often a followed log is read again while the container runs.
_FOLLOW_POLL = 0.02
#: A rotation under way leaves a name missing for a moment: looked again after this pause.
_RACE_PAUSE = 0.002
_RACE_TRIES = 5


def _read_at(fd: int, size: int, offset: int) -> bytes:
    """Every read of a log goes through here (tests count what a call reads)."""
    return os.pread(fd, size, offset)


def _partial(entry: bytes) -> bool:
    """Whether a log line is a k8s-file entry that does not end its line (conmon's ``P``: its
    read of the output ended mid-line)."""
    return not entry.startswith(b"{") and entry.split(b" ", 3)[2:3] == [b"P"]


def _tail_start(fd: int, end: int, wanted: int) -> tuple[int, int]:
    """Where the last ``wanted`` lines of ``fd[:end]`` begin, and how many there are (fewer
    when the file's start is reached: then 0), lines as the client sees them: conmon's partial
    entries and the entry that ends them are one line (a json-file entry is one, as dockerd
    counts). Reads backwards by blocks, never more than those lines and a block (and the lines
    again, to find partial entries)."""
    entries = wanted
    while True:
        start, found = _entries_start(fd, end, entries)
        shown = _shown_lines(fd, start, end)
        if shown >= wanted or found < entries:
            break
        entries += wanted - shown
    # A line begun before ``start`` is taken whole.
    while start > 0:
        before, _ = _entries_start(fd, start, 1)
        if not _partial(_read_at(fd, start - before, before)):
            break
        start = before
    return start, shown


def _shown_lines(fd: int, start: int, end: int) -> int:
    """How many lines the complete entries of ``fd[start:end]`` show; the last one counts even
    if partial (its line is being written). Read a chunk at a time."""
    shown, carry, last_partial, offset = 0, b"", False, start
    while offset < end:
        size = min(_CHUNK, end - offset)
        *lines, carry = (carry + _read_at(fd, size, offset)).split(b"\n")
        offset += size
        for line in lines:
            last_partial = _partial(line)
            shown += not last_partial
    return shown + last_partial


def _entries_start(fd: int, end: int, wanted: int) -> tuple[int, int]:
    """Where the last ``wanted`` complete lines of ``fd[:end]`` begin, and how many there are
    (fewer when the file's start is reached: then 0). Reads backwards by blocks, never more
    than those lines and a block."""
    found = 0  # newlines seen; the first one from the end closes the last complete line
    position = end
    while position > 0:
        size = min(_BLOCK, position)
        position -= size
        block = _read_at(fd, size, position)
        count = block.count(b"\n")
        if found + count <= wanted:
            found += count
            continue
        at = len(block)
        while True:
            at = block.rfind(b"\n", 0, at)
            found += 1
            if found == wanted + 1:
                return position + at + 1, wanted
    return 0, found


@dataclass(slots=True)
class _File:
    fd: int
    identity: tuple[int, int]
    #: Where it was last seen: 0 is the current file, k is ``.k``.
    index: int


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class _Chain:
    """A log's files, oldest ``.N`` to the current one, found by identity."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _name(self, index: int) -> str:
        return rotated_name(self.path, index)

    def _open(self, index: int) -> _File:
        fd = os.open(self._name(index), os.O_RDONLY | os.O_CLOEXEC)
        return _File(fd, _identity(os.fstat(fd)), index)

    def _is_at(self, file: _File, index: int) -> bool:
        try:
            return _identity(os.stat(self._name(index))) == file.identity
        except FileNotFoundError:
            return False

    def current(self) -> _File | None:
        """The current file, None if there is none (a rotation under way is waited out)."""
        for _ in range(_RACE_TRIES):
            try:
                return self._open(0)
            except FileNotFoundError:
                if not os.path.exists(self._name(1)):
                    return None
                time.sleep(_RACE_PAUSE)
        return None

    def is_current(self, file: _File) -> bool:
        """Whether the writer still writes ``file`` (yes while its name is missing: a
        rotation under way, or a container removed — then its end is for the caller to see)."""
        try:
            return _identity(os.stat(self.path)) == file.identity
        except FileNotFoundError:
            return True

    def _locate(self, file: _File) -> int | None:
        """Where ``file`` is now (None: deleted by a rotation)."""
        for _ in range(_RACE_TRIES):
            index = file.index
            while True:
                try:
                    st = os.stat(self._name(index))
                except FileNotFoundError:
                    if index:
                        break
                    index += 1  # the current file, between a rotation's rename and create
                    continue
                if _identity(st) == file.identity:
                    file.index = index
                    return index
                index += 1
            time.sleep(_RACE_PAUSE)  # a rename under way leaves a gap; look once more
        return None

    def older(self, file: _File) -> _File | None:
        """The file rotated out just before ``file``; None: ``file`` is the oldest left."""
        for _ in range(_RACE_TRIES):
            index = self._locate(file)
            if index is None:
                return None
            try:
                found = self._open(index + 1)
            except FileNotFoundError:
                if not os.path.exists(self._name(index + 2)):
                    return None
                time.sleep(_RACE_PAUSE)  # renames go from the oldest down: one is under way
                continue
            if self._is_at(file, index):
                return found
            os.close(found.fd)
        return None

    def newer(self, file: _File) -> _File | None:
        """The file written after ``file``; None: ``file`` is the current one. If ``file`` was
        deleted meanwhile, the one after it is the oldest left."""
        for _ in range(_RACE_TRIES):
            index = self._locate(file)
            located = index is not None
            if index is None:
                oldest = self._oldest()
                if oldest is None:
                    return None
                index = oldest + 1
            elif index == 0:
                return None
            try:
                found = self._open(index - 1)
            except FileNotFoundError:
                time.sleep(_RACE_PAUSE)
                continue
            if not located or self._is_at(file, index):
                return found
            os.close(found.fd)
        return None

    def _oldest(self) -> int | None:
        """The index of the oldest file left (the current one may be missing a moment)."""
        index, last = 0, None
        while True:
            if os.path.exists(self._name(index)):
                last = index
            elif index:
                return last
            index += 1


class _Cursor:
    """Where a call has read to, and the files it holds open (one or two)."""

    def __init__(self, path: Path) -> None:
        self.chain = _Chain(str(path))
        #: The current file when the call came, and its size then: the end of the backlog.
        self.snapshot: _File | None = None
        self.snapshot_end = 0
        self.file: _File | None = None
        self.offset = 0

    def start(self, wanted: int) -> None:
        """Open the log as it is now and stand before the last ``wanted`` entries (-1: all)."""
        snapshot = self.snapshot = self.file = self.chain.current()
        if snapshot is None:
            return
        end = self.snapshot_end = self.offset = os.fstat(snapshot.fd).st_size
        if not wanted:
            return  # only what is logged from now on
        file = snapshot
        while True:
            start, found = (0, 0) if wanted < 0 else _tail_start(file.fd, end, wanted)
            self.offset = start
            if wanted > 0:
                wanted -= found
            if start > 0 or not wanted:
                return
            older = self.chain.older(file)
            if older is None:
                return
            if file is not snapshot:
                os.close(file.fd)
            self.file = file = older
            end = os.fstat(older.fd).st_size

    def _read(self, file: _File, end: int | None) -> tuple[bytes, bool]:
        """The complete lines from the offset (to ``end``, if given), a chunk's worth; and
        whether the offset moved (an over-long entry is skipped: it moves, with no data)."""
        room = _CHUNK if end is None else min(_CHUNK, end - self.offset)
        if room <= 0:
            return b"", False
        data = _read_at(file.fd, room, self.offset)
        cut = data.rfind(b"\n") + 1
        while not cut and len(data) < _MAX_ENTRY:
            # One entry longer than a chunk: read on to its end.
            room = _CHUNK if end is None else min(_CHUNK, end - self.offset - len(data))
            more = _read_at(file.fd, room, self.offset + len(data)) if room > 0 else b""
            if not more:
                break
            newline = more.rfind(b"\n")
            data += more
            if newline >= 0:
                cut = len(data) - len(more) + newline + 1
        if cut:
            self.offset += cut
            return data[:cut], True
        if len(data) >= _MAX_ENTRY:
            log.warning("logs.entry_too_long", offset=self.offset, size=len(data))
            self.offset += len(data)
            return b"", True
        return b"", False  # a line still being written: read on the next pass

    def _leave(self, file: _File) -> None:
        if file is self.snapshot:
            self.snapshot = None
        os.close(file.fd)

    def begin(self, wanted: int, select: Selection) -> tuple[list[tuple[str, bytes]], bool]:
        """:meth:`start` and the first :meth:`backlog` (a tail is then one trip to a thread)."""
        self.start(wanted)
        return self.backlog(select)

    def backlog(self, select: Selection) -> tuple[list[tuple[str, bytes]], bool]:
        """The next entries logged before the call, and whether that was the last of them."""
        while self.file is not None:
            file = self.file
            if file is self.snapshot:
                data, moved = self._read(file, self.snapshot_end)
                if not moved:
                    return [], True
                return select(data), self.offset >= self.snapshot_end
            data, moved = self._read(file, None)
            if moved:
                return select(data), False
            newer = self.chain.newer(file)
            if newer is None:
                return [], True  # the snapshot was rotated away and passed: read on from here
            os.close(file.fd)
            snapshot = self.snapshot
            if snapshot is not None and newer.identity == snapshot.identity:
                os.close(newer.fd)
                newer = snapshot
            self.file, self.offset = newer, 0
        return [], True

    def follow(self, select: Selection) -> list[tuple[str, bytes]] | None:
        """What was logged since the last read, across rotations; None: nothing new."""
        while True:
            file = self.file
            if file is None:
                file = self.file = self.chain.current()
                self.offset = 0
                if file is None:
                    return None
            data, moved = self._read(file, None)
            if moved:
                return select(data)
            if self.chain.is_current(file):
                return None
            # Rotated: the writer has moved on, so what it holds now is all it will hold.
            data, moved = self._read(file, None)
            if moved:
                return select(data)
            newer = self.chain.newer(file)
            if newer is None:
                return None
            self._leave(file)
            self.file, self.offset = newer, 0

    def close(self) -> None:
        for file in {id(f): f for f in (self.file, self.snapshot) if f is not None}.values():
            os.close(file.fd)
        self.file = self.snapshot = None


def tail_lines(tail: str | int) -> int:
    """dockerd's reading of ``tail``: Go's ``strconv.Atoi`` (a sign, ASCII digits, in int64's
    range), and anything it refuses (``all``, "", a word, a number too long) or a negative
    number means all the entries (-1)."""
    if isinstance(tail, int):
        value = tail
    else:
        digits = tail[1:] if tail[:1] in ("+", "-") else tail
        if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 19:
            return -1
        value = int(tail)
    return value if 0 <= value < 2**63 else -1  # (Go's int on dockerd's machines: int64)


async def read_log_chunks(
    path: Path,
    query: LogQuery,
    *,
    running: Callable[[], bool],
    attrs: Mapping[str, str] | None = None,
) -> AsyncGenerator[list[tuple[str, bytes]]]:
    """``docker logs`` from a json-file or k8s-file log: lists of ``(stream, bytes)``, one
    per chunk read (never empty), in order. A consumer that writes each list at once (the
    API: one send per chunk, not one per entry) keeps the loop's share of a large log small.

    ``query`` says what is wanted (timestamps in RFC 3339 with nine digits). ``follow`` goes
    on reading what is appended, every 20 ms, until ``until`` has passed or ``running()`` says
    the container has stopped and everything it logged has been read. A missing file is an
    empty log. ``attrs``: the container's log attributes, which ``details`` shows for entries
    that carry none of their own (k8s-file's).
    """
    select = Selection(
        query.streams, query.since, query.until, query.timestamps, query.details, attrs
    )
    cursor = _Cursor(path)
    try:
        chosen, done = await anyio.to_thread.run_sync(cursor.begin, tail_lines(query.tail), select)
        while True:
            if chosen:
                yield chosen
            if select.ended:
                return
            if done:
                break
            chosen, done = await anyio.to_thread.run_sync(cursor.backlog, select)
        while query.follow and not (query.until and time.time() > query.until):
            # Asked before reading: whatever was logged before the container stopped is then read.
            was_running = running()
            fresh = await anyio.to_thread.run_sync(cursor.follow, select)
            if fresh is None:
                if not was_running:
                    return
                await anyio.sleep(_FOLLOW_POLL)
                continue
            if fresh:
                yield fresh
            if select.ended:
                return
    finally:
        cursor.close()


async def read_log(
    path: Path,
    query: LogQuery,
    *,
    running: Callable[[], bool],
    attrs: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[str, bytes]]:
    """:func:`read_log_chunks` an entry at a time."""
    chunks = read_log_chunks(path, query, running=running, attrs=attrs)
    try:
        async for chunk in chunks:
            for item in chunk:
                yield item
    finally:
        await chunks.aclose()
