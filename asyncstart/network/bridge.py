"""Bridge networking with pyroute2: a bridge per network (the default one, ``asyncstart0``,
and one per user-defined network), a namespace per container with a veth per network it is on,
whose container end (``eth0``, ``eth1``...) is born inside it, and addresses from persisted
leases.

Modes: a list of bridge networks (the default route through the first by name that is not
internal, as libnetwork orders endpoints: ``base.default_route``; moved when a connect or a
disconnect changes that choice), ``none`` (a
namespace with loopback only) and ``host`` (no namespace). Teardown only deletes the namespace:
the kernel drops the veths with it (deleting veths one by one holds the kernel's netlink lock
~30 ms each). Connecting a running container adds a veth to its namespace; disconnecting
deletes it (and its peer).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio

from .. import errors
from .._log import get_logger
from ..ids import random_hex
from .base import Attachment, Bridge, default_route
from .firewall import Firewall, nft_installed
from .ipam import Leases
from .netlink import (
    configure_netns,
    create_netns,
    delete_netns,
    netlink,
    netlink_socket,
    netns_socket,
)

__all__ = ["DEFAULT_BRIDGE", "DEFAULT_SUBNET", "BridgeNetwork", "Leases"]


T = TypeVar("T")

log = get_logger("asyncstart.network")

#: Chosen not to collide with docker0/podman0 or the usual private ranges of a host.
DEFAULT_BRIDGE = "asyncstart0"
DEFAULT_SUBNET = "10.213.0.0/24"
#: The kernel's table of local and broadcast addresses (not routes elsewhere).
_LOCAL_TABLE = 255


def _mac(address: str) -> str:
    """dockerd's: 02:42 and the IPv4 address."""
    return "02:42:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


class BridgeNetwork:
    """The network driver for ``runtime="runc"`` (see the module docstring)."""

    def __init__(
        self,
        *,
        state: Path,
        netns_dir: Path,
        bridge: str = DEFAULT_BRIDGE,
        subnet: str = DEFAULT_SUBNET,
        gateway: str = "",
        legacy_state: Path | None = None,
    ) -> None:
        try:
            network = ipaddress.IPv4Network(subnet, strict=False)
            gateway = gateway or str(next(network.hosts()))
            inside = ipaddress.IPv4Address(gateway) in network
        except (ValueError, StopIteration) as exc:
            raise errors.InvalidParameter(f"invalid bridge network {subnet!r}: {exc}") from None
        if not inside:
            raise errors.InvalidParameter(f"gateway {gateway} is not in {network}")
        #: The default bridge network's (dockerd's ``bridge``).
        self.default = Bridge(bridge, str(network), gateway)
        self.leases = Leases(state, legacy_bridge=bridge, legacy_path=legacy_state)
        self.netns_dir = netns_dir
        #: Bridges made or checked by this daemon: name -> interface index.
        self._indexes: dict[str, int] = {}
        self._bridge_lock = anyio.Lock()

    def sandbox(self, container_id: str) -> Path:
        return self.netns_dir / container_id

    # -- asyncio side (run through netlink()) -----------------------------------------------

    async def _ensure_bridge(self, ipr: Any, bridge: Bridge) -> tuple[int, bool]:
        """The bridge's index, and whether it was made now."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            found = (await ipr.link("get", ifname=bridge.name))[0]
        except NetlinkError as exc:
            if exc.code != 19:  # ENODEV: not there yet
                raise
        else:
            return await self._check_bridge(ipr, found, bridge), False
        await self._check_routes(ipr, None, bridge)
        gateway = ipaddress.IPv4Address(bridge.gateway)
        try:
            await ipr.link("add", ifname=bridge.name, kind="bridge", address=_mac(str(gateway)))
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: made meanwhile by someone else
                raise
        index = int((await ipr.link("get", ifname=bridge.name))[0]["index"])
        with contextlib.suppress(NetlinkError):  # EEXIST: already has it
            await ipr.addr("add", index=index, address=str(gateway), prefixlen=bridge.prefixlen)
        await ipr.link("set", index=index, state="up")
        log.info("network.bridge_created", bridge=bridge.name, subnet=bridge.subnet)
        return index, True

    async def _check_bridge(self, ipr: Any, link: Any, bridge: Bridge) -> int:
        """A bridge that is there already is used only if it is a bridge with this network's
        gateway address (it is given it if it has none), and no other link routes the subnet:
        otherwise the host would not reach the containers, and their traffic would follow the
        host's default route out of the machine."""
        index = int(link["index"])
        kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        if kind != "bridge":
            raise errors.SystemError(
                f"{bridge.name} exists and is not a bridge ({kind or 'no kind'}): refusing to "
                f"use it; name another with --bridge"
            )
        wanted = f"{bridge.gateway}/{bridge.prefixlen}"
        addresses = [
            f"{entry.get('address')}/{entry['prefixlen']}"
            async for entry in await ipr.addr("dump", index=index, family=socket.AF_INET)
            if entry["index"] == index
        ]
        if addresses and wanted not in addresses:
            raise errors.SystemError(
                f"bridge {bridge.name} has IPv4 address {', '.join(addresses)}, not the "
                f"configured {wanted}: refusing to use it (the host would not route its "
                f"containers' subnet to it); remove the bridge, or start with "
                f"--bip {addresses[0]}"
            )
        await self._check_routes(ipr, index, bridge)
        if not addresses:
            await ipr.addr("add", index=index, address=bridge.gateway, prefixlen=bridge.prefixlen)
        await ipr.link("set", index=index, state="up")
        return index

    async def _check_routes(self, ipr: Any, index: int | None, bridge: Bridge) -> None:
        """Refuse a subnet the host already routes otherwise: through another link, a
        blackhole, several paths — in any routing table (a VPN's own, too)."""
        subnet = ipaddress.IPv4Network(bridge.subnet)
        for routed, oif in await _routes(ipr):
            if index is not None and oif == index:
                continue
            if routed.overlaps(subnet):
                raise errors.SystemError(
                    f"subnet {subnet} of bridge {bridge.name} overlaps {routed}, which the "
                    f"host routes elsewhere: choose another with --bip"
                )

    async def _bridge_once(self, bridge: Bridge) -> tuple[int, bool]:
        from pyroute2 import AsyncIPRoute

        ipr = AsyncIPRoute(groups=0)
        try:
            return await self._ensure_bridge(ipr, bridge)
        finally:
            ipr.close()

    # -- the driver interface -------------------------------------------------------------

    async def _ensure(self, bridge: Bridge) -> bool:
        """The bridge and its firewall, once per daemon (found again, and their rules made
        anew, after a restart); whether the bridge was made now."""
        if bridge.name in self._indexes:
            return False
        async with self._bridge_lock:  # the first starts must not race to create it
            if bridge.name in self._indexes:
                return False
            index, made = await netlink(lambda: self._bridge_once(bridge))
            await self._program_firewall(bridge)
            self._indexes[bridge.name] = index
            return made

    async def setup(
        self, container_id: str, network_mode: str, attachments: Sequence[Attachment]
    ) -> dict[str, Any]:
        if network_mode == "host":
            return {"SandboxKey": "", "Networks": {"host": {}}}
        if network_mode == "none":
            attachments = ()
        path = self.sandbox(container_id)
        plan: list[_Veth] = []
        creating = False
        try:
            masters = []
            for attachment in attachments:
                await self._ensure(attachment.bridge)
                masters.append(self._indexes[attachment.bridge.name])  # (read before any await)
            for number, attachment in enumerate(attachments):
                address = self.leases.allocate(attachment.bridge, container_id, attachment.ipv4)
                plan.append(_Veth(attachment.bridge, address, f"eth{number}", _host_if()))
            gateway = default_route((a.network, a.bridge.endpoint_gateway) for a in attachments)
            creating = True  # (a cancellation may come once the namespace is made)
            await create_netns(path, partial(_configure, plan, masters, gateway, True))
        except BaseException as exc:
            # Nothing stays: the namespace (and the veths in it), the addresses.
            with anyio.CancelScope(shield=True):
                if creating:
                    await delete_netns(path)
                self.leases.release(container_id)
            self._indexes.clear()  # re-read: a bridge may have been removed under us
            _raise(exc, "failed to set up container networking")
        settings: dict[str, Any] = {"SandboxKey": str(path), "Networks": {}}
        if not attachments:
            settings["Networks"]["none"] = {}
        for attachment, veth in zip(attachments, plan, strict=True):
            endpoint = _endpoint(veth)
            settings["Networks"][attachment.network] = endpoint
            if attachment.network == "bridge":  # dockerd's top-level fields: that one's
                settings |= {k: endpoint[k] for k in _TOP_LEVEL}
        return settings

    async def connect(
        self, container_id: str, sandbox: str, attachment: Attachment, *, route: str | None
    ) -> dict[str, Any]:
        try:
            await self._ensure(attachment.bridge)
            master = self._indexes[attachment.bridge.name]  # (read before any await)
            address = self.leases.allocate(attachment.bridge, container_id, attachment.ipv4)
        except BaseException as exc:
            _raise(exc, "failed to connect the container to the network")
        try:
            names = await self._inside(sandbox, _link_names)
            number = next(n for n in range(len(names) + 1) if f"eth{n}" not in names)
            veth = _Veth(attachment.bridge, address, f"eth{number}", _host_if())
            configure = partial(_configure, [veth], [master], route, False)
            await configure_netns(Path(sandbox), configure)
            return _endpoint(veth)
        except BaseException as exc:
            self.leases.release(container_id, attachment.bridge.name)
            _raise(exc, "failed to connect the container to the network")

    async def disconnect(
        self,
        container_id: str,
        sandbox: str,
        attachment: Attachment,
        address: str,
        *,
        route: str | None,
    ) -> None:
        async def unplug(inner: Any) -> None:
            async for entry in await inner.addr("dump", family=socket.AF_INET):
                if entry.get("address") == address:
                    await inner.link("del", index=entry["index"])  # (and its peer)
                    return

        if not (sandbox and address):
            self.leases.release(container_id, attachment.bridge.name)
            return
        # A running container keeps the address until it stops: its published ports' proxy and
        # DNAT may still name it, and must never reach another container.
        try:
            await self._inside(sandbox, unplug)
            if route is not None:  # (the one there was may have gone with the interface)
                await configure_netns(Path(sandbox), partial(_configure, [], [], route, False))
        except BaseException as exc:
            _raise(exc, "failed to disconnect the container from the network")

    @staticmethod
    async def _inside(sandbox: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call`` with a pyroute2 socket inside the namespace file ``sandbox``."""
        from pyroute2 import AsyncIPRoute

        fd = await netns_socket(Path(sandbox))
        handed = False

        async def run() -> T:
            nonlocal handed
            inner = AsyncIPRoute(fileno=fd, groups=0)
            handed = True
            try:
                return await call(inner)
            finally:
                inner.close()

        try:
            return await netlink(run)
        finally:
            if not handed:
                os.close(fd)

    async def _program_firewall(self, bridge: Bridge) -> None:
        if not nft_installed():
            log.warning(
                "network.no_firewall",
                bridge=bridge.name,
                reason="nft not installed: containers reach the bridge only (no NAT)",
            )
            return
        await Firewall(bridge.name, bridge.subnet, internal=bridge.internal).ensure()

    async def create_network(self, bridge: Bridge) -> bool:
        try:
            return await self._ensure(bridge)
        except BaseException as exc:
            _raise(exc, f"failed to create network bridge {bridge.name}")

    async def remove_network(self, bridge: Bridge, *, keep_link: bool = False) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        async def delete() -> None:
            from pyroute2 import AsyncIPRoute

            ipr = AsyncIPRoute(groups=0)
            try:
                with contextlib.suppress(NetlinkError):  # ENODEV: gone already
                    await ipr.link("del", ifname=bridge.name)
            finally:
                ipr.close()

        self._indexes.pop(bridge.name, None)
        try:
            if not keep_link:
                await netlink(delete)
            if nft_installed():
                await Firewall(bridge.name, bridge.subnet, internal=bridge.internal).remove()
        except Exception as exc:
            _raise(exc, f"failed to remove network bridge {bridge.name}")
        self.leases.forget(bridge.name)

    async def routed_subnets(self) -> list[ipaddress.IPv4Network]:
        async def dump() -> list[ipaddress.IPv4Network]:
            from pyroute2 import AsyncIPRoute

            ipr = AsyncIPRoute(groups=0)
            try:
                return [routed for routed, _ in await _routes(ipr)]
            finally:
                ipr.close()

        return await netlink(dump)

    async def teardown(self, container_id: str) -> None:
        await delete_netns(self.sandbox(container_id))
        self.leases.release(container_id)

    async def cleanup(self, keep: set[str]) -> None:
        """After a crash: namespaces and addresses of containers that no longer run go."""
        self.leases.keep_only(keep)
        if self.netns_dir.is_dir():
            for path in list(self.netns_dir.iterdir()):
                if path.name not in keep:
                    await delete_netns(path)


@dataclass(frozen=True, slots=True)
class _Veth:
    """One interface to make: on ``bridge``, with ``address``, named ``ifname`` inside and
    ``host_if`` on the host."""

    bridge: Bridge
    address: str
    ifname: str
    host_if: str


#: The endpoint fields dockerd also shows at the top of ``NetworkSettings`` (the default
#: bridge's).
_TOP_LEVEL = ("IPAddress", "IPPrefixLen", "Gateway", "MacAddress", "EndpointID")


def _endpoint(veth: _Veth) -> dict[str, Any]:
    return {
        "EndpointID": random_hex(32),
        "Gateway": veth.bridge.endpoint_gateway,
        "IPAddress": veth.address,
        "IPPrefixLen": veth.bridge.prefixlen,
        "MacAddress": _mac(veth.address),
    }


def _host_if() -> str:
    """A fresh host-side name each time: a last run's veth may still be on its way out (the
    kernel drops it with the namespace, a little later)."""
    return "veth" + random_hex(4)[:7]


async def _link_names(inner: Any) -> set[str]:
    return {str(link.get("ifname")) async for link in await inner.link("dump")}


def _configure(
    plan: Sequence[_Veth],
    masters: Sequence[int],
    gateway: str | None,
    loopback: bool,
    inside: socket.socket,
    netns: int,
) -> None:
    """In a worker thread (the one that made the namespace, at a start): the veths, made from
    the host's side (their inner ends born in ``netns``), then inside the addresses, the links
    up, and loopback up and the default route if asked: one write per side, and one to learn
    the inner ends' indexes. (A start and ``docker network connect`` alike.)"""
    from . import rtnl  # (pyroute2: imported by the first start, not by ``import asyncstart``)

    if plan:
        with rtnl.Batch(netlink_socket()) as host:  # (this thread is in the daemon's namespace)
            veths = [
                rtnl.add_veth(veth.host_if, master, veth.ifname, netns, _mac(veth.address))
                for veth, master in zip(plan, masters, strict=True)
            ]
            host.send(veths, "add veth")
    batch = rtnl.Batch(inside)
    links = batch.send([rtnl.get_link(veth.ifname) for veth in plan], "find veth") if plan else []
    messages = [rtnl.up(rtnl.LOOPBACK)] if loopback else []
    for veth, reply in zip(plan, links, strict=True):
        index = rtnl.link_index(reply)
        messages += [rtnl.add_address(index, veth.address, veth.bridge.prefixlen), rtnl.up(index)]
    if gateway is not None:
        messages.append(rtnl.default_route(gateway))
    batch.send(messages, "configure the container's interfaces")


async def _routes(ipr: Any) -> list[tuple[ipaddress.IPv4Network, int | None]]:
    """Every IPv4 route of every table but the kernel's local one, and its link."""
    found = []
    async for route in await ipr.route("dump", family=socket.AF_INET):
        dst, length = route.get("dst"), route["dst_len"]
        if route.get("table") == _LOCAL_TABLE or dst is None or length == 0:
            continue
        found.append((ipaddress.IPv4Network(f"{dst}/{length}", strict=False), route.get("oif")))
    return found


def _raise(exc: BaseException, what: str) -> NoReturn:
    """Raise a driver failure as the engine's error (dockerd's own, and cancellation, as
    they are)."""
    if isinstance(exc, errors.DockerError) or not isinstance(exc, Exception):
        raise exc
    raise errors.SystemError(f"{what}: {exc}") from exc
