"""The mount driver interface (dockerd's layer store + ``conditionalMountOnStart``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Protocol

__all__ = ["MountDriver"]


class MountDriver(Protocol):
    async def create(self, container_id: str, image: str) -> None:
        """Make the container's writable layer on top of ``image`` (at container create)."""
        ...

    async def mount(self, container_id: str) -> str:
        """Mount the root filesystem (reference counted); return its path."""
        ...

    async def unmount(self, container_id: str) -> None:
        """Drop one reference; unmount when none is left."""
        ...

    async def remove(self, container_id: str) -> None:
        """Delete the writable layer (at container remove); unmounts first if needed."""
        ...

    async def cleanup(self, keep: set[str], known: set[str]) -> None:
        """After a daemon restart: unmount all but ``keep``; delete layers not in ``known``."""
        ...

    def upper_dir(self, container_id: str) -> Path | None:
        """The directory holding the container's changes (``docker commit``); None where
        there is none on disk (the fake driver)."""
        ...

    def mounted(self, container_id: str) -> bool:
        """Whether the root filesystem is mounted now."""
        ...

    async def changes(self, container_id: str) -> list[dict[str, object]]:
        """``docker diff``: what the container changed of its image, dockerd's ``Path`` and
        ``Kind`` (0 changed, 1 added, 2 deleted), sorted by path."""
        ...

    def export(self, container_id: str) -> AsyncGenerator[bytes, None]:
        """``docker export``: the container's root filesystem as a tar stream (mounted for the
        while if it is not)."""
        ...

    async def size(self, container_id: str) -> int:
        """Bytes the container's writable layer holds (``docker system df``, ``ps -s``)."""
        ...
