"""Address leases on bridge networks (libnetwork's default IPAM, IPv4): handed out in rotation,
kept in one file across daemon restarts (in memory only for the fake driver).

The file lives in the exec root (``/run`` on most hosts: memory), not the data root: a lease
matters only while its container runs, and no container outlives a reboot. So changing it
costs no disk inode per start; an older daemon's file in the data root is taken in once.

Addresses are reckoned as integers: an allocation looks at the addresses after the last one
handed out until one is free, without building the subnet's list of hosts.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
from pathlib import Path

from .. import errors
from ..store import write_atomic
from .base import Bridge, subnet_network

__all__ = ["Leases"]


@functools.lru_cache(maxsize=64)
def _host_range(cidr: str) -> tuple[int, int]:
    """The subnet's usable addresses, first and last, as ``hosts()`` gives them: all of a /31
    or /32, else all but the network and broadcast addresses. (Worked out once a subnet.)"""
    subnet = subnet_network(cidr)
    first, last = int(subnet.network_address), int(subnet.broadcast_address)
    return (first, last) if subnet.prefixlen >= 31 else (first + 1, last - 1)


def _dotted(address: int) -> str:
    return f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}"


class Leases:
    """The addresses handed out on every bridge network (``{bridge: {container ID: address}}``),
    saved to ``path`` on each change (``None``: kept in memory)."""

    def __init__(
        self,
        path: Path | None,
        *,
        legacy_bridge: str = "asyncstart0",
        legacy_path: Path | None = None,
    ) -> None:
        """``legacy_path``: where an older daemon kept the file; taken in (when ``path`` has
        none yet) and removed."""
        self.path = path
        stored: object = {}
        for source in (path, legacy_path):
            if source is None:
                continue
            try:
                stored = json.loads(source.read_text())
            except (FileNotFoundError, ValueError):
                continue
            break
        if not isinstance(stored, dict):
            stored = {}
        if stored and all(isinstance(value, str) for value in stored.values()):
            stored = {legacy_bridge: stored}  # one bridge's, as an older daemon kept them
        self._leases: dict[str, dict[str, str]] = {
            name: dict(leases) for name, leases in stored.items() if isinstance(leases, dict)
        }
        #: Per bridge, the last address handed out (addresses go round).
        self._last: dict[str, int] = {}
        #: Per bridge, the addresses leased (what ``_leases`` holds, as sets).
        self._addresses: dict[str, set[str]] = {}
        if legacy_path is not None and legacy_path.exists():
            self._save()
            legacy_path.unlink()

    def _save(self) -> None:
        # Renamed into place whole, but not fsynced: what the file must survive is a daemon
        # that dies (the page cache keeps it), not a power loss — after which no container
        # runs and a reopened daemon frees every lease anyway (keep_only).
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self._leases).encode(), fsync=False)

    def allocate(self, bridge: Bridge, container_id: str, wanted: str = "") -> str:
        """``wanted`` if free, else the next free address after the last one handed out (in
        rotation, as dockerd: an address just released may still have its old veth and MAC on
        the bridge)."""
        leases = self._leases.setdefault(bridge.name, {})
        if container_id in leases and (not wanted or leases[container_id] == wanted):
            return leases[container_id]
        subnet = subnet_network(bridge.subnet)
        own = leases.get(container_id)
        taken = self._taken(bridge.name)
        if wanted:
            parsed = ipaddress.IPv4Address(wanted)
            if parsed not in subnet:  # (a network made anew since)
                raise errors.InvalidParameter(
                    f"no configured subnet or ip-range contain the IP address {wanted}"
                )
            if wanted == bridge.gateway or (wanted in taken and wanted != own):
                raise errors.Forbidden(f"Address already in use: {wanted}")
            return self._lease(bridge.name, container_id, int(parsed))
        first, last = _host_range(bridge.subnet)
        previous = self._last.get(bridge.name, last)
        start = previous + 1 if first <= previous < last else first
        for candidate in itertools.chain(range(start, last + 1), range(first, start)):
            address = _dotted(candidate)
            if address != bridge.gateway and (address not in taken or address == own):
                return self._lease(bridge.name, container_id, candidate)
        raise errors.SystemError(f"no available IPv4 addresses on network {subnet}")

    def _taken(self, bridge: str) -> set[str]:
        """The addresses leased on ``bridge`` (kept beside the leases, not rebuilt per call)."""
        taken = self._addresses.get(bridge)
        if taken is None:
            taken = self._addresses[bridge] = set(self._leases.get(bridge, {}).values())
        return taken

    def _lease(self, bridge: str, container_id: str, number: int) -> str:
        """Lease the address ``number`` to the container; the address, dotted."""
        address = _dotted(number)
        leases = self._leases[bridge]
        taken = self._taken(bridge)
        if container_id in leases:
            taken.discard(leases[container_id])
        leases[container_id] = address
        taken.add(address)
        self._last[bridge] = number
        self._save()
        return address

    def release(self, container_id: str, bridge: str | None = None) -> None:
        """Give back the container's address on ``bridge``, or on every bridge."""
        changed = False
        for name, leases in self._leases.items():
            if bridge in (None, name) and (address := leases.pop(container_id, None)):
                self._taken(name).discard(address)
                changed = True
        if changed:
            self._save()

    def leases(self, bridge: str) -> dict[str, str]:
        return dict(self._leases.get(bridge, {}))

    def bridges(self) -> list[str]:
        """The bridges with leases (or had: a bridge's entry stays until it is forgotten)."""
        return list(self._leases)

    def addresses(self) -> set[str]:
        """Every address leased, on any bridge."""
        return {address for leases in self._leases.values() for address in leases.values()}

    def forget(self, bridge: str) -> None:
        """A removed network's leases go with it."""
        self._addresses.pop(bridge, None)
        if self._leases.pop(bridge, None) is not None:
            self._save()

    def keep_only(self, container_ids: set[str]) -> None:
        """After a daemon restart: free what belongs to containers no longer running."""
        changed = False
        for leases in self._leases.values():
            for container_id in set(leases) - container_ids:
                del leases[container_id]
                changed = True
        self._addresses.clear()  # (rebuilt from the leases when next needed)
        if changed:
            self._save()
