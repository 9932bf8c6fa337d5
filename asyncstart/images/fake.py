"""The fake runtime's image drivers: an in-memory mount driver (for tests and the
engine-overhead benchmark) and an image store that lets containers name unknown images."""

from __future__ import annotations

import collections
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from .. import errors
from ..faults import FaultPlan
from .store import ImageStore

__all__ = ["FakeImageStore", "FakeMounter"]


class FakeImageStore(ImageStore):
    """A real on-disk :class:`ImageStore` (images can be imported, loaded, listed, removed)
    whose containers may also name an image it has never seen.

    The fake runtime runs no image's files, so a test can create ``busybox`` without importing
    it: the reference then stands for the image ID and the container gets no image defaults.
    Every other operation on an unknown image is a 404, as on the real store, but a commit of
    such a container, which builds on no image.
    """

    def container_image(self, reference: str) -> tuple[str, dict[str, Any] | None]:
        """The image ID and defaults of a known image; ``(reference, None)`` for any other."""
        try:
            image_id = self.resolve(reference)
        except errors.NotFound:
            return reference, None
        return image_id, self._defaults(image_id)

    def _parent_config(self, image_id: str) -> dict[str, Any]:
        """A commit of a container of an image never seen builds on no image (its layers are
        the fake mounter's, which has no files: commit such a container with ``layer=None``)."""
        try:
            return super()._parent_config(image_id)
        except errors.NotFound:
            return {}


class FakeMounter:
    """Tracks layers and mount references in dicts; phases ``create``, ``mount``, ``unmount``,
    ``remove`` accept injected faults."""

    def __init__(self, root: str = "/fake/rootfs") -> None:
        self.root = root
        self.faults = FaultPlan()
        self.layers: dict[str, str] = {}
        self.refs: collections.Counter[str] = collections.Counter()

    async def create(self, container_id: str, image: str) -> None:
        self.faults.check("create", container_id)
        self.layers[container_id] = image

    async def mount(self, container_id: str) -> str:
        self.faults.check("mount", container_id)
        if container_id not in self.layers:
            raise errors.SystemError(f"layer of container {container_id} does not exist")
        self.refs[container_id] += 1
        return f"{self.root}/{container_id}/merged"

    async def unmount(self, container_id: str) -> None:
        self.faults.check("unmount", container_id)
        if self.refs[container_id] <= 0:
            raise errors.SystemError(f"rootfs of container {container_id} is not mounted")
        self.refs[container_id] -= 1
        if not self.refs[container_id]:
            del self.refs[container_id]

    async def remove(self, container_id: str) -> None:
        self.faults.check("remove", container_id)
        self.refs.pop(container_id, None)
        self.layers.pop(container_id, None)

    async def cleanup(self, keep: set[str], known: set[str]) -> None:
        for container_id in set(self.refs) - keep:
            del self.refs[container_id]
        for container_id in set(self.layers) - known:
            del self.layers[container_id]

    def upper_dir(self, container_id: str) -> Path | None:
        return None

    def mounted(self, container_id: str) -> bool:
        return self.refs[container_id] > 0

    async def changes(self, container_id: str) -> list[dict[str, object]]:
        if container_id not in self.layers:
            raise errors.SystemError(f"layer of container {container_id} does not exist")
        return []  # (no files)

    async def export(self, container_id: str) -> AsyncGenerator[bytes, None]:
        await self.mount(container_id)  # (for the while, as the overlay driver's)
        try:
            yield bytes(1024)  # (an empty tar: its two zero blocks)
        finally:
            await self.unmount(container_id)

    async def size(self, container_id: str) -> int:
        return 0  # (no files)
