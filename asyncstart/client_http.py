"""The client's plain requests: HTTP/1.1 with h11 over a pool of kept-alive anyio streams.

A request whose answer is read whole (create, start, inspect, stop...) goes here rather than
through httpx: httpx spends about 2 ms of CPU per request, which at 20 or 50 concurrent starts
in one event loop queues each request behind the others' tens of milliseconds. Here a request
costs h11's encoding and parsing and one write and read on a connection taken from the pool
(or opened), given back once the answer is complete and h11 says it can carry another.

An idle connection the server has closed meanwhile is seen before it is used (readable while
idle) and dropped; one that fails as the request is written (the server closed it just then,
so it read nothing) is dropped and the request written on another. A request written whose
answer never comes is an error, never sent twice. Failures are ``OSError``s, as the Client's
streams raise them: the socket's own (``FileNotFoundError``, ``ConnectionRefusedError``...), a
``ConnectionError`` when the server closes the connection before the end of its answer or
answers what is not HTTP/1.1, ``TimeoutError`` when connecting takes too long.
"""

from __future__ import annotations

import json
import select
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import anyio.abc
import h11

__all__ = ["Answer", "ConnectionPool", "Params", "query_pairs"]

#: Bytes read from the socket at a time.
_CHUNK = 65536
#: Seconds to wait for a connection to be made.
_CONNECT_TIMEOUT = 10.0
#: Idle connections kept for reuse (more are closed when given back).
_MAX_IDLE = 64
#: What may appear unencoded in a request target's path (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

Params = Mapping[str, object] | Iterable[tuple[str, object]]


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete response: status, headers (names lower-cased), body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


_MID_ANSWER = "the server closed the connection mid-answer"


class _Stale(Exception):
    """A kept connection the server had closed: the request could not be sent on it."""


class _Connection:
    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def exchange(self, request: h11.Request, body: bytes) -> Answer:
        data = self.h11.send(request) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        try:
            await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _Stale from None
        response: h11.Response | None = None
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if closed:
                    raise ConnectionResetError(_MID_ANSWER) from None
                raise ConnectionError(f"the server's answer is not HTTP/1.1: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    received = await self.stream.receive(_CHUNK)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    received = b""
                if not received and response is None:
                    raise ConnectionResetError("the server closed the connection unanswered")
                closed = not received  # (the end of an answer read until the close, or not)
                self.h11.receive_data(received)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers}
                return Answer(response.status_code, headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError(_MID_ANSWER)

    def closed_by_peer(self) -> bool:
        """Whether the server has closed this idle connection (or sent what no request asked
        for): readable while idle means either."""
        sock = self.stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        if sock is None:
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


def query_pairs(params: Params | None) -> list[tuple[str, str]]:
    """Query arguments as (name, text) pairs, in order."""
    if not params:
        return []
    pairs = params.items() if isinstance(params, Mapping) else params
    return [(name, str(value)) for name, value in pairs]


class ConnectionPool:
    """Kept-alive connections to one server, opened by ``connect``."""

    def __init__(
        self, connect: Callable[[], Awaitable[anyio.abc.ByteStream]], host: str, prefix: str
    ) -> None:
        self._connect = connect
        self._host = host.encode("latin-1")
        self._prefix = prefix
        self._idle: list[_Connection] = []

    def target(self, path: str, params: Params | None = None) -> bytes:
        """The request target: the prefix, the path percent-encoded, the query."""
        target = quote(self._prefix + path, safe=_PATH_SAFE)
        pairs = query_pairs(params)
        if pairs:
            target += "?" + urlencode(pairs)
        return target.encode("ascii")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: bytes = b"",
        content_type: str = "",
    ) -> Answer:
        headers = [(b"Host", self._host), (b"Content-Length", str(len(body)).encode())]
        if content_type:
            headers.append((b"Content-Type", content_type.encode("latin-1")))
        request = h11.Request(method=method, target=self.target(path, params), headers=headers)
        while self._idle:
            connection = self._idle.pop()
            if connection.closed_by_peer():
                await anyio.aclose_forcefully(connection.stream)
                continue
            try:
                answer = await connection.exchange(request, body)
            except _Stale:
                await connection.stream.aclose()
                continue
            except BaseException:
                await anyio.aclose_forcefully(connection.stream)
                raise
            await self._give_back(connection)
            return answer
        with anyio.fail_after(_CONNECT_TIMEOUT):
            connection = _Connection(await self._connect())
        try:
            answer = await connection.exchange(request, body)
        except _Stale:
            await connection.stream.aclose()
            raise ConnectionResetError("the server closed the connection unsent") from None
        except BaseException:
            await anyio.aclose_forcefully(connection.stream)
            raise
        await self._give_back(connection)
        return answer

    async def _give_back(self, connection: _Connection) -> None:
        if connection.reusable() and len(self._idle) < _MAX_IDLE:
            self._idle.append(connection)
        else:
            await connection.stream.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await anyio.aclose_forcefully(connection.stream)
