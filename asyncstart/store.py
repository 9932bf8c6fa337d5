"""Container records on disk, and the in-memory index that finds them.

Records live in one SQLite database, ``data_root/containers.db``, in WAL mode with
``synchronous=FULL``: a save returns once its transaction is on disk, and a reader — or a
daemon reopened after being killed mid-write — sees the old record or the new one, never a torn
one. Saves made while a transaction is being written are gathered into the next one (group
commit): whoever saves while no writer is busy writes the batch in a worker thread, one thread
hand-off and one fsync for every save in it. The first saver of a batch leads it: it waits for
the transaction before (if one is being written), then writes its batch; the others of the batch
wait once, for their batch to be written. Each container keeps its
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
import os
import shutil
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import msgspec

from . import errors
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


class _Batch:
    """Saves (record bytes) and deletions (``None``) gathered for one transaction."""

    __slots__ = ("done", "error", "ops", "written")

    def __init__(self) -> None:
        self.ops: dict[str, bytes | None] = {}
        self.done = False
        self.error: Exception | None = None
        #: Set once the batch is written (or failed to be).
        self.written = anyio.Event()


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
        #: Transactions written (each carrying one or more saves).
        self.commits = 0
        self._connection: sqlite3.Connection | None = None
        self._open: _Batch | None = None
        self._writing: _Batch | None = None  # the batch a worker thread is writing
        self._directories: set[str] = set()  # containers whose directory exists

    def path(self, container_id: str) -> Path:
        return self.root / container_id

    def log_path(self, container_id: str) -> Path:
        """The container's json-file log (dockerd's ``<id>-json.log`` beside its record)."""
        return Path(self.log_file(container_id))

    def log_file(self, container_id: str) -> str:
        """:meth:`log_path` as a string (made at every start: without pathlib's parsing)."""
        return f"{self._root}/{container_id}/{LOG_FILE.replace('{id}', container_id)}"

    # --- the database (worker threads, one at a time) ----------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.database.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.database, os.O_WRONLY | os.O_CREAT, 0o600))
            connection = sqlite3.connect(
                self.database, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'OFF'}")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, data BLOB NOT NULL)"
            )
            self._connection = connection
        return self._connection

    def _make_directory(self, container_id: str) -> None:
        directory = self.root / container_id
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)  # (not the umask's: a remapped root reads its files)
        for name, mode in self.placeholders.items():
            path = directory / name.replace("{id}", container_id)
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, mode)
            try:
                os.fchmod(fd, mode)  # (not the umask's)
            finally:
                os.close(fd)

    def write(self, ops: Mapping[str, bytes | None]) -> None:
        """Apply saves (bytes) and deletions (``None``) in one transaction (blocking)."""
        for container_id, data in ops.items():
            if data is not None and container_id not in self._directories:
                self._make_directory(container_id)
                self._directories.add(container_id)
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "INSERT OR REPLACE INTO records (id, data) VALUES (?, ?)",
                [(key, data) for key, data in ops.items() if data is not None],
            )
            connection.executemany(
                "DELETE FROM records WHERE id = ?",
                [(key,) for key, data in ops.items() if data is None],
            )
            connection.execute("COMMIT")
        except BaseException:
            # (A failed COMMIT may leave the transaction open: the next BEGIN would fail.)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self.commits += 1

    async def aclose(self) -> None:
        """Once the transaction being written (if any) is done: write what is still open,
        close the database."""
        with anyio.CancelScope(shield=True):
            while self._writing is not None:
                await self._writing.written.wait()
            if self._open is not None:
                await self._write_open_batch()
            if self._connection is not None:
                await anyio.to_thread.run_sync(self._connection.close)
                self._connection = None

    # --- group commit ------------------------------------------------------------------------

    async def _commit(self, container_id: str, data: bytes | None) -> None:
        """Have the change written; return once its transaction is on disk. All or nothing,
        as a single write would be: a caller cancelled meanwhile learns of it once the
        transaction is written (it takes milliseconds)."""
        batch = self._open
        leads = batch is None
        if batch is None:
            batch = self._open = _Batch()
        batch.ops[container_id] = data
        try:
            await self._see_written(batch, leads)
        except anyio.get_cancelled_exc_class():
            # (Shielded only then: a cancel scope at every save costs trio a start's 3%.)
            with anyio.CancelScope(shield=True):
                await self._see_written(batch, leads)
            raise
        if batch.error is not None:
            raise batch.error

    async def _see_written(self, batch: _Batch, leads: bool) -> None:
        """Wait until ``batch`` is written: its leader writes it once the transaction before
        is written, the others wait for it. (Taken up again where it left off if cancelled.)"""
        while not batch.done:
            writing = self._writing
            if writing is None:
                await self._write_open_batch()  # (ours: a batch is open until written)
            elif leads and writing is not batch:
                await writing.written.wait()  # then write ours
            else:
                await batch.written.wait()

    async def _write_open_batch(self) -> None:
        batch, self._open = self._open, None
        assert batch is not None
        self._writing = batch
        try:
            with anyio.CancelScope(shield=True):  # (done means written: never cut short)
                await anyio.to_thread.run_sync(self.write, batch.ops)
        except Exception as exc:
            batch.error = exc  # (every saver of the batch is told)
        finally:
            batch.done = True
            self._writing = None
            batch.written.set()  # (the next batch's leader waits for this too)

    async def save(self, record: ContainerRecord) -> None:
        """Write ``record`` durably (in a worker thread: the event loop never waits on disk)."""
        data = encode_json(record)
        try:
            await self._commit(record.id, data)
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise errors.SystemError(f"failed to save container {record.id}: {reason}") from exc

    async def delete(self, container_id: str) -> None:
        """Forget the record, then remove the container's directory."""
        directory = self.root / container_id
        try:
            await self._commit(container_id, None)
            self._directories.discard(container_id)
            with contextlib.suppress(FileNotFoundError):
                await anyio.to_thread.run_sync(shutil.rmtree, directory)
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise errors.SystemError(
                f"unable to remove filesystem for {container_id}: {reason}"
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
