"""Bridge networking with pyroute2: a bridge of asyncstart's own, a namespace per container
with a veth whose container end is born inside it, and addresses from a persisted IPAM.

Modes: ``bridge`` (the default), ``none`` (a namespace with loopback only) and ``host`` (no
namespace). Teardown only deletes the namespace: the kernel drops the veth with it (deleting
veths one by one holds the kernel's netlink lock ~30 ms each).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Any

import anyio
import structlog

from .. import errors
from .firewall import Firewall, nft_installed
from .netlink import create_netns, delete_netns, netlink

__all__ = ["DEFAULT_BRIDGE", "DEFAULT_SUBNET", "BridgeNetwork", "Ipam"]

log = structlog.get_logger("asyncstart.network")

#: Chosen not to collide with docker0/podman0 or the usual private ranges of a host.
DEFAULT_BRIDGE = "asyncstart0"
DEFAULT_SUBNET = "10.213.0.0/24"
#: The kernel's table of local and broadcast addresses (not routes elsewhere).
_LOCAL_TABLE = 255


class Ipam:
    """Addresses of one subnet, handed out per container and kept in a file across restarts."""

    def __init__(self, path: Path, subnet: str, gateway: str = "") -> None:
        self.path = path
        try:
            self.subnet = ipaddress.IPv4Network(subnet, strict=False)
            self.gateway = gateway or str(next(self.subnet.hosts()))
            inside = ipaddress.IPv4Address(self.gateway) in self.subnet
        except (ValueError, StopIteration) as exc:
            raise errors.InvalidParameter(f"invalid bridge network {subnet!r}: {exc}") from None
        if not inside:
            raise errors.InvalidParameter(f"gateway {self.gateway} is not in {self.subnet}")
        try:
            self._leases: dict[str, str] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            self._leases = {}
        self._last = ""

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as file:
            json.dump(self._leases, file)
        os.replace(tmp, self.path)

    def allocate(self, container_id: str) -> str:
        """The next free address after the last one handed out (in rotation, as dockerd: an
        address just released may still have its old veth and MAC on the bridge)."""
        if container_id in self._leases:
            return self._leases[container_id]
        taken = {self.gateway, *self._leases.values()}
        hosts = [str(h) for h in self.subnet.hosts()]
        start = hosts.index(self._last) + 1 if self._last in hosts else 0
        for address in hosts[start:] + hosts[:start]:
            if address not in taken:
                self._leases[container_id] = address
                self._last = address
                self._save()
                return address
        raise errors.SystemError(f"no available IPv4 addresses on network {self.subnet}")

    def release(self, container_id: str) -> None:
        if self._leases.pop(container_id, None) is not None:
            self._save()

    def leases(self) -> dict[str, str]:
        return dict(self._leases)

    def keep_only(self, container_ids: set[str]) -> None:
        """After a daemon restart: free what belongs to containers no longer running."""
        stale = set(self._leases) - container_ids
        for container_id in stale:
            del self._leases[container_id]
        if stale:
            self._save()


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
    ) -> None:
        self.bridge = bridge
        self.ipam = Ipam(state, subnet, gateway)
        self.firewall = Firewall(bridge, str(self.ipam.subnet))
        self.netns_dir = netns_dir
        self._bridge_index: int | None = None
        self._bridge_lock = anyio.Lock()

    def sandbox(self, container_id: str) -> Path:
        return self.netns_dir / container_id

    # -- asyncio side (run through netlink()) -----------------------------------------------

    async def _ensure_bridge(self, ipr: Any) -> int:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            found = (await ipr.link("get", ifname=self.bridge))[0]
        except NetlinkError as exc:
            if exc.code != 19:  # ENODEV: not there yet
                raise
        else:
            return await self._check_bridge(ipr, found)
        await self._check_routes(ipr, None)
        gateway = ipaddress.IPv4Address(self.ipam.gateway)
        try:
            await ipr.link("add", ifname=self.bridge, kind="bridge", address=_mac(str(gateway)))
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: made meanwhile by someone else
                raise
        index = int((await ipr.link("get", ifname=self.bridge))[0]["index"])
        with contextlib.suppress(NetlinkError):  # EEXIST: already has it
            await ipr.addr(
                "add", index=index, address=str(gateway), prefixlen=self.ipam.subnet.prefixlen
            )
        await ipr.link("set", index=index, state="up")
        log.info("network.bridge_created", bridge=self.bridge, subnet=str(self.ipam.subnet))
        return index

    async def _check_bridge(self, ipr: Any, link: Any) -> int:
        """A bridge that is there already is used only if it is a bridge with this network's
        gateway address (it is given it if it has none), and no other link routes the subnet:
        otherwise the host would not reach the containers, and their traffic would follow the
        host's default route out of the machine."""
        index = int(link["index"])
        kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        if kind != "bridge":
            raise errors.SystemError(
                f"{self.bridge} exists and is not a bridge ({kind or 'no kind'}): refusing to "
                f"use it; name another with --bridge"
            )
        wanted = f"{self.ipam.gateway}/{self.ipam.subnet.prefixlen}"
        addresses = [
            f"{entry.get('address')}/{entry['prefixlen']}"
            async for entry in await ipr.addr("dump", index=index, family=socket.AF_INET)
            if entry["index"] == index
        ]
        if addresses and wanted not in addresses:
            raise errors.SystemError(
                f"bridge {self.bridge} has IPv4 address {', '.join(addresses)}, not the "
                f"configured {wanted}: refusing to use it (the host would not route its "
                f"containers' subnet to it); remove the bridge, or start with "
                f"--bip {addresses[0]}"
            )
        await self._check_routes(ipr, index)
        if not addresses:
            await ipr.addr(
                "add", index=index, address=self.ipam.gateway, prefixlen=self.ipam.subnet.prefixlen
            )
        await ipr.link("set", index=index, state="up")
        return index

    async def _check_routes(self, ipr: Any, bridge: int | None) -> None:
        """Refuse a subnet the host already routes otherwise: through another link, a
        blackhole, several paths — in any routing table (a VPN's own, too)."""
        async for route in await ipr.route("dump", family=socket.AF_INET):
            dst, length, oif = route.get("dst"), route["dst_len"], route.get("oif")
            if route.get("table") == _LOCAL_TABLE or dst is None or length == 0:
                continue
            if bridge is not None and oif == bridge:
                continue
            routed = ipaddress.IPv4Network(f"{dst}/{length}", strict=False)
            if routed.overlaps(self.ipam.subnet):
                raise errors.SystemError(
                    f"subnet {self.ipam.subnet} of bridge {self.bridge} overlaps {routed}, "
                    f"which the host routes elsewhere: choose another with --bip"
                )

    async def _configure(
        self, fd: int, path: Path, address: str | None, host_if: str, handed: list[bool]
    ) -> None:
        from pyroute2 import AsyncIPRoute

        inside = AsyncIPRoute(fileno=fd, groups=0)
        handed[0] = True
        try:
            lo_up = inside.link("set", index=1, state="up")  # lo is ifindex 1 in a new netns
            if address is None:
                await lo_up
                return
            host = AsyncIPRoute(groups=0)
            try:
                # Two sockets, two namespaces: lo comes up while the veth pair is made (both
                # finish before anything is closed; the first failure is raised).
                results = await asyncio.gather(
                    lo_up,
                    host.link(
                        "add",
                        ifname=host_if,
                        kind="veth",
                        master=self._bridge_index,
                        state="up",
                        peer={"ifname": "eth0", "net_ns_fd": str(path), "address": _mac(address)},
                    ),
                    return_exceptions=True,
                )
            finally:
                host.close()
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            eth0 = int((await inside.link("get", ifname="eth0"))[0]["index"])
            prefix = self.ipam.subnet.prefixlen
            await inside.addr("add", index=eth0, address=address, prefixlen=prefix)
            await inside.link("set", index=eth0, state="up")
            await inside.route("add", dst="0.0.0.0/0", gateway=self.ipam.gateway)
        finally:
            inside.close()

    async def _bridge_once(self) -> int:
        from pyroute2 import AsyncIPRoute

        ipr = AsyncIPRoute(groups=0)
        try:
            return await self._ensure_bridge(ipr)
        finally:
            ipr.close()

    # -- the driver interface -------------------------------------------------------------

    async def setup(self, container_id: str, network_mode: str) -> dict[str, Any]:
        if network_mode == "host":
            return {"SandboxKey": "", "Networks": {"host": {}}}
        if network_mode not in ("default", "bridge", "none", ""):
            raise errors.InvalidParameter(f"network {network_mode} not found")
        if network_mode != "none" and self._bridge_index is None:
            async with self._bridge_lock:  # the first starts must not race to create it
                if self._bridge_index is None:
                    index = await netlink(self._bridge_once)
                    await self._program_firewall()
                    self._bridge_index = index
        path = self.sandbox(container_id)
        fd = await create_netns(path)
        handed = [False]  # whether pyroute2 took the socket (it then closes it)
        address = None
        try:
            if network_mode != "none":
                address = self.ipam.allocate(container_id)
            # A fresh host-side name each start: the last run's veth may still be on its way
            # out (the kernel drops it with the namespace, a little later).
            host_if = "veth" + secrets.token_hex(4)[:7]
            await netlink(lambda: self._configure(fd, path, address, host_if, handed))
        except BaseException as exc:
            # Nothing stays: the socket (it would keep the namespace alive), the namespace
            # (and the veth in it), the address.
            with anyio.CancelScope(shield=True):
                if not handed[0]:
                    os.close(fd)
                await delete_netns(path)
                self.ipam.release(container_id)
            self._bridge_index = None  # re-read: the bridge may have been removed under us
            if isinstance(exc, errors.DockerError) or not isinstance(exc, Exception):
                raise
            raise errors.SystemError(f"failed to set up container networking: {exc}") from exc
        if address is None:
            return {"SandboxKey": str(path), "Networks": {"none": {}}}
        endpoint = {
            "IPAddress": address,
            "IPPrefixLen": self.ipam.subnet.prefixlen,
            "Gateway": self.ipam.gateway,
            "MacAddress": _mac(address),
        }
        return {"SandboxKey": str(path), **endpoint, "Networks": {"bridge": endpoint}}

    async def _program_firewall(self) -> None:
        """The network's rules, once per daemon (found again and made anew after a restart)."""
        if not nft_installed():
            log.warning(
                "network.no_firewall",
                bridge=self.bridge,
                reason="nft not installed: containers reach the bridge only (no NAT)",
            )
            return
        await self.firewall.ensure()

    async def teardown(self, container_id: str) -> None:
        await delete_netns(self.sandbox(container_id))
        self.ipam.release(container_id)

    async def cleanup(self, keep: set[str]) -> None:
        """After a crash: namespaces and addresses of containers that no longer run go."""
        self.ipam.keep_only(keep)
        if self.netns_dir.is_dir():
            for path in list(self.netns_dir.iterdir()):
                if path.name not in keep:
                    await delete_netns(path)
