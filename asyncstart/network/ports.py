"""Published ports: a userland TCP proxy on anyio from a host address to the container's.

dockerd's ``docker-proxy``, in-process: one listener per binding, started with the container
and closed with it. A port already in use fails the start with dockerd's error.
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
            if spec.partition("/")[2] not in ("", "tcp"):
                raise errors.InvalidParameter(f"unsupported protocol for port {spec}")
        published = self._published.setdefault(container_id, [])
        try:
            for spec, hosts in sorted(bindings.items()):
                port_text = spec.partition("/")[0]
                for host in hosts or [{}]:
                    host_ip = host.get("HostIp") or "0.0.0.0"
                    host_port = int(host.get("HostPort") or 0)
                    try:
                        listener = await anyio.create_tcp_listener(
                            local_host=host_ip, local_port=host_port, reuse_port=False
                        )
                    except OSError as exc:
                        detail = (
                            f"Bind for {host_ip}:{host_port} failed: port is already allocated"
                            if exc.errno == errno.EADDRINUSE
                            else f"Error starting userland proxy: listen tcp4 "
                            f"{host_ip}:{host_port}: bind: {exc.strerror}"
                        )
                        raise errors.SystemError(
                            f"driver failed programming external connectivity on endpoint "
                            f"{name.lstrip('/')} ({container_id}): {detail}"
                        ) from None
                    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
                    entry = _Published()
                    published.append(entry)
                    self._tg.start_soon(self._serve, listener, address, int(port_text), entry)
                    ports.setdefault(f"{port_text}/tcp", []).append(
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

    async def unpublish(self, container_id: str) -> None:
        """Close the container's listeners (and wait: the ports are free when this returns)."""
        for entry in self._published.pop(container_id, []):
            entry.scope.cancel()
            await entry.closed.wait()
