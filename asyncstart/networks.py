"""The networks a daemon has, as ``docker network ls`` and ``inspect`` show them: dockerd's
predefined ``bridge``, ``host`` and ``none`` (user-defined networks are not built yet: their
routes answer that plainly). Pure: views of the daemon's settings and its containers.

A network's ID is derived from the data root's engine ID and its name, so it is stable across
restarts without a file of its own; its creation time is the engine ID's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .filters import Filters, normalise
from .views import ContainerSnapshot, format_time

__all__ = [
    "NETWORK_FILTERS",
    "NetworkSpec",
    "find_network",
    "network_filters",
    "network_matches",
    "network_view",
    "predefined_networks",
]

NETWORK_FILTERS = ("driver", "id", "label", "name", "scope", "type", "dangling")
_TYPES = ("custom", "builtin")


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """One network: what ``inspect`` shows of it besides its containers."""

    name: str
    id: str
    created: float
    driver: str
    subnet: str = ""
    gateway: str = ""
    options: Mapping[str, str] = field(default_factory=dict)


def predefined_networks(
    engine_id: str, created: float, *, bridge: str, subnet: str, gateway: str
) -> list[NetworkSpec]:
    """dockerd's three: the default bridge (this daemon's bridge and subnet), host, none."""

    def ident(name: str) -> str:
        return hashlib.sha256(f"{engine_id}:network:{name}".encode()).hexdigest()

    bridge_options = {
        "com.docker.network.bridge.default_bridge": "true",
        "com.docker.network.bridge.enable_icc": "true",
        "com.docker.network.bridge.enable_ip_masquerade": "true",
        "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
        "com.docker.network.bridge.name": bridge,
        "com.docker.network.driver.mtu": "1500",
    }
    return [
        NetworkSpec("bridge", ident("bridge"), created, "bridge", subnet, gateway, bridge_options),
        NetworkSpec("host", ident("host"), created, "host"),
        NetworkSpec("none", ident("none"), created, "null"),
    ]


def find_network(networks: Iterable[NetworkSpec], reference: str) -> NetworkSpec:
    """By exact name, full ID or unique ID prefix, as dockerd; its 404 otherwise."""
    candidates = list(networks)
    for spec in candidates:
        if reference in (spec.name, spec.id):
            return spec
    matching = [spec for spec in candidates if reference and spec.id.startswith(reference)]
    if len(matching) == 1:
        return matching[0]
    raise errors.NotFound(f"network {reference} not found")


def network_filters(filters: Mapping[str, Any] | None) -> Filters:
    """``docker network ls --filter``: dockerd's keys, and its 400 for a bad ``type``."""
    wanted = normalise(filters, NETWORK_FILTERS)
    for kind in wanted.get("type", ()):
        if kind not in _TYPES:
            raise errors.InvalidParameter(f"invalid filter: 'type'='{kind}'")
    return wanted


def network_matches(spec: NetworkSpec, wanted: Filters) -> bool:
    """Whether a network passes every filter (the predefined ones are ``builtin``, have no
    labels, and are never dangling)."""

    def passes(key: str, value: str) -> bool:
        if key == "driver":
            return spec.driver == value
        if key == "id":
            return spec.id.startswith(value)
        if key == "name":
            return value in spec.name
        if key == "scope":
            return value == "local"
        if key == "type":
            return value == "builtin"
        if key == "dangling":
            return value in ("false", "0")
        return False  # label: they have none

    return all(any(passes(key, value) for value in values) for key, values in wanted.items())


def network_view(
    spec: NetworkSpec, containers: Iterable[ContainerSnapshot] | None = None
) -> dict[str, Any]:
    """dockerd's network JSON; ``containers`` (inspect) fills ``Containers`` with those whose
    running process is on it (a list leaves it empty, as dockerd's)."""
    attached: dict[str, Any] = {}
    for snapshot in containers or ():
        if not snapshot.process_exists:
            continue
        endpoint = snapshot.record.network_settings.get("Networks", {}).get(spec.name)
        if endpoint is None:
            continue
        address = endpoint.get("IPAddress", "")
        prefix = endpoint.get("IPPrefixLen", 0)
        attached[snapshot.record.id] = {
            "Name": snapshot.record.name.lstrip("/"),
            "EndpointID": "",
            "MacAddress": endpoint.get("MacAddress", ""),
            "IPv4Address": f"{address}/{prefix}" if address else "",
            "IPv6Address": "",
        }
    config = [{"Subnet": spec.subnet, "Gateway": spec.gateway}] if spec.subnet else []
    return {
        "Name": spec.name,
        "Id": spec.id,
        "Created": format_time(spec.created),
        "Scope": "local",
        "Driver": spec.driver,
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": attached,
        "Options": dict(spec.options),
        "Labels": {},
    }
