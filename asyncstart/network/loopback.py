"""Each container in a new network namespace with only loopback, which runc creates and brings
up itself. The real bridge/host/container/none modes come with the pyroute2 driver."""

from __future__ import annotations

from typing import Any

__all__ = ["LoopbackNetwork"]


class LoopbackNetwork:
    async def setup(self, container_id: str, network_mode: str) -> dict[str, Any]:
        if network_mode == "host":
            return {"SandboxKey": "", "Networks": {"host": {}}}
        return {"SandboxKey": "", "Networks": {"none": {}}}

    async def teardown(self, container_id: str) -> None:
        return None

    async def cleanup(self, keep: set[str]) -> None:
        return None
