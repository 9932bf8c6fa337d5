"""Container records on disk, and the in-memory index that finds them.

Each record lives in ``data_root/containers/<id>/container.json``. A write goes to a temporary
file in the same directory, is flushed and fsynced, then renamed over the record: a reader —
or a daemon reopened after being killed mid-write — sees the old record or the new one, never a
torn one. The index resolves a reference as dockerd does: exact full ID, then exact name, then
unique ID prefix.
"""

from __future__ import annotations

import bisect
import os
import shutil
import time
from pathlib import Path

import anyio
import msgspec

from . import errors
from ._log import get_logger
from .record import ContainerRecord

log = get_logger("asyncstart.store")

__all__ = ["ContainerIndex", "RecordStore", "write_atomic"]

RECORD_FILE = "container.json"
_TMP_SUFFIX = ".tmp"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ContainerRecord)


def write_atomic(target: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``target`` whole or not at all: a temporary file beside it, flushed (and fsynced),
    renamed over it. Mode 0600."""
    tmp = target.with_name(target.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


class RecordStore:
    """Atomic persistence of :class:`ContainerRecord` under ``root``."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        #: Where records that do not decode are moved (``data_root/quarantine``).
        self.quarantine = root.parent / "quarantine"
        #: IDs whose records were moved there by the last :meth:`load_all`: what their
        #: containers hold (runtime state, layer, namespace) is left alone, not cleaned up.
        self.quarantined: set[str] = set()

    def path(self, container_id: str) -> Path:
        return self.root / container_id

    def log_path(self, container_id: str) -> Path:
        """The container's json-file log (dockerd's ``<id>-json.log`` beside its record)."""
        return self.root / container_id / f"{container_id}-json.log"

    def _write(self, container_id: str, data: bytes) -> None:
        directory = self.root / container_id
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / RECORD_FILE, data, fsync=self.fsync)

    async def save(self, record: ContainerRecord) -> None:
        """Write ``record`` atomically (in a worker thread: the event loop never waits on disk)."""
        try:
            data = _encoder.encode(record)
        except (msgspec.EncodeError, UnicodeEncodeError) as exc:
            # A client's string no JSON can hold (a lone surrogate): its request is at fault.
            raise errors.InvalidParameter(f"invalid JSON: {exc}") from None
        try:
            await anyio.to_thread.run_sync(self._write, record.id, data)
        except OSError as exc:
            raise errors.SystemError(
                f"failed to save container {record.id}: {exc.strerror or exc}"
            ) from exc

    async def delete(self, container_id: str) -> None:
        directory = self.root / container_id
        try:
            await anyio.to_thread.run_sync(shutil.rmtree, directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise errors.SystemError(
                f"unable to remove filesystem for {container_id}: {exc.strerror or exc}"
            ) from exc

    def _load_all(self) -> list[ContainerRecord]:
        records: list[ContainerRecord] = []
        if not self.root.is_dir():
            return records
        for entry in sorted(self.root.iterdir()):
            target = entry / RECORD_FILE
            (entry / (RECORD_FILE + _TMP_SUFFIX)).unlink(missing_ok=True)
            if not target.is_file():
                # Killed between mkdir and the first rename: the create never completed.
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                records.append(_decoder.decode(target.read_bytes()))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._quarantine(entry, str(exc))
        return records

    def _quarantine(self, entry: Path, error: str) -> None:
        """A record that does not decode (torn by power loss on a file system that lies about
        fsync, a full disk) is moved aside for a person to look at, as dockerd skips such a
        container: one bad record must not keep the daemon from serving the others."""
        target = self.quarantine / f"{entry.name}.{time.time_ns()}"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.rename(entry, target)
        self.quarantined.add(entry.name)
        log.error(
            "container.record_unreadable",
            container_id=entry.name,
            error=error,
            moved_to=str(target),
        )

    async def load_all(self) -> list[ContainerRecord]:
        """Every persisted record; leftovers of interrupted writes are swept away."""
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
