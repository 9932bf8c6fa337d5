"""The Engine API over a unix socket, on the fake runtime: routes, streams, errors, shutdown.

The same server runs on asyncio and on trio. Real containers through the real docker CLI and
docker-py are in ``test_docker_cli.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asyncstart import Client, errors, serve_api
from asyncstart.api import ApiServer, parse_host
from asyncstart.views import format_time

from .conftest import Engine, OpenEngine
from .helpers import tar_of

pytestmark = pytest.mark.anyio


@dataclass
class Api:
    engine: Engine
    server: ApiServer
    client: Client
    sock: Path


@asynccontextmanager
async def open_api(open_engine: OpenEngine, sock: Path, **config: Any) -> AsyncIterator[Api]:
    async with (
        open_engine(**config) as engine,
        serve_api(engine.daemon, [f"unix://{sock}"]) as server,
        Client(f"unix://{sock}") as client,
    ):
        yield Api(engine, server, client, sock)


@pytest.fixture
async def api(open_engine: OpenEngine, sock: Path) -> AsyncIterator[Api]:
    async with open_api(open_engine, sock) as opened:
        yield opened


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw(sock: Path, request: bytes) -> Raw:
    """Send bytes as they are; read the answer until the server closes (Connection: close)."""
    async with await anyio.connect_unix(sock) as stream:
        # A server refusing an oversized request may answer and close before reading it all.
        with contextlib.suppress(anyio.BrokenResourceError):
            await stream.send(request)
        data = b""
        with anyio.fail_after(10):
            while True:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {k.lower(): v for k, v in headers.items()}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Raw(int(lines[0].split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    """The body of a chunked reply (as much of it as has arrived)."""
    out = b""
    while b"\r\n" in data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0 or len(data) < size:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def http(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: docker", "Connection: close", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def sleeper(api: Api, name: str = "web", **config: Any) -> str:
    body = {"Image": "busybox", "Cmd": ["sleep", "infinity"], **config}
    return await api.client.container_create(name, body)


# -- system -------------------------------------------------------------------------------


async def test_ping_version_and_info(api: Api) -> None:
    assert await api.client.ping() == "OK"
    head = await raw(api.sock, http("HEAD", "/_ping"))
    assert head.status == 200 and head.body == b""
    assert head.headers["api-version"] == "1.51"
    assert head.headers["ostype"] == "linux"
    version = await api.client.version()
    assert version["ApiVersion"] == "1.51" and version["MinAPIVersion"] == "1.24"
    assert version["Os"] == "linux" and version["Components"][0]["Name"] == "Engine"
    await sleeper(api, "one")
    await sleeper(api, "two")
    await api.client.container_start("one")
    info = await api.client.info()
    assert (info["Containers"], info["ContainersRunning"], info["ContainersStopped"]) == (2, 1, 1)
    assert info["ServerVersion"] == version["Version"]
    assert info["ID"] == (await api.client.info())["ID"] != ""
    # Every field of dockerd's system.Info that is not omitempty, as clients index them.
    dockerd_fields = [
        "ID",
        "Containers",
        "ContainersRunning",
        "ContainersPaused",
        "ContainersStopped",
        "Images",
        "Driver",
        "DriverStatus",
        "Plugins",
        "MemoryLimit",
        "SwapLimit",
        "CpuCfsPeriod",
        "CpuCfsQuota",
        "CPUShares",
        "CPUSet",
        "PidsLimit",
        "IPv4Forwarding",
        "Debug",
        "NFd",
        "OomKillDisable",
        "NGoroutines",
        "SystemTime",
        "LoggingDriver",
        "CgroupDriver",
        "NEventsListener",
        "KernelVersion",
        "OperatingSystem",
        "OSVersion",
        "OSType",
        "Architecture",
        "IndexServerAddress",
        "RegistryConfig",
        "NCPU",
        "MemTotal",
        "GenericResources",
        "DockerRootDir",
        "HttpProxy",
        "HttpsProxy",
        "NoProxy",
        "Name",
        "Labels",
        "ExperimentalBuild",
        "ServerVersion",
        "Runtimes",
        "DefaultRuntime",
        "Swarm",
        "LiveRestoreEnabled",
        "Isolation",
        "InitBinary",
        "ContainerdCommit",
        "RuncCommit",
        "InitCommit",
        "SecurityOptions",
        "CDISpecDirs",
        "Warnings",
    ]
    assert [field for field in dockerd_fields if field not in info] == []
    assert info["Debug"] is False and info["LoggingDriver"] == "json-file"
    assert info["Plugins"]["Volume"] == ["local"] and info["CgroupDriver"] == "cgroupfs"
    assert info["NEventsListener"] == 0 and info["NFd"] > 0


async def test_versioned_and_unversioned_paths(api: Api) -> None:
    assert (await raw(api.sock, http("GET", "/v1.41/_ping"))).body == b"OK"
    assert (await raw(api.sock, http("GET", "/_ping"))).body == b"OK"
    too_new = await raw(api.sock, http("GET", "/v1.99/_ping"))
    assert too_new.status == 400
    assert too_new.json()["message"] == (
        "client version 1.99 is too new. Maximum supported API version is 1.51"
    )
    too_old = await raw(api.sock, http("GET", "/v1.12/containers/json"))
    assert too_old.status == 400 and "is too old" in too_old.json()["message"]


# -- containers ---------------------------------------------------------------------------


async def test_a_container_lifecycle_over_the_socket(api: Api) -> None:
    client = api.client
    cid = await sleeper(api, "web", Labels={"tier": "front"})
    await client.container_start(cid[:12])
    state = (await client.container_inspect("web"))["State"]
    assert state["Status"] == "running" and state["Pid"] > 0
    with pytest.raises(errors.NotModified):
        await client.container_start("web")
    await sleeper(api, "idle")
    running = await client.containers_list()
    assert [row["Names"] for row in running] == [["/web"]]
    assert len(await client.containers_list(all=True)) == 2
    assert len(await client.containers_list(limit=1)) == 1
    assert [
        r["Names"] for r in await client.containers_list(filters={"label": ["tier=front"]})
    ] == [["/web"]]
    assert [
        r["Names"] for r in await client.containers_list(all=True, filters={"status": ["created"]})
    ] == [["/idle"]]
    await client.container_pause("web")
    assert (await client.container_inspect("web"))["State"]["Status"] == "paused"
    await client.container_unpause("web")
    await client.container_restart("web", timeout=1)
    assert (await client.container_inspect("web"))["RestartCount"] == 0
    with pytest.raises(errors.Conflict):
        await client.container_remove("web")
    await client.container_stop("web", timeout=5)
    assert await client.container_wait("web") == {"StatusCode": 143}
    await client.container_start("web")
    await client.container_kill("web", "SIGKILL")
    assert (await client.container_inspect("web"))["State"]["ExitCode"] == 137
    await client.container_remove("web")
    with pytest.raises(errors.NotFound, match="No such container: web"):
        await client.container_inspect("web")


async def test_errors_carry_dockerds_status_and_message(api: Api) -> None:
    client = api.client
    with pytest.raises(errors.NotFound, match="^No such container: nosuch$"):
        await client.container_start("nosuch")
    with pytest.raises(errors.InvalidParameter, match="Invalid container name"):
        await client.container_create("a/b", {"Image": "busybox", "Cmd": ["true"]})
    await sleeper(api)
    with pytest.raises(errors.Conflict, match="already in use"):
        await sleeper(api)
    with pytest.raises(errors.InvalidParameter, match="experimental"):
        await client.container_start("web", checkpoint="cp1")
    with pytest.raises(errors.InvalidParameter, match='invalid condition: "sometime"'):
        await client.container_wait("web", condition="sometime")
    with pytest.raises(errors.InvalidParameter, match="^Invalid signal: SIGNOPE$"):
        await client.container_kill("web", "SIGNOPE")


async def test_a_start_with_a_body_is_refused_as_by_dockerd(api: Api) -> None:
    await sleeper(api)
    body = b'{"Binds": ["/:/host"]}'
    sized = await raw(api.sock, http("POST", "/containers/web/start", body))
    assert sized.status == 400
    assert sized.json()["message"].startswith("starting container with non-empty request body")
    chunked = http("POST", "/containers/web/start", b"", "Transfer-Encoding: chunked")
    assert (await raw(api.sock, chunked + b"2\r\n{}\r\n0\r\n\r\n")).status == 400
    assert (await api.client.container_inspect("web"))["State"]["Status"] == "created"
    # An empty JSON object is tolerated, as dockerd does (length <= 7).
    assert (await raw(api.sock, http("POST", "/containers/web/start", b"{}"))).status == 204


async def test_checkpoint_reaches_the_daemon(open_engine: OpenEngine, sock: Path) -> None:
    async with open_api(open_engine, sock, experimental=True) as api:
        await sleeper(api)
        with pytest.raises(errors.DockerError, match="checkpoint cp1 does not exist in /tmp/cps"):
            await api.client.container_start("web", checkpoint="cp1", checkpoint_dir="/tmp/cps")
        api.engine.runtime.checkpoints.add("cp1")
        await api.client.container_start("web", checkpoint="cp1", checkpoint_dir="/tmp/cps")
        assert (await api.client.container_inspect("web"))["State"]["Running"]


async def test_wait_answers_its_headers_at_once_and_the_body_at_the_exit(api: Api) -> None:
    await sleeper(api)
    await api.client.container_start("web")
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(http("POST", "/containers/web/wait?condition=not-running"))
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            assert head.startswith(b"HTTP/1.1 200 ")
            assert (await api.client.container_inspect("web"))["State"]["Running"]
            await api.client.container_kill("web")
            rest = head.partition(b"\r\n\r\n")[2]
            while True:
                try:
                    rest += await stream.receive()
                except anyio.EndOfStream:
                    break
    assert json.loads(_dechunk(rest)) == {"StatusCode": 137}


async def test_a_wait_for_the_next_exit_sees_a_start_that_follows_its_headers(api: Api) -> None:
    await sleeper(api, Cmd=["true"])
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(http("POST", "/containers/web/wait?condition=next-exit"))
            data = await read_head(stream)
            # The wait was queued before its headers left: a start sent now cannot slip past.
            await api.client.container_start("web")
            data += await read_to_end(stream)
    assert json.loads(_dechunk(data)) == {"StatusCode": 0}


async def read_head(stream: anyio.abc.ByteStream) -> bytes:
    """Read up to the end of the response head; return what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return rest


async def read_to_end(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


async def test_a_client_that_goes_away_does_not_disturb_the_operation(api: Api) -> None:
    await sleeper(api)
    await api.client.container_start("web")
    async with api.engine.daemon.subscribe_events() as events:
        # A stop whose client hangs up at once still stops the container.
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(http("POST", "/containers/web/stop?t=5"))
        with anyio.fail_after(10):
            async for event in events:
                if event["Action"] == "stop":
                    break
    assert (await api.client.container_inspect("web"))["State"]["ExitCode"] == 143
    # A wait whose client goes away is dropped; the daemon goes on serving. (A client sends
    # nothing while it reads a stream: its EOF is its leaving. Half-closed, this one can still
    # see the server end the stream and close, instead of being told nothing.)
    await api.client.container_start("web")
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(http("POST", "/containers/web/wait"))
            rest = await read_head(stream)
            await stream.send_eof()
            rest += await read_to_end(stream)
    assert _dechunk(rest) == b""  # ended without an answer: the container still runs
    assert (await api.client.container_inspect("web"))["State"]["Running"]
    assert await api.client.ping() == "OK"
    assert api.server.connections == 1  # the client's own


async def connections_settle_at(server: ApiServer, count: int) -> None:
    """Wait until ``server`` holds ``count`` connections. A client that hung up altogether
    cannot watch the server let go of it, and nothing announces it: so each look comes once
    every task has run as far as it can (``wait_all_tasks_blocked``), never after a sleep. A
    server that never lets go fails the caller's ``fail_after``."""
    while server.connections != count:
        await anyio.wait_all_tasks_blocked()


def _log_line(stream: str, text: str, at: float) -> bytes:
    return json.dumps({"log": text, "stream": stream, "time": format_time(at)}).encode() + b"\n"


async def test_logs_are_multiplexed_frames(api: Api) -> None:
    await sleeper(api)
    log = Path((await api.client.container_inspect("web"))["LogPath"])
    now = time.time()
    log.write_bytes(
        _log_line("stdout", "out 1\n", now - 60)
        + _log_line("stderr", "err 1\n", now - 30)
        + _log_line("stdout", "out 2\n", now)
    )
    reply = await raw(api.sock, http("GET", "/containers/web/logs?stdout=1&stderr=1"))
    assert reply.headers["content-type"] == "application/vnd.docker.multiplexed-stream"
    frames = reply.body
    assert frames[:8] == struct.pack(">BxxxL", 1, 6) and frames[8:14] == b"out 1\n"
    assert frames[14:22] == struct.pack(">BxxxL", 2, 6) and frames[22:28] == b"err 1\n"
    got = [item async for item in api.client.container_logs("web")]
    assert got == [("stdout", b"out 1\n"), ("stderr", b"err 1\n"), ("stdout", b"out 2\n")]
    assert [x async for x in api.client.container_logs("web", stderr=False, tail=1)] == [
        ("stdout", b"out 2\n")
    ]
    since = [x async for x in api.client.container_logs("web", since=now - 45)]
    assert since == [("stderr", b"err 1\n"), ("stdout", b"out 2\n")]
    with pytest.raises(errors.InvalidParameter, match="choose at least one stream"):
        async for _ in api.client.container_logs("web", stdout=False, stderr=False):
            pass
    # dockerd reads tail as Go's Atoi does: a sign is a number, anything else (a word, a
    # number too long for int64) or a negative one means all. (A "+" in a query is a space.)
    tails = [("%2B1", 1), ("+1", 2), ("x", 2), ("9" * 5000, 2), ("-3", 2), ("0", 0)]
    for tail, lines in tails:
        reply = await raw(api.sock, http("GET", f"/containers/web/logs?stdout=1&tail={tail}"))
        assert reply.status == 200 and reply.body.count(b"out ") == lines, tail


async def test_attach_before_start_carries_stdin_and_output(api: Api) -> None:
    await api.client.container_create(
        "cat", {"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True, "StdinOnce": True}
    )
    with anyio.fail_after(10):
        async with api.client.container_attach("cat", stdin=True) as session:
            await api.client.container_start("cat")
            await session.send(b"hello\n")
            output = session.__aiter__()
            assert await output.__anext__() == ("stdout", b"hello\n")
            # The client's half-close ends the container's input, not the output stream.
            await session.send_eof()
            assert [item async for item in output] == []
    assert await api.client.container_wait("cat") == {"StatusCode": 0}


async def test_attach_upgrades_with_101(api: Api) -> None:
    await sleeper(api)
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(
                http(
                    "POST",
                    "/containers/web/attach?stream=1&stdout=1",
                    b"",
                    "Upgrade: tcp",
                    "Connection: Upgrade",
                )
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    assert b"Content-Type: application/vnd.docker.multiplexed-stream" in head
    missing = await raw(api.sock, http("POST", "/containers/nosuch/attach?stream=1"))
    assert missing.status == 404


async def test_an_attach_ends_when_its_client_goes_away(api: Api) -> None:
    await sleeper(api)
    await api.client.container_start("web")
    attach = http("POST", "/containers/web/attach?stream=1&stdout=1", b"", "Upgrade: tcp")
    with anyio.fail_after(10):
        # Gone altogether: the quiet container's attach ends all the same.
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(attach)
            assert (await stream.receive()).startswith(b"HTTP/1.1 101 UPGRADED")
            assert api.server.connections == 2
        await connections_settle_at(api.server, 1)
        # Input ended, without StdinOnce: dockerd ends the attach; the container runs on.
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(attach.replace(b"stdout=1", b"stdout=1&stdin=1"))
            assert (await stream.receive()).startswith(b"HTTP/1.1 101 UPGRADED")
            await stream.send_eof()
            assert await read_to_end(stream) == b""
    assert (await api.client.container_inspect("web"))["State"]["Running"]


async def test_events_since_replays_history_then_every_live_event(api: Api) -> None:
    daemon = api.engine.daemon
    for n in range(300):  # past the history's length (256)
        await daemon.container_create(f"old{n}", {"Image": "busybox", "Cmd": ["true"]})
    with anyio.fail_after(20):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(http("GET", "/events?since=1"))
            data = await read_head(stream)
            # New events, long after the replayed ones left history, and more of them than a
            # subscriber's buffer (1,024) holds.
            for batch in range(11):
                for n in range(100):
                    name = f"new{batch * 100 + n}"
                    await daemon.container_create(name, {"Image": "busybox", "Cmd": ["true"]})
                while data.count(b"}\n") < 256 + (batch + 1) * 100:  # one per event
                    data += await stream.receive()
    events = [json.loads(line) for line in _dechunk(data).splitlines()]
    assert {e["Action"] for e in events} == {"create"}
    names = [e["Actor"]["Attributes"]["name"] for e in events]
    assert daemon.statistics().events_dropped == 0
    assert names[:256] == [f"old{n}" for n in range(44, 300)]
    assert names[256:] == [f"new{n}" for n in range(1100)]


async def test_events_since_until_and_filters(api: Api) -> None:
    began = time.time()
    await sleeper(api)
    await sleeper(api, "other")
    await api.client.container_start("web")
    await api.client.container_kill("web")
    until = time.time()
    actions = [
        (e["Actor"]["Attributes"]["name"], e["Action"])
        async for e in api.client.events(
            since=began, until=until, filters={"container": ["web"], "type": ["container"]}
        )
    ]
    assert actions == [("web", "create"), ("web", "start"), ("web", "kill"), ("web", "die")]
    only_create = [
        e["Actor"]["Attributes"]["name"]
        async for e in api.client.events(since=began, until=until, filters={"event": ["create"]})
    ]
    assert only_create == ["web", "other"]
    with pytest.raises(errors.InvalidParameter, match="invalid filter 'colour'"):
        async for _ in api.client.events(filters={"colour": ["red"]}):
            pass
    # Live: subscribed before the head goes out, so what happens next is seen.
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            wanted = '{"event":["start"]}'
            await stream.send(http("GET", f"/events?filters={wanted}"))
            data = await read_head(stream)
            await api.client.container_start("other")
            while b"\n" not in _dechunk(data):
                data += await stream.receive()
    event = json.loads(_dechunk(data))
    assert (event["Action"], event["Actor"]["Attributes"]["name"]) == ("start", "other")


# -- images -------------------------------------------------------------------------------


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def test_images_import_chunked_list_tag_inspect_remove(api: Api) -> None:
    client = api.client
    layer = tar_of(("etc/hostname", b"img\n"), ("bin/tool", b"#!/bin/sh\n"))
    image_id = await client.image_import(
        _chunks(layer), repo="tools:1", changes=["CMD /bin/tool", "ENV A=b"]
    )
    assert image_id.startswith("sha256:")
    inspect = await client.image_inspect("tools:1")
    assert inspect["Id"] == image_id and inspect["RepoTags"] == ["tools:1"]
    assert inspect["Config"]["Cmd"] == ["/bin/sh", "-c", "/bin/tool"]
    await client.image_tag("tools:1", "docker.io/library/tools", "2")
    assert sorted((await client.images_list())[0]["RepoTags"]) == ["tools:1", "tools:2"]
    assert await client.image_remove("tools:2") == ["Untagged: tools:2"]
    removed = await client.image_remove(image_id[7:19])
    assert removed == ["Untagged: tools:1", f"Deleted: {image_id}"]
    with pytest.raises(errors.NotFound):
        await client.image_inspect("tools:1")


async def test_an_upload_that_expects_100_continue_gets_it(api: Api) -> None:
    layer = tar_of(("etc/hostname", b"img\n"))
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            head = http(
                "POST",
                "/images/create?fromSrc=-&repo=cont",
                b"",
                f"Content-Length: {len(layer)}",
                "Expect: 100-continue",
            )
            await stream.send(head)
            # The client holds the body back until the server asks for it.
            assert (await stream.receive()).startswith(b"HTTP/1.1 100 ")
            await stream.send(layer)
            reply = await read_to_end(stream)
    assert b"HTTP/1.1 200 OK" in reply and b'"status":"sha256:' in reply
    assert (await api.client.image_inspect("cont"))["RepoTags"] == ["cont:latest"]


async def test_a_hostile_tar_is_refused_and_the_daemon_serves_on(api: Api) -> None:
    with pytest.raises(errors.InvalidParameter, match="refusing to extract"):
        await api.client.image_import(_chunks(tar_of(("../escape", b"x"))), repo="evil")
    assert await api.client.images_list() == []
    assert not (api.engine.root / "escape").exists()
    assert await api.client.ping() == "OK"


# -- hostile input --------------------------------------------------------------------------

_CREATE = "/containers/create"
_HOSTILE = [
    ("malformed JSON", http("POST", _CREATE, b'{"Image": "busybox",'), 400, "invalid JSON"),
    ("JSON not an object", http("POST", _CREATE, b"[1, 2]"), 400, "invalid JSON"),
    ("empty create", http("POST", _CREATE), 400, "invalid JSON"),
    (
        "wrong content type",
        http("POST", _CREATE, b"{}", "Content-Type: text/plain"),
        400,
        "unsupported Content-Type",
    ),
    ("oversized header", http("GET", "/_ping", b"", "X-Big: " + "a" * 100_000), 431, "too large"),
    ("huge header", http("GET", "/_ping", b"", "X-Big: " + "a" * 3_000_000), 431, "too large"),
    (
        "oversized body",
        http("POST", _CREATE, b'{"Image": "' + b"a" * 5_000_000 + b'"}'),
        413,
        "exceeds",
    ),
    ("bad stop timeout", http("POST", "/containers/web/stop?t=soon"), 400, "invalid syntax"),
    ("bad limit", http("GET", "/containers/json?limit=many"), 400, "invalid syntax"),
    ("bad filters", http("GET", "/containers/json?filters={nope"), 400, "invalid filter"),
    ("bad since", http("GET", "/events?since=yesterday"), 400, "failed to parse"),
    ("name with a slash", http("GET", "/containers/a/b/json"), 404, "No such container: a/b"),
    ("name with dots", http("GET", "/containers/../json"), 404, "No such container"),
    ("escaped dots", http("GET", "/containers/%2e%2e%2f%2e%2e/json"), 404, "No such container"),
    ("create a/b", http("POST", f"{_CREATE}?name=a/b", b'{"Image":"busybox"}'), 400, "Invalid"),
    ("create ..", http("POST", f"{_CREATE}?name=..", b'{"Image":"busybox"}'), 400, "Invalid"),
    ("unknown route", http("GET", "/secrets/json"), 404, "page not found"),
    ("wrong method", http("PUT", "/containers/json"), 404, "page not found"),
    ("garbage request line", b"HELLO\r\n\r\n", 400, ""),
    ("bad chunk", http("POST", _CREATE, b"", "Transfer-Encoding: chunked") + b"zz\r\n", 400, ""),
    # Issue 10: these were a bare 500, a dropped connection, or a leaked overlay directory.
    (
        "deeply nested JSON",
        http("POST", _CREATE, b"[" * 100_000 + b"]" * 100_000),
        400,
        "exceeded max depth",
    ),
    (
        "lone surrogate in a label",
        http("POST", _CREATE, b'{"Image":"busybox","Cmd":["true"],"Labels":{"a":"\\ud800"}}'),
        400,
        "invalid JSON",
    ),
    (
        "lone surrogate in the hostname",
        http("POST", _CREATE, b'{"Image":"busybox","Cmd":["true"],"Hostname":"\\ud800"}'),
        400,
        "invalid JSON",
    ),
    ("tag with dots", http("POST", "/images/web/tag?repo=a..b&tag=1"), 400, "reference format"),
    ("upper-case repo", http("POST", "/images/web/tag?repo=Web&tag=1"), 400, "lowercase"),
    ("tag with a newline", http("POST", "/images/web/tag?repo=a&tag=x%0Ay"), 400, "format"),
]


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [case[1:] for case in _HOSTILE],
    ids=[case[0] for case in _HOSTILE],
)
async def test_hostile_input_gets_a_json_4xx_and_the_daemon_serves_on(
    api: Api, request_bytes: bytes, status: int, message: str
) -> None:
    await sleeper(api)
    reply = await raw(api.sock, request_bytes)
    assert reply.status == status
    assert message in reply.json()["message"]
    assert await api.client.ping() == "OK"
    assert [r["Names"] for r in await api.client.containers_list(all=True)] == [["/web"]]


# -- shutdown and listeners -----------------------------------------------------------------


async def test_shutdown_finishes_requests_in_flight(open_engine: OpenEngine, sock: Path) -> None:
    async with open_engine(fake_clock=True) as engine:
        daemon = engine.daemon
        await daemon.container_create(
            "web", {"Image": "busybox", "Cmd": ["sleep", "infinity"], "StopSignal": "SIGWINCH"}
        )
        await daemon.container_start("web")
        statuses: list[int] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg, daemon.subscribe_events() as events:
                shutdown_done = anyio.Event()

                async def serve_then_shut_down() -> None:
                    async with serve_api(daemon, [f"unix://{sock}"]) as server:
                        tg.start_soon(stop_over_socket, server)
                        async for event in events:
                            if event["Action"] == "kill":  # the stop is in flight
                                break
                    shutdown_done.set()

                async def stop_over_socket(server: ApiServer) -> None:
                    reply = await raw(sock, http("POST", "/containers/web/stop?t=5"))
                    statuses.append(reply.status)

                tg.start_soon(serve_then_shut_down)
                # The stop waits for its KILL timer; shutdown waits for the stop. Once every
                # task is blocked, a shutdown that did not wait would be over.
                await engine.fake_clock.wait_sleepers(1)
                await anyio.wait_all_tasks_blocked()
                assert not shutdown_done.is_set()
                engine.fake_clock.advance(5)
                await shutdown_done.wait()
        assert statuses == [204]
        assert not sock.exists()
        assert (await daemon.container_inspect("web"))["State"]["ExitCode"] == 137


async def test_shutdown_ends_idle_connections_and_endless_streams(
    open_engine: OpenEngine, sock: Path
) -> None:
    async with open_engine() as engine:
        with anyio.fail_after(10):
            async with serve_api(engine.daemon, [f"unix://{sock}"]) as server:
                idle = await anyio.connect_unix(sock)
                events = await anyio.connect_unix(sock)
                await events.send(http("GET", "/events"))
                # The events head is out: that connection was accepted, and the idle one,
                # queued before it, too.
                await read_head(events)
                assert server.connections == 2
            assert server.connections == 0
            # Both are closed by the server: the idle one without a word.
            assert await read_to_end(idle) == b""
            await read_to_end(events)
            for stream in (idle, events):
                await stream.aclose()


async def test_shutdown_right_after_a_connection_is_accepted(
    open_engine: OpenEngine, sock: Path
) -> None:
    async with open_engine() as engine:
        for _ in range(20):
            with anyio.fail_after(10):
                async with serve_api(engine.daemon, [f"unix://{sock}"]):
                    client = await anyio.connect_unix(sock)
                    await client.send(http("GET", "/_ping").replace(b"close", b"keep-alive"))
                    for _ in range(3):
                        await anyio.lowlevel.checkpoint()
            await client.aclose()


def test_tcp_is_refused_unless_asked_and_only_on_loopback() -> None:
    assert parse_host("unix:///run/x.sock").path == "/run/x.sock"
    assert parse_host("/run/x.sock").path == "/run/x.sock"
    with pytest.raises(errors.InvalidParameter, match="--insecure-tcp"):
        parse_host("tcp://127.0.0.1:2375")
    assert parse_host("tcp://127.0.0.1:2375", allow_tcp=True).port == 2375
    with pytest.raises(errors.InvalidParameter, match="only loopback"):
        parse_host("tcp://0.0.0.0:2375", allow_tcp=True)
    with pytest.raises(errors.InvalidParameter, match="invalid host"):
        parse_host("fd://")


async def test_a_second_daemon_on_a_live_socket_is_refused(api: Api) -> None:
    first = api.sock.with_name("first.sock")
    with pytest.raises(errors.Conflict, match="another daemon is listening"):
        async with serve_api(api.engine.daemon, [f"unix://{first}", f"unix://{api.sock}"]):
            pass
    assert not first.exists()  # the listener made before the failure is gone, file and all
    assert await api.client.ping() == "OK"
    assert oct(api.sock.stat().st_mode & 0o777) == "0o660"


async def test_resize_reaches_the_terminal_and_wants_both_sizes(api: Api) -> None:
    await sleeper(api, Tty=True)
    stopped = await raw(api.sock, http("POST", "/containers/web/resize?h=40&w=120"))
    assert stopped.status == 409  # not running
    await api.client.container_start("web")
    resized = await raw(api.sock, http("POST", "/containers/web/resize?h=40&w=120"))
    assert resized.status == 200
    process = api.engine.runtime.processes[(await api.client.container_inspect("web"))["Id"]]
    assert process.size == (40, 120)
    halfway = await raw(api.sock, http("POST", "/containers/web/resize?h=40"))
    assert (halfway.status, halfway.json()["message"]) == (
        400,
        'invalid resize width "": invalid syntax',
    )


# -- networks ------------------------------------------------------------------------------


async def test_the_predefined_networks_are_listed_and_inspected(api: Api) -> None:
    client = api.client
    listed = await client.networks_list()
    assert [(n["Name"], n["Driver"], n["Scope"]) for n in listed] == [
        ("bridge", "bridge", "local"),
        ("host", "host", "local"),
        ("none", "null", "local"),
    ]
    bridge = listed[0]
    assert len(bridge["Id"]) == 64 and bridge["Containers"] == {}
    assert bridge["IPAM"]["Config"][0]["Subnet"].endswith("/24")
    assert [n["Name"] for n in await client.networks_list({"name": ["bri"]})] == ["bridge"]
    assert [n["Name"] for n in await client.networks_list({"driver": ["null"]})] == ["none"]
    assert await client.networks_list({"type": ["custom"]}) == []
    with pytest.raises(errors.InvalidParameter, match="invalid filter 'color'"):
        await client.networks_list({"color": ["red"]})
    # Inspect: by name or ID prefix, with the containers whose process is on it.
    cid = await sleeper(api)
    await client.container_start("web")
    inspected = await client.network_inspect(bridge["Id"][:10])
    assert inspected["Id"] == bridge["Id"]
    entry = inspected["Containers"][cid]
    settings = (await client.container_inspect("web"))["NetworkSettings"]
    address = f"{settings['IPAddress']}/{settings['IPPrefixLen']}"
    assert entry["Name"] == "web" and entry["IPv4Address"] == address
    # Stable across restarts: derived from the data root's engine ID.
    engine_id = api.engine.daemon.engine_id
    assert bridge["Id"] == hashlib.sha256(f"{engine_id}:network:bridge".encode()).hexdigest()
    with pytest.raises(errors.NotFound, match="^network nope not found$"):
        await client.network_inspect("nope")
    with pytest.raises(errors.Forbidden, match="^bridge is a pre-defined network"):
        await client.network_remove("bridge")
