"""The Docker Engine API over :class:`~asyncstart.Daemon`: routes, arguments, JSON and streams.

Each handler parses what dockerd's router parses, calls one daemon method and shapes the answer
as dockerd does. Errors from the engine are already Docker's (``asyncstart.errors``); this layer
only writes them as ``{"message": ...}`` with their status. It never touches a container's state
itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from .. import errors
from .._log import get_logger
from .._version import API_VERSION, MIN_API_VERSION, __version__
from ..daemon import Daemon
from ..execs import console_size
from .http import ClientError, Hijack, Hijacked, Reply, Request, Response, Streaming
from .websocket import WebSocketChannel
from .wire import (
    JSON,
    VERSIONED,
    api_version,
    arg_bool,
    arg_filters,
    arg_int,
    created_seconds,
    error_response,
    frame,
    json_body,
    json_object,
    json_reply,
    primed,
    stdio_type,
    timestamp,
    version_tuple,
)

__all__ = ["EngineAPI"]

log = get_logger("asyncstart.api")


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: re.Pattern[str]
    handler: Callable[..., Awaitable[Reply]]


class EngineAPI:
    """The HTTP application: ``await api(request)`` answers one request."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.server_headers = [
            ("Server", f"Docker/{__version__} (linux)"),
            ("Api-Version", API_VERSION),
            ("Ostype", "linux"),
        ]
        name = r"(?P<name>.+)"
        table: list[tuple[str, str, Callable[..., Awaitable[Reply]]]] = [
            ("GET", "/_ping", self.ping),
            ("HEAD", "/_ping", self.ping),
            ("GET", "/version", self.version),
            ("GET", "/info", self.info),
            ("GET", "/events", self.events),
            ("POST", "/containers/create", self.container_create),
            ("GET", "/containers/json", self.containers_list),
            ("GET", f"/containers/{name}/json", self.container_inspect),
            ("GET", f"/containers/{name}/logs", self.container_logs),
            ("GET", f"/containers/{name}/stats", self.container_stats),
            ("POST", "/commit", self.container_commit),
            ("GET", "/volumes", self.volumes_list),
            ("POST", "/volumes/create", self.volume_create),
            ("POST", "/volumes/prune", self.volumes_prune),
            ("GET", f"/volumes/{name}", self.volume_inspect),
            ("DELETE", f"/volumes/{name}", self.volume_remove),
            ("HEAD", f"/containers/{name}/archive", self.container_archive_stat),
            ("GET", f"/containers/{name}/archive", self.container_archive),
            ("PUT", f"/containers/{name}/archive", self.container_extract),
            ("GET", "/images/get", self.images_save),
            ("GET", f"/images/{name}/get", self.image_save),
            ("GET", f"/containers/{name}/attach/ws", self.container_attach_ws),
            ("POST", f"/containers/{name}/start", self.container_start),
            ("POST", f"/containers/{name}/stop", self.container_stop),
            ("POST", f"/containers/{name}/restart", self.container_restart),
            ("POST", f"/containers/{name}/kill", self.container_kill),
            ("POST", f"/containers/{name}/wait", self.container_wait),
            ("POST", f"/containers/{name}/attach", self.container_attach),
            ("POST", f"/containers/{name}/resize", self.container_resize),
            ("POST", f"/containers/{name}/exec", self.exec_create),
            ("POST", f"/containers/{name}/rename", self.container_rename),
            ("POST", f"/containers/{name}/update", self.container_update),
            ("POST", "/containers/prune", self.containers_prune),
            ("GET", f"/containers/{name}/top", self.container_top),
            ("GET", f"/containers/{name}/changes", self.container_changes),
            ("GET", f"/containers/{name}/export", self.container_export),
            ("POST", f"/exec/{name}/start", self.exec_start),
            ("POST", f"/exec/{name}/resize", self.exec_resize),
            ("GET", f"/exec/{name}/json", self.exec_inspect),
            ("POST", f"/containers/{name}/pause", self.container_pause),
            ("POST", f"/containers/{name}/unpause", self.container_unpause),
            ("DELETE", f"/containers/{name}", self.container_remove),
            # asyncstart's own, outside Docker's namespace: where the last start spent its time.
            ("GET", f"/x-asyncstart/containers/{name}/start-phases", self.start_phases),
            ("POST", "/images/create", self.image_create),
            ("POST", "/images/load", self.image_load),
            ("GET", "/images/json", self.images_list),
            ("GET", f"/images/{name}/json", self.image_inspect),
            ("GET", f"/images/{name}/history", self.image_history),
            ("POST", "/images/prune", self.images_prune),
            ("GET", "/system/df", self.system_df),
            ("POST", f"/images/{name}/tag", self.image_tag),
            ("DELETE", f"/images/{name}", self.image_remove),
            ("GET", "/networks", self.networks_list),
            ("GET", f"/networks/{name}", self.network_inspect),
            # Not built yet: said plainly rather than "page not found".
            ("POST", "/networks/create", self.network_create),
            ("POST", "/networks/prune", self.networks_prune),
            ("POST", f"/networks/{name}/connect", self.network_connect),
            ("POST", f"/networks/{name}/disconnect", self.network_disconnect),
            ("DELETE", f"/networks/{name}", self.network_remove),
        ]
        self._routes: dict[str, list[_Route]] = {}
        for method, pattern, handler in table:
            route = _Route(re.compile(pattern), handler)
            self._routes.setdefault(method, []).append(route)

    async def __call__(self, request: Request) -> Reply:
        began = time.perf_counter()
        try:
            reply = await self._dispatch(request)
        except errors.DockerError as exc:
            reply = error_response(exc)
        except ClientError:
            raise  # the request itself is broken: the connection answers and closes
        except Exception:
            log.exception("api.handler_failed", method=request.method, path=request.path)
            reply = json_reply({"message": "internal server error"}, 500)
        status = reply.status if isinstance(reply, Response | Streaming) else 101
        log.debug(
            "api.request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round((time.perf_counter() - began) * 1000, 3),
        )
        return reply

    async def _dispatch(self, request: Request) -> Reply:
        path = request.path
        if versioned := VERSIONED.fullmatch(path):
            version, path = versioned.groups()
            if version_tuple(version) < version_tuple(MIN_API_VERSION):
                raise errors.InvalidParameter(
                    f"client version {version} is too old. Minimum supported API version is "
                    f"{MIN_API_VERSION}, please upgrade your client to a newer version"
                )
            if version_tuple(version) > version_tuple(API_VERSION):
                raise errors.InvalidParameter(
                    f"client version {version} is too new. Maximum supported API version is "
                    f"{API_VERSION}"
                )
        for route in self._routes.get(request.method, ()):
            if match := route.pattern.fullmatch(path):
                return await route.handler(request, **match.groupdict())
        raise errors.NotFound("page not found")

    # -- system -----------------------------------------------------------------------------

    async def ping(self, request: Request) -> Reply:
        headers = [
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Pragma", "no-cache"),
            ("Docker-Experimental", str(self.daemon.config.experimental).lower()),
            ("Swarm", "inactive"),
            ("Content-Type", "text/plain; charset=utf-8"),
        ]
        return Response(200, (await self.daemon.ping()).encode(), headers)

    async def version(self, request: Request) -> Reply:
        return json_reply(await self.daemon.version())

    async def info(self, request: Request) -> Reply:
        return json_reply(await self.daemon.info())

    async def events(self, request: Request) -> Reply:
        now = time.time()
        since = timestamp(request.arg("since"), now)
        until = timestamp(request.arg("until"), now)
        wanted = arg_filters(request)

        async def stream() -> AsyncIterator[bytes]:
            async with self.daemon.events(since, until, wanted) as events:
                yield b""  # subscribed: the head may go (see _primed)
                async for message in events:
                    yield msgspec.json.encode(message) + b"\n"

        return Streaming(200, await primed(stream()), JSON)

    # -- containers -------------------------------------------------------------------------

    async def container_create(self, request: Request) -> Reply:
        body = await json_object(request)
        host_config = body.pop("HostConfig", None)
        networking = body.pop("NetworkingConfig", None)
        container_id = await self.daemon.container_create(
            name=request.arg("name") or None,
            config=body,
            host_config=host_config,
            networking_config=networking,
            platform=request.arg("platform") if api_version(request) >= (1, 41) else "",
        )
        return json_reply({"Id": container_id, "Warnings": []}, 201)

    async def containers_list(self, request: Request) -> Reply:
        limit = arg_int(request, "limit")
        rows = await self.daemon.containers_list(
            all=arg_bool(request, "all"),
            limit=-1 if limit is None else limit,
            filters=arg_filters(request),
        )
        return json_reply(rows)

    async def networks_list(self, request: Request) -> Reply:
        return json_reply(await self.daemon.networks_list(filters=arg_filters(request)))

    async def network_inspect(self, request: Request, name: str) -> Reply:
        return json_reply(await self.daemon.network_inspect(name))

    async def network_remove(self, request: Request, name: str) -> Reply:
        await self.daemon.network_remove(name)
        return Response(204)

    async def network_create(self, request: Request) -> Reply:
        body = await json_object(request)
        network_id = await self.daemon.network_create(body)
        return json_reply({"Id": network_id, "Warning": ""}, 201)

    async def volumes_list(self, request: Request) -> Reply:
        return json_reply(await self.daemon.volumes_list(arg_filters(request)))

    async def volume_create(self, request: Request) -> Reply:
        return json_reply(await self.daemon.volume_create(await json_object(request)), 201)

    async def volume_inspect(self, request: Request, name: str) -> Reply:
        return json_reply(await self.daemon.volume_inspect(name))

    async def volume_remove(self, request: Request, name: str) -> Reply:
        await self.daemon.volume_remove(name, force=arg_bool(request, "force"))
        return Response(204)

    async def volumes_prune(self, request: Request) -> Reply:
        filters = dict(arg_filters(request) or {})
        if api_version(request) < (1, 42):
            filters.setdefault("all", ["true"])  # dockerd: before 1.42 every unused volume
        return json_reply(await self.daemon.volumes_prune(filters))

    async def networks_prune(self, request: Request) -> Reply:
        removed = await self.daemon.networks_prune(filters=arg_filters(request))
        return json_reply({"NetworksDeleted": removed or None})

    async def network_connect(self, request: Request, name: str) -> Reply:
        body = await json_object(request)
        endpoint = body.get("EndpointConfig")
        if endpoint is not None and not isinstance(endpoint, dict):
            raise errors.InvalidParameter("invalid EndpointConfig: expected an object")
        await self.daemon.network_connect(name, str(body.get("Container") or ""), endpoint)
        return Response(200)

    async def network_disconnect(self, request: Request, name: str) -> Reply:
        body = await json_object(request)
        force = bool(body.get("Force"))
        await self.daemon.network_disconnect(name, str(body.get("Container") or ""), force)
        return Response(200)

    async def container_inspect(self, request: Request, name: str) -> Reply:
        inspected = await self.daemon.container_inspect(name)
        if api_version(request) < (1, 45):
            _short_id_aliases(inspected)
        return json_reply(inspected)

    async def container_start(self, request: Request, name: str) -> Reply:
        # As dockerd: a body of unknown length (chunked) or longer than "{}" plus padding.
        if request.length is None or request.length > 7:
            raise errors.InvalidParameter(
                "starting container with non-empty request body was deprecated since API v1.22 "
                "and removed in v1.24"
            )
        await self.daemon.container_start(
            name,
            checkpoint=request.arg("checkpoint") or None,
            checkpoint_dir=request.arg("checkpoint-dir") or None,
        )
        return Response(204)

    async def container_stop(self, request: Request, name: str) -> Reply:
        timeout = arg_int(request, "t")
        if request.arg("signal"):
            raise errors.InvalidParameter("asyncstart does not support a stop signal override")
        await self.daemon.container_stop(name, timeout)
        return Response(204)

    async def container_restart(self, request: Request, name: str) -> Reply:
        await self.daemon.container_restart(name, arg_int(request, "t"))
        return Response(204)

    async def container_kill(self, request: Request, name: str) -> Reply:
        await self.daemon.container_kill(name, request.arg("signal") or "KILL")
        return Response(204)

    async def container_pause(self, request: Request, name: str) -> Reply:
        await self.daemon.container_pause(name)
        return Response(204)

    async def container_unpause(self, request: Request, name: str) -> Reply:
        await self.daemon.container_unpause(name)
        return Response(204)

    async def container_remove(self, request: Request, name: str) -> Reply:
        if arg_bool(request, "link"):
            raise errors.InvalidParameter("asyncstart has no container links to remove")
        await self.daemon.container_remove(
            name, force=arg_bool(request, "force"), volumes=arg_bool(request, "v")
        )
        return Response(204)

    async def container_resize(self, request: Request, name: str) -> Reply:
        height, width = _size(request)
        await self.daemon.container_resize(name, height, width)
        return Response(200, b"", [("Content-Type", "text/plain; charset=utf-8")])

    async def containers_prune(self, request: Request) -> Reply:
        removed = await self.daemon.containers_prune(filters=arg_filters(request))
        return json_reply({"ContainersDeleted": removed or None, "SpaceReclaimed": 0})

    async def container_export(self, request: Request, name: str) -> Reply:
        return _tar(await self.daemon.container_export(name))  # (errors before the head)

    async def container_stats(self, request: Request, name: str) -> Reply:
        stream = arg_bool(request, "stream", True)
        one_shot = api_version(request) >= (1, 41) and arg_bool(request, "one-shot")
        documents = self.daemon.container_stats(name, stream=stream, one_shot=one_shot)

        async def body() -> AsyncIterator[bytes]:
            yield b""
            async for document in documents:
                yield msgspec.json.encode(document) + b"\n"

        # dockerd names the type only of the single document.
        headers = [] if stream else JSON
        return Streaming(200, await primed(body()), headers)

    async def container_archive_stat(self, request: Request, name: str) -> Reply:
        stat = await self.daemon.container_archive_stat(name, request.arg("path"))
        return Response(200, b"", [(_PATH_STAT, _stat_header(stat))])

    async def container_archive(self, request: Request, name: str) -> Reply:
        stat, chunks = await self.daemon.container_archive(name, request.arg("path"))

        async def body() -> AsyncIterator[bytes]:
            try:
                yield b""
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()  # (a client gone: the tar's writer ends)

        headers = [(_PATH_STAT, _stat_header(stat)), ("Content-Type", "application/x-tar")]
        return Streaming(200, await primed(body()), headers)

    async def container_extract(self, request: Request, name: str) -> Reply:
        # dockerd: a directory may be replaced by a file unless the client says no.
        no_overwrite = "noOverwriteDirNonDir" in request.query and arg_bool(
            request, "noOverwriteDirNonDir"
        )
        await self.daemon.container_extract(
            name,
            request.arg("path"),
            request.body,
            no_overwrite_dir_non_dir=no_overwrite,
            copy_uid_gid=arg_bool(request, "copyUIDGID"),
        )
        return Response(200)

    async def container_commit(self, request: Request) -> Reply:
        body = await json_body(request)
        if body is not None and not isinstance(body, dict):
            raise errors.InvalidParameter("invalid JSON: expected an object")
        image_id = await self.daemon.container_commit(
            request.arg("container"),
            body or None,
            repo=request.arg("repo"),
            tag=request.arg("tag"),
            author=request.arg("author"),
            comment=request.arg("comment"),
            changes=request.query.get("changes", []),
            pause=arg_bool(request, "pause", True),
        )
        return json_reply({"Id": image_id}, 201)

    async def images_save(self, request: Request) -> Reply:
        return await self._save(request.query.get("names", []))

    async def image_save(self, request: Request, name: str) -> Reply:
        return await self._save([name])

    async def _save(self, names: list[str]) -> Reply:
        return _tar(await self.daemon.image_save(names))  # (errors before the head)

    async def container_changes(self, request: Request, name: str) -> Reply:
        return json_reply(await self.daemon.container_changes(name) or None)

    async def container_top(self, request: Request, name: str) -> Reply:
        return json_reply(await self.daemon.container_top(name, request.arg("ps_args") or ""))

    async def container_update(self, request: Request, name: str) -> Reply:
        warnings = await self.daemon.container_update(name, await json_object(request))
        return json_reply({"Warnings": warnings})

    async def container_rename(self, request: Request, name: str) -> Reply:
        await self.daemon.container_rename(name, request.arg("name") or "")
        return Response(204)

    # -- exec -------------------------------------------------------------------------------

    async def exec_create(self, request: Request, name: str) -> Reply:
        exec_id = await self.daemon.exec_create(name, await json_object(request))
        return json_reply({"Id": exec_id}, 201)

    async def exec_inspect(self, request: Request, name: str) -> Reply:
        return json_reply(await self.daemon.exec_inspect(name))

    async def exec_resize(self, request: Request, name: str) -> Reply:
        height, width = _size(request)
        await self.daemon.exec_resize(name, height, width)
        return Response(200, b"", [("Content-Type", "text/plain; charset=utf-8")])

    async def exec_start(self, request: Request, name: str) -> Reply:
        body = await json_body(request) or {}
        if not isinstance(body, dict):
            raise errors.InvalidParameter("invalid JSON: expected an object")
        # Refused (unknown, started, container not running) with its status, before a hijack.
        size = console_size(body.get("ConsoleSize"))
        io = await self.daemon.exec_start(name, detach=bool(body.get("Detach")), console_size=size)
        if body.get("Detach"):
            return Response(200, b"", [("Content-Type", "text/plain; charset=utf-8")])

        async def run(conn: Hijacked) -> None:
            await conn.accept(_hijack_head(request, io.tty))
            io.begin()  # (the head is out: the process's output can follow it)
            async with anyio.create_task_group() as tg:

                async def pump_stdin() -> None:
                    while data := await conn.receive():
                        if await io.send(data):  # detached: the process runs on
                            tg.cancel_scope.cancel()
                            return
                    io.close_stdin()  # the client's half-close: EOF for the process

                async def end_at_hangup() -> None:
                    await conn.wait_hangup()
                    tg.cancel_scope.cancel()

                tg.start_soon(pump_stdin)
                tg.start_soon(end_at_hangup)
                async for stream, data in io.output():
                    await conn.send(data if io.tty else frame(stream, data))
                tg.cancel_scope.cancel()

        return Hijack(run)

    async def container_wait(self, request: Request, name: str) -> Reply:
        # The wait is registered before the 200 goes out: a client that sees the headers may
        # start the container and cannot miss its exit.
        pending = self.daemon.container_wait_pending(name, request.arg("condition"))

        async def body() -> AsyncIterator[bytes]:
            yield msgspec.json.encode(await pending.wait()) + b"\n"

        return Streaming(200, body(), JSON)

    async def container_logs(self, request: Request, name: str) -> Reply:
        now = time.time()
        logs = self.daemon.container_logs(
            name,
            stdout=arg_bool(request, "stdout"),
            stderr=arg_bool(request, "stderr"),
            follow=arg_bool(request, "follow"),
            tail=request.arg("tail", "all") or "all",
            since=timestamp(request.arg("since"), now),
            until=timestamp(request.arg("until"), now),
            timestamps=arg_bool(request, "timestamps"),
            details=arg_bool(request, "details"),
        )
        tty = logs.tty

        async def body() -> AsyncIterator[bytes]:
            # A write per chunk read (thousands of entries), not per entry; a client gone
            # closes the reader (its files) now, not at garbage collection.
            try:
                async for chunk in logs.chunks():
                    yield b"".join(data if tty else frame(stream, data) for stream, data in chunk)
            finally:
                with anyio.CancelScope(shield=True):
                    await logs.aclose()

        return Streaming(200, body(), [("Content-Type", stdio_type(tty))])

    async def container_attach(self, request: Request, name: str) -> Reply:
        stdin, stdout, stderr = (arg_bool(request, s) for s in ("stdin", "stdout", "stderr"))
        # Refused here (paused, restarting, unknown) with its status, before any hijack.
        attach = self.daemon.container_attach(
            name, stdin=stdin, stdout=stdout, stderr=stderr, detach_keys=request.arg("detachKeys")
        )

        async def run(conn: Hijacked) -> None:
            async with attach as session, anyio.create_task_group() as tg:
                tty = session.tty

                def out(stream: str, data: bytes) -> bytes:
                    return data if tty else frame(stream, data)

                # Subscribed before the client hears back, so a start it sends next is seen.
                await conn.accept(_hijack_head(request, tty))
                async for data in self._attach_logs(request, name, out, stdout, stderr):
                    await conn.send(data)
                if not arg_bool(request, "stream"):
                    return

                async def pump_stdin() -> None:
                    with contextlib.suppress(errors.DockerError):  # stdin closed under us
                        while data := await conn.receive():
                            if await session.send(data):  # detached: the process runs on
                                tg.cancel_scope.cancel()
                                return
                    if not await session.end_of_input():
                        tg.cancel_scope.cancel()

                async def end_at_hangup() -> None:
                    await conn.wait_hangup()  # gone altogether, not a half-close
                    tg.cancel_scope.cancel()

                if stdin:
                    tg.start_soon(pump_stdin)
                tg.start_soon(end_at_hangup)
                async for stream, data in session:
                    await conn.send(out(stream, data))
                tg.cancel_scope.cancel()

        return Hijack(run)

    async def container_attach_ws(self, request: Request, name: str) -> Reply:
        """dockerd's websocket attach: stdin, stdout and stderr all attached before API 1.42
        (the arguments after), the output never multiplexed."""
        version = api_version(request)
        stdin, stdout, stderr = (
            (arg_bool(request, s) for s in ("stdin", "stdout", "stderr"))
            if version >= (1, 42)
            else (True, True, True)
        )
        attach = self.daemon.container_attach(
            name, stdin=stdin, stdout=stdout, stderr=stderr, detach_keys=request.arg("detachKeys")
        )
        channel = WebSocketChannel(request, binary=version >= (1, 28))

        async def run(conn: Hijacked) -> None:
            async with attach as session, anyio.create_task_group() as tg:
                await channel.open(conn)
                async for data in self._attach_logs(request, name, _raw, stdout, stderr):
                    await channel.send(data)
                if not arg_bool(request, "stream"):
                    await channel.close()
                    return

                async def pump_input() -> None:
                    # Read even without stdin: the client's close and pings come this way.
                    with contextlib.suppress(errors.DockerError):  # stdin closed under us
                        while data := await channel.receive():
                            if stdin and await session.send(data):  # detached
                                tg.cancel_scope.cancel()
                                return
                    if not (stdin and await session.end_of_input()):
                        tg.cancel_scope.cancel()

                tg.start_soon(pump_input)
                async for _, data in session:
                    await channel.send(data)
                await channel.close()
                tg.cancel_scope.cancel()

        return Hijack(run)

    async def _attach_logs(
        self,
        request: Request,
        name: str,
        out: Callable[[str, bytes], bytes],
        stdout: bool,
        stderr: bool,
    ) -> AsyncIterator[bytes]:
        """With ``logs``, what the container wrote before the attach (each chunk through
        ``out``, the wire's framing)."""
        if arg_bool(request, "logs") and (stdout or stderr):
            replay = self.daemon.container_logs(name, stdout=stdout, stderr=stderr)
            async for chunk in replay.chunks():
                yield b"".join(out(stream, data) for stream, data in chunk)

    async def start_phases(self, request: Request, name: str) -> Reply:
        return json_reply(self.daemon.container_start_phases(name))

    # -- images -----------------------------------------------------------------------------

    async def image_create(self, request: Request) -> Reply:
        source = request.arg("fromSrc")
        if not source:
            platform = request.arg("platform") if api_version(request) >= (1, 32) else ""
            await self.daemon.image_pull(
                request.arg("fromImage"), tag=request.arg("tag"), platform=platform
            )
        if source != "-":
            raise errors.InvalidParameter(
                "asyncstart imports from the request body only (fromSrc=-)"
            )
        changes = request.query.get("changes", [])
        image_id = await self.daemon.image_import(
            request.body, repo=request.arg("repo"), tag=request.arg("tag"), changes=changes
        )
        return Response(200, msgspec.json.encode({"status": image_id}) + b"\r\n", JSON)

    async def image_load(self, request: Request) -> Reply:
        loaded = await self.daemon.image_load(request.body)
        lines = b"".join(msgspec.json.encode({"stream": line + "\n"}) + b"\r\n" for line in loaded)
        return Response(200, lines, JSON)

    async def images_list(self, request: Request) -> Reply:
        rows = await self.daemon.images_list(filters=arg_filters(request))
        return json_reply([_image_summary(row) for row in rows])

    async def system_df(self, request: Request) -> Reply:
        usage = await self.daemon.system_df(request.query.get("type", []))
        if "Images" in usage:
            # As dockerd's df: the containers using each image; the size it shares with other
            # images is not computed (0: all of it counts as its own).
            usage["Images"] = [
                _image_summary(row)
                | {"Containers": row["Containers"], "SharedSize": 0, "VirtualSize": row["Size"]}
                for row in usage["Images"]
            ]
        return json_reply(usage)

    async def images_prune(self, request: Request) -> Reply:
        removed = await self.daemon.images_prune(filters=arg_filters(request))
        deleted = [dict([line.split(": ", 1)]) for line in removed]
        return json_reply({"ImagesDeleted": deleted or None, "SpaceReclaimed": 0})

    async def image_history(self, request: Request, name: str) -> Reply:
        return json_reply(await self.daemon.image_history(name))

    async def image_inspect(self, request: Request, name: str) -> Reply:
        return json_reply(await self.daemon.image_inspect(name))

    async def image_tag(self, request: Request, name: str) -> Reply:
        repo = request.arg("repo")
        if not repo:
            raise errors.InvalidParameter("repository name must have at least one component")
        await self.daemon.image_tag(name, repo, request.arg("tag") or "latest")
        return Response(201)

    async def image_remove(self, request: Request, name: str) -> Reply:
        removed = await self.daemon.image_remove(name, force=arg_bool(request, "force"))
        return json_reply([dict([line.split(": ", 1)]) for line in removed])


_PATH_STAT = "X-Docker-Container-Path-Stat"


def _stat_header(stat: dict[str, Any]) -> str:
    """dockerd's path stat header: its JSON, base64."""
    return base64.standard_b64encode(json.dumps(stat, separators=(",", ":")).encode()).decode()


def _raw(stream: str, data: bytes) -> bytes:
    return data


def _image_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The Engine API's ``ImageSummary`` of a row of the daemon's image list."""
    return {
        "Containers": -1,
        "Created": created_seconds(row["Created"]),
        "Id": row["Id"],
        "Labels": row["Labels"],
        "ParentId": "",
        "RepoDigests": [],
        "RepoTags": row["RepoTags"],
        "SharedSize": -1,
        "Size": row["Size"],
    }


def _size(request: Request) -> tuple[int, int]:
    """A resize's ``h`` and ``w``: both required unsigned numbers, with dockerd 28's 400."""
    sizes = []
    for key, word in (("h", "height"), ("w", "width")):
        text = request.arg(key) or ""
        if not text.isdigit() or int(text) >= 1 << 32:
            raise errors.InvalidParameter(f'invalid resize {word} "{text}": invalid syntax')
        sizes.append(int(text))
    return sizes[0], sizes[1]


def _hijack_head(request: Request, tty: bool) -> bytes:
    """A hijacked stream's head: as dockerd, an Upgrade header asks for the 101; without it,
    the old raw hijack (200)."""
    if "upgrade" in request.headers:
        return (
            f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {stdio_type(tty)}\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        ).encode()
    return f"HTTP/1.1 200 OK\r\nContent-Type: {stdio_type(True)}\r\n\r\n".encode()


#: The networks that are not user-defined (dockerd's ``NetworkMode.IsUserDefined``; the API
#: may not read the networks module, whose ``predefined`` says the same).
_PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none", "default"})


def _short_id_aliases(inspected: dict[str, Any]) -> None:
    """dockerd before API 1.45: on each user-defined network, the container's short ID and
    hostname are among its ``Aliases`` (since 1.45 they are in ``DNSNames`` only)."""
    extra = [inspected["Id"][:12], (inspected.get("Config") or {}).get("Hostname") or ""]
    networks = (inspected.get("NetworkSettings") or {}).get("Networks") or {}
    for name, endpoint in networks.items():
        if name in _PREDEFINED_NETWORKS or name.startswith("container:"):
            continue
        aliases = [*(endpoint.get("Aliases") or ()), *(alias for alias in extra if alias)]
        endpoint["Aliases"] = list(dict.fromkeys(aliases))


def _tar(chunks: AsyncIterator[bytes]) -> Streaming:
    return Streaming(200, chunks, [("Content-Type", "application/x-tar")])
