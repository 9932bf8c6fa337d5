"""Each container in a new network namespace with only loopback, which runc creates and brings
up itself. The real bridge/host/container/none modes and networks come with the pyroute2
driver: this one has no networks of its own (creating one is refused)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from .. import errors
from .base import Attachment, Bridge

__all__ = ["LoopbackNetwork"]


class LoopbackNetwork:
    async def setup(
        self, container_id: str, network_mode: str, attachments: Sequence[Attachment]
    ) -> dict[str, Any]:
        if network_mode == "host":
            return {"SandboxKey": "", "Networks": {"host": {}}}
        return {"SandboxKey": "", "Networks": {"none": {}}}

    async def connect(
        self, container_id: str, sandbox: str, attachment: Attachment, *, route: str | None
    ) -> dict[str, Any]:
        raise _unsupported()

    async def disconnect(
        self,
        container_id: str,
        sandbox: str,
        attachment: Attachment,
        address: str,
        *,
        route: str | None,
    ) -> None:
        return None

    async def teardown(self, container_id: str) -> None:
        return None

    async def cleanup(self, keep: set[str]) -> None:
        return None

    async def create_network(self, bridge: Bridge) -> bool:
        raise _unsupported()

    async def remove_network(self, bridge: Bridge, *, keep_link: bool = False) -> None:
        return None

    async def routed_subnets(self) -> list[ipaddress.IPv4Network]:
        return []


def _unsupported() -> errors.DockerError:
    return errors.InvalidParameter(
        "this daemon runs containers with loopback networking only: bridge networks need "
        "--network bridge"
    )
