"""Container records on disk, and the in-memory index that finds them.

Records live in one SQLite database, ``data_root/containers.db``, in WAL mode with
``synchronous=FULL``: a save returns once its transaction is on disk, and a reader — or a
daemon reopened after being killed mid-write — sees the old record or the new one, never a torn
one. While the daemon runs, its saves are written by a child process, the record writer
(``recordwriter``: why a process and not a thread is said there): a save sends the record and
waits for the writer's answer, and the writer gathers what has arrived while a transaction was
written into the next one (group commit: one fsync for every save in it). One waiting saver at a
time reads the answers and wakes those they cover; a save sent to a writer that has gone fails,
and the next save starts a new writer. Each container keeps its
directory ``data_root/containers/<id>/`` for its log, network files and checkpoints; the files
a start writes there (``placeholders``) are made, empty, with the directory at create, so that a
start rewrites them in place and allocates no inode on the data root's file system. Records of
an older daemon (``<id>/container.json`` files) are taken into the database when it opens.

The index resolves a reference as dockerd does: exact full ID, then exact name, then unique ID
prefix.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import msgspec

from . import errors, recordwriter
from ._log import get_logger
from .fdio import write_all
from .record import ContainerRecord

log = get_logger("asyncstart.store")

__all__ = [
    "LOG_FILE",
    "ContainerIndex",
    "RecordStore",
    "encode_json",
    "write_atomic",
    "write_in_place",
]

DATABASE = "containers.db"
#: A container's json-file log, in its directory (``{id}``: its ID).
LOG_FILE = "{id}-json.log"
#: An older daemon's record file, in the container's directory (read once, then taken in).
LEGACY_RECORD_FILE = "container.json"
_TMP_SUFFIX = ".tmp"
#: The socket's buffer toward the writer: a burst of saves is sent without waiting.
_SEND_BUFFER = 1 << 20
#: How long a closing store waits for its writer to end once every save is answered.
_WRITER_EXIT_TIMEOUT = 30.0
#: What starting the writer fails with where it can never run (not worth a new try per save).
_CANNOT_RUN = frozenset({errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.EPERM, errno.ENOTDIR})


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ContainerRecord)


def write_atomic(target: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``target`` whole or not at all: a temporary file beside it, flushed (and fsynced),
    renamed over it. Mode 0600."""
    tmp = target.with_name(target.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def encode_json(value: object) -> bytes:
    """``value`` as JSON; dockerd's 400 if a client's string in it is one no JSON can hold (a
    lone surrogate): the request is at fault."""
    try:
        return _encoder.encode(value)
    except (msgspec.EncodeError, UnicodeEncodeError) as exc:
        raise errors.InvalidParameter(f"invalid JSON: {exc}") from None


def write_in_place(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``target`` over its old content, keeping its inode, with ``mode`` (not the
    umask's): for files bind-mounted into a container, which a rename would leave behind."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
    finally:
        os.close(fd)


class _WriteFailed(Exception):
    """A save the writer could not make; its words are the reason."""


class _Writer:
    """The writer process (``recordwriter``) as the daemon sees it. Each save sends a frame
    and gets a ticket, its number; the answers come back to whichever waiting saver is reading
    them (one at a time), which then wakes every saver to see whether its ticket is answered
    (and one of those left takes over the reading). A saver whose frame the socket did not
    take whole sends the rest, and what follows."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.sent = 0
        #: Frames answered (their tickets are this one and below), and transactions.
        self.handled = 0
        self.commits = 0
        #: It has answered: opened the database, or said why it cannot (its first answer).
        self.spoke = False
        #: Ticket -> why it failed, until its saver takes it.
        self.failed: dict[int, str] = {}
        #: Set, and replaced, whenever answers are taken, a turn is given up, or the writer
        #: is gone.
        self.answered = anyio.Event()
        #: Frames the socket did not take yet (a writer far behind), and whether a saver is
        #: sending them.
        self.out = bytearray()
        self.flushing = False
        self.reading = False
        self.answers = bytearray()
        #: Why it can no longer be used (None: it can).
        self.gone: str | None = None

    def submit(self, kind: int, container_id: str, data: bytes | None) -> int:
        """Send a frame; its ticket."""
        message = recordwriter.frame(kind, container_id, data)
        self.sent += 1
        if self.out or self.gone is not None:
            self.out += message  # (after what waits to be sent)
            return self.sent
        try:
            sent = self.sock.send(message)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._gone(recordwriter.reason(exc))
            return self.sent
        if sent < len(message):
            self.out += message[sent:]
        return self.sent

    async def wait(self, ticket: int) -> str | None:
        """Until ``ticket`` is answered, taking a turn at sending or reading when no other
        saver is (safe to cancel: another takes over); why it failed, or None."""
        # (Answered, it still sends what is left if no one is: a flusher cancelled, taken
        # up again shielded, must not leave another's frame half sent.)
        while (self.handled < ticket or (self.out and not self.flushing)) and self.gone is None:
            if self.out and not self.flushing:
                await self._flush()
            elif not self.reading:
                await self._read()
            else:
                await self.answered.wait()
        if self.handled >= ticket:
            return self.failed.pop(ticket, None)
        return self.gone

    def _wake(self) -> None:
        answered, self.answered = self.answered, anyio.Event()
        answered.set()

    async def _flush(self) -> None:
        self.flushing = True
        try:
            while self.out and self.gone is None:
                await anyio.wait_writable(self.sock)
                try:
                    sent = self.sock.send(self.out)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._gone(recordwriter.reason(exc))
                    return
                del self.out[:sent]
        except anyio.ClosedResourceError:
            self._gone("its socket was closed")
        finally:
            self.flushing = False
            self._wake()  # (what is left to send is another saver's turn)

    async def _read(self) -> None:
        self.reading = True
        try:
            await anyio.wait_readable(self.sock)
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                chunk, why = b"", recordwriter.reason(exc)
            else:
                why = "it exited"
            if not chunk:
                self._gone(why)
                return
            self.answers += chunk
            self._take_answers()
        except anyio.ClosedResourceError:
            self._gone("its socket was closed")
        finally:
            self.reading = False
            self._wake()

    def _take_answers(self) -> None:
        answers, used = recordwriter.read_answers(self.answers)
        del self.answers[:used]
        for handled, failed in answers:
            if handled == 0:  # (its first answer: the database is open, or why not)
                self.spoke = True
                if failed:
                    self._end(f"the record writer cannot start: {failed.popitem()[1]}")
                    return
                continue
            self.handled = handled
            self.failed |= failed
            self.commits += 1

    def _gone(self, why: str) -> None:
        self._end(f"the record writer is gone: {why}")

    def _end(self, why: str) -> None:
        """Every save not answered fails with ``why``; the next save starts a new writer."""
        if self.gone is None:
            self.gone = why
        self.out.clear()
        self._wake()

    def retire(self) -> None:
        """Stop using it: the tasks waiting on its socket told it is closing, the process
        killed unless it has ended. (The socket is closed once no task uses it: a new one
        with its number would otherwise meet their registrations.)"""
        anyio.notify_closing(self.sock)
        if self.process.poll() is None:
            self.process.kill()

    def done_with(self) -> bool:
        """Retired, ended and reaped, no task using its socket: closed now, if so."""
        if self.reading or self.flushing or self.process.poll() is None:
            return False
        self.sock.close()
        return True

    async def aclose(self) -> None:
        """Once every save sent is answered: end its input, and wait for it to exit."""
        await self.wait(self.sent)
        anyio.notify_closing(self.sock)
        self.sock.close()
        if self.gone is not None and self.process.poll() is None:
            self.process.kill()  # (gone but not ended: nothing it could still write)
        await anyio.to_thread.run_sync(self.reap)

    def reap(self) -> None:
        """Wait for the process to end (blocking)."""
        try:
            self.process.wait(timeout=_WRITER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:  # (stuck on a disk that does not answer)
            self.process.kill()
            self.process.wait()


class RecordStore:
    """Durable :class:`ContainerRecord`\\s (see the module docstring); ``root`` holds the
    containers' directories, the database sits beside it."""

    def __init__(
        self, root: Path, *, fsync: bool = True, placeholders: Mapping[str, int] | None = None
    ) -> None:
        """``placeholders``: file name (``{id}`` stands for the container's ID) -> mode, made
        empty in each new container's directory."""
        self.root = root
        self._root = str(root)
        self.fsync = fsync
        self.placeholders = dict(placeholders or {})
        self.database = root.parent / DATABASE
        #: Where records that do not decode are moved (``data_root/quarantine``).
        self.quarantine = root.parent / "quarantine"
        #: IDs whose records were moved there by the last :meth:`load_all`: what their
        #: containers hold (runtime state, layer, namespace) is left alone, not cleaned up.
        self.quarantined: set[str] = set()
        self._connection: sqlite3.Connection | None = None
        self._writer: _Writer | None = None
        #: Why no writer process can run here (None: not known to fail).
        self._unable: str | None = None
        self._one_at_a_time: anyio.CapacityLimiter | None = None
        #: Writers that have gone, killed, until reaped (at close, or once they have ended).
        self._retired: list[_Writer] = []
        self._closed = False
        self._commits = 0  # (those of writers that have ended, and of this process's own)
        self._directories: set[str] = set()  # containers whose directory exists (or is sent)

    @property
    def commits(self) -> int:
        """Transactions written (each carrying one or more saves)."""
        return self._commits + (self._writer.commits if self._writer is not None else 0)

    @property
    def writer_pid(self) -> int | None:
        """The record writer's process ID (None: none is running)."""
        writer = self._writer
        return writer.process.pid if writer is not None and writer.gone is None else None

    def path(self, container_id: str) -> Path:
        return self.root / container_id

    def log_path(self, container_id: str) -> Path:
        """The container's json-file log (dockerd's ``<id>-json.log`` beside its record)."""
        return Path(self.log_file(container_id))

    def log_file(self, container_id: str) -> str:
        """:meth:`log_path` as a string (made at every start: without pathlib's parsing)."""
        return f"{self._root}/{container_id}/{LOG_FILE.replace('{id}', container_id)}"

    # --- in this process (loading; worker threads, one at a time) -----------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = recordwriter.connect(str(self.database), fsync=self.fsync)
        return self._connection

    def write(self, ops: Mapping[str, bytes | None]) -> None:
        """Apply saves (bytes) and deletions (``None``) in one transaction, in this process
        (blocking; as the store loads, before any writer runs)."""
        for container_id, data in ops.items():
            if data is not None and container_id not in self._directories:
                recordwriter.make_directory(self._root, container_id, self.placeholders)
                self._directories.add(container_id)
        recordwriter.apply(self._connect(), ops)
        self._commits += 1

    async def aclose(self) -> None:
        """Once every save made is written: stop the writer (and reap those that ended),
        close the database. Saves made after this are written by this process."""
        with anyio.CancelScope(shield=True):
            self._closed = True
            writer, self._writer = self._writer, None
            if writer is not None:
                await writer.aclose()
                self._commits += writer.commits
            retired, self._retired = self._retired, []
            for old in retired:
                await anyio.to_thread.run_sync(old.reap)
                old.sock.close()
            if self._connection is not None:
                await anyio.to_thread.run_sync(self._connection.close)
                self._connection = None

    # --- the writer process ------------------------------------------------------------------

    def _start_writer(self) -> _Writer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    recordwriter.__file__,
                    str(theirs.fileno()),
                    str(self.database),
                    self._root,
                    "FULL" if self.fsync else "OFF",
                    *(f"{name}={mode:o}" for name, mode in self.placeholders.items()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        return _Writer(process, ours)

    def _writer_for_save(self) -> _Writer | None:
        """The writer, started anew if there is none or it has gone; None if no writer
        process can run here (then this process writes, in a worker thread)."""
        writer = self._writer
        if writer is not None and writer.gone is None:
            return writer
        if writer is not None:
            self._commits += writer.commits
            writer.retire()
            self._retired = [old for old in self._retired if not old.done_with()]
            self._retired.append(writer)
            self._writer = None
        if self._unable is None and not self._closed:
            if not sys.executable or getattr(sys, "frozen", False):
                # (A frozen program's executable is the program, not a Python.)
                self._no_writer("no Python interpreter to run it")
                return None
            try:
                self._writer = self._start_writer()
            except OSError as exc:
                if exc.errno not in _CANNOT_RUN:
                    raise _WriteFailed(f"cannot start the record writer: {exc.strerror}") from exc
                self._no_writer(recordwriter.reason(exc))
        return self._writer

    def _no_writer(self, why: str) -> None:
        self._unable = why
        log.warning("store.no_writer_process", error=why)

    async def _commit(self, container_id: str, data: bytes | None) -> None:
        """Have the change written; return once its transaction is on disk. All or nothing,
        as a single write would be: a caller cancelled meanwhile learns of it once the
        transaction is written (it takes milliseconds)."""
        if data is None:
            self._directories.discard(container_id)
        writer = self._writer_for_save()
        if writer is None:
            await self._write_here({container_id: data})
            return
        if data is None:
            kind = recordwriter.DELETE
        elif container_id in self._directories:
            kind = recordwriter.SAVE
        else:
            kind = recordwriter.SAVE_NEW
        ticket = writer.submit(kind, container_id, data)
        if kind == recordwriter.SAVE_NEW:
            self._directories.add(container_id)  # (the next save need not make it)
        error: str | None = None
        try:
            error = await writer.wait(ticket)
        except anyio.get_cancelled_exc_class():
            # (Shielded only then: a cancel scope at every save costs trio a start's 3%.)
            with anyio.CancelScope(shield=True):
                error = await writer.wait(ticket)
            raise
        finally:
            if error is not None and kind == recordwriter.SAVE_NEW:
                self._directories.discard(container_id)  # (made at its next save)
        if error is None:
            return
        if not writer.spoke and writer.gone is not None:
            # Ended before it said a word: no Python of ours runs there (a wrapper, a
            # program of another kind). This process writes from now on.
            if self._unable is None:
                self._no_writer(f"it ended at once ({writer.gone})")
            await self._write_here({container_id: data})
            return
        raise _WriteFailed(error)

    async def _write_here(self, ops: Mapping[str, bytes | None]) -> None:
        """Without a writer process: one transaction per save, from a worker thread, one
        at a time."""
        if self._one_at_a_time is None:
            self._one_at_a_time = anyio.CapacityLimiter(1)
        try:
            with anyio.CancelScope(shield=True):  # (done means written: never cut short)
                await anyio.to_thread.run_sync(self.write, ops, limiter=self._one_at_a_time)
        except (OSError, sqlite3.Error) as exc:
            raise _WriteFailed(recordwriter.reason(exc)) from exc

    async def save(self, record: ContainerRecord) -> None:
        """Write ``record`` durably (by the writer process: the event loop never waits on
        disk)."""
        data = encode_json(record)
        try:
            await self._commit(record.id, data)
        except _WriteFailed as exc:
            raise errors.SystemError(f"failed to save container {record.id}: {exc}") from exc

    async def delete(self, container_id: str) -> None:
        """Forget the record, then remove the container's directory."""
        directory = self.root / container_id
        try:
            await self._commit(container_id, None)
            with contextlib.suppress(FileNotFoundError):
                await anyio.to_thread.run_sync(shutil.rmtree, directory)
        except (_WriteFailed, OSError) as exc:
            raise errors.SystemError(
                f"unable to remove filesystem for {container_id}: {recordwriter.reason(exc)}"
            ) from exc

    # --- loading -----------------------------------------------------------------------------

    def _load_all(self) -> list[ContainerRecord]:
        had_database = self.database.exists()
        self._take_in_legacy_records()
        stored = self._connect().execute("SELECT id, data FROM records ORDER BY id").fetchall()
        records: list[ContainerRecord] = []
        unreadable: dict[str, bytes | None] = {}
        for container_id, data in stored:
            try:
                records.append(_decoder.decode(data))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._quarantine(container_id, bytes(data), str(exc))
                unreadable[container_id] = None
        if unreadable:
            self.write(unreadable)
        known = {record.id for record in records}
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name in known or not entry.is_dir():
                    continue
                if had_database:
                    # A create killed before its first save, or a removal after its delete.
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    # Containers' directories and no database (deleted, or a partial restore
                    # of the data root): their logs and files are kept for a person.
                    self._quarantine(entry.name, None, "no record: the records database is new")
        self._directories = known
        return records

    def _take_in_legacy_records(self) -> None:
        """An older daemon's ``<id>/container.json`` files, into the database."""
        if not self.root.is_dir():
            return
        found: dict[str, bytes | None] = {}
        for entry in sorted(self.root.iterdir()):
            legacy = entry / LEGACY_RECORD_FILE
            (entry / (LEGACY_RECORD_FILE + _TMP_SUFFIX)).unlink(missing_ok=True)
            if legacy.is_file():
                found[entry.name] = legacy.read_bytes()
        if found:
            self.write(found)
            for container_id in found:
                (self.root / container_id / LEGACY_RECORD_FILE).unlink()

    def _quarantine(self, container_id: str, data: bytes | None, error: str) -> None:
        """A record that does not decode (a full disk, a database edited by hand, a file
        system that lies about fsync), or a directory no record claims when the database is
        new, is moved aside for a person to look at, as dockerd skips such a container: one
        bad record must not keep the daemon from serving the others. The container's
        directory goes with it, the record (if any) as ``container.json`` inside."""
        target = self.quarantine / f"{container_id}.{time.time_ns()}"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = self.root / container_id
        if directory.is_dir():
            os.rename(directory, target)
        else:
            target.mkdir(mode=0o700)
        if data is not None:
            write_atomic(target / LEGACY_RECORD_FILE, data)
        self.quarantined.add(container_id)
        log.error(
            "container.record_unreadable",
            container_id=container_id,
            error=error,
            moved_to=str(target),
        )

    async def load_all(self) -> list[ContainerRecord]:
        """Every persisted record; leftovers of interrupted creates and removals are swept."""
        self.quarantined = set()
        return await anyio.to_thread.run_sync(self._load_all)


class ContainerIndex:
    """ID and name lookup, as dockerd's ``GetContainer``: sorted IDs for prefix search."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._names: dict[str, str] = {}  # "/name" -> id

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, container_id: str, name: str) -> None:
        """Index a container under its ID and reserve its ``/name`` (409 if taken)."""
        self.reserve_name(name, container_id)
        bisect.insort(self._ids, container_id)

    def reserve_name(self, name: str, container_id: str) -> None:
        owner = self._names.get(name)
        if owner is not None and owner != container_id:
            raise errors.Conflict(
                f'Conflict. The container name "{name}" is already in use by container '
                f'"{owner}". You have to remove (or rename) that container to be able to '
                "reuse that name."
            )
        self._names[name] = container_id

    def release_name(self, name: str) -> None:
        self._names.pop(name, None)

    def remove(self, container_id: str, name: str) -> None:
        index = bisect.bisect_left(self._ids, container_id)
        if index < len(self._ids) and self._ids[index] == container_id:
            del self._ids[index]
        if self._names.get(name) == container_id:
            del self._names[name]

    def has_name(self, name: str) -> bool:
        return name in self._names

    def resolve(self, reference: str) -> str:
        """Return the container ID ``reference`` names, or raise 400/404 as dockerd does."""
        if not reference:
            raise errors.InvalidParameter('invalid name or ID supplied: ""')
        index = bisect.bisect_left(self._ids, reference)
        if index < len(self._ids) and self._ids[index] == reference:
            return reference
        by_name = self._names.get(reference if reference.startswith("/") else "/" + reference)
        if by_name is not None:
            return by_name
        if index < len(self._ids) and self._ids[index].startswith(reference):
            following = index + 1
            if following < len(self._ids) and self._ids[following].startswith(reference):
                raise errors.InvalidParameter(
                    f"multiple IDs found with provided prefix: {reference}"
                )
            return self._ids[index]
        raise errors.NotFound(f"No such container: {reference}")
