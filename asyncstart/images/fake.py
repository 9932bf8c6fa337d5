"""An in-memory mount driver for tests and the engine-overhead benchmark."""

from __future__ import annotations

import collections

from .. import errors
from ..faults import FaultPlan

__all__ = ["FakeMounter"]


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

    def mounted(self, container_id: str) -> bool:
        return self.refs[container_id] > 0
