"""The network driver interface (dockerd's ``initializeNetworking`` / ``releaseNetwork``, and
libnetwork's network create/delete and endpoint join/leave)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Attachment", "Bridge", "NetworkDriver", "default_route", "subnet_network"]


@functools.lru_cache(maxsize=64)
def subnet_network(subnet: str) -> ipaddress.IPv4Network:
    """The network a bridge's ``subnet`` names (parsed once: it is asked at every start)."""
    return ipaddress.IPv4Network(subnet)


@dataclass(frozen=True, slots=True)
class Bridge:
    """A bridge network as the driver makes it: its Linux bridge, subnet and gateway."""

    name: str
    subnet: str
    gateway: str
    #: ``docker network create --internal``: nothing is forwarded past the bridge.
    internal: bool = False

    @property
    def prefixlen(self) -> int:
        return subnet_network(self.subnet).prefixlen

    @property
    def endpoint_gateway(self) -> str:
        """An endpoint's ``Gateway``: the bridge's, none on an internal network (dockerd's
        bridge driver gives it none there)."""
        return "" if self.internal else self.gateway


def default_route(networks: Iterable[tuple[str, str]]) -> str | None:
    """The gateway of a container's default route among its networks (name, endpoint
    ``Gateway``, "" on an internal one): that of the first by name that has one, as
    libnetwork orders a sandbox's endpoints (internal ones last, then by network name); None
    if none has one."""
    return min(((name, gateway) for name, gateway in networks if gateway), default=("", None))[1]


@dataclass(frozen=True, slots=True)
class Attachment:
    """One network a container joins (an endpoint): the network and what the client asked of
    the endpoint (``EndpointsConfig``)."""

    #: The network's name (the key of ``NetworkSettings.Networks``) and ID.
    network: str
    network_id: str
    bridge: Bridge
    #: ``IPAMConfig.IPv4Address``: the address wanted ("" for the next free one).
    ipv4: str = ""


class NetworkDriver(Protocol):
    async def setup(
        self, container_id: str, network_mode: str, attachments: Sequence[Attachment]
    ) -> dict[str, Any]:
        """Give the container its network: a namespace (none for ``host``) with one interface
        per attachment (``eth0`` the first), the default route through :func:`default_route`'s
        choice. Return
        dockerd's ``NetworkSettings`` with an endpoint per attachment in ``Networks``.

        ``NetworkSettings["SandboxKey"]`` is the namespace path the OCI spec joins ("" for host).
        """
        ...

    async def connect(
        self, container_id: str, sandbox: str, attachment: Attachment, *, route: str | None
    ) -> dict[str, Any]:
        """Join a running container's namespace to one more network; return the endpoint.
        ``route``: the gateway of its default route from now on (:func:`default_route`)."""
        ...

    async def disconnect(
        self,
        container_id: str,
        sandbox: str,
        attachment: Attachment,
        address: str,
        *,
        route: str | None,
    ) -> None:
        """Take the container's address on one network back, and its interface there if it
        runs (``sandbox`` and ``address``: its namespace and the endpoint's address); its
        default route goes through ``route`` from now on, if given."""
        ...

    async def teardown(self, container_id: str) -> None:
        """Release everything :meth:`setup` and :meth:`connect` took (namespace, links,
        addresses)."""
        ...

    async def cleanup(self, keep: set[str]) -> None:
        """After a daemon restart: release what belongs to containers not in ``keep``."""
        ...

    async def create_network(self, bridge: Bridge) -> bool:
        """Make a network's bridge and firewall rules (or check and take those there); whether
        the bridge was made now."""
        ...

    async def remove_network(self, bridge: Bridge, *, keep_link: bool = False) -> None:
        """Remove a network's rules, leases and bridge (``keep_link``: a bridge of the host's
        that the network was given by name stays)."""
        ...

    async def routed_subnets(self) -> list[ipaddress.IPv4Network]:
        """The subnets the host routes (a new network's subnet must overlap none)."""
        ...
