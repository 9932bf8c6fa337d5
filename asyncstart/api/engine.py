"""The Docker Engine API over :class:`~asyncstart.Daemon`: routes, arguments, JSON and streams.

Each handler parses what dockerd's router parses, calls one daemon method and shapes the answer
as dockerd does. Errors from the engine are already Docker's (``asyncstart.errors``); this layer
only writes them as ``{"message": ...}`` with their status. It never touches a container's state
itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import structlog

from .. import errors
from .._version import API_VERSION, MIN_API_VERSION, __version__
from ..daemon import Daemon
from ..views import parse_time
from .http import ClientError, Hijack, Hijacked, Reply, Request, Response, Streaming

__all__ = ["API_VERSION", "MIN_API_VERSION", "EngineAPI"]

log = structlog.get_logger("asyncstart.api")

#: Largest JSON request body accepted (a create request is a few KiB).
MAX_JSON_BODY = 4 * 1024 * 1024

_VERSIONED = re.compile(r"/v(\d+(?:\.\d+)?)(/.*)")
_STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}
_FALSE = ("", "0", "no", "false", "none")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}

JSON = [("Content-Type", "application/json")]


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _json(value: Any, status: int = 200) -> Response:
    # dockerd's encoder ends every document with a newline.
    return Response(status, msgspec.json.encode(value) + b"\n", JSON)


def error_response(exc: errors.DockerError) -> Response:
    if exc.status == 304:
        return Response(304)
    return _json({"message": exc.message}, exc.status)


def frame(stream: str, data: bytes) -> bytes:
    """One frame of dockerd's multiplexed stream: [id, 0, 0, 0, size (big-endian)] + data."""
    return struct.pack(">BxxxL", _STREAM_IDS[stream], len(data)) + data


def _bool(request: Request, name: str, default: bool = False) -> bool:
    """dockerd's ``BoolValueOrDefault``: absent is the default, ``0/no/false/none`` are false."""
    if name not in request.query:
        return default
    return request.arg(name).strip().lower() not in _FALSE


def _int(request: Request, name: str) -> int | None:
    value = request.arg(name)
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.InvalidParameter(f'strconv.Atoi: parsing "{value}": invalid syntax') from None


def _timestamp(value: str, now: float) -> float:
    """dockerd's ``GetTimestamp``: seconds since the epoch, RFC 3339, or a duration ago."""
    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        pass
    if _DURATION.sub("", value) == "":
        seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION.findall(value))
        return now - seconds
    try:
        return parse_time(value)
    except ValueError:
        raise errors.InvalidParameter(
            f'failed to parse value as time or duration: "{value}"'
        ) from None


def _filters(request: Request) -> dict[str, list[str]]:
    """The ``filters`` argument: ``{"key": ["v"]}`` or the older ``{"key": {"v": true}}``."""
    text = request.arg("filters")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise errors.InvalidParameter(f"invalid filter: {exc}") from None
    if not isinstance(raw, dict):
        raise errors.InvalidParameter("invalid filter: expected an object")
    result: dict[str, list[str]] = {}
    for key, value in raw.items():
        if isinstance(value, dict | list):
            result[key] = [str(v) for v in value]
        else:
            raise errors.InvalidParameter(f"invalid filter '{key}'")
    return result


async def _json_body(request: Request) -> Any:
    data = await request.body.read(MAX_JSON_BODY)
    if not data.strip():
        return None
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if kind != "application/json":
        raise errors.InvalidParameter(
            f"unsupported Content-Type header ({kind}): must be 'application/json'"
        )
    try:
        return json.loads(data)
    except ValueError as exc:
        raise errors.InvalidParameter(f"invalid JSON: {exc}") from None


def _is_actor(kind: str) -> Callable[[Mapping[str, Any], str], bool]:
    """A filter on an event's actor of this type, by ID prefix or name."""

    def check(message: Mapping[str, Any], value: str) -> bool:
        actor = message["Actor"]
        return message["Type"] == kind and (
            str(actor["ID"]).startswith(value) or actor["Attributes"].get("name") == value
        )

    return check


def _has_label(message: Mapping[str, Any], value: str) -> bool:
    key, has_value, wanted = value.partition("=")
    attributes = message["Actor"]["Attributes"]
    return attributes.get(key) == wanted if has_value else key in attributes


#: The event filters dockerd takes here: key -> does this message match this value.
_EVENT_CHECKS: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    "type": lambda m, v: m["Type"] == v,
    "event": lambda m, v: m["Action"] == v or m["Action"].startswith(v + ":"),
    "container": _is_actor("container"),
    "network": _is_actor("network"),
    "image": lambda m, v: m["Actor"]["Attributes"].get("image") == v,
    "scope": lambda m, v: m.get("scope") == v,
    "daemon": lambda m, v: m["Type"] == "daemon",
    "label": _has_label,
}


def _event_matches(message: Mapping[str, Any], wanted: dict[str, list[str]], since: float,
                   until: float) -> bool:  # fmt: skip
    at = message["timeNano"] / 1e9
    if (since and at < since) or (until and at > until):
        return False
    return all(
        any(_EVENT_CHECKS[key](message, value) for value in values)
        for key, values in wanted.items()
    )


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: re.Pattern[str]
    handler: Callable[..., Awaitable[Reply]]


class EngineAPI:
    """The HTTP application: ``await api(request)`` answers one request."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.engine_id = _engine_id(daemon)
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
            ("POST", f"/containers/{name}/start", self.container_start),
            ("POST", f"/containers/{name}/stop", self.container_stop),
            ("POST", f"/containers/{name}/restart", self.container_restart),
            ("POST", f"/containers/{name}/kill", self.container_kill),
            ("POST", f"/containers/{name}/wait", self.container_wait),
            ("POST", f"/containers/{name}/attach", self.container_attach),
            ("POST", f"/containers/{name}/resize", self.container_resize),
            ("POST", f"/containers/{name}/pause", self.container_pause),
            ("POST", f"/containers/{name}/unpause", self.container_unpause),
            ("DELETE", f"/containers/{name}", self.container_remove),
            # asyncstart's own, outside Docker's namespace: where the last start spent its time.
            ("GET", f"/x-asyncstart/containers/{name}/start-phases", self.start_phases),
            ("POST", "/images/create", self.image_create),
            ("POST", "/images/load", self.image_load),
            ("GET", "/images/json", self.images_list),
            ("GET", f"/images/{name}/json", self.image_inspect),
            ("POST", f"/images/{name}/tag", self.image_tag),
            ("DELETE", f"/images/{name}", self.image_remove),
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
            reply = _json({"message": "internal server error"}, 500)
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
        if versioned := _VERSIONED.fullmatch(path):
            version, path = versioned.groups()
            if _version_tuple(version) < _version_tuple(MIN_API_VERSION):
                raise errors.InvalidParameter(
                    f"client version {version} is too old. Minimum supported API version is "
                    f"{MIN_API_VERSION}, please upgrade your client to a newer version"
                )
            if _version_tuple(version) > _version_tuple(API_VERSION):
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
        return Response(200, b"OK", headers)

    async def version(self, request: Request) -> Reply:
        details = {
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": f"python{platform.python_version()}",
            "Os": "linux",
            "Arch": _arch(),
            "KernelVersion": platform.release(),
            "Experimental": str(self.daemon.config.experimental).lower(),
        }
        return _json(
            {
                "Platform": {"Name": "asyncstart"},
                "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
                "Version": __version__,
                **{k: v for k, v in details.items() if k != "Experimental"},
                "Experimental": self.daemon.config.experimental,
                "BuildTime": "",
            }
        )

    async def info(self, request: Request) -> Reply:
        stats = self.daemon.statistics()
        images = await self.daemon.images_list()
        config = self.daemon.config
        return _json(
            {
                "ID": self.engine_id,
                "Containers": stats.containers,
                "ContainersRunning": stats.running,
                "ContainersPaused": stats.paused,
                "ContainersStopped": stats.stopped,
                "Images": len(images),
                "Driver": "overlay" if config.runtime == "runc" else "fake",
                "DockerRootDir": str(self.daemon.data_root),
                "ServerVersion": __version__,
                "Name": socket.gethostname(),
                "OperatingSystem": platform.platform(),
                "OSType": "linux",
                "Architecture": platform.machine(),
                "KernelVersion": platform.release(),
                "NCPU": os.cpu_count() or 1,
                "MemTotal": _mem_total(),
                "DefaultRuntime": "runc",
                "Runtimes": {"runc": {"path": "runc"}},
                "CgroupDriver": "cgroupfs",
                "LoggingDriver": "json-file",
                "ExperimentalBuild": config.experimental,
                "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": ""},
                "SecurityOptions": [],
                "Warnings": [],
            }
        )

    async def events(self, request: Request) -> Reply:
        now = time.time()
        since = _timestamp(request.arg("since"), now)
        until = _timestamp(request.arg("until"), now)
        wanted = _filters(request)
        for key in wanted:
            if key not in _EVENT_CHECKS:
                raise errors.InvalidParameter(f"invalid filter '{key}'")
        bus = self.daemon.events

        async def stream() -> AsyncIterator[bytes]:
            async with bus.subscribe() as live:
                # Taken with the subscription, in one step: every event is in exactly one of
                # the two, the backlog or the live stream.
                backlog = bus.history() if since or until else []
                yield b""  # subscribed: the head may go (see _primed)
                for message in backlog:
                    if _event_matches(message, wanted, since, until):
                        yield msgspec.json.encode(message) + b"\n"
                if until and until <= time.time():
                    return
                with anyio.move_on_after(until - time.time() if until else float("inf")):
                    async for message in live:
                        if _event_matches(message, wanted, 0, until):
                            yield msgspec.json.encode(message) + b"\n"

        return Streaming(200, await _primed(stream()), JSON)

    # -- containers -------------------------------------------------------------------------

    async def container_create(self, request: Request) -> Reply:
        body = await _json_body(request)
        if body is None:
            raise errors.InvalidParameter("invalid JSON: EOF")
        if not isinstance(body, dict):
            raise errors.InvalidParameter("invalid JSON: expected an object")
        host_config = body.pop("HostConfig", None)
        body.pop("NetworkingConfig", None)
        container_id = await self.daemon.container_create(
            name=request.arg("name") or None, config=body, host_config=host_config
        )
        return _json({"Id": container_id, "Warnings": []}, 201)

    async def containers_list(self, request: Request) -> Reply:
        limit = _int(request, "limit")
        rows = await self.daemon.containers_list(
            all=_bool(request, "all"),
            limit=-1 if limit is None else limit,
            filters=_filters(request),
        )
        return _json(rows)

    async def container_inspect(self, request: Request, name: str) -> Reply:
        return _json(await self.daemon.container_inspect(name))

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
        timeout = _int(request, "t")
        if request.arg("signal"):
            raise errors.InvalidParameter("asyncstart does not support a stop signal override")
        await self.daemon.container_stop(name, timeout)
        return Response(204)

    async def container_restart(self, request: Request, name: str) -> Reply:
        await self.daemon.container_restart(name, _int(request, "t"))
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
        if _bool(request, "link"):
            raise errors.InvalidParameter("asyncstart has no container links to remove")
        await self.daemon.container_remove(name, force=_bool(request, "force"))
        return Response(204)

    async def container_resize(self, request: Request, name: str) -> Reply:
        for dimension in ("h", "w"):
            _int(request, dimension)
        inspect = await self.daemon.container_inspect(name)
        if not inspect["State"]["Running"]:
            raise errors.Conflict(f"Container {inspect['Id']} is not running")
        return Response(200, b"", [("Content-Type", "text/plain; charset=utf-8")])

    async def container_wait(self, request: Request, name: str) -> Reply:
        # The wait is registered before the 200 goes out: a client that sees the headers may
        # start the container and cannot miss its exit.
        pending = self.daemon.container_wait_pending(name, request.arg("condition"))

        async def body() -> AsyncIterator[bytes]:
            yield msgspec.json.encode(await pending.wait()) + b"\n"

        return Streaming(200, body(), JSON)

    async def container_logs(self, request: Request, name: str) -> Reply:
        now = time.time()
        inspect = await self.daemon.container_inspect(name)
        lines = self.daemon.container_logs(
            name,
            stdout=_bool(request, "stdout"),
            stderr=_bool(request, "stderr"),
            follow=_bool(request, "follow"),
            tail=request.arg("tail", "all") or "all",
            since=_timestamp(request.arg("since"), now),
            until=_timestamp(request.arg("until"), now),
            timestamps=_bool(request, "timestamps"),
        )
        tty = bool(inspect["Config"]["Tty"])

        async def body() -> AsyncIterator[bytes]:
            async for stream, data in lines:
                yield data if tty else frame(stream, data)

        return Streaming(200, body(), [("Content-Type", _stdio_type(tty))])

    async def container_attach(self, request: Request, name: str) -> Reply:
        inspect = await self.daemon.container_inspect(name)
        state = inspect["State"]
        if state["Paused"]:
            raise errors.Conflict(
                f"container {name} is paused, unpause the container before attach"
            )
        if state["Restarting"]:
            raise errors.Conflict(
                f"container {name} is restarting, wait until the container is running"
            )
        config = inspect["Config"]
        tty = bool(config["Tty"])
        stdin, stdout, stderr = (_bool(request, s) for s in ("stdin", "stdout", "stderr"))
        # As dockerd: an Upgrade header asks for the 101; without it, the old raw hijack.
        if "upgrade" in request.headers:
            head = (
                f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {_stdio_type(tty)}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            )
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {_stdio_type(True)}\r\n\r\n"

        def out(stream: str, data: bytes) -> bytes:
            return data if tty else frame(stream, data)

        async def run(conn: Hijacked) -> None:
            attach = self.daemon.container_attach(name, stdin=stdin, stdout=stdout, stderr=stderr)
            async with attach as session, anyio.create_task_group() as tg:
                # Subscribed before the client hears back, so a start it sends next is seen.
                await conn.accept(head.encode())
                if _bool(request, "logs") and (stdout or stderr):
                    async for stream, data in self.daemon.container_logs(
                        name, stdout=stdout, stderr=stderr
                    ):
                        await conn.send(out(stream, data))
                if not _bool(request, "stream"):
                    return

                async def pump_stdin() -> None:
                    with contextlib.suppress(errors.DockerError):  # stdin closed under us
                        while data := await conn.receive():
                            await session.send(data)
                    # dockerd's rule at the end of the client's input: with StdinOnce and no
                    # TTY (docker run -i) the container's stdin closes and the output goes on;
                    # otherwise the attach ends.
                    if config.get("StdinOnce") and not tty:
                        await session.send_eof()
                    else:
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

    async def start_phases(self, request: Request, name: str) -> Reply:
        return _json(self.daemon.container_start_phases(name))

    # -- images -----------------------------------------------------------------------------

    async def image_create(self, request: Request) -> Reply:
        source = request.arg("fromSrc")
        if not source:
            image = request.arg("fromImage") or "(none)"
            raise errors.NotFound(
                f"No such image: {image} (asyncstart does not pull from registries; "
                "use docker import or docker load)"
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
        rows = await self.daemon.images_list()
        return _json(
            [
                {
                    "Containers": -1,
                    "Created": _created_seconds(row["Created"]),
                    "Id": row["Id"],
                    "Labels": row["Labels"],
                    "ParentId": "",
                    "RepoDigests": [],
                    "RepoTags": row["RepoTags"],
                    "SharedSize": -1,
                    "Size": row["Size"],
                }
                for row in rows
            ]
        )

    async def image_inspect(self, request: Request, name: str) -> Reply:
        return _json(await self.daemon.image_inspect(name))

    async def image_tag(self, request: Request, name: str) -> Reply:
        repo = request.arg("repo")
        if not repo:
            raise errors.InvalidParameter("repository name must have at least one component")
        await self.daemon.image_tag(name, repo, request.arg("tag") or "latest")
        return Response(201)

    async def image_remove(self, request: Request, name: str) -> Reply:
        removed = await self.daemon.image_remove(name, force=_bool(request, "force"))
        return _json([dict([line.split(": ", 1)]) for line in removed])


async def _primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Run a stream to its first (empty) chunk before the head goes out: what it sets up
    there — a subscription — is in place when the client hears 200, and its errors are still
    answered with their own status."""
    if await anext(chunks) != b"":
        raise AssertionError("a primed stream starts with an empty chunk")
    return chunks


def _stdio_type(tty: bool) -> str:
    if tty:
        return "application/vnd.docker.raw-stream"
    return "application/vnd.docker.multiplexed-stream"


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _created_seconds(created: str) -> int:
    try:
        return int(parse_time(created)) if created else 0
    except ValueError:
        return 0


def _engine_id(daemon: Daemon) -> str:
    """A stable identity for this data root, as dockerd's ``engine-id`` file."""
    path = daemon.data_root / "engine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        engine_id = str(uuid.uuid4())
        path.write_text(engine_id + "\n")
        return engine_id
