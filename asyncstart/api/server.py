"""Listeners and connections: the Engine API served on unix sockets (and TCP only if asked).

``async with serve_api(daemon, ["unix:///run/asyncstart.sock"]) as server:`` serves until the
block ends; leaving it is a graceful shutdown — stop accepting, let requests in flight finish
(each then closes its connection), end idle connections and endless streams (events, logs
``follow``, waits, attach) at once.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.abc

from .. import errors
from .._log import get_logger
from ..daemon import Daemon
from .engine import EngineAPI
from .http import Connection

__all__ = ["ApiServer", "Host", "claim_socket", "parse_host", "serve_api"]

log = get_logger("asyncstart.api")

SOCKET_MODE = 0o660
#: First pause after an accept that failed for lack of resources; doubles up to 1 s.
ACCEPT_BACKOFF = 0.005
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True, slots=True)
class Host:
    """A listen address from ``-H``: ``unix:///path`` or ``tcp://host:port``."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.scheme == "unix" else f"tcp://{self.host}:{self.port}"


def parse_host(value: str, *, allow_tcp: bool = False) -> Host:
    """Parse and vet ``-H``. TCP has no authentication here: it is refused unless
    ``allow_tcp``, and even then only a loopback address is accepted."""
    if value.startswith("/"):
        value = "unix://" + value
    parts = urlsplit(value)
    if parts.scheme == "unix":
        path = parts.netloc + parts.path
        if not path.startswith("/"):
            raise errors.InvalidParameter(f"invalid unix socket path in {value!r}")
        return Host("unix", path=path)
    if parts.scheme == "tcp":
        if not allow_tcp:
            raise errors.InvalidParameter(
                f"refusing to listen on {value}: the API has no authentication; pass "
                "--insecure-tcp to listen on a loopback TCP address"
            )
        host = parts.hostname or "127.0.0.1"
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise errors.InvalidParameter(
                f"refusing to listen on {value}: only loopback TCP addresses are allowed"
            )
        return Host("tcp", host=host, port=parts.port or 2375)
    raise errors.InvalidParameter(f"invalid host {value!r}: expected unix:// or tcp://")


def claim_socket(path: str) -> None:
    """Remove a socket left by a daemon that died, unless someone still answers on it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(target.lstat().st_mode):
            return
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
            except OSError as exc:
                if exc.errno != errno.ECONNREFUSED:
                    raise
                target.unlink()
            else:
                raise errors.Conflict(f"another daemon is listening on {path}")


async def _unix_listener(path: str) -> anyio.abc.Listener[anyio.abc.SocketStream]:
    await anyio.to_thread.run_sync(claim_socket, path)
    listener = await anyio.create_unix_listener(path)
    os.chmod(path, SOCKET_MODE)
    return listener


class ApiServer:
    """The Engine API on a set of listeners, with its connections tracked for shutdown."""

    def __init__(self, daemon: Daemon, *, max_head: int = 64 * 1024) -> None:
        self.api = EngineAPI(daemon)
        self.hosts: list[Host] = []
        self._max_head = max_head
        self._connections: dict[Connection, anyio.CancelScope] = {}
        self._drained = anyio.Event()
        self._accepting = anyio.CancelScope()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def _handle(self, connection: Connection, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await connection.serve()
            finally:
                del self._connections[connection]
                if not self._connections:
                    self._drained.set()

    async def _accept(
        self,
        listener: anyio.abc.Listener[anyio.abc.SocketStream],
        connections: anyio.abc.TaskGroup,
    ) -> None:
        """Accept until cancelled. Its own loop, not ``Listener.serve``: a full file table
        (EMFILE) is waited out as Go's server does, not the end of the server, and the wait is
        in ``wait_readable`` (safe to cancel, see ``http.Wire``)."""
        raw: socket.socket = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        wrap = (
            anyio.abc.UNIXSocketStream if raw.family == socket.AF_UNIX else anyio.abc.SocketStream
        )
        backoff = ACCEPT_BACKOFF
        while True:
            await anyio.wait_readable(raw.fileno())
            try:
                client, _ = raw.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                log.warning("api.accept_failed", error=str(exc), retry_in_s=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = ACCEPT_BACKOFF
            client.setblocking(False)
            stream = await wrap.from_socket(client)
            connection = Connection(
                stream, self.api, max_head=self._max_head, server_headers=self.api.server_headers
            )
            # Known to shutdown from now on, before its task runs.
            scope = self._connections[connection] = anyio.CancelScope()
            connections.start_soon(self._handle, connection, scope)

    async def _serve(
        self,
        listeners: Sequence[anyio.abc.Listener[anyio.abc.SocketStream]],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with anyio.create_task_group() as connections:
            with self._accepting:
                async with anyio.create_task_group() as accept:
                    for listener in listeners:
                        accept.start_soon(self._accept, listener, connections)
                    task_status.started()
            for listener in listeners:
                await listener.aclose()

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting; end idle connections and endless streams now; give requests in
        flight up to ``grace`` seconds to finish."""
        self._accepting.cancel()
        for connection, scope in list(self._connections.items()):
            connection.closing = True
            if connection.idle or connection.streaming:
                scope.cancel()
        if self._connections:
            self._drained = anyio.Event()
            with anyio.move_on_after(grace):
                while self._connections:
                    await self._drained.wait()
        for scope in self._connections.values():
            scope.cancel()


@asynccontextmanager
async def serve_api(
    daemon: Daemon, hosts: Sequence[str | Host], *, allow_tcp: bool = False, grace: float = 30.0
) -> AsyncIterator[ApiServer]:
    """Serve the Engine API on ``hosts`` for the duration of the block."""
    server = ApiServer(daemon)
    listeners: list[anyio.abc.Listener[anyio.abc.SocketStream]] = []
    parsed = [h if isinstance(h, Host) else parse_host(h, allow_tcp=allow_tcp) for h in hosts]
    try:
        for host in parsed:
            if host.scheme == "unix":
                listeners.append(await _unix_listener(host.path))
            else:
                tcp = await anyio.create_tcp_listener(local_host=host.host, local_port=host.port)
                listeners.extend(tcp.listeners)
            server.hosts.append(host)
            log.info("api.listening", host=str(host))
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        _unlink_sockets(server.hosts)
        raise
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(server._serve, listeners)
            try:
                yield server
            finally:
                with anyio.CancelScope(shield=True):
                    await server.shutdown(grace)
    finally:
        _unlink_sockets(server.hosts)


def _unlink_sockets(hosts: Sequence[Host]) -> None:
    for host in hosts:
        if host.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(host.path)
