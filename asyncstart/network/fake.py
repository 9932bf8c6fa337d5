"""An in-memory network driver for tests and the engine-overhead benchmark."""

from __future__ import annotations

import ipaddress
from typing import Any

from .. import errors
from ..faults import FaultPlan

__all__ = ["FakeNetwork"]


class FakeNetwork:
    """Hands out namespaces and addresses from a subnet; ``setup``/``teardown`` take faults."""

    def __init__(self, subnet: str = "10.213.0.0/16") -> None:
        self.subnet = ipaddress.IPv4Network(subnet)
        self.gateway = next(self.subnet.hosts())
        self.faults = FaultPlan()
        #: container ID -> (namespace path, address)
        self.sandboxes: dict[str, tuple[str, str]] = {}
        hosts = self.subnet.hosts()
        next(hosts)  # the gateway's
        self._free = (str(h) for h in hosts)
        self._released: list[str] = []

    def _allocate(self) -> str:
        if self._released:
            return self._released.pop()
        try:
            return next(self._free)
        except StopIteration:
            raise errors.SystemError(
                f"no available IPv4 addresses on network {self.subnet}"
            ) from None

    async def setup(self, container_id: str, network_mode: str) -> dict[str, Any]:
        self.faults.check("setup", container_id)
        if container_id in self.sandboxes:
            raise errors.SystemError(f"sandbox for container {container_id} already exists")
        if network_mode in ("none", "host"):
            sandbox = "" if network_mode == "host" else f"/fake/netns/{container_id[:12]}"
            self.sandboxes[container_id] = (sandbox, "")
            return {"SandboxKey": sandbox, "IPAddress": "", "Networks": {network_mode: {}}}
        address = self._allocate()
        sandbox = f"/fake/netns/{container_id[:12]}"
        self.sandboxes[container_id] = (sandbox, address)
        endpoint = {
            "IPAddress": address,
            "IPPrefixLen": self.subnet.prefixlen,
            "Gateway": str(self.gateway),
        }
        return {"SandboxKey": sandbox, **endpoint, "Networks": {"bridge": endpoint}}

    async def teardown(self, container_id: str) -> None:
        self.faults.check("teardown", container_id)
        sandbox = self.sandboxes.pop(container_id, None)
        if sandbox is not None and sandbox[1]:
            self._released.append(sandbox[1])

    async def cleanup(self, keep: set[str]) -> None:
        for container_id in set(self.sandboxes) - keep:
            await self.teardown(container_id)

    def addresses(self) -> set[str]:
        return {address for _, address in self.sandboxes.values() if address}
