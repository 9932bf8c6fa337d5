"""An in-memory network driver for tests and the engine-overhead benchmark."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from .. import errors
from ..faults import FaultPlan
from ..ids import random_hex
from .base import Attachment, Bridge, default_route
from .ipam import Leases

__all__ = ["FakeNetwork"]


class FakeNetwork:
    """Hands out namespaces and addresses per network; ``setup``/``teardown`` take faults.

    Every bridge network is taken as it is given (no pool of its own): addresses come from the
    attachment's subnet, the next free one in rotation, by the real driver's leases (kept in
    memory).
    """

    def __init__(self) -> None:
        self.faults = FaultPlan()
        #: container ID -> namespace path ("" in host mode)
        self.sandboxes: dict[str, str] = {}
        self._leases = Leases(None)
        #: The bridges made (``create_network``) and not removed.
        self.bridges: set[str] = set()
        #: What ``routed_subnets`` answers (a test may claim a host route).
        self.routed: list[ipaddress.IPv4Network] = []
        #: container ID -> the gateway of its default route (None: it has none).
        self.routes: dict[str, str | None] = {}

    def _endpoint(self, attachment: Attachment, address: str) -> dict[str, Any]:
        return {
            "EndpointID": random_hex(32),
            "Gateway": attachment.bridge.endpoint_gateway,
            "IPAddress": address,
            "IPPrefixLen": attachment.bridge.prefixlen,
            "MacAddress": "",
        }

    async def setup(
        self, container_id: str, network_mode: str, attachments: Sequence[Attachment]
    ) -> dict[str, Any]:
        self.faults.check("setup", container_id)
        if container_id in self.sandboxes:
            raise errors.SystemError(f"sandbox for container {container_id} already exists")
        if network_mode == "host":
            self.sandboxes[container_id] = ""
            return {"SandboxKey": "", "Networks": {"host": {}}}
        sandbox = f"/fake/netns/{container_id[:12]}"
        settings: dict[str, Any] = {"SandboxKey": sandbox, "Networks": {}}
        if network_mode == "none" or not attachments:
            settings["Networks"]["none"] = {}
            self.sandboxes[container_id] = sandbox
            return settings
        try:
            for attachment in attachments:
                address = self._leases.allocate(attachment.bridge, container_id, attachment.ipv4)
                endpoint = self._endpoint(attachment, address)
                settings["Networks"][attachment.network] = endpoint
                if attachment.network == "bridge":
                    settings |= {k: endpoint[k] for k in ("IPAddress", "IPPrefixLen", "Gateway")}
        except BaseException:
            self._release(container_id)
            raise
        self.sandboxes[container_id] = sandbox
        routes = ((a.network, a.bridge.endpoint_gateway) for a in attachments)
        self.routes[container_id] = default_route(routes)
        return settings

    async def connect(
        self, container_id: str, sandbox: str, attachment: Attachment, *, route: str | None
    ) -> dict[str, Any]:
        self.faults.check("connect", container_id)
        address = self._leases.allocate(attachment.bridge, container_id, attachment.ipv4)
        self.routes[container_id] = route
        return self._endpoint(attachment, address)

    async def disconnect(
        self,
        container_id: str,
        sandbox: str,
        attachment: Attachment,
        address: str,
        *,
        route: str | None,
    ) -> None:
        self._leases.release(container_id, attachment.bridge.name)
        if sandbox and address:
            self.routes[container_id] = route

    def _release(self, container_id: str) -> None:
        self._leases.release(container_id)

    async def teardown(self, container_id: str) -> None:
        self.faults.check("teardown", container_id)
        self.sandboxes.pop(container_id, None)
        self.routes.pop(container_id, None)
        self._release(container_id)

    async def cleanup(self, keep: set[str]) -> None:
        for container_id in set(self.sandboxes) - keep:
            await self.teardown(container_id)

    async def create_network(self, bridge: Bridge) -> bool:
        self.faults.check("create_network", bridge.name)
        made = bridge.name not in self.bridges
        self.bridges.add(bridge.name)
        return made

    async def remove_network(self, bridge: Bridge, *, keep_link: bool = False) -> None:
        self.bridges.discard(bridge.name)
        self._leases.forget(bridge.name)

    async def routed_subnets(self) -> list[ipaddress.IPv4Network]:
        return list(self.routed)

    @property
    def leases(self) -> dict[str, dict[str, str]]:
        """bridge name -> {container ID: address}, for tests to look at."""
        return {name: self._leases.leases(name) for name in self._leases.bridges()}

    def addresses(self) -> set[str]:
        return self._leases.addresses()
