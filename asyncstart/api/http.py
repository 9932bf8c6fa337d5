"""HTTP/1.1 over any anyio byte stream, with h11 as the protocol state machine.

This module knows nothing of Docker: it turns bytes into :class:`Request` objects, hands each to
an application (``async (Request) -> Reply``) and writes the reply back. Three kinds of reply
cover the Engine API:

* :class:`Response` — a status, headers and a body of bytes;
* :class:`Streaming` — the head at once, then chunks as an async iterator yields them (``wait``,
  ``logs``, ``events``); when ``watch_disconnect`` is set, a client that goes away ends it;
* :class:`Hijack` — the connection leaves HTTP (``attach``): the application writes the
  ``101 UPGRADED`` head itself and then owns the raw stream in both directions.

Limits are h11's: a request head larger than ``max_head`` is a 431 and the connection closes.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

import anyio
import anyio.abc
import anyio.lowlevel
import h11

from .._log import get_logger

__all__ = [
    "Body",
    "ClientError",
    "Connection",
    "Hijack",
    "Hijacked",
    "PayloadTooLarge",
    "Reply",
    "Request",
    "Response",
    "Streaming",
]

log = get_logger("asyncstart.api")

#: Bytes read from the socket at a time.
READ_SIZE = 64 * 1024
#: Bytes a connection may write in a row without letting other tasks run.
SEND_YIELD = 256 * 1024
#: Unread request body drained after a reply before the connection is given up on.
DRAIN_LIMIT = 256 * 1024


class Wire:
    """Bytes in and out of one connection, with as few trips through the event loop as the
    work allows: under 20 concurrent requests each trip is a wait behind every other task.

    On a unix socket the reads wait in ``wait_readable`` and then ``recv`` directly, and the
    writes try ``send`` directly, falling back to the stream when the socket buffer is full.
    Waiting in ``wait_readable`` also makes reads safe to cancel, which they are all the time
    here (shutdown, a stream that ends while its client is watched): the anyio releases this
    project accepts include some whose asyncio unix ``receive`` cannot be cancelled once its
    wake-up is queued (``InvalidStateError`` at close; 4.16.0 has the upstream fix).
    Other streams (TCP) go through anyio as they are.
    """

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        family = stream.extra(anyio.abc.SocketAttribute.family, None)
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        self._raw: socket.socket | None = raw if family == socket.AF_UNIX else None
        self._fd = self._raw.fileno() if self._raw is not None else -1
        self._unyielded = 0

    async def receive(self) -> bytes:
        """Up to READ_SIZE bytes; ``b""`` at the client's EOF."""
        if self._raw is None:
            try:
                return await self.stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                return b""
        while True:
            await anyio.wait_readable(self._fd)
            try:
                return self._raw.recv(READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc

    async def wait_hangup(self) -> None:
        """Return once the client has closed the connection altogether — not on a half-close,
        which only ends its input (what a read sees as EOF). Unix sockets only; on others this
        waits forever and a write's failure tells instead."""
        if self._raw is None:
            await anyio.sleep_forever()
        with select.epoll() as hangups:
            hangups.register(self._fd, 0)  # HUP is always reported: nothing else is asked
            await anyio.wait_readable(hangups.fileno())

    async def send(self, data: bytes) -> None:
        if self._raw is not None:
            # A long stream the kernel keeps accepting would never yield: let the other tasks
            # run every SEND_YIELD bytes.
            self._unyielded += len(data)
            if self._unyielded > SEND_YIELD:
                self._unyielded = 0
                await anyio.lowlevel.checkpoint()
            try:
                data = data[self._raw.send(data) :]
            except BlockingIOError:
                pass
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if not data:
                return
        await self.stream.send(data)


_PHRASES = {status.value: status.phrase for status in HTTPStatus}


class ClientError(Exception):
    """The request itself is broken (bad framing, too large): answered with ``status`` and
    the connection closed. Handlers let it pass; the connection answers it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class PayloadTooLarge(ClientError):
    """A request body over the limit its handler accepts."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 413)


_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, ConnectionError)


def _gone(exc: BaseException) -> bool:
    """The client went away (the exception, or every one in a group, says so)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, _GONE)


class Body:
    """The request body, read on demand from the connection (chunked or sized, h11 decides)."""

    def __init__(self, pull: Callable[[], Awaitable[bytes | None]]) -> None:
        self._pull = pull
        self.complete = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            chunk = await self._pull()
            if chunk is None:
                self.complete = True
                return
            if chunk:
                yield chunk

    async def read(self, limit: int) -> bytes:
        """The whole body; :class:`PayloadTooLarge` past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Body
    #: The body's announced length; None when it is not known (chunked), as Go's ContentLength.
    length: int | None

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""


@dataclass(slots=True)
class Streaming:
    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: End the stream when the client closes its side (nothing is read from it meanwhile).
    watch_disconnect: bool = True


class Hijacked:
    """The raw connection after an upgrade: write the head with :meth:`accept`, then talk."""

    def __init__(self, wire: Wire, leftover: bytes) -> None:
        self._wire = wire
        self._leftover = leftover

    async def accept(self, head: bytes) -> None:
        await self._wire.send(head)

    async def receive(self) -> bytes:
        """Bytes from the client; ``b""`` once it has closed its side."""
        if self._leftover:
            data, self._leftover = self._leftover, b""
            return data
        try:
            return await self._wire.receive()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return b""

    async def send(self, data: bytes) -> None:
        await self._wire.send(data)

    async def wait_hangup(self) -> None:
        await self._wire.wait_hangup()


@dataclass(slots=True)
class Hijack:
    run: Callable[[Hijacked], Awaitable[None]]


Reply = Response | Streaming | Hijack
App = Callable[[Request], Awaitable[Reply]]


class Connection:
    """One client connection: requests in order, keep-alive, until either side ends it."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        app: App,
        *,
        max_head: int = 64 * 1024,
        server_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self._wire = Wire(stream)
        self._app = app
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._max_head = max_head
        self._server_headers = server_headers or []
        #: Waiting for a request (not in the middle of one): safe to close at shutdown.
        self.idle = True
        #: Sending a stream that may never end on its own (events, logs -f, wait, attach).
        self.streaming = False
        self.closing = False

    async def serve(self) -> None:
        try:
            while not self.closing:
                self.idle = True
                event = await self._next_event()
                self.idle = False
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                assert isinstance(event, h11.Request)
                self._check_head(event)
                if not await self._handle(event):
                    return
                if self._h11.our_state is h11.MUST_CLOSE or self.closing:
                    return
                self._h11.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._refuse(ClientError(str(exc), exc.error_status_hint))
        except ClientError as exc:
            await self._refuse(exc)
        except Exception as exc:
            # One connection's end, whatever it is, is never the server's: a client that went
            # away mid-stream (often inside a task group), or a stream that failed after its
            # head was sent, when no status can be given any more.
            if not _gone(exc):
                log.exception("api.connection_failed")
        finally:
            with contextlib.suppress(Exception):
                await self._wire.stream.aclose()

    def _check_head(self, event: h11.Request) -> None:
        # h11 bounds a head still arriving; one that arrived whole is measured here.
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > self._max_head:
            raise ClientError("request header fields too large", 431)

    async def _next_event(self) -> Any:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._h11.receive_data(await self._wire.receive())

    async def _pull_body(self) -> bytes | None:
        if self._h11.they_are_waiting_for_100_continue:
            # curl sends large uploads (docker import via the API) only after this.
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            event = await self._next_event()
        except h11.RemoteProtocolError as exc:
            raise ClientError(str(exc), exc.error_status_hint) from exc
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        raise ClientError("connection closed inside a request body")

    async def _handle(self, event: h11.Request) -> bool:
        """Answer one request; False when the connection is done (hijacked or broken)."""
        path, _, query = event.target.decode("latin-1").partition("?")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        request = Request(
            method=event.method.decode("ascii").upper(),
            path=unquote(path.partition("#")[0]),
            query=parse_qs(query.partition("#")[0], keep_blank_values=True) if query else {},
            headers=headers,
            body=Body(self._pull_body),
            # h11 has checked the header: a valid length, or chunked, or no body at all.
            length=None if chunked else int(headers.get("content-length", "0")),
        )
        reply = await self._app(request)
        if isinstance(reply, Hijack):
            await self._finish_body(request)
            leftover, _closed = self._h11.trailing_data
            self.streaming = True
            await reply.run(Hijacked(self._wire, bytes(leftover)))
            return False
        if self._h11.they_are_waiting_for_100_continue:
            # Answered without its body: the client may legally never send it (Go's rule).
            self.closing = True
        if isinstance(reply, Response):
            await self._send_whole(reply, head_only=request.method == "HEAD")
        else:
            await self._send_stream(reply)
        return await self._finish_body(request)

    def _head(
        self, status: int, headers: list[tuple[str, str]], length: int | None, reason: str = ""
    ) -> bytes:
        all_headers = [*self._server_headers, *headers]
        if length is not None and status not in (204, 304):
            all_headers.append(("Content-Length", str(length)))
        if self.closing:
            all_headers.append(("Connection", "close"))
        reason = reason or _PHRASES.get(status, "")
        response = h11.Response(status_code=status, headers=all_headers, reason=reason.encode())
        return self._h11.send(response) or b""

    async def _send_whole(self, reply: Response, *, head_only: bool = False) -> None:
        """Head, body and end in one write."""
        data = self._head(reply.status, reply.headers, len(reply.body), reply.reason)
        if reply.body and not head_only:
            data += self._h11.send(h11.Data(data=reply.body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        await self._wire.send(data)

    async def _send_stream(self, reply: Streaming) -> None:
        self.streaming = True
        try:
            await self._wire.send(self._head(reply.status, reply.headers, None))
            async with anyio.create_task_group() as tg:
                if reply.watch_disconnect:
                    tg.start_soon(self._watch_disconnect, tg.cancel_scope)
                async for chunk in reply.chunks:
                    if chunk:
                        await self._send(h11.Data(data=chunk))
                tg.cancel_scope.cancel()
            await self._send(h11.EndOfMessage())
        finally:
            self.streaming = False
            aclose = getattr(reply.chunks, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _watch_disconnect(self, scope: anyio.CancelScope) -> None:
        # The client sends nothing while it reads a stream; its EOF means it is gone. Anything
        # it does send (a pipelined request) is kept for h11.
        while data := await self._wire.receive():
            self._h11.receive_data(data)
            if len(self._h11.trailing_data[0]) > self._max_head:
                break  # not a pipelined request: a client that floods a stream is dropped
        self.closing = True
        scope.cancel()

    async def _finish_body(self, request: Request) -> bool:
        """Read what the handler left of the body, so the next request can follow."""
        drained = 0
        while self._h11.their_state is h11.SEND_BODY:
            chunk = await self._pull_body()
            if chunk is None:
                break
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                return False
        return self._h11.their_state is h11.DONE

    async def _send(self, event: Any) -> None:
        data = self._h11.send(event)
        if data:
            await self._wire.send(data)

    async def _refuse(self, exc: ClientError) -> None:
        """Answer a broken request with its status, if a response can still be started."""
        self.closing = True
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        message = str(exc) or "bad request"
        if exc.status == 431:
            message = "request header fields too large"
        body = json.dumps({"message": message}).encode() + b"\n"
        with contextlib.suppress(Exception):
            await self._send_whole(
                Response(exc.status, body, [("Content-Type", "application/json")])
            )
