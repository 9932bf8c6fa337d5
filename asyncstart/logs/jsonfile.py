"""Container log formats: dockerd's json-file, which this engine writes and reads, and
conmon's k8s-file, which it reads; how a reader chooses entries (:class:`Selection`).

json-file is one JSON object per line, ``{"log", "stream", "time"}`` (and ``"attrs"`` when the
container's log options ask for some). Its writer is fed raw output chunks as the container
produces them and rotates the file as dockerd's ``loggerutils.LogFile`` does; :mod:`.reader`
serves ``docker logs`` from the files.

k8s-file is what conmon (podman's container monitor) writes for the containers it monitors:
one entry per line, ``<time> <stream> <tag> <content>``, the time local with nanoseconds and a
numeric offset, the tag ``F`` (a full line: its newline is the line's end) or ``P`` (a part
of a line that had not ended: conmon's newline is not the output's). Those containers' logs
are read here as well, into the same entries: times in UTC with nine digits, no ``attrs`` of
their own (the container's, given to :class:`Selection`, stand for them). Each line says
which format it is in (json-file's begin with ``{``), so a file may hold both: a container
logged in json-file, then by conmon.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import msgspec

from .. import errors
from .._log import get_logger
from ..fdio import write_all
from .options import LogOptions

__all__ = [
    "LOG_MODE",
    "MAX_LINE",
    "ContainerLogs",
    "JsonFileWriter",
    "LogQuery",
    "Selection",
    "rotated_name",
]

log = get_logger("asyncstart.logs")

#: A log file's mode: readable by the daemon's user and group only (a container's output is
#: its own).
LOG_MODE = 0o640
#: As dockerd: a longer line is logged in parts of this size, so memory stays bounded whatever
#: the container prints.
MAX_LINE = 16 * 1024
#: An entry's ``time`` in UTC, to write it as ``--timestamps`` shows it.
_FIXED_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?\d*Z")
#: A k8s-file entry (conmon's), in its text (decoded at once, invalid UTF-8 replaced): the
#: time's minute, its ``:SS.nnnnnnnnn`` and offset apart (an offset is whole minutes: only the
#: minute changes in UTC), the stream and tag (``F``/``P``), the content (possibly none:
#: conmon then ends the line after the tag's space). Lines end at ``\n`` only, as conmon's.
_K8S_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d)(:[0-5]\d(?:\.\d+)?)(Z|[+-]\d\d:\d\d)"
    r" (std(?:out|err) [FP])(?: (.*))?$",
    re.MULTILINE | re.ASCII,
)
#: A k8s-file line's stream and tag: the stream, and what ends the entry's text (``F``: the
#: newline conmon took as the line's end).
_KINDS = {
    "stdout F": ("stdout", "\n"),
    "stdout P": ("stdout", ""),
    "stderr F": ("stderr", "\n"),
    "stderr P": ("stderr", ""),
}


def rotated_name(path: str, index: int) -> str:
    """The file ``index`` rotations old: ``<id>-json.log`` itself (0), then ``.1``, ``.2``..."""
    return f"{path}.{index}" if index else path


def _entry(data: bytes, stream: str, attrs: str) -> bytes:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # dockerd's order of keys: log, stream, attrs (already JSON), time.
    head = json.dumps({"log": data.decode(errors="replace"), "stream": stream})[:-1]
    return f'{head}{attrs}, "time": "{now}"}}\n'.encode()


class JsonFileWriter:
    """Appends output chunks to a json-file log, one entry per line (or 16 KiB part), and
    rotates it as dockerd's json-file driver does.

    A line that has not ended yet is kept per stream until its newline arrives, or written as
    it is by :meth:`close`. One writer per container: its streams share it, so the size that
    decides a rotation is the file's. With ``options.max_size``, an entry that finds the file
    at that size or more first rotates it (so a file holds at most ``max_size`` and one
    entry): ``<id>-json.log`` becomes ``.1``, ``.1`` becomes ``.2``... and the oldest of
    ``max_file`` files goes (with ``max_file`` 1, the file is only emptied).
    """

    def __init__(self, path: str | Path, options: LogOptions | None = None) -> None:
        self._path = os.fspath(path)
        self._options = options or LogOptions()
        attrs = self._options.attrs
        self._attrs = f', "attrs": {json.dumps(dict(attrs))}' if attrs else ""
        self._fd = self._open(0)
        self._size = os.fstat(self._fd).st_size
        self._pending: dict[str, bytes] = {}
        #: Entries of the chunk being logged, written together.
        self._out: list[bytes] = []

    def _open(self, flags: int) -> int:
        # A local append-only file: writes of a few lines never stall the event loop noticeably.
        flags |= os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self._path, flags, LOG_MODE)

    def _log(self, data: bytes, stream: str) -> None:
        entry = _entry(data, stream, self._attrs)
        if self._options.max_size != -1 and self._size >= self._options.max_size:
            self._flush()
            self._rotate()
        self._out.append(entry)
        self._size += len(entry)

    def _flush(self) -> None:
        data = b"".join(self._out)
        self._out.clear()
        write_all(self._fd, data)

    def _rotate(self) -> None:
        """dockerd's ``LogFile.rotate``: the files move up by one, the oldest kept goes, and
        entries go on into a new, empty current file. Readers that hold the old file open read
        it to its end (see :mod:`.reader`). Only the files that exist are renamed, so a huge
        ``max-file`` costs nothing while few files exist."""
        os.close(self._fd)
        self._fd = -1
        keep = self._options.max_file
        try:
            if keep < 2:
                os.unlink(self._path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(rotated_name(self._path, keep - 1))
                last = 0
                while last + 1 < keep - 1 and os.path.exists(rotated_name(self._path, last + 1)):
                    last += 1
                for index in range(last, 0, -1):
                    os.rename(rotated_name(self._path, index), rotated_name(self._path, index + 1))
                os.rename(self._path, rotated_name(self._path, 1))
        except OSError as exc:
            log.warning("logs.rotate_failed", path=self._path, error=str(exc))
        # Truncated in any case, as dockerd: a rotation that failed must not let the file grow.
        self._fd = self._open(os.O_TRUNC)
        self._size = 0

    def write(self, stream: str, chunk: bytes) -> None:
        """Log the complete lines of ``chunk`` (``stream`` is ``stdout`` or ``stderr``)."""
        *lines, pending = (self._pending.get(stream, b"") + chunk).split(b"\n")
        for line in lines:
            self._log(line + b"\n", stream)
        while len(pending) >= MAX_LINE:
            self._log(pending[:MAX_LINE], stream)
            pending = pending[MAX_LINE:]
        self._pending[stream] = pending
        # Written per chunk: a reader following the file sees each line as soon as it is out.
        self._flush()

    def close(self) -> None:
        """Log what is left of unfinished lines (without a newline) and close the file."""
        if self._fd < 0:
            return
        try:
            for stream, pending in self._pending.items():
                if pending:
                    self._log(pending, stream)
            self._pending.clear()
            self._flush()
        finally:
            os.close(self._fd)
            self._fd = -1


class _Entry(msgspec.Struct, gc=False):
    """An entry of either format. (Strings only, no cycle possible: the garbage collector need
    not track the hundreds of thousands a large log makes.)"""

    log: str = ""
    stream: str = ""
    time: str = ""
    attrs: dict[str, str] | None = None


_decoder = msgspec.json.Decoder(_Entry)


@functools.lru_cache(maxsize=1024)
def _utc_minute(minute: str, offset: str) -> str:
    """``YYYY-MM-DDTHH:MM`` at ``offset``, in UTC (``ValueError`` if it is no time)."""
    at = _dt.datetime.fromisoformat(f"{minute}:00{offset}")
    return at.astimezone(_dt.UTC).isoformat()[:16]


def _k8s_entries(found: Iterable[tuple[str, ...]]) -> list[_Entry]:
    """k8s-file lines (:data:`_K8S_LINE`'s groups) as json-file entries would hold them: the
    time in UTC with nine digits (as text, never a float: no nanosecond is lost), ``F``'s
    newline given back to the text. A line whose time is no time is skipped.

    A log's lines come a minute at a time: the minute is checked and moved to UTC once per
    minute (and offset) met, strings compared in between; seconds and fraction are kept."""
    entries: list[_Entry] = []
    append = entries.append
    minute_seen = offset_seen = head = ""
    for minute, second, offset, kind, content in found:
        if minute != minute_seen or offset != offset_seen:
            try:
                head = _utc_minute(minute, offset)
            except ValueError:
                log.debug("logs.bad_entry", entry=minute + second + offset)
                minute_seen = ""
                continue
            minute_seen, offset_seen = minute, offset
        if len(second) != 13:  # not ":SS.nnnnnnnnn"
            whole, _, fraction = second.partition(".")
            second = f"{whole}.{fraction[:9]:0<9}"
        stream, end = _KINDS[kind]
        append(_Entry(content + end, stream, head + second + "Z"))
    return entries


def _decode(data: bytes) -> list[_Entry]:
    """The entries of whole lines, json-file's or k8s-file's (each line says which); a line
    that is neither (a torn write, a disk error) is skipped alone."""
    if data[:1] == b"{":
        try:
            return _decoder.decode_lines(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    elif b"\n{" not in data:
        # k8s-file only: matched a chunk at a time, unless some line is not an entry. (Decoded
        # whole: a replaced invalid sequence never takes a newline with it, so each line's
        # text is what decoding it alone would give.)
        text = data.decode(errors="replace")
        found = _K8S_LINE.findall(text)
        if len(found) == text.count("\n"):
            return _k8s_entries(found)
    entries = []
    for line in data.split(b"\n"):
        if line[:1] != b"{":
            k8s = _K8S_LINE.match(line.decode(errors="replace"))
            if k8s is not None:
                entries += _k8s_entries([k8s.groups("")])
                continue
            if not line.strip():
                continue
        try:
            entries.append(_decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.debug("logs.bad_entry", entry=line[:200])
    return entries


def _seconds(text: str) -> float:
    """An entry's ``time`` (RFC 3339) in seconds since the epoch."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _fixed(text: str) -> str:
    """dockerd's ``--timestamps`` form: nine digits of fraction, whatever the file holds."""
    if len(text) == 30 and text[19] == "." and text[29] == "Z":
        return text  # already so (all k8s-file times, most json-file ones): spare the regex
    found = _FIXED_TIME.fullmatch(text)
    if found is None:
        return text
    return f"{found.group(1)}.{(found.group(2) or '').ljust(9, '0')}Z"


def _details(attrs: Mapping[str, str] | None) -> bytes:
    """dockerd's ``--details`` prefix: ``k=v,...`` (query-escaped, by key), then a space."""
    pairs = sorted((attrs or {}).items())
    text = ",".join(f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}" for k, v in pairs)
    return text.encode() + b" "


class Selection:
    """The entries a ``docker logs`` call asks for, as dockerd chooses them: ``since`` (once
    an entry is at or after it, later ones are not checked: times need not be monotonic),
    ``until`` (the first entry after it ends the call), the streams; ``timestamps`` and
    ``details`` prefixes. Called with chunks of whole lines, in order (in a worker thread).

    ``attrs``: the container's log attributes, for the entries that carry none (k8s-file's
    never do: conmon writes none; they are fixed for a container's run).
    """

    def __init__(
        self,
        streams: Set[str],
        since: float,
        until: float,
        timestamps: bool,
        details: bool,
        attrs: Mapping[str, str] | None = None,
    ) -> None:
        self.streams = frozenset(streams)
        self.since = since
        self.until = until
        self.timestamps = timestamps
        self.details = details
        #: The ``--details`` prefix of an entry without attributes of its own.
        self._default_details = _details(attrs)
        #: An entry after ``until`` was met: nothing more is sent (dockerd's forwarder).
        self.ended = False

    def __call__(self, data: bytes) -> list[tuple[str, bytes]]:
        chosen = []
        for entry in _decode(data):
            if self.since or self.until:
                try:
                    at = _seconds(entry.time)
                except ValueError:
                    continue
                if self.since:
                    if at < self.since:
                        continue
                    self.since = 0
                if self.until and at > self.until:
                    self.ended = True
                    break
            if entry.stream not in self.streams:
                continue
            line = entry.log.encode(errors="replace")
            if self.details:
                if entry.attrs is None:
                    line = self._default_details + line
                else:
                    line = _details(entry.attrs) + line
            if self.timestamps:
                line = _fixed(entry.time).encode() + b" " + line
            chosen.append((entry.stream, line))
        return chosen


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What ``docker logs`` asks for, checked as it is made (dockerd's 400s, before anything
    is read). ``since``/``until`` are seconds since the epoch (0: unbounded); ``tail`` keeps
    the last N entries, read as dockerd reads it (``reader.tail_lines``: anything that is not a
    number in Go's int range, or a negative one, means all); ``timestamps`` puts each
    entry's time before it, ``details`` its attributes; ``follow`` goes on while the container
    runs."""

    streams: frozenset[str] = frozenset({"stdout", "stderr"})
    follow: bool = False
    tail: str | int = "all"
    since: float = 0
    until: float = 0
    timestamps: bool = False
    details: bool = False

    def __post_init__(self) -> None:
        if not self.streams:
            raise errors.InvalidParameter("Bad parameters: you must choose at least one stream")


class ContainerLogs:
    """A container's log as ``async for stream, data in logs``, or a chunk at a time (lists
    of them, as read) with ``async for chunk in logs.chunks()``.

    ``tty``: the output is one raw stream (a terminal's), not stdout and stderr apart.
    """

    def __init__(self, chunks: AsyncIterator[list[tuple[str, bytes]]], *, tty: bool) -> None:
        self._chunks = chunks
        self.tty = tty

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self._entries()

    async def _entries(self) -> AsyncIterator[tuple[str, bytes]]:
        async for chunk in self._chunks:
            for item in chunk:
                yield item

    def chunks(self) -> AsyncIterator[list[tuple[str, bytes]]]:
        """The entries as they are read, a list per chunk: one write each."""
        return self._chunks

    async def aclose(self) -> None:
        """Stop reading (a follow ends here)."""
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()
