"""The websocket half of ``GET /containers/{id}/attach/ws``: wsproto over a hijacked connection.

dockerd serves that route with ``x/net/websocket``: the handshake answers any origin, the
container's output goes out unmultiplexed (a terminal's or not), in binary frames from API 1.28
and text frames before; each message the client sends is input for the container; a close
frame, or the connection's end, is the end of that input.
"""

from __future__ import annotations

import collections

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.utilities import ProtocolError

from .. import errors
from .http import Hijacked, Request

__all__ = ["WebSocketChannel"]


class WebSocketChannel:
    """One websocket over a hijacked connection: messages in, messages out.

    Made from the request before anything is answered (not a websocket handshake: 400), then
    :meth:`open` on the hijacked connection sends the ``101``."""

    def __init__(self, request: Request, *, binary: bool) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
        try:
            self._ws.initiate_upgrade_connection(headers, request.path)
        except ProtocolError as exc:
            raise errors.InvalidParameter(f"not a websocket handshake: {exc}") from None
        self._binary = binary
        self._conn: Hijacked | None = None
        self._pending: collections.deque[bytes] = collections.deque()
        self._ended = False

    def _connection(self) -> Hijacked:
        if self._conn is None:
            raise RuntimeError("the websocket is not open")
        return self._conn

    async def open(self, conn: Hijacked) -> None:
        """Answer the handshake (``101 Switching Protocols``)."""
        self._conn = conn
        await conn.accept(self._ws.send(AcceptConnection()))

    async def send(self, data: bytes) -> None:
        """One message of output; nothing once the websocket is closing."""
        if self._ws.state is not ConnectionState.OPEN:
            return
        message: BytesMessage | TextMessage
        if self._binary:
            message = BytesMessage(data=data)
        else:
            message = TextMessage(data=data.decode("utf-8", errors="replace"))
        await self._connection().send(self._ws.send(message))

    async def receive(self) -> bytes:
        """The payload of the client's next message (a fragment as it comes); ``b""`` once the
        client closed the websocket or the connection. Pings are answered on the way."""
        conn = self._connection()
        while not self._pending:
            if self._ended:
                return b""
            data = await conn.receive()
            try:
                self._ws.receive_data(data or None)
                for event in self._ws.events():
                    await self._on(event, conn)
            except ProtocolError:
                self._ended = True
            if not data:
                self._ended = True
        return self._pending.popleft()

    async def _on(self, event: object, conn: Hijacked) -> None:
        if isinstance(event, BytesMessage):
            self._pending.append(bytes(event.data))
        elif isinstance(event, TextMessage):
            self._pending.append(event.data.encode())
        elif isinstance(event, Ping):
            await conn.send(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                await conn.send(self._ws.send(event.response()))
            self._ended = True

    async def close(self) -> None:
        """A close frame (normal closure), if the websocket is still open."""
        if self._conn is not None and self._ws.state is ConnectionState.OPEN:
            await self._conn.send(self._ws.send(CloseConnection(code=1000)))
