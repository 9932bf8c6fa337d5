"""The network driver interface (dockerd's ``initializeNetworking`` / ``releaseNetwork``)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["NetworkDriver"]


class NetworkDriver(Protocol):
    async def setup(self, container_id: str, network_mode: str) -> dict[str, Any]:
        """Give the container its network; return dockerd's ``NetworkSettings`` for inspect.

        ``NetworkSettings["SandboxKey"]`` is the namespace path the OCI spec joins ("" for host).
        """
        ...

    async def teardown(self, container_id: str) -> None:
        """Release everything :meth:`setup` took (namespace, links, address)."""
        ...

    async def cleanup(self, keep: set[str]) -> None:
        """After a daemon restart: release what belongs to containers not in ``keep``."""
        ...
