"""The names containers on user-defined networks know each other by, and the embedded DNS
server (dockerd's, at 127.0.0.11) that answers them inside each such container.

One table for the daemon: per network, each container's address and names (its name, its
aliases — a compose service's name is one — and its short ID). A container asks only about
the networks it is on: a name is answered with its addresses there, ``<name>.<network>`` too;
other names are forwarded to the upstream servers. Each container gets its own UDP socket,
bound to 127.0.0.11:53 inside its namespace (a socket stays in the namespace it was made in)
and served by a task of the daemon, so nothing needs a firewall rule or a process of its own.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .. import errors
from .._log import get_logger
from .dns import serve
from .files import EMBEDDED_DNS, host_resolv_conf, upstreams
from .netlink import socket_in

__all__ = ["Resolver"]

log = get_logger("asyncstart.network.resolver")

_PORT = 53


@dataclass(frozen=True, slots=True)
class _Entry:
    network: str
    address: str
    names: tuple[str, ...]


class Resolver:
    """The daemon's name table and its per-container DNS servers (see the module docstring)."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        #: network ID -> container ID -> entry
        self._table: dict[str, dict[str, _Entry]] = {}
        #: container ID -> the scope its server runs in
        self._served: dict[str, anyio.CancelScope] = {}

    # -- the table --------------------------------------------------------------------------

    def register(
        self, container_id: str, network_id: str, network: str, address: str, names: Sequence[str]
    ) -> None:
        entry = _Entry(network, address, tuple(name.lower() for name in names))
        self._table.setdefault(network_id, {})[container_id] = entry

    def unregister(self, container_id: str, network_id: str | None = None) -> None:
        for key, entries in list(self._table.items()):
            if network_id in (None, key):
                entries.pop(container_id, None)
                if not entries:
                    del self._table[key]

    def lookup(self, container_id: str, name: str) -> list[str]:
        """The addresses ``name`` has on the networks ``container_id`` is on."""
        name = name.lower().rstrip(".")
        found: list[str] = []
        for entries in self._table.values():
            if container_id not in entries:
                continue
            for entry in entries.values():
                if name in entry.names or any(
                    name == f"{own}.{entry.network.lower()}" for own in entry.names
                ):
                    found.append(entry.address)
        return list(dict.fromkeys(found))

    def reverse(self, container_id: str, address: str) -> list[str]:
        """``<name>.<network>`` of the container with ``address`` on a shared network."""
        for entries in self._table.values():
            if container_id not in entries:
                continue
            for entry in entries.values():
                if entry.address == address and entry.names:
                    return [f"{entry.names[0]}.{entry.network}"]
        return []

    # -- the servers ------------------------------------------------------------------------

    async def attach(
        self,
        container_id: str,
        settings: Mapping[str, Any],
        dns: Sequence[str] = (),
        *,
        forward: bool = True,
    ) -> None:
        """Register the names of a running container's endpoints that have some (those on
        user-defined networks: ``DNSNames``) and serve it, once; forwarding to ``dns`` (its
        ``HostConfig.Dns``), else to the host's nameservers — unless not ``forward`` (a
        container on internal networks only: no name from outside, as dockerd). On failure,
        nothing stays."""
        named = {
            name: endpoint
            for name, endpoint in settings.get("Networks", {}).items()
            if endpoint.get("DNSNames") and endpoint.get("IPAddress")
        }
        if not named:
            return
        for name, endpoint in named.items():
            self.register(
                container_id, endpoint["NetworkID"], name, endpoint["IPAddress"],
                endpoint["DNSNames"],
            )  # fmt: skip
        try:
            host = await anyio.to_thread.run_sync(host_resolv_conf)
            servers = upstreams(host, dns) if forward else []
            await self.serve(container_id, Path(settings["SandboxKey"]), servers)
        except BaseException as exc:
            self.stop(container_id)
            if isinstance(exc, OSError):
                raise errors.SystemError(f"failed to start the embedded DNS server: {exc}") from exc
            raise

    def serving(self, container_id: str) -> bool:
        return container_id in self._served

    async def serve(self, container_id: str, sandbox: Path, upstreams: Sequence[str]) -> None:
        """Answer ``container_id``'s queries at 127.0.0.11:53 in its namespace (once)."""
        if container_id in self._served:
            return

        def bound() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.setblocking(False)
                # A server of the container's own that binds every address with
                # SO_REUSEADDR (dnsmasq...) still gets port 53.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((EMBEDDED_DNS, _PORT))
            except BaseException:
                sock.close()
                raise
            return sock

        sock = await socket_in(sandbox, bound)
        servers = [(host, _PORT) for host in upstreams if _is_address(host)]
        scope = anyio.CancelScope()
        self._served[container_id] = scope

        async def run() -> None:
            with scope:
                await serve(
                    sock,
                    lambda name: self.lookup(container_id, name),
                    lambda address: self.reverse(container_id, address),
                    servers,
                )

        self._task_group.start_soon(run)
        log.debug("dns.started", container_id=container_id, upstreams=servers)

    def stop(self, container_id: str) -> None:
        """Stop serving ``container_id`` and forget its names."""
        scope = self._served.pop(container_id, None)
        if scope is not None:
            scope.cancel()
        self.unregister(container_id)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
