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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from .. import errors
from .._log import get_logger

__all__ = ["PortProxy"]

log = get_logger("asyncstart.network.ports")

#: Seconds a UDP client's way to the container lasts without traffic either way.
_UDP_IDLE = 90.0
#: UDP clients served at once per published port.
_UDP_PEERS = 1024
#: Seconds before a failed accept (no fds left) is tried again.
_RETRY = 0.1


@dataclass(slots=True)
class _Published:
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    closed: anyio.Event = field(default_factory=anyio.Event)


async def _pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()


def _host_ports(text: str) -> list[int]:
    """A binding's ``HostPort``: none (0: the kernel picks), a port, or dockerd's range
    ``low-high`` (the first free one is taken); dockerd's 400 for anything else."""
    if not text:
        return [0]
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        first, last = -1, -1
    if not 0 < first <= last <= 65535:
        raise errors.InvalidParameter(f"invalid hostPort: {text}")
    return list(range(first, last + 1))


class PortProxy:
    """Listeners of every running container's published ports, in the daemon's task group."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._tg = task_group
        self._published: dict[str, list[_Published]] = {}

    async def publish(
        self, container_id: str, name: str, address: str, bindings: dict[str, Any]
    ) -> dict[str, list[dict[str, str]]]:
        """Listen for each binding; return dockerd's ``NetworkSettings.Ports`` of those that
        are. ``bindings`` may be such ``Ports`` themselves (a reopened daemon listens again on
        the same addresses and ports; an entry of None publishes nothing)."""
        ports: dict[str, list[dict[str, str]]] = {}
        for spec in bindings:
            if spec.partition("/")[2] not in ("", "tcp", "udp"):
                raise errors.InvalidParameter(f"unsupported protocol for port {spec}")
        published = self._published.setdefault(container_id, [])
        try:
            for spec, hosts in sorted(bindings.items()):
                port_text, _, proto = spec.partition("/")
                proto = proto or "tcp"
                for host in hosts or ():  # (None: exposed, not published)
                    host_ip = host.get("HostIp") or ""
                    candidates = _host_ports(str(host.get("HostPort") or ""))
                    # No address: every IPv4 one, and (TCP) every IPv6 one on the same port,
                    # as dockerd's two bindings (``localhost`` may well be ::1).
                    for listen_ip in [host_ip] if host_ip else ["0.0.0.0", "::"]:
                        if listen_ip == "::" and proto != "tcp":
                            continue
                        # (The IPv6 one is best effort: no IPv6, or its twin of an ephemeral
                        # port taken there.)
                        listener = await self._listen(
                            proto, listen_ip, candidates, f"{name.lstrip('/')} ({container_id})",
                            optional=listen_ip == "::", ephemeral=not host.get("HostPort"),
                        )  # fmt: skip
                        if listener is None:
                            continue
                        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
                        candidates = [bound]  # the IPv6 one takes the same port
                        entry = _Published()
                        published.append(entry)
                        serve = self._serve if proto == "tcp" else self._serve_udp
                        self._tg.start_soon(serve, listener, address, int(port_text), entry)
                        ports.setdefault(f"{port_text}/{proto}", []).append(
                            {"HostIp": listen_ip, "HostPort": str(bound)}
                        )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.unpublish(container_id)
            raise
        return ports

    @staticmethod
    async def _listen(
        proto: str,
        host_ip: str,
        host_ports: Sequence[int],
        endpoint: str,
        *,
        optional: bool = False,
        ephemeral: bool = False,
    ) -> Any:
        """A TCP listener or UDP socket on the host's side, on the first of ``host_ports``
        that is free; dockerd's error if none is. ``optional``: None where the host cannot
        listen there (no IPv6)."""
        failure: OSError | None = None
        for host_port in host_ports:
            try:
                if proto == "tcp":
                    return await anyio.create_tcp_listener(
                        local_host=host_ip, local_port=host_port, reuse_port=False
                    )
                return await anyio.create_udp_socket(local_host=host_ip, local_port=host_port)
            except OSError as exc:
                failure = exc
                if exc.errno != errno.EADDRINUSE:
                    break  # (taken: the next one of a range)
        assert failure is not None
        unavailable = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
        if optional and (failure.errno in unavailable or ephemeral):
            return None
        family = "6" if ":" in host_ip else "4"
        detail = (
            f"Bind for {host_ip}:{host_port} failed: port is already allocated"
            if failure.errno == errno.EADDRINUSE
            else f"Error starting userland proxy: listen {proto}{family} "
            f"{host_ip}:{host_port}: bind: {failure.strerror}"
        )
        raise errors.SystemError(
            f"driver failed programming external connectivity on endpoint {endpoint}: {detail}"
        )

    async def _serve(
        self, listener: anyio.abc.Listener[Any], address: str, port: int, entry: _Published
    ) -> None:
        """Accept and forward until the container's ports close. A failed accept (no fds
        left) or connect costs that client only: never the daemon."""

        async def forward(client: anyio.abc.ByteStream) -> None:
            async with client:
                try:
                    upstream = await anyio.connect_tcp(address, port)
                except OSError:
                    return
                async with upstream, anyio.create_task_group() as tg:
                    tg.start_soon(_pipe, client, upstream)
                    tg.start_soon(_pipe, upstream, client)

        async def accept(one: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
            while True:
                try:
                    client = await one.accept()
                except OSError as exc:
                    log.warning("ports.accept_failed", port=port, error=str(exc))
                    await anyio.sleep(_RETRY)
                    continue
                tg.start_soon(forward, client)

        try:
            with entry.scope:
                async with listener, anyio.create_task_group() as tg:
                    for one in getattr(listener, "listeners", [listener]):
                        tg.start_soon(accept, one, tg)
        finally:
            entry.closed.set()

    async def _serve_udp(
        self, socket: anyio.abc.UDPSocket, address: str, port: int, entry: _Published
    ) -> None:
        """Datagrams from each client go out on a socket of its own to the container; the
        container's answers come back to that client. A client's way is dropped after
        ``_UDP_IDLE`` seconds without traffic either way; at most ``_UDP_PEERS`` clients at
        once (a datagram from one more is dropped, as one that finds no free fd)."""
        peers: dict[tuple[str, int], anyio.abc.ConnectedUDPSocket] = {}
        last: dict[tuple[str, int], float] = {}

        async def answer(client: tuple[str, int], upstream: anyio.abc.ConnectedUDPSocket) -> None:
            try:
                while True:
                    with anyio.move_on_after(_UDP_IDLE):
                        data = await upstream.receive()
                        last[client] = anyio.current_time()
                        await socket.sendto(data, *client)
                        continue
                    if anyio.current_time() - last.get(client, 0.0) >= _UDP_IDLE:
                        return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            finally:
                peers.pop(client, None)
                last.pop(client, None)
                await upstream.aclose()

        try:
            with entry.scope:
                async with socket, anyio.create_task_group() as tg:
                    async for data, client in socket:
                        upstream = peers.get(client)
                        if upstream is None:
                            if len(peers) >= _UDP_PEERS:
                                continue
                            try:
                                upstream = await anyio.create_connected_udp_socket(address, port)
                            except OSError as exc:
                                log.warning("ports.udp_peer_failed", port=port, error=str(exc))
                                continue
                            peers[client] = upstream
                            tg.start_soon(answer, client, upstream)
                        last[client] = anyio.current_time()
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
