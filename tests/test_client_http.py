"""The client's pool of kept-alive HTTP/1.1 connections, against a server written here with h11:
reuse, concurrency, a connection the server closed while idle, chunked answers, encoding; and
the Client's failures, one kind whichever way its methods talk."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import h11
import pytest

from asyncstart import Client
from asyncstart.client_http import ConnectionPool

pytestmark = pytest.mark.anyio


class Server:
    """Answers each request with its target as the body; counts connections."""

    def __init__(
        self, *, chunked: bool = False, close_after: int = 0, hang_up: bool = False
    ) -> None:
        self.connections = 0
        self.active = 0
        self.targets: list[str] = []
        self.chunked = chunked
        #: Close a connection after this many answers (0: keep it).
        self.close_after = close_after
        #: Read each request, then close without an answer.
        self.hang_up = hang_up

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        self.active += 1
        try:
            await self._serve(stream)
        finally:
            self.active -= 1

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        answered = 0
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        conn.receive_data(await stream.receive())
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    continue
                if isinstance(event, h11.Request):
                    target = event.target.decode()
                    self.targets.append(target)
                elif isinstance(event, h11.EndOfMessage):
                    if self.hang_up:
                        return
                    body = target.encode()
                    headers = (
                        [("Transfer-Encoding", "chunked")]
                        if self.chunked
                        else [("Content-Length", str(len(body)))]
                    )
                    out = conn.send(h11.Response(status_code=200, headers=headers)) or b""
                    if self.chunked:
                        out += conn.send(h11.Data(data=body[:3])) or b""
                        out += conn.send(h11.Data(data=body[3:])) or b""
                    else:
                        out += conn.send(h11.Data(data=body)) or b""
                    out += conn.send(h11.EndOfMessage()) or b""
                    await stream.send(out)
                    answered += 1
                    if self.close_after and answered >= self.close_after:
                        return  # closed while the client keeps it idle
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return


@asynccontextmanager
async def served(tmp_path: Path, server: Server) -> AsyncIterator[ConnectionPool]:
    path = tmp_path / "s.sock"
    async with await anyio.create_unix_listener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        pool = ConnectionPool(functools.partial(anyio.connect_unix, path), "docker", "/v1.51")
        try:
            yield pool
        finally:
            await pool.aclose()
            with anyio.fail_after(5):  # each handler sees its client leave, then ends
                while server.active:
                    await anyio.sleep(0.001)
            tg.cancel_scope.cancel()


async def test_one_connection_carries_requests_made_one_after_another(tmp_path: Path) -> None:
    server = Server()
    async with served(tmp_path, server) as pool:
        for n in range(5):
            answer = await pool.request("GET", f"/containers/c{n}/json")
            assert (answer.status_code, answer.text) == (200, f"/v1.51/containers/c{n}/json")
    assert server.connections == 1


async def test_concurrent_requests_get_a_connection_each_and_give_it_back(tmp_path: Path) -> None:
    server = Server()
    async with served(tmp_path, server) as pool:
        answers: list[str] = []

        async def one(n: int) -> None:
            answers.append((await pool.request("POST", f"/containers/c{n}/start")).text)

        for _ in range(2):
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(one, n)
    assert sorted(answers) == sorted([f"/v1.51/containers/c{n}/start" for n in range(20)] * 2)
    assert server.connections == 20, "the second batch reuses the first one's connections"


async def test_a_connection_the_server_closed_while_idle_is_replaced(tmp_path: Path) -> None:
    server = Server(close_after=1)
    async with served(tmp_path, server) as pool:
        for n in range(3):
            await anyio.sleep(0.01)  # (the server's close arrives first)
            assert (await pool.request("GET", f"/p{n}")).text == f"/v1.51/p{n}"
    assert server.connections == 3 and server.targets == ["/v1.51/p0", "/v1.51/p1", "/v1.51/p2"]


async def test_chunked_answers_and_an_encoded_target(tmp_path: Path) -> None:
    server = Server(chunked=True)
    async with served(tmp_path, server) as pool:
        answer = await pool.request(
            "GET", "/containers/a b?c/json", params=[("filters", '{"a": ["x y"]}'), ("all", 1)]
        )
    assert (
        answer.text
        == "/v1.51/containers/a%20b%3Fc/json?filters=%7B%22a%22%3A+%5B%22x+y%22%5D%7D&all=1"
    )
    assert answer.headers["transfer-encoding"] == "chunked"


async def test_a_request_read_but_never_answered_is_an_error_and_not_sent_again(
    tmp_path: Path,
) -> None:
    server = Server(hang_up=True)
    async with served(tmp_path, server) as pool:
        with pytest.raises(ConnectionResetError):
            await pool.request("POST", "/containers/create")
    assert server.targets == ["/v1.51/containers/create"]


# -- the Client's failures: one kind whichever way a method talks ----------------------------


async def _upload() -> AsyncIterator[bytes]:
    yield b"not a tar"


def _calls(client: Client) -> dict[str, Callable[[], Awaitable[object]]]:
    """A method of each way the Client talks: pooled requests, streamed answers (httpx),
    an upload, an upgraded connection, an event stream."""

    async def attach() -> None:
        async with client.container_attach("web"):
            pass

    async def events() -> None:
        async with client.events() as events:
            await anext(events)

    async def export() -> None:
        async for _ in await client.container_export("web"):
            pass

    return {
        "ping": client.ping,
        "inspect": lambda: client.container_inspect("web"),
        "logs": lambda: anext(client.container_logs("web")),
        "stats": lambda: anext(client.container_stats("web")),
        "export": export,
        "upload": lambda: client.image_import(_upload()),
        "attach": attach,
        "events": events,
    }


async def test_every_kind_of_call_to_no_daemon_raises_the_sockets_own_error(
    tmp_path: Path,
) -> None:
    async with Client(f"unix://{tmp_path / 'nothing.sock'}") as client:
        for name, call in _calls(client).items():
            with pytest.raises(FileNotFoundError) as raised:
                await call()
            assert raised.type is FileNotFoundError, name


def _own_failure() -> None:
    raise FileNotFoundError(2, "the caller's own, being handled")


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf", b"\x00nonsense\r\n\r\n"],
    ids=["nothing", "half-an-answer", "not-http"],
)
async def test_a_server_that_drops_or_garbles_the_answer_is_a_connection_error(
    tmp_path: Path, answer: bytes
) -> None:
    """Nothing, half an answer or no HTTP at all: ``ConnectionError`` from every kind of
    call, never an HTTP library's own exception, nor an error the caller was handling."""
    path = tmp_path / "s.sock"

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()  # (the request's head)
                await stream.send(answer) if answer else None

    async with await anyio.create_unix_listener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with Client(f"unix://{path}") as client:
            for name, call in _calls(client).items():
                try:
                    _own_failure()
                except FileNotFoundError:  # (not to be taken for the connection's error)
                    with anyio.fail_after(10), pytest.raises(ConnectionError):
                        try:
                            await call()
                        except BaseException as exc:
                            assert isinstance(exc, ConnectionError), (name, repr(exc))
                            assert not isinstance(exc, FileNotFoundError), (name, repr(exc))
                            raise
        tg.cancel_scope.cancel()


async def test_an_attach_the_server_hung_up_on_raises_the_sockets_error(tmp_path: Path) -> None:
    """On the upgraded connection (httpcore's stream, not httpx's): writing after the server
    closed it is the socket's own ``OSError``."""
    path = tmp_path / "s.sock"
    hung_up = anyio.Event()
    inspected = b'{"Config": {"StdinOnce": false, "Tty": true}}'  # (an attach with stdin asks)
    answers = {
        b"GET": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(inspected), inspected),
        b"POST": b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
        b"Content-Type: application/vnd.docker.raw-stream\r\n\r\n",
    }
    active = 0

    async def handle(stream: anyio.abc.SocketStream) -> None:
        nonlocal active
        active += 1
        async with stream:
            head = await stream.receive()
            await stream.send(answers[head.split(b" ", 1)[0]])
            if head.startswith(b"GET"):
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    await stream.receive()  # (kept alive until the client leaves)
        hung_up.set()
        active -= 1

    async with await anyio.create_unix_listener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with (
            Client(f"unix://{path}") as client,
            client.container_attach("web", stdin=True) as session,
        ):
            await hung_up.wait()
            with anyio.fail_after(10), pytest.raises(OSError) as raised:
                for _ in range(100):  # (the first writes may still find room in the buffer)
                    await session.send(b"x" * 65536)
            assert type(raised.value).__module__ == "builtins", repr(raised.value)
        with anyio.fail_after(5):  # each handler sees its client leave, then ends
            while active:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
