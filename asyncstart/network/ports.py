"""Published ports: a userland TCP and UDP proxy on anyio from a host address to the
container's.

dockerd's ``docker-proxy``, in-process: one listener (TCP) or socket (UDP) per binding,
started with the container and closed with it. A port already in use fails the start with
dockerd's error; port 0 (``-P``, or a binding without a host port) takes one from the kernel's
ephemeral range (``net.ipv4.ip_local_port_range``, dockerd's too). UDP: each client address
gets a socket of its own towards the container, dropped after 90 s without traffic (as
docker-proxy's UDP timeout).
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import structlog

from .. import errors

__all__ = ["PortProxy"]

log = structlog.get_logger("asyncstart.network.ports")

#: Seconds a UDP client may be silent before its way to the container is dropped.
_UDP_IDLE = 90.0


@dataclass(slots=True)
class _Published:
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    closed: anyio.Event = field(default_factory=anyio.Event)


async def _pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()


class PortProxy:
    """Listeners of every running container's published ports, in the daemon's task group."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._tg = task_group
        self._published: dict[str, list[_Published]] = {}

    async def publish(
        self, container_id: str, name: str, address: str, bindings: dict[str, Any]
    ) -> dict[str, list[dict[str, str]]]:
        """Listen for each binding; return dockerd's ``NetworkSettings.Ports``."""
        ports: dict[str, list[dict[str, str]]] = {}
        for spec in bindings:
            if spec.partition("/")[2] not in ("", "tcp", "udp"):
                raise errors.InvalidParameter(f"unsupported protocol for port {spec}")
        published = self._published.setdefault(container_id, [])
        try:
            for spec, hosts in sorted(bindings.items()):
                port_text, _, proto = spec.partition("/")
                proto = proto or "tcp"
                for host in hosts or [{}]:
                    host_ip = host.get("HostIp") or "0.0.0.0"
                    host_port = int(host.get("HostPort") or 0)
                    try:
                        if proto == "tcp":
                            listener: Any = await anyio.create_tcp_listener(
                                local_host=host_ip, local_port=host_port, reuse_port=False
                            )
                        else:
                            listener = await anyio.create_udp_socket(
                                local_host=host_ip, local_port=host_port
                            )
                    except OSError as exc:
                        detail = (
                            f"Bind for {host_ip}:{host_port} failed: port is already allocated"
                            if exc.errno == errno.EADDRINUSE
                            else f"Error starting userland proxy: listen {proto}4 "
                            f"{host_ip}:{host_port}: bind: {exc.strerror}"
                        )
                        raise errors.SystemError(
                            f"driver failed programming external connectivity on endpoint "
                            f"{name.lstrip('/')} ({container_id}): {detail}"
                        ) from None
                    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
                    entry = _Published()
                    published.append(entry)
                    serve = self._serve if proto == "tcp" else self._serve_udp
                    self._tg.start_soon(serve, listener, address, int(port_text), entry)
                    ports.setdefault(f"{port_text}/{proto}", []).append(
                        {"HostIp": host_ip, "HostPort": str(bound)}
                    )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.unpublish(container_id)
            raise
        return ports

    async def _serve(
        self, listener: anyio.abc.Listener[Any], address: str, port: int, entry: _Published
    ) -> None:
        async def forward(client: anyio.abc.ByteStream) -> None:
            async with client:
                try:
                    upstream = await anyio.connect_tcp(address, port)
                except OSError:
                    return
                async with upstream, anyio.create_task_group() as tg:
                    tg.start_soon(_pipe, client, upstream)
                    tg.start_soon(_pipe, upstream, client)

        try:
            with entry.scope:
                async with listener:
                    await listener.serve(forward)
        finally:
            entry.closed.set()

    async def _serve_udp(
        self, socket: anyio.abc.UDPSocket, address: str, port: int, entry: _Published
    ) -> None:
        """Datagrams from each client go out on its own socket to the container; the
        container's answers come back to that client."""
        peers: dict[tuple[str, int], anyio.abc.ConnectedUDPSocket] = {}

        async def answer(client: tuple[str, int], upstream: anyio.abc.ConnectedUDPSocket) -> None:
            try:
                while True:
                    with anyio.move_on_after(_UDP_IDLE) as idle:
                        data = await upstream.receive()
                    if idle.cancelled_caught:
                        return
                    await socket.sendto(data, *client)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            finally:
                peers.pop(client, None)
                await upstream.aclose()

        try:
            with entry.scope:
                async with socket, anyio.create_task_group() as tg:
                    async for data, client in socket:
                        upstream = peers.get(client)
                        if upstream is None:
                            upstream = await anyio.create_connected_udp_socket(address, port)
                            peers[client] = upstream
                            tg.start_soon(answer, client, upstream)
                        with contextlib.suppress(
                            OSError, anyio.BrokenResourceError, anyio.ClosedResourceError
                        ):
                            await upstream.send(data)
        finally:
            entry.closed.set()

    async def unpublish(self, container_id: str) -> None:
        """Close the container's listeners (and wait: the ports are free when this returns)."""
        for entry in self._published.pop(container_id, []):
            entry.scope.cancel()
            await entry.closed.wait()
