"""The container records' database, and the process that writes it while a daemon runs.

A daemon's saves are written by a child process, ``python -I -S recordwriter.py``, not by a
thread of the daemon. A thread needs Python's global lock to go on after each call into SQLite
and after the fsync, and an event loop busy with starts keeps that lock for milliseconds at a
time: a transaction of a few hundred microseconds took 15 ms, while every start waiting on it
held up the loop. A process writes while the loop works.

The daemon (``store.RecordStore``) sends the writer frames on a stream socket, each a header
(``HEADER``: kind, ID length, data length) then the ID and the data:

- ``SAVE``: the record's JSON;
- ``SAVE_NEW``: the same, for a container whose directory is made first (its first save);
- ``DELETE``: no data.

Its first answer, an ``ACK`` of 0 frames, says it has opened the database; if it cannot, that
answer carries one ``FAILURE`` (number 0) with the reason, and it exits. It then takes every frame
that has arrived and writes them in one transaction (group commit: frames that arrive while a
transaction is written share the next one). After each transaction
it answers with an ``ACK``: how many frames it has handled since it started, and how many of
them failed, each of those as a ``FAILURE`` (its number, counted from 1, and the reason's
length) then the reason in UTF-8. A frame is handled once its transaction is on disk (with
``synchronous=FULL``) or has failed. The writer ends when the socket does (at end of input it
handles what it has, answers, and exits); it ignores the terminal's and the service manager's
signals, so that a daemon that shuts down on them still has its last saves written.

Imports the standard library only: the writer starts in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import struct
import sys
from collections.abc import Mapping, Sequence

__all__ = [
    "ACK",
    "DELETE",
    "FAILURE",
    "HEADER",
    "SAVE",
    "SAVE_NEW",
    "answer",
    "apply",
    "connect",
    "frame",
    "make_directory",
    "read_answers",
    "reason",
    "serve",
]

SAVE, SAVE_NEW, DELETE = 0, 1, 2
HEADER = struct.Struct("<BHI")
ACK = struct.Struct("<QI")
FAILURE = struct.Struct("<QI")
_CHUNK = 1 << 16


def connect(database: str, *, fsync: bool) -> sqlite3.Connection:
    """The database (made, 0600, with its table, if new), in WAL mode; with ``fsync``, a
    transaction returns once it is on disk."""
    os.makedirs(os.path.dirname(database), exist_ok=True)
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, data BLOB NOT NULL)"
    )
    return connection


def apply(connection: sqlite3.Connection, ops: Mapping[str, bytes | None]) -> None:
    """Saves (bytes) and deletions (``None``) in one transaction."""
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


def make_directory(root: str, container_id: str, placeholders: Mapping[str, int]) -> None:
    """The container's directory, 0755, with its placeholders: file name (``{id}`` stands for
    the ID) -> mode, made empty (modes not the umask's: a remapped root reads its files)."""
    directory = os.path.join(root, container_id)
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o755)
    for name, mode in placeholders.items():
        path = os.path.join(directory, name.replace("{id}", container_id))
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, mode)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def reason(exc: BaseException) -> str:
    """What a failed save says after ``failed to save container <id>: ``."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def frame(kind: int, container_id: str, data: bytes | None) -> bytes:
    key = container_id.encode()
    payload = data or b""
    return HEADER.pack(kind, len(key), len(payload)) + key + payload


def answer(handled: int, failed: Mapping[int, str]) -> bytes:
    """An answer: ``handled`` frames so far, and the failed ones' numbers and reasons."""
    parts = [ACK.pack(handled, len(failed))]
    for number, why in failed.items():
        text = why.encode()
        parts += [FAILURE.pack(number, len(text)), text]
    return b"".join(parts)


def read_answers(buffer: bytearray) -> tuple[list[tuple[int, dict[int, str]]], int]:
    """The whole answers at the start of ``buffer`` (handled, failed), and the bytes they
    take."""
    answers: list[tuple[int, dict[int, str]]] = []
    offset = 0
    size = len(buffer)
    while offset + ACK.size <= size:
        handled, count = ACK.unpack_from(buffer, offset)
        end = offset + ACK.size
        failed = {}
        for _ in range(count):
            if end + FAILURE.size > size:
                return answers, offset
            number, length = FAILURE.unpack_from(buffer, end)
            end += FAILURE.size
            if end + length > size:
                return answers, offset
            failed[number] = bytes(buffer[end : end + length]).decode()
            end += length
        answers.append((handled, failed))
        offset = end
    return answers, offset


def _frames(buffer: bytearray) -> tuple[list[tuple[int, str, bytes]], int]:
    """The complete frames at the start of ``buffer``, and the bytes they take."""
    frames = []
    offset = 0
    size = len(buffer)
    while offset + HEADER.size <= size:
        kind, key_length, data_length = HEADER.unpack_from(buffer, offset)
        start = offset + HEADER.size
        end = start + key_length + data_length
        if end > size:
            break
        key = bytes(buffer[start : start + key_length]).decode()
        frames.append((kind, key, bytes(buffer[start + key_length : end])))
        offset = end
    return frames, offset


def _write(
    connection: sqlite3.Connection,
    frames: Sequence[tuple[int, str, bytes]],
    first: int,
    root: str,
    placeholders: Mapping[str, int],
) -> bytes:
    """``frames`` (numbered from ``first``) in one transaction; the acknowledgement."""
    failed: dict[int, str] = {}
    ops: dict[str, bytes | None] = {}
    for number, (kind, key, data) in enumerate(frames, first):
        if kind == SAVE_NEW:
            try:
                make_directory(root, key, placeholders)
            except (OSError, ValueError) as exc:
                failed[number] = reason(exc)
                continue
        ops[key] = None if kind == DELETE else data
    if ops:
        try:
            apply(connection, ops)
        except (OSError, sqlite3.Error) as exc:
            why = reason(exc)
            for number in range(first, first + len(frames)):
                failed.setdefault(number, why)
    return answer(first + len(frames) - 1, failed)


def serve(
    sock: socket.socket,
    connection: sqlite3.Connection,
    root: str,
    placeholders: Mapping[str, int],
) -> None:
    """Write what arrives, a transaction at a time, until the socket ends."""
    buffer = bytearray()
    handled = 0
    ended = False
    while not ended:
        chunk = sock.recv(_CHUNK)
        ended = not chunk
        buffer += chunk
        while not ended:  # and whatever else has arrived meanwhile, without waiting
            try:
                chunk = sock.recv(_CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            ended = not chunk
            buffer += chunk
        frames, used = _frames(buffer)
        del buffer[:used]
        if frames:
            sock.sendall(_write(connection, frames, handled + 1, root, placeholders))
            handled += len(frames)


def main(argv: Sequence[str]) -> int:
    """``<socket fd> <database> <containers root> <FULL|OFF> [name=mode ...]``"""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    fd, database, root, sync, *names = argv
    placeholders = {name: int(mode, 8) for name, _, mode in (n.rpartition("=") for n in names)}
    with socket.socket(fileno=int(fd)) as sock:
        try:
            connection = connect(database, fsync=sync == "FULL")
        except (OSError, sqlite3.Error) as exc:
            sock.sendall(answer(0, {0: reason(exc)}))
            return 1
        try:
            sock.sendall(answer(0, {}))  # (ready: the first answer, before any frame's)
            serve(sock, connection, root, placeholders)
        except (BrokenPipeError, ConnectionResetError):
            return 0  # (the daemon is gone: nothing to answer)
        finally:
            connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
