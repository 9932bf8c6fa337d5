"""The networks a daemon has, as ``docker network ls`` and ``inspect`` show them: dockerd's
predefined ``bridge``, ``host`` and ``none``, and the user-defined bridge networks made with
``docker network create``. Pure, but for :class:`NetworkRegistry`, which keeps the
user-defined ones in one file of the data root.

A predefined network's ID is derived from the data root's engine ID and its name, so it is
stable across restarts without a file of its own; its creation time is the engine ID's. A
user-defined network gets a random ID, a bridge of its own (``as-<id[:12]>``: never one of
dockerd's ``br-*``, whose isolation rules are dockerd's) and, unless it names one, a subnet
from :data:`POOL` that neither the host nor another network routes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors
from ._log import get_logger
from .filters import Filters, has_label, normalise
from .ids import random_hex
from .network.base import Attachment, Bridge
from .network.firewall import valid_bridge_name
from .record import ContainerRecord
from .store import write_atomic
from .views import ContainerSnapshot, format_time

__all__ = [
    "NETWORK_FILTERS",
    "POOL",
    "NetworkRegistry",
    "NetworkSpec",
    "find_network",
    "network_filters",
    "network_matches",
    "network_view",
    "new_network",
    "predefined_networks",
]

log = get_logger("asyncstart.networks")

NETWORK_FILTERS = ("driver", "id", "label", "name", "scope", "type", "dangling")
_TYPES = ("custom", "builtin")
PREDEFINED = ("bridge", "host", "none")


def predefined(name: str) -> bool:
    """Whether ``name`` is a predefined network's, or ``default`` (the bridge)."""
    return name in (*PREDEFINED, "default")


#: Where user-defined networks take their subnets from, a /24 each: asyncstart's own range
#: (the default bridge has its first /24), clear of dockerd's 172.17+/16 and podman's 10.88/16.
POOL = ipaddress.IPv4Network("10.213.0.0/16")
POOL_PREFIX = 24
#: dockerd's rule for network names.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """One network: what ``inspect`` shows of it besides its containers, and its bridge."""

    name: str
    id: str
    created: float
    driver: str
    subnet: str = ""
    gateway: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The Linux bridge it is ("" for host and none).
    bridge: str = ""
    internal: bool = False
    attachable: bool = False
    #: The subnet came from the request (dockerd then allows static addresses on it), and
    #: its gateway too (inspect shows the config as it was asked).
    user_subnet: bool = False
    user_gateway: bool = False
    #: ``IPAM.Options`` was sent (empty: the only ones applied), shown as ``{}``, not null.
    ipam_options: bool = False
    #: The bridge was made for the network (not a host's bridge it was given by name): it is
    #: deleted with the network.
    own_bridge: bool = True
    builtin: bool = False

    @property
    def user_defined(self) -> bool:
        return not self.builtin


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
        NetworkSpec(
            "bridge", ident("bridge"), created, "bridge", subnet, gateway, bridge_options,
            bridge=bridge, builtin=True,
        ),
        NetworkSpec("host", ident("host"), created, "host", builtin=True),
        NetworkSpec("none", ident("none"), created, "null", builtin=True),
    ]  # fmt: skip


def new_network(
    body: Mapping[str, Any],
    existing: Sequence[NetworkSpec],
    routed: Sequence[ipaddress.IPv4Network],
    *,
    now: float,
) -> NetworkSpec:
    """``POST /networks/create``'s body checked as dockerd does, with a subnet from the pool
    when it names none (avoiding the host's routes and the other networks')."""
    name = body.get("Name")
    if isinstance(name, str) and predefined(name):
        raise errors.Forbidden(f"operation is not permitted on predefined {name} network ")
    subnet, gateway = _ipam(body.get("IPAM") or {}, existing, routed)
    if not isinstance(name, str) or not name.strip():
        raise errors.InvalidParameter("invalid name: name is empty")
    if not _NAME.fullmatch(name):
        raise errors.InvalidParameter(
            f"invalid name: {name}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    if any(spec.name == name for spec in existing):
        raise errors.Conflict(f"network with name {name} already exists")
    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise errors.NotFound(f'plugin "{driver}" not found')
    if body.get("EnableIPv4") is False:
        raise errors.InvalidParameter(
            "IPv4-less networks are not supported by asyncstart: IPv4 must be enabled"
        )
    if body.get("EnableIPv6"):
        raise errors.InvalidParameter(
            "IPv6 networks are not supported by asyncstart: create the network without --ipv6"
        )
    for flag in ("Ingress", "ConfigOnly"):
        if body.get(flag):
            raise errors.InvalidParameter(f"{flag} networks are not supported by asyncstart")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise errors.InvalidParameter("ConfigFrom networks are not supported by asyncstart")
    options = _strings(body.get("Options"), "Options")
    labels = _strings(body.get("Labels"), "Labels")
    unknown = sorted(set(options) - _BRIDGE_OPTIONS)
    if unknown:
        raise errors.InvalidParameter(
            f"unsupported bridge network option {unknown[0]}: asyncstart applies only "
            + ", ".join(sorted(_BRIDGE_OPTIONS))
        )
    network_id = _new_id({spec.id for spec in existing})
    bridge = options.get("com.docker.network.bridge.name") or f"as-{network_id[:12]}"
    if not valid_bridge_name(bridge) or any(spec.bridge == bridge for spec in existing):
        raise errors.InvalidParameter(f"invalid or already used bridge name {bridge!r}")
    configs = (body.get("IPAM") or {}).get("Config") or []
    return NetworkSpec(
        name=name,
        id=network_id,
        created=now,
        driver="bridge",
        subnet=str(subnet),
        gateway=str(gateway),
        options=options,
        labels=labels,
        bridge=bridge,
        internal=bool(body.get("Internal")),
        attachable=bool(body.get("Attachable")),
        user_subnet=bool(configs),
        user_gateway=bool(configs and configs[0].get("Gateway")),
        ipam_options=(body.get("IPAM") or {}).get("Options") is not None,
    )


#: The bridge driver's options that are applied here (the others are refused, not ignored).
_BRIDGE_OPTIONS = frozenset({"com.docker.network.bridge.name"})


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise errors.InvalidParameter(f"invalid {what}: expected an object of strings")
    return dict(value)


def _new_id(taken: set[str]) -> str:
    while True:
        candidate = random_hex(32)
        if candidate not in taken and not candidate[:12].isdigit():
            return candidate


def _ipam(
    ipam: Mapping[str, Any],
    existing: Sequence[NetworkSpec],
    routed: Sequence[ipaddress.IPv4Network],
) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
    """The network's subnet and gateway: the request's (checked), else the pool's next."""
    if ipam.get("Driver") not in (None, "", "default"):
        raise errors.NotFound(f'plugin "{ipam["Driver"]}" not found')
    if ipam.get("Options"):
        raise errors.InvalidParameter("IPAM options are not supported by asyncstart")
    configs = ipam.get("Config") or []
    if len(configs) > 1:
        raise errors.InvalidParameter(
            "asyncstart networks have one IPv4 subnet: give one IPAM config"
        )
    used = [ipaddress.IPv4Network(s.subnet) for s in existing if s.subnet]
    if not configs:
        for candidate in POOL.subnets(new_prefix=POOL_PREFIX):
            if not any(candidate.overlaps(other) for other in [*used, *routed]):
                return candidate, next(candidate.hosts())
        raise errors.InvalidParameter("all predefined address pools have been fully subnetted")
    config = configs[0]
    if not isinstance(config, Mapping):
        raise errors.InvalidParameter("invalid IPAM config: expected an object")
    for key in ("IPRange", "AuxiliaryAddresses"):
        if config.get(key):
            raise errors.InvalidParameter(f"IPAM {key} is not supported by asyncstart")
    text = str(config.get("Subnet") or "")
    try:
        subnet = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _invalid_config(f"invalid subnet {text}: invalid CIDR block notation") from None
    if str(subnet) != text:
        raise _invalid_config(f"invalid subnet {text}: it should be {subnet}")
    if not isinstance(subnet, ipaddress.IPv4Network) or subnet.prefixlen > 30:
        raise errors.InvalidParameter(
            f"invalid subnet {subnet}: asyncstart networks take IPv4 subnets of /30 or wider"
        )
    for other in existing:
        if other.subnet and subnet.overlaps(ipaddress.IPv4Network(other.subnet)):
            raise errors.Forbidden(
                "invalid pool request: Pool overlaps with other one on this address space"
            )
    for route in routed:
        if subnet.overlaps(route):
            raise errors.Forbidden(
                f"subnet {subnet} overlaps {route}, which the host routes elsewhere"
            )
    gateway_text = config.get("Gateway") or ""
    if not gateway_text:
        return subnet, next(subnet.hosts())
    try:
        gateway = ipaddress.IPv4Address(str(gateway_text))
    except ValueError:
        raise _invalid_config(f"invalid gateway {gateway_text}: invalid address") from None
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise _invalid_config(
            f"invalid gateway {gateway}: parent subnet {subnet} doesn't contain this address"
        )
    return subnet, gateway


def _invalid_config(message: str) -> errors.DockerError:
    return errors.InvalidParameter(f"invalid network config:\n{message}")


class NetworkRegistry:
    """The user-defined networks, kept in one JSON file (rewritten whole, atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._networks: dict[str, NetworkSpec] = {}
        try:
            stored = json.loads(path.read_bytes())
        except FileNotFoundError:
            stored = []
        except (OSError, ValueError) as exc:
            # Torn or garbled: kept aside for a person to look at, never silently emptied.
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            log.error("network.registry_unreadable", path=str(path), moved_to=str(aside),
                      error=str(exc))  # fmt: skip
            stored = []
        for item in stored if isinstance(stored, list) else []:
            try:
                spec = NetworkSpec(**item)
            except TypeError:
                continue
            self._networks[spec.id] = spec

    def __iter__(self) -> Any:
        return iter(sorted(self._networks.values(), key=lambda spec: spec.created))

    def add(self, spec: NetworkSpec) -> None:
        self._networks[spec.id] = spec
        self._save()

    def remove(self, network_id: str) -> None:
        if self._networks.pop(network_id, None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        items = [dataclasses.asdict(spec) for spec in self]
        write_atomic(self.path, json.dumps(items).encode())


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


def network_matches(spec: NetworkSpec, wanted: Filters, *, in_use: bool = False) -> bool:
    """Whether a network passes every filter (``in_use``: a container is on it; dangling
    networks are the user-defined ones with none)."""

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
            return value == ("builtin" if spec.builtin else "custom")
        if key == "dangling":
            dangling = spec.user_defined and not in_use
            return dangling == (value in ("true", "1"))
        if key == "label":
            return has_label(spec.labels, value)
        return False

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
            "EndpointID": endpoint.get("EndpointID", ""),
            "MacAddress": endpoint.get("MacAddress", ""),
            "IPv4Address": f"{address}/{prefix}" if address else "",
            "IPv6Address": "",
        }
    config: list[dict[str, str]] = []
    if spec.subnet:
        config.append({"Subnet": spec.subnet})
        if spec.user_gateway or not spec.user_subnet:
            config[0]["Gateway"] = spec.gateway
    return {
        "Name": spec.name,
        "Id": spec.id,
        "Created": format_time(spec.created),
        "Scope": "local",
        "Driver": spec.driver,
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": {} if spec.ipam_options else None,
            "Config": config,
        },
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": attached,
        "Options": dict(spec.options),
        "Labels": dict(spec.labels),
    }


# -- endpoints ------------------------------------------------------------------------------

#: What a client may set of an endpoint (``EndpointsConfig``): the rest is dockerd's to fill.
_ENDPOINT_KEYS = ("IPAMConfig", "Links", "Aliases", "MacAddress", "DriverOpts", "GwPriority")


def endpoint_config(spec: NetworkSpec | None, body: Any, *, key: str = "") -> dict[str, Any]:
    """One ``EndpointsConfig`` entry (create or connect) checked as dockerd does; what the
    record keeps of it, with the network's ID. ``spec`` None: a network that does not exist
    (yet: dockerd lets a create name one, and fails the start), named ``key``."""
    if body is not None and not isinstance(body, Mapping):
        raise errors.InvalidParameter("invalid endpoint config: expected an object")
    body = dict(body or {})
    ipam = body.get("IPAMConfig") or {}
    if not isinstance(ipam, Mapping):
        raise errors.InvalidParameter("invalid IPAMConfig: expected an object")
    ipv4 = str(ipam.get("IPv4Address") or "")
    aliases = body.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise errors.InvalidParameter("invalid Aliases: expected a list of strings")
    builtin = spec.builtin if spec is not None else predefined(key)
    if builtin and ipv4:
        raise _invalid_endpoint(
            "user specified IP address is supported on user defined networks only"
        )
    if builtin and aliases:
        raise _invalid_endpoint(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    if ipv4:
        try:
            address = ipaddress.IPv4Address(ipv4)
        except ValueError:
            raise _invalid_endpoint(f"invalid IPv4 address: {ipv4}") from None
        if spec is not None and not spec.user_subnet:
            raise _invalid_endpoint(
                "user specified IP address is supported only when connecting to networks "
                "with user configured subnets"
            )
        subnet = ipaddress.IPv4Network(spec.subnet) if spec is not None else None
        ends = (subnet.network_address, subnet.broadcast_address) if subnet else ()
        if subnet is not None and (address not in subnet or address in ends):
            raise _invalid_endpoint(
                f"no configured subnet or ip-range contain the IP address {ipv4}"
            )
    # What asyncstart does not do is refused, not ignored.
    if ipam.get("IPv6Address") or ipam.get("LinkLocalIPs"):
        raise errors.InvalidParameter("IPv6 and link-local addresses are not supported")
    if body.get("MacAddress"):
        raise errors.InvalidParameter("an endpoint's MacAddress is not supported by asyncstart")
    if body.get("DriverOpts"):
        raise errors.InvalidParameter("an endpoint's DriverOpts are not supported by asyncstart")
    if body.get("GwPriority"):
        raise errors.InvalidParameter(
            "an endpoint's GwPriority is not supported by asyncstart: the default route is "
            "through the first network by name that is not internal"
        )
    if body.get("Links"):
        raise errors.InvalidParameter(
            "links on a user-defined network are not supported by asyncstart: use its names"
        )
    return {
        "IPAMConfig": {"IPv4Address": ipv4} if ipv4 else None,
        "Links": None,
        "Aliases": list(dict.fromkeys(aliases)) or None,
        "NetworkID": spec.id if spec is not None else "",
    }


def _invalid_endpoint(message: str) -> errors.DockerError:
    return errors.InvalidParameter(f"invalid endpoint settings:\n{message}")


def dns_names(spec: NetworkSpec, record: ContainerRecord, config: Mapping[str, Any]) -> list[str]:
    """The names a container answers to on a network (dockerd's ``DNSNames``): on a
    user-defined network its name, its aliases, its short ID and its hostname; none on the
    others."""
    if not spec.user_defined:
        return []
    aliases = config.get("Aliases") or ()
    names = [record.name.lstrip("/"), *aliases, record.id[:12], record.config.hostname]
    return list(dict.fromkeys(name for name in names if name))


def refuse_connect(spec: NetworkSpec) -> None:
    """dockerd's 400s for joining ``host`` or ``none`` besides other networks."""
    if spec.driver == "host":
        raise errors.InvalidParameter(
            "cannot connect container to host network - container must be created in host "
            "network mode"
        )
    if spec.driver == "null":
        raise errors.InvalidParameter(NONE_AND_OTHERS)


def refuse_shared_namespace(mode: str) -> None:
    """dockerd's 400s for connecting a container that has no network namespace of its own."""
    if mode == "host" or mode.startswith("container:"):
        raise errors.InvalidParameter(
            "container sharing network namespace with another container or host cannot be "
            "connected to any other network"
        )
    if mode == "none":
        raise errors.InvalidParameter(NONE_AND_OTHERS)


NONE_AND_OTHERS = (
    "container cannot be connected to multiple networks with one of the networks in private "
    "(none) mode"
)


def bridge_of(spec: NetworkSpec) -> Bridge:
    """What the driver makes of a bridge network."""
    return Bridge(spec.bridge, spec.subnet, spec.gateway, spec.internal)


def attachment_of(spec: NetworkSpec, ipv4: str = "") -> Attachment:
    return Attachment(spec.name, spec.id, bridge_of(spec), ipv4)
