"""An async client for the daemon's Engine API socket, with the daemon's own method names.

It runs on asyncio and on trio (httpx over anyio), and raises the same ``asyncstart.errors``
classes as the library. Its methods are :class:`asyncstart.Daemon`'s — same names, parameters
and results (Docker's JSON as dicts) — but for the library-only ones the daemon's docstrings
name, and :meth:`Client.aclose`::

    async with asyncstart.Client("unix:///run/asyncstart.sock") as client:
        cid = await client.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        await client.container_start(cid)
        print(await client.container_wait(cid))
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import struct
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.abc
import httpx

from . import errors
from ._version import API_VERSION
from .client_http import Answer, ConnectionPool, Params, query_pairs
from .detach import DetachableInput, attach_detach_keys, detach_keys_for

if TYPE_CHECKING:
    from httpcore import AsyncNetworkStream

__all__ = ["Client", "ClientAttachSession", "ClientByteStream", "ClientEventStream"]

_ERRORS: dict[int, type[errors.DockerError]] = {
    400: errors.InvalidParameter,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    500: errors.SystemError,
    501: errors.NotImplementedYet,
    503: errors.Unavailable,
}
_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}
_HEADER = struct.Struct(">BxxxL")
_CHUNK = 64 * 1024


_to_json = json.dumps  # (the request methods take a ``json`` argument)


def _raise_for(status: int, body: bytes, what: str) -> None:
    if status < 300 or status == 101:
        return
    if status == 304:
        raise errors.NotModified(f"{what}: not modified")
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or f"HTTP {status}"
    error = _ERRORS.get(status, errors.DockerError)(message)
    error.status = status
    raise error


@contextmanager
def _connection_errors() -> Iterator[None]:
    """httpx's transport errors (httpcore's, on an upgraded connection) raised as the
    connection pool raises its own: ``TimeoutError``, else the ``OSError`` beneath
    (``FileNotFoundError``, ``ConnectionRefusedError``, ...) or a ``ConnectionError``."""
    # What the caller is handling now, if anything: the context of whatever is raised in
    # here, never to be taken for the connection's own error.
    handled = sys.exc_info()[1]
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TimeoutError(str(exc) or "timed out") from exc
    except httpx.LocalProtocolError:
        raise  # (the request this client built is at fault, not the connection)
    except httpx.TransportError as exc:
        raise _connection_error(exc, handled) from exc
    except Exception as exc:
        # Loaded by then (httpx's transport raised it). Not imported at the top: importing
        # httpcore imports trio too, which an asyncio program has no use for.
        import httpcore

        if isinstance(exc, httpcore.TimeoutException):
            raise TimeoutError(str(exc) or "timed out") from exc
        if isinstance(exc, httpcore.NetworkError | httpcore.RemoteProtocolError):
            raise _connection_error(exc, handled) from exc
        raise


def _connection_error(exc: Exception, handled: BaseException | None) -> OSError:
    """The ``OSError`` beneath a transport error (its subclass, by errno), else a
    ``ConnectionError`` saying what it was; the chain is read down to ``handled``."""
    cause: BaseException | None = exc
    while cause is not None and cause is not handled:
        if isinstance(cause, OSError) and cause.errno:
            return OSError(cause.errno, cause.strerror)
        cause = cause.__cause__ or cause.__context__
    return ConnectionError(str(exc) or type(exc).__name__)


def _params(**values: Any) -> dict[str, str]:
    """Query arguments as the daemon reads them: booleans as 1/0, None left out."""
    params = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, Mapping):
            value = json.dumps(value)
        params[key] = str(value)
    return params


def _is_raw(response: httpx.Response) -> bool:
    """A TTY's output is one raw stream; otherwise dockerd multiplexes it (the server says)."""
    return bool(response.headers.get("content-type") == "application/vnd.docker.raw-stream")


class _Frames:
    """Splits dockerd's multiplexed stream into ``(stream, bytes)``; a raw one is stdout."""

    def __init__(self, raw: bool = False) -> None:
        self._raw = raw
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        if self._raw:
            return [("stdout", data)] if data else []
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append((_STREAMS.get(kind, "stdout"), self._buffer[_HEADER.size : end]))
            self._buffer = self._buffer[end:]
        return frames


class ClientAttachSession:
    """An attach over the socket, as the daemon's ``AttachSession``: ``send``, ``send_eof``,
    ``end_of_input`` and ``async for stream, data``; ``tty``: the output is one raw stream (a
    terminal's), not stdout and stderr apart."""

    def __init__(
        self,
        stream: AsyncNetworkStream,
        raw: bool,
        *,
        stdin: bool = True,
        stdin_once: bool = False,
        detach_keys: bytes = b"",
    ) -> None:
        self._stream = stream
        self.tty = raw
        self._stdin = stdin
        self._once = stdin_once
        self._input = DetachableInput(detach_keys)

    @property
    def detached(self) -> bool:
        """The detach keys were sent: the attachment ends, the process runs on."""
        return self._input.detached

    async def send(self, data: bytes) -> bool:
        """Input for the process; True once the detach keys have been sent (the daemon ends
        the attachment there; nothing after them is sent)."""
        if not self._stdin:
            raise errors.InvalidParameter("attached without stdin")
        if self._input.detached:
            return True
        data = self._input.take(data)
        if self._input.detached:
            data += self._input.keys  # (for the daemon, which detaches on them)
        if data:
            with _connection_errors():
                await self._stream.write(data)
        return self._input.detached

    async def send_eof(self) -> None:
        """Half-close: the end of the input. With ``StdinOnce`` (and no TTY) the container's
        stdin closes and its output goes on; otherwise the attach ends, as with dockerd."""
        self._stream.get_extra_info("socket").shutdown(socket.SHUT_WR)

    async def end_of_input(self) -> bool:
        """The input ended (a half-close), and the daemon applies dockerd's rule: with
        ``StdinOnce`` and no TTY the container's stdin closes and the output goes on (True);
        otherwise the attach ends (False)."""
        await self.send_eof()
        return self._once and not self.tty

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        frames = _Frames(self.tty)
        while True:
            with _connection_errors():
                data = await self._stream.read(_CHUNK)
            if not data:
                return
            for item in frames.feed(data):
                yield item


class ClientByteStream:
    """A streamed answer's bytes, ``async for chunk in stream``, as the library's
    ``PipeReader``: read it to its end, or ``aclose()`` it (its connection goes back)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks: AsyncIterator[bytes] | None = response.aiter_bytes()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            raise StopAsyncIteration
        try:
            with _connection_errors():
                return await anext(self._chunks)
        except StopAsyncIteration:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        chunks, self._chunks = self._chunks, None
        await _close_iterator(chunks)
        await self._response.aclose()


class ClientEventStream:
    """``GET /events``, as the library's ``events``: ``async with client.events() as events:``
    is subscribed once entered (errors such as a bad filter are raised there), then ``async
    for event in events`` gives dicts until ``until`` (or forever). Iterated without ``async
    with`` it subscribes at the first event; then ``aclose()`` it (``contextlib.aclosing``)."""

    def __init__(self, open_response: Callable[[], Awaitable[httpx.Response]]) -> None:
        self._open_response = open_response
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._closed = False

    async def _open(self) -> AsyncIterator[str]:
        if self._lines is None:
            with _connection_errors():
                self._response = await self._open_response()
            self._lines = self._response.aiter_lines()
        return self._lines

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        lines = await self._open()
        while True:
            try:
                with _connection_errors():
                    line = await anext(lines)
            except StopAsyncIteration:
                await self.aclose()
                raise
            if line.strip():
                event: dict[str, Any] = json.loads(line)
                return event

    async def aclose(self) -> None:
        self._closed = True
        lines, self._lines = self._lines, None
        response, self._response = self._response, None
        await _close_iterator(lines)
        if response is not None:
            await response.aclose()


async def _close_iterator(iterator: AsyncIterator[Any] | None) -> None:
    """An async generator left before its end, closed now (not when it is collected)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class Client:
    """The Engine API of a running asyncstart (or Docker) daemon."""

    def __init__(self, host: str = "unix:///run/asyncstart/asyncstart.sock") -> None:
        connect: Callable[[], Awaitable[anyio.abc.ByteStream]]
        if host.startswith(("unix://", "/")):
            path = host.removeprefix("unix://")
            transport = httpx.AsyncHTTPTransport(uds=path)
            authority = "docker"
            connect = functools.partial(anyio.connect_unix, path)
        elif host.startswith("tcp://"):
            transport = httpx.AsyncHTTPTransport()
            authority = host.removeprefix("tcp://")
            name, _, port = authority.rpartition(":")
            if not name or not port.isdigit():
                raise errors.InvalidParameter(f"invalid host {host!r}: expected tcp://HOST:PORT")
            connect = functools.partial(anyio.connect_tcp, name.strip("[]"), int(port))
        else:
            raise errors.InvalidParameter(f"invalid host {host!r}: expected unix:// or tcp://")
        prefix = f"/v{API_VERSION}"
        # Answers read whole go through the pool (see client_http); streams through httpx.
        self._pool = ConnectionPool(connect, authority, prefix)
        # Operations such as stop and wait take as long as the container does: no read timeout.
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=f"http://{authority}{prefix}",
            timeout=httpx.Timeout(None, connect=10.0),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (also on leaving ``async with``). Client-only: a
        :class:`~asyncstart.Daemon` lives as long as :func:`~asyncstart.open_daemon`'s block."""
        await self._pool.aclose()
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> Answer:
        """A request whose answer is read whole; its error raised."""
        if content is not None and not isinstance(content, bytes):  # an upload, streamed
            with _connection_errors():
                response = await self._http.request(
                    method, path, params=tuple(query_pairs(params)), content=content
                )
            answer = Answer(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                response.content,
            )
        elif json is not None:
            body = _to_json(json).encode()
            answer = await self._pool.request(
                method, path, params=params, body=body, content_type="application/json"
            )
        else:
            answer = await self._pool.request(method, path, params=params, body=content or b"")
        _raise_for(answer.status_code, answer.content, f"{method} {path}")
        return answer

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    async def _streamed(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """A request whose answer is read as it comes: the open response once its status is
        a success (else its error raised, the response closed); the caller closes it."""
        request = self._http.build_request(method, path, **kwargs)
        with _connection_errors():
            response = await self._http.send(request, stream=True)
        if response.status_code >= 300:
            try:
                with _connection_errors():
                    body = await response.aread()
            finally:
                await response.aclose()
            _raise_for(response.status_code, body, what)
        return response

    # -- system -----------------------------------------------------------------------------

    async def ping(self) -> str:
        """``GET /_ping``: ``"OK"``."""
        return (await self._request("GET", "/_ping")).text

    async def version(self) -> dict[str, Any]:
        """``docker version`` (``GET /version``)."""
        result: dict[str, Any] = await self._json("GET", "/version")
        return result

    async def info(self) -> dict[str, Any]:
        """``docker info`` (``GET /info``)."""
        result: dict[str, Any] = await self._json("GET", "/info")
        return result

    # -- containers -------------------------------------------------------------------------

    async def container_create(
        self,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        host_config: Mapping[str, Any] | None = None,
        networking_config: Mapping[str, Any] | None = None,
        platform: str = "",
    ) -> str:
        body = dict(config or {})
        if host_config is not None:
            body["HostConfig"] = dict(host_config)
        if networking_config is not None:
            body["NetworkingConfig"] = dict(networking_config)
        params = _params(name=name, platform=platform or None)
        result = await self._json("POST", "/containers/create", params=params, json=body)
        return str(result["Id"])

    async def container_start(
        self, reference: str, checkpoint: str | None = None, checkpoint_dir: str | None = None
    ) -> None:
        params = _params(checkpoint=checkpoint, **{"checkpoint-dir": checkpoint_dir})
        await self._request("POST", f"/containers/{reference}/start", params=params)

    async def container_inspect(self, reference: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/containers/{reference}/json")
        return result

    async def containers_list(
        self, all: bool = False, limit: int = -1, filters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        params = _params(all=all, limit=limit if limit > 0 else None, filters=filters or None)
        result: list[dict[str, Any]] = await self._json("GET", "/containers/json", params=params)
        return result

    async def container_wait(
        self, reference: str, condition: str = "not-running"
    ) -> dict[str, Any]:
        params = _params(condition=condition)
        result: dict[str, Any] = await self._json(
            "POST", f"/containers/{reference}/wait", params=params
        )
        return result

    async def container_kill(self, reference: str, signal: str | int = "KILL") -> None:
        await self._request("POST", f"/containers/{reference}/kill", params=_params(signal=signal))

    async def container_stop(self, reference: str, timeout: float | None = None) -> None:
        t = None if timeout is None else int(timeout)
        await self._request("POST", f"/containers/{reference}/stop", params=_params(t=t))

    async def container_restart(self, reference: str, timeout: float | None = None) -> None:
        t = None if timeout is None else int(timeout)
        await self._request("POST", f"/containers/{reference}/restart", params=_params(t=t))

    async def container_pause(self, reference: str) -> None:
        await self._request("POST", f"/containers/{reference}/pause")

    async def container_unpause(self, reference: str) -> None:
        await self._request("POST", f"/containers/{reference}/unpause")

    async def container_remove(
        self, reference: str, force: bool = False, volumes: bool = False
    ) -> None:
        params = _params(force=force, v=volumes)
        await self._request("DELETE", f"/containers/{reference}", params=params)

    async def container_logs(
        self,
        reference: str,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: str | int = "all",
        since: float = 0,
        until: float = 0,
        timestamps: bool = False,
        details: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """``(stream, bytes)`` as the library's ``container_logs`` yields them."""
        params = _params(
            stdout=stdout,
            stderr=stderr,
            follow=follow,
            tail=tail,
            since=since or None,
            until=until or None,
            timestamps=timestamps,
            details=details or None,
        )
        with _connection_errors():
            async with self._http.stream(
                "GET", f"/containers/{reference}/logs", params=params
            ) as response:
                if response.status_code != 200:
                    _raise_for(response.status_code, await response.aread(), "logs")
                frames = _Frames(_is_raw(response))
                async for data in response.aiter_raw():
                    for item in frames.feed(data):
                        yield item

    @asynccontextmanager
    async def container_attach(
        self,
        reference: str,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        logs: bool = False,
        detach_keys: str = "",
    ) -> AsyncIterator[ClientAttachSession]:
        """The connection is upgraded (``101 UPGRADED``) and then carries raw frames. With
        ``stdin``, the container is inspected first (as the docker CLI does): its ``StdinOnce``
        says what the end of the input does, its ``Tty`` whether detach keys count."""
        keys = attach_detach_keys(detach_keys)
        config: dict[str, Any] = {}
        if stdin:
            config = (await self.container_inspect(reference)).get("Config") or {}
        params = _params(stdin=stdin, stdout=stdout, stderr=stderr, stream=True, logs=logs,
                         detachKeys=detach_keys or None)  # fmt: skip
        once = bool(config.get("StdinOnce"))

        def session(stream: AsyncNetworkStream, raw: bool) -> ClientAttachSession:
            wanted = detach_keys_for(keys, raw) if stdin else b""
            return ClientAttachSession(
                stream, raw, stdin=stdin, stdin_once=once, detach_keys=wanted
            )

        path = f"/containers/{reference}/attach"
        async with self._upgraded(path, "attach", session, params=params) as attached:
            yield attached

    @asynccontextmanager
    async def _upgraded(
        self,
        path: str,
        what: str,
        session: Callable[[AsyncNetworkStream, bool], ClientAttachSession] = ClientAttachSession,
        **request: Any,
    ) -> AsyncIterator[ClientAttachSession]:
        """A POST upgraded to a raw stream (``101 UPGRADED``), as a session of frames
        (``session(stream, raw)``)."""
        headers = {"Connection": "Upgrade", "Upgrade": "tcp"}
        async with AsyncExitStack() as stack:
            with _connection_errors():  # (only here: not around the caller's block)
                opening = self._http.stream("POST", path, headers=headers, **request)
                response = await stack.enter_async_context(opening)
                if response.status_code != 101:
                    _raise_for(response.status_code, await response.aread(), what)
            stream = response.extensions["network_stream"]
            try:
                yield session(stream, _is_raw(response))
            finally:
                await stream.aclose()

    async def container_resize(self, reference: str, height: int, width: int) -> None:
        """``docker resize``: the terminal's new size (409 unless the container runs)."""
        params = {"h": height, "w": width}
        await self._request("POST", f"/containers/{reference}/resize", params=params)

    async def container_export(self, reference: str) -> ClientByteStream:
        """``docker export``, as the library's: ``async for chunk in await
        client.container_export(reference)`` gives the tar's bytes; errors (404, 409) come
        before, at the ``await``."""
        target = f"/containers/{reference}/export"
        return ClientByteStream(await self._streamed("GET", target, f"GET {target}"))

    async def container_top(self, reference: str, ps_args: str = "") -> dict[str, Any]:
        params = {"ps_args": ps_args} if ps_args else {}
        result: dict[str, Any] = await self._json(
            "GET", f"/containers/{reference}/top", params=params
        )
        return result

    async def container_changes(self, reference: str) -> list[dict[str, Any]]:
        result = await self._json("GET", f"/containers/{reference}/changes")
        return list(result or [])

    async def containers_prune(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        params = {"filters": json.dumps(filters)} if filters else {}
        result = await self._json("POST", "/containers/prune", params=params)
        return list(result.get("ContainersDeleted") or [])

    async def container_update(self, reference: str, body: Mapping[str, Any]) -> list[str]:
        result = await self._json("POST", f"/containers/{reference}/update", json=dict(body))
        return list(result.get("Warnings") or [])

    async def container_rename(self, reference: str, name: str) -> None:
        await self._request("POST", f"/containers/{reference}/rename", params={"name": name})

    async def exec_create(self, reference: str, config: Mapping[str, Any]) -> str:
        """``POST /containers/{id}/exec`` (``Cmd``, ``Tty``, ``AttachStdin``..., ``Env``,
        ``User``, ``WorkingDir``, ``Privileged``); the exec's ID."""
        result = await self._json("POST", f"/containers/{reference}/exec", json=dict(config))
        return str(result["Id"])

    async def exec_start_detached(
        self, exec_id: str, *, console_size: tuple[int, int] | None = None
    ) -> None:
        """``docker exec -d``: run the exec, its output dropped; returns once it runs."""
        body = _exec_start_body(detach=True, console_size=console_size)
        await self._request("POST", f"/exec/{exec_id}/start", json=body)

    @asynccontextmanager
    async def exec_start(
        self, exec_id: str, *, console_size: tuple[int, int] | None = None
    ) -> AsyncIterator[ClientAttachSession]:
        """The exec's stdio, as :meth:`container_attach`'s session (upgraded connection);
        ``console_size``: its terminal's height and width from the start."""
        body = _exec_start_body(detach=False, console_size=console_size)
        async with self._upgraded(f"/exec/{exec_id}/start", "exec", json=body) as s:
            yield s

    async def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/exec/{exec_id}/json")
        return result

    async def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        await self._request("POST", f"/exec/{exec_id}/resize", params={"h": height, "w": width})

    async def container_start_phases(self, reference: str) -> dict[str, float]:
        """Seconds spent in each phase of the container's latest start (asyncstart only)."""
        result: dict[str, float] = await self._json(
            "GET", f"/x-asyncstart/containers/{reference}/start-phases"
        )
        return result

    # -- events -----------------------------------------------------------------------------

    async def container_stats(
        self, reference: str, *, stream: bool = True, one_shot: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """dockerd's ``StatsResponse`` documents, as the library's ``container_stats``."""
        params = _params(stream=stream, **{"one-shot": one_shot})
        path = f"/containers/{reference}/stats"
        with _connection_errors():
            async with self._http.stream("GET", path, params=params) as response:
                if response.status_code != 200:
                    _raise_for(response.status_code, await response.aread(), f"GET {path}")
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)

    def events(
        self,
        since: float | str | None = None,
        until: float | str | None = None,
        filters: Mapping[str, Sequence[str]] | None = None,
    ) -> ClientEventStream:
        """dockerd's ``/events``, as the library's: ``async with client.events(since=t) as
        events:`` then ``async for event in events`` (dicts) until ``until`` (or forever).
        ``since``/``until``: seconds since the epoch, or what dockerd reads (``"10m"``)."""
        params = _params(since=since, until=until, filters=filters or None)
        return ClientEventStream(lambda: self._streamed("GET", "/events", "events", params=params))

    # -- images -----------------------------------------------------------------------------

    async def image_import(
        self,
        source: str | os.PathLike[str] | AsyncIterable[bytes],
        repo: str = "",
        tag: str = "",
        changes: Sequence[str] = (),
    ) -> str:
        params: list[tuple[str, str]] = [("fromSrc", "-"), ("repo", repo), ("tag", tag)]
        params += [("changes", change) for change in changes]
        response = await self._request(
            "POST", "/images/create", params=params, content=_body(source)
        )
        for line in response.text.splitlines():
            if line.strip():
                status = json.loads(line).get("status", "")
                if status.startswith("sha256:"):
                    return str(status)
        raise errors.SystemError(f"unexpected import response: {response.text!r}")

    async def container_archive_stat(self, reference: str, path: str) -> dict[str, Any]:
        """The stat of ``path`` in the container (``X-Docker-Container-Path-Stat``)."""
        response = await self._request(
            "HEAD", f"/containers/{reference}/archive", params={"path": path}
        )
        stat: dict[str, Any] = json.loads(
            base64.b64decode(response.headers["x-docker-container-path-stat"])
        )
        return stat

    async def container_archive(
        self, reference: str, path: str
    ) -> tuple[dict[str, Any], ClientByteStream]:
        """``docker cp`` out of the container, as the library's: the stat of ``path`` and a
        tar of it (errors come before, with the stat); read the tar to its end or close it."""
        target = f"/containers/{reference}/archive"
        response = await self._streamed("GET", target, f"GET {target}", params={"path": path})
        try:
            stat: dict[str, Any] = json.loads(
                base64.b64decode(response.headers["X-Docker-Container-Path-Stat"])
            )
        except BaseException:
            await response.aclose()
            raise
        return stat, ClientByteStream(response)

    async def container_extract(
        self,
        reference: str,
        path: str,
        source: str | os.PathLike[str] | AsyncIterable[bytes],
        *,
        no_overwrite_dir_non_dir: bool = False,
        copy_uid_gid: bool = False,
    ) -> None:
        """``docker cp`` into the container: the tar ``source`` extracted into ``path``."""
        params = _params(path=path, noOverwriteDirNonDir=no_overwrite_dir_non_dir,
                         copyUIDGID=copy_uid_gid)  # fmt: skip
        await self._request(
            "PUT", f"/containers/{reference}/archive", params=params, content=_body(source)
        )

    async def system_df(self, kinds: Sequence[str] = ()) -> dict[str, Any]:
        params = [("type", kind) for kind in kinds]
        result: dict[str, Any] = await self._json("GET", "/system/df", params=params)
        return result

    async def volume_create(self, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("POST", "/volumes/create", json=dict(body or {}))
        return result

    async def volumes_list(self, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = {"filters": json.dumps(filters)} if filters else {}
        result: dict[str, Any] = await self._json("GET", "/volumes", params=params)
        return result

    async def volume_inspect(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/volumes/{name}")
        return result

    async def volume_remove(self, name: str, force: bool = False) -> None:
        await self._request("DELETE", f"/volumes/{name}", params=_params(force=force))

    async def volumes_prune(self, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = {"filters": json.dumps(filters)} if filters else {}
        result: dict[str, Any] = await self._json("POST", "/volumes/prune", params=params)
        return result

    async def image_save(self, names: Sequence[str]) -> ClientByteStream:
        """``docker save``, as the library's: ``async for chunk in await client.image_save(
        names)`` gives the archive's bytes; errors (a 404) come before, at the ``await``."""
        params = httpx.QueryParams([("names", name) for name in names])
        return ClientByteStream(await self._streamed("GET", "/images/get", "save", params=params))

    async def container_commit(
        self,
        reference: str,
        config: Mapping[str, Any] | None = None,
        *,
        repo: str = "",
        tag: str = "",
        author: str = "",
        comment: str = "",
        changes: Sequence[str] = (),
        pause: bool = True,
    ) -> str:
        params: list[tuple[str, str]] = [
            ("container", reference), ("repo", repo), ("tag", tag), ("author", author),
            ("comment", comment), ("pause", str(int(pause))),
        ]  # fmt: skip
        params += [("changes", change) for change in changes]
        result = await self._json("POST", "/commit", params=params, json=dict(config or {}))
        return str(result["Id"])

    async def image_pull(self, reference: str, tag: str = "", platform: str = "") -> None:
        """The daemon's checks, then its 404: asyncstart reaches no registry."""
        params = _params(fromImage=reference, tag=tag or None, platform=platform or None)
        await self._request("POST", "/images/create", params=params)

    async def image_load(self, source: str | os.PathLike[str] | AsyncIterable[bytes]) -> list[str]:
        response = await self._request("POST", "/images/load", content=_body(source))
        return [
            json.loads(line)["stream"].rstrip("\n")
            for line in response.text.splitlines()
            if line.strip()
        ]

    async def networks_list(self, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        params = {"filters": json.dumps(filters)} if filters else {}
        result: list[dict[str, Any]] = await self._json("GET", "/networks", params=params)
        return result

    async def network_inspect(self, reference: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/networks/{reference}")
        return result

    async def network_remove(self, reference: str) -> None:
        await self._request("DELETE", f"/networks/{reference}")

    async def network_create(self, body: Mapping[str, Any]) -> str:
        result = await self._json("POST", "/networks/create", json=dict(body))
        return str(result["Id"])

    async def networks_prune(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        params = {"filters": json.dumps(filters)} if filters else {}
        result = await self._json("POST", "/networks/prune", params=params)
        return list(result.get("NetworksDeleted") or [])

    async def network_connect(
        self, reference: str, container: str, endpoint: Mapping[str, Any] | None = None
    ) -> None:
        body: dict[str, Any] = {"Container": container}
        if endpoint is not None:
            body["EndpointConfig"] = dict(endpoint)
        await self._request("POST", f"/networks/{reference}/connect", json=body)

    async def network_disconnect(self, reference: str, container: str, force: bool = False) -> None:
        body = {"Container": container, "Force": force}
        await self._request("POST", f"/networks/{reference}/disconnect", json=body)

    async def images_list(self, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        params = {"filters": json.dumps(filters)} if filters else {}
        result: list[dict[str, Any]] = await self._json("GET", "/images/json", params=params)
        return result

    async def images_prune(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        """``docker image prune``: the ``Untagged: ...`` and ``Deleted: ...`` lines, as the
        library's (and :meth:`image_remove`'s)."""
        params = {"filters": json.dumps(filters)} if filters else {}
        result = await self._json("POST", "/images/prune", params=params)
        rows = result.get("ImagesDeleted") or []
        return [f"{key}: {value}" for row in rows for key, value in row.items()]

    async def image_history(self, reference: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._json("GET", f"/images/{reference}/history")
        return result

    async def image_inspect(self, reference: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/images/{reference}/json")
        return result

    async def image_tag(self, reference: str, repo: str, tag: str = "latest") -> None:
        await self._request("POST", f"/images/{reference}/tag", params=_params(repo=repo, tag=tag))

    async def image_remove(self, reference: str, force: bool = False) -> list[str]:
        rows = await self._json("DELETE", f"/images/{reference}", params=_params(force=force))
        return [f"{key}: {value}" for row in rows for key, value in row.items()]


def _exec_start_body(*, detach: bool, console_size: tuple[int, int] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"Detach": detach}
    if console_size is not None:
        body["ConsoleSize"] = list(console_size)
    return body


def _body(source: str | os.PathLike[str] | AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    if isinstance(source, AsyncIterable):
        return source
    return _read_file(Path(source))


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as file:
        while chunk := await file.read(_CHUNK):
            yield chunk
