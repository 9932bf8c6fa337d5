"""``docker rename`` and ``docker top`` through the API, on the fake runtime: dockerd's answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncstart import errors

from .conftest import OpenEngine
from .helpers import tar_of
from .test_api import Api, http, open_api, raw, sleeper

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(open_engine: OpenEngine, tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(open_engine, tmp_path / "s.sock") as opened:
        yield opened


async def test_rename_answers_as_dockerd_and_announces_it(api: Api) -> None:
    client = api.client
    began = time.time()
    cid = await sleeper(api, "old")
    await sleeper(api, "taken")
    await client.container_rename("old", "new")
    assert (await client.container_inspect(cid))["Name"] == "/new"
    assert (await client.container_inspect("new"))["Id"] == cid
    with pytest.raises(errors.NotFound):
        await client.container_inspect("old")
    # The old name is free again; the new one is this container's.
    await sleeper(api, "old")
    with pytest.raises(errors.Conflict, match='^Conflict. The container name "/taken" is already'):
        await client.container_rename("new", "taken")
    with pytest.raises(errors.InvalidParameter, match="same name as its current name"):
        await client.container_rename("new", "new")
    with pytest.raises(errors.InvalidParameter, match=r"^Invalid container name \(a b\)"):
        await client.container_rename("new", "a b")
    empty = await raw(api.sock, http("POST", "/containers/new/rename?name="))
    assert (empty.status, empty.json()["message"]) == (
        400,
        "Neither old nor new names may be empty",
    )
    with pytest.raises(errors.NotFound, match="^No such container: nope$"):
        await client.container_rename("nope", "x1")
    renames = [
        e
        async for e in client.events(since=began, until=time.time(), filters={"event": ["rename"]})
    ]
    assert [
        (e["Actor"]["Attributes"]["oldName"], e["Actor"]["Attributes"]["name"]) for e in renames
    ] == [("/old", "new")]


def test_top_keeps_the_containers_rows_of_ps() -> None:
    from asyncstart.execs import ps_table

    output = (
        "UID   PID  PPID  C STIME TTY TIME     CMD\n"
        "root    1     0  0 10:00 ?   00:00:01 /sbin/init splash\n"
        "root  420     1  0 10:01 ?   00:00:00 sleep 1000\n"
        "root  421   420  0 10:01 ?   00:00:00 sh -c echo a  b\n"
    )
    table = ps_table(output, [420, 421])
    assert table["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [row[-1] for row in table["Processes"]] == ["sleep 1000", "sh -c echo a  b"]
    with pytest.raises(errors.SystemError, match="Couldn't find PID field"):
        ps_table("USER COMMAND\nroot x\n", [1])


async def test_top_of_a_container_that_does_not_run_is_409(api: Api) -> None:
    cid = await api.client.container_create("idle", {"Image": "busybox", "Cmd": ["true"]})
    with pytest.raises(errors.Conflict, match=f"^Container {cid} is not running$"):
        await api.client.container_top("idle")


async def test_container_prune_removes_what_does_not_run(api: Api) -> None:
    client = api.client
    running = await sleeper(api, "running")
    await client.container_start(running)
    idle = await client.container_create("idle", {"Image": "busybox", "Cmd": ["true"]})
    kept = await client.container_create(
        "kept", {"Image": "busybox", "Cmd": ["true"], "Labels": {"keep": "yes"}}
    )
    assert await client.containers_prune({"label!": ["keep"]}) == [idle]
    assert await client.containers_prune({"until": ["1h"]}) == []  # (all newer than an hour)
    assert await client.containers_prune() == [kept]
    remaining = [row["Names"][0] for row in await client.containers_list(all=True)]
    assert remaining == ["/running"]
    with pytest.raises(errors.InvalidParameter, match="invalid filter 'color'"):
        await client.containers_prune({"color": ["red"]})


def test_diff_reads_the_upper_layer_as_dockerd(tmp_path: Path) -> None:
    import os

    from asyncstart.images.overlay import overlay_changes

    image, upper = tmp_path / "image", tmp_path / "upper"
    for path in ("bin/ls", "etc/passwd", "etc/group"):
        (image / path).parent.mkdir(parents=True, exist_ok=True)
        (image / path).write_text("x")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "passwd").write_text("changed")
    (upper / "etc" / "hosts").write_text("the engine's")  # a mount point: not a change
    (upper / "new" / "dir").mkdir(parents=True)
    (upper / "new" / "dir" / "f").write_text("added")
    expected = [
        {"Path": "/etc", "Kind": 0},
        {"Path": "/etc/passwd", "Kind": 0},
        {"Path": "/new", "Kind": 1},
        {"Path": "/new/dir", "Kind": 1},
        {"Path": "/new/dir/f", "Kind": 1},
    ]
    if os.geteuid() == 0:  # a whiteout is a 0/0 character device
        (upper / "bin").mkdir()
        os.mknod(upper / "bin" / "ls", 0o600 | 0o020000, os.makedev(0, 0))
        expected[:0] = [{"Path": "/bin", "Kind": 0}, {"Path": "/bin/ls", "Kind": 2}]
    assert overlay_changes(upper, [image]) == expected
    # Only the engine's own files changed: nothing to show.
    (upper2 := tmp_path / "upper2" / "etc").mkdir(parents=True)
    (upper2 / "resolv.conf").write_text("")
    assert overlay_changes(tmp_path / "upper2", [image]) == []


async def test_images_list_filters_as_dockerd(api: Api) -> None:
    from .test_api import _chunks

    client = api.client
    old = await client.image_import(_chunks(tar_of(("a", b"1"))), repo="tools", tag="1")
    await anyio.sleep(1.1)  # (creation times in seconds)
    new = await client.image_import(_chunks(tar_of(("a", b"2"))), repo="other", tag="2")
    await anyio.sleep(1.1)
    await client.image_import(_chunks(tar_of(("a", b"3"))), repo="other", tag="2")  # new dangles

    async def ids(**filters: list[str]) -> list[str]:
        return sorted(row["Id"] for row in await client.images_list(filters))

    everything = await ids()
    assert old in everything and new in everything and len(everything) == 3
    assert await ids(reference=["tools"]) == [old]
    assert await ids(reference=["tools:*"]) == [old]
    assert await ids(label=["team=blue"]) == []  # (no image here has labels)
    assert await ids(dangling=["true"]) == [new]
    assert new not in await ids(dangling=["false"])
    assert await ids(before=["other:2"]) == sorted([old, new])
    assert await ids(since=["tools:1"]) == sorted(set(everything) - {old})
    with pytest.raises(errors.InvalidParameter, match="invalid filter 'dangling=maybe'"):
        await client.images_list({"dangling": ["maybe"]})
    with pytest.raises(errors.InvalidParameter, match="invalid filter 'colour'"):
        await client.images_list({"colour": ["red"]})


async def test_system_df_counts_images_and_containers(api: Api) -> None:
    from .test_api import _chunks

    await api.client.image_import(_chunks(tar_of(("a", b"1"))), repo="tools", tag="1")
    await sleeper(api, "user")
    document = (await raw(api.sock, http("GET", "/system/df"))).json()
    assert set(document) == {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
    [row] = [image for image in document["Images"] if image["RepoTags"] == ["tools:1"]]
    assert row["Containers"] == 0 and isinstance(row["Created"], int)
    assert [c["Names"] for c in document["Containers"]] == [["/user"]]
    assert document["Containers"][0]["SizeRw"] == 0  # (the fake mounter has no files)
    only = (await raw(api.sock, http("GET", "/system/df?type=volume"))).json()
    assert only == {"Volumes": []}
    bogus = await raw(api.sock, http("GET", "/system/df?type=bogus"))
    assert (bogus.status, bogus.json()["message"]) == (400, "unknown object type: bogus")


async def test_update_applies_the_restart_policy_at_once(api: Api) -> None:
    client = api.client
    cid = await sleeper(api, "web")
    on_failure = {"Name": "on-failure", "MaximumRetryCount": 3}
    assert await client.container_update("web", {"RestartPolicy": on_failure}) == []
    policy = (await client.container_inspect(cid))["HostConfig"]["RestartPolicy"]
    assert (policy["Name"], policy["MaximumRetryCount"]) == ("on-failure", 3)
    with pytest.raises(errors.InvalidParameter, match="unknown policy 'sometimes'"):
        await client.container_update("web", {"RestartPolicy": {"Name": "sometimes"}})
    await client.container_create(
        "gone", {"Image": "busybox", "Cmd": ["true"]}, {"AutoRemove": True}
    )
    with pytest.raises(errors.Conflict, match="AutoRemove is enabled"):
        await client.container_update("gone", {"RestartPolicy": {"Name": "always"}})


async def test_update_gives_a_running_container_its_new_limits(api: Api) -> None:
    client, runtime = api.client, api.engine.runtime
    began = time.time()
    cid = await sleeper(api, "web", HostConfig={"Memory": 64 << 20, "CpuShares": 256})
    await client.container_start("web")
    # As the docker CLI sends it: every resource, zero where unchanged.
    body = {"CpuShares": 512, "Memory": 0, "MemorySwap": 0, "CpusetCpus": "", "PidsLimit": 50,
            "BlkioWeight": 0, "RestartPolicy": {"Name": "", "MaximumRetryCount": 0}}  # fmt: skip
    assert await client.container_update("web", body) == []
    host = (await client.container_inspect(cid))["HostConfig"]
    assert (host["CpuShares"], host["Memory"], host["PidsLimit"]) == (512, 64 << 20, 50)
    [applied] = runtime.processes[cid].updates
    assert applied["cpu"]["shares"] == 512 and applied["pids"] == {"limit": 50}
    assert applied["memory"]["limit"] == 64 << 20 and "devices" not in applied
    # PidsLimit 0 lifts the limit; the runtime is told so (-1), not left as it was.
    await client.container_update("web", {"PidsLimit": 0})
    assert (await client.container_inspect(cid))["HostConfig"]["PidsLimit"] is None
    assert runtime.processes[cid].updates[-1]["pids"] == {"limit": -1}
    updates = [
        e
        async for e in client.events(since=began, until=time.time(), filters={"event": ["update"]})
    ]
    assert len(updates) == 2


async def test_update_refuses_as_dockerd_and_changes_nothing(api: Api) -> None:
    client, runtime = api.client, api.engine.runtime
    cid = await sleeper(api, "web", HostConfig={"Memory": 64 << 20, "NanoCpus": 10**9})
    await client.container_start("web")
    before = (await client.container_inspect(cid))["HostConfig"]
    prefix = f"^Cannot update container {cid}: Conflicting options: "
    with pytest.raises(errors.Conflict, match=prefix + "CPU Quota cannot be updated as Nano"):
        await client.container_update("web", {"CpuQuota": 50_000})
    with pytest.raises(errors.Conflict, match="update the memoryswap at the same time$"):
        await client.container_update("web", {"Memory": 512 << 20})
    with pytest.raises(errors.InvalidParameter, match="^Minimum memory limit allowed is 6MB"):
        await client.container_update("web", {"Memory": 1 << 20, "MemorySwap": -1})
    with pytest.raises(errors.InvalidParameter, match="^MemorySwappiness cannot be changed by"):
        await client.container_update("web", {"MemorySwappiness": 10})
    with pytest.raises(errors.InvalidParameter, match="CpuRealtimeRuntime"):
        await client.container_update("web", {"CpuRealtimeRuntime": 1000})
    assert (await client.container_inspect(cid))["HostConfig"] == before
    assert runtime.processes[cid].updates == []
    # The runtime refusing leaves the record as it was.
    runtime.faults.inject("update", "cgroup write refused", container_id=cid)
    with pytest.raises(errors.SystemError, match=f"^Cannot update container {cid}: "):
        await client.container_update("web", {"CpuShares": 100})
    assert (await client.container_inspect(cid))["HostConfig"] == before
    # A stopped container keeps the new limits for its next start.
    await client.container_kill("web")
    await client.container_update("web", {"Memory": 128 << 20, "MemorySwap": 256 << 20})
    host = (await client.container_inspect(cid))["HostConfig"]
    assert (host["Memory"], host["MemorySwap"]) == (128 << 20, 256 << 20)
    await client.container_start("web")
    assert runtime.processes[cid].spec["linux"]["resources"]["memory"]["limit"] == 128 << 20  # type: ignore[index]


def test_the_detach_sequence_is_found_across_chunks() -> None:
    from asyncstart.detach import DetachMatcher, detach_sequence

    keys = DetachMatcher(detach_sequence("ctrl-p,ctrl-q"))
    assert keys.feed(b"ab\x10") == (b"ab", False)  # held: it may begin the sequence
    assert keys.feed(b"c") == (b"\x10c", False)  # it did not: let through
    assert keys.feed(b"x\x10\x10") == (b"x\x10", False)
    assert keys.feed(b"\x11tail") == (b"", True)


async def test_an_exec_sends_only_the_streams_attached_and_detaches_on_its_keys(
    api: Api,
) -> None:
    client = api.client
    await client.container_start(await sleeper(api, "web"))
    # Not found: the runtime's word goes to stderr, which this client did not attach.
    quiet = await client.exec_create("web", {"Cmd": ["nope"], "AttachStdout": True})
    async with client.exec_start(quiet) as session:
        assert [item async for item in session] == []
    assert (await client.exec_inspect(quiet))["ExitCode"] == 127
    # Without a terminal the keys are input like any other (dockerd's copyEscapable).
    plain = await client.exec_create(
        "web",
        {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True, "DetachKeys": "ctrl-x"},
    )
    with anyio.fail_after(10):
        async with client.exec_start(plain) as session:
            await session.send(b"\x18\n")
            output = session.__aiter__()
            assert await output.__anext__() == ("stdout", b"\x18\n")
    # With one, the detach keys end the client's attachment; the process runs on.
    began = time.time()
    cat = await client.exec_create(
        "web",
        {"Cmd": ["cat"], "Tty": True, "AttachStdin": True, "AttachStdout": True,
         "DetachKeys": "ctrl-x"},
    )  # fmt: skip
    with anyio.fail_after(10):
        async with client.exec_start(cat) as session:
            await session.send(b"hi\n")
            output = session.__aiter__()
            assert b"hi" in (await output.__anext__())[1]
            await session.send(b"\x18")
            rest = b"".join([data async for _, data in output])  # it ends: detached
            assert rest in (b"", b"hi\r\n")  # (the terminal's echo, then cat's line)
    events = client.events(since=began, until=time.time() + 1, filters={"event": ["exec_detach"]})
    assert [e["Actor"]["Attributes"]["execID"] async for e in events] == [cat]
    assert (await client.exec_inspect(cat))["Running"] is True


@pytest.mark.parametrize(
    ("specifier", "parsed"),
    [
        ("linux", "linux/{arch}"),
        ("amd64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/armhf", "linux/arm"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("Windows/amd64", "windows/amd64"),
    ],
)
def test_platform_specifiers_parse_as_containerds(specifier: str, parsed: str) -> None:
    from asyncstart.hostinfo import go_arch
    from asyncstart.images.platform import parse_platform

    assert str(parse_platform(specifier)) == parsed.format(arch=go_arch())


@pytest.mark.parametrize(
    ("specifier", "message"),
    [
        ("foo", '"foo": unknown operating system or architecture: invalid argument'),
        ("linux/*", '"linux/*": wildcards not yet supported: invalid argument'),
        ("linux/", '"" is an invalid component of "linux/": platform specifier component'),
        ("a/b/c/d", '"a/b/c/d": cannot parse platform specifier: invalid argument'),
        ("lin ux", '"lin ux" is an invalid OS component of "lin ux"'),
    ],
)
def test_platform_specifiers_refused_with_containerds_words(specifier: str, message: str) -> None:
    from asyncstart.images.platform import parse_platform

    with pytest.raises(errors.InvalidParameter) as refused:
        parse_platform(specifier)
    assert str(refused.value.message).startswith(message)


async def test_platform_is_checked_before_the_pull_and_the_create(api: Api) -> None:
    from .test_api import _chunks

    client = api.client
    await client.image_import(_chunks(tar_of(("a", b"1"))), repo="busybox")
    with pytest.raises(errors.InvalidParameter, match="unknown operating system or architecture"):
        await client.image_pull("busybox", platform="foo")
    with pytest.raises(errors.InvalidParameter, match="^invalid reference format"):
        await client.image_pull("Busy..box")
    with pytest.raises(errors.NotFound, match="^No such image: busybox:1.36 .asyncstart does not"):
        await client.image_pull("busybox", tag="1.36", platform="linux/amd64")
    other = "linux/s390x"
    with pytest.raises(errors.NotFound, match=r"was found but its platform \(linux/"):
        await client.container_create("plat", {"Image": "busybox", "Cmd": ["true"]}, platform=other)
    with pytest.raises(errors.InvalidParameter, match="wildcards not yet supported"):
        await client.container_create(
            "plat", {"Image": "busybox", "Cmd": ["true"]}, platform="linux/*"
        )
    image = await client.image_inspect("busybox")
    native = f"{image['Os']}/{image['Architecture']}"
    assert await client.container_create(
        "plat", {"Image": "busybox", "Cmd": ["true"]}, platform=native
    )
    # An older API version does not read the argument (dockerd reads it from 1.41).
    body = b'{"Image": "busybox", "Cmd": ["true"]}'
    old = await raw(api.sock, http("POST", "/v1.40/containers/create?platform=foo", body))
    assert old.status == 201


async def test_stats_answers_as_dockerd_around_the_figures(api: Api) -> None:
    client = api.client
    with pytest.raises(errors.NotFound, match="^No such container: nope$"):
        await anext(client.container_stats("nope", stream=False))
    cid = await client.container_create("idle", {"Image": "busybox", "Cmd": ["true"]})
    with pytest.raises(errors.InvalidParameter, match="^cannot have stream=true and one-shot"):
        await anext(client.container_stats("idle", stream=True, one_shot=True))
    # Not running: one empty document at once, as dockerd's.
    [document] = [d async for d in client.container_stats("idle", stream=False)]
    assert (document["id"], document["name"], document["read"]) == (
        cid,
        "/idle",
        "0001-01-01T00:00:00Z",
    )
    assert document["memory_stats"] == {} and "networks" not in document
    assert document["blkio_stats"]["io_service_bytes_recursive"] is None
    # A stream ends when its container is removed.
    documents = client.container_stats("idle")
    assert (await anext(documents))["id"] == cid
    await client.container_remove("idle")
    with anyio.fail_after(5):
        rest = [d async for d in documents]
    assert len(rest) <= 1


async def test_attach_detaches_on_its_keys_with_a_terminal(api: Api) -> None:
    client = api.client
    began = time.time()
    cid = await client.container_create(
        "term", {"Image": "busybox", "Cmd": ["cat"], "Tty": True, "OpenStdin": True}
    )
    await client.container_start("term")
    with pytest.raises(errors.InvalidParameter, match=r"^Invalid detach keys \(ctrl-1\) provided"):
        async with client.container_attach("term", stdin=True, detach_keys="ctrl-1"):
            pass
    for keys, sequence in (("", b"\x10\x11"), ("ctrl-a,x", b"\x01x")):
        with anyio.fail_after(10):
            async with client.container_attach("term", stdin=True, detach_keys=keys) as session:
                await session.send(b"one\n" + sequence + b"two\n")
                output = b"".join([data async for _, data in session])  # it ends: detached
        assert b"one" in output and b"two" not in output
    assert (await client.container_inspect("term"))["State"]["Running"] is True
    events = client.events(since=began, until=time.time() + 1, filters={"container": [cid]})
    actions = [e["Action"] async for e in events if e["Action"] in ("attach", "detach")]
    assert actions == ["attach", "detach", "attach", "detach"]


async def _websocket(sock: Path, target: str) -> tuple[anyio.abc.ByteStream, Any]:
    """A websocket client on the daemon's socket (wsproto), once the handshake is done."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, RejectConnection
    from wsproto.events import Request as Handshake

    stream = await anyio.connect_unix(str(sock))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send(ws.send(Handshake(host="docker", target=target)))
    while True:
        ws.receive_data(await stream.receive())
        for event in ws.events():
            if isinstance(event, RejectConnection):
                raise AssertionError(f"refused: {event.status_code}")  # noqa: TRY004
            if isinstance(event, AcceptConnection):
                return stream, ws


async def _messages(stream: anyio.abc.ByteStream, ws: Any, until: bytes) -> list[Any]:
    """Messages (and the close) until ``until`` has arrived or the websocket closed."""
    from wsproto.events import CloseConnection, Message

    got: list[Any] = []
    while not (until and until in b"".join(_payload(m) for m in got)):
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            break
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Message | CloseConnection):
                got.append(event)
        if got and isinstance(got[-1], CloseConnection):
            break
    return got


def _payload(event: Any) -> bytes:
    data = getattr(event, "data", b"")
    return data.encode() if isinstance(data, str) else bytes(data)


async def test_the_websocket_attach_carries_input_and_raw_output(api: Api) -> None:
    from wsproto.events import BytesMessage, CloseConnection, TextMessage

    client = api.client
    await client.container_create(
        "term", {"Image": "busybox", "Cmd": ["cat"], "Tty": True, "OpenStdin": True}
    )
    await client.container_start("term")
    target = "/v1.51/containers/term/attach/ws?stdin=1&stdout=1&stream=1"
    with anyio.fail_after(10):
        stream, ws = await _websocket(api.sock, target)
        await stream.send(ws.send(BytesMessage(data=b"hello\n")))
        got = await _messages(stream, ws, until=b"hello")
        assert all(isinstance(m, BytesMessage) for m in got)  # binary frames from API 1.28
        await stream.send(ws.send(CloseConnection(code=1000)))  # the client's input ends
        closing = await _messages(stream, ws, until=b"")
        assert isinstance(closing[-1], CloseConnection)
        await stream.aclose()
    assert (await client.container_inspect("term"))["State"]["Running"] is True
    # Before API 1.28, text frames; before 1.42 every stream is attached (stdin too).
    with anyio.fail_after(10):
        stream, ws = await _websocket(api.sock, "/v1.27/containers/term/attach/ws?stream=1")
        await stream.send(ws.send(TextMessage(data="again\n")))
        got = await _messages(stream, ws, until=b"again")
        await stream.aclose()
    assert got and all(isinstance(m, TextMessage) for m in got)


async def test_the_websocket_attach_refuses_before_the_handshake(api: Api) -> None:
    missing = await raw(api.sock, http("GET", "/containers/nope/attach/ws"))
    assert (missing.status, missing.json()["message"]) == (404, "No such container: nope")
    await sleeper(api, "web")
    plain = await raw(api.sock, http("GET", "/containers/web/attach/ws"))
    assert plain.status == 400 and "websocket" in plain.json()["message"]


async def test_the_volumes_api_answers_as_dockerd(api: Api) -> None:
    client = api.client
    began = time.time()
    named = await client.volume_create({"Name": "data", "Labels": {"team": "blue"}})
    assert (named["Name"], named["Driver"], named["Scope"]) == ("data", "local", "local")
    assert Path(named["Mountpoint"]).is_dir() and named["Labels"] == {"team": "blue"}
    assert (await client.volume_create({"Name": "data"}))["Labels"] == {"team": "blue"}
    anonymous = (await client.volume_create({}))["Name"]
    assert len(anonymous) == 64
    names = {v["Name"] for v in (await client.volumes_list())["Volumes"]}
    assert names == {"data", anonymous}
    blue = await client.volumes_list({"label": ["team=blue"]})
    assert [v["Name"] for v in blue["Volumes"]] == ["data"]
    assert (await client.volume_inspect("data"))["Mountpoint"] == named["Mountpoint"]
    with pytest.raises(errors.NotFound, match="^get nope: no such volume$"):
        await client.volume_inspect("nope")
    with pytest.raises(errors.InvalidParameter, match="includes invalid characters"):
        await client.volume_create({"Name": "a/b"})
    with pytest.raises(errors.NotFound, match='plugin "nfs" not found'):
        await client.volume_create({"Name": "x1", "Driver": "nfs"})
    df = await client.system_df()
    assert {v["Name"] for v in df["Volumes"]} == {"data", anonymous}
    # Prune takes the anonymous one only (API >= 1.42), every unused one with all=true.
    assert (await client.volumes_prune())["VolumesDeleted"] == [anonymous]
    await client.volume_remove("data")
    with pytest.raises(errors.NotFound):
        await client.volume_remove("data")
    await client.volume_remove("data", force=True)
    assert (await client.volumes_list())["Volumes"] == []
    events = client.events(since=began, until=time.time() + 1, filters={"type": ["volume"]})
    actions = [e["Action"] async for e in events]
    assert actions.count("create") == 3 and actions.count("destroy") == 2 and "prune" in actions


async def test_volumes_are_made_at_create_and_shown_in_inspect(api: Api) -> None:
    client = api.client
    cid = await client.container_create(
        "user",
        {"Image": "busybox", "Cmd": ["true"], "Volumes": {"/cache": {}}},
        {"Binds": ["data:/data:ro"], "Mounts": [{"Type": "tmpfs", "Target": "/scratch"}]},
    )
    mounts = {m["Destination"]: m for m in (await client.container_inspect(cid))["Mounts"]}
    assert set(mounts) == {"/cache", "/data", "/scratch"}
    data = mounts["/data"]
    assert (data["Type"], data["Name"], data["RW"], data["Driver"]) == (
        "volume",
        "data",
        False,
        "local",
    )
    assert data["Source"] == (await client.volume_inspect("data"))["Mountpoint"]
    anonymous = mounts["/cache"]["Name"]
    assert len(anonymous) == 64 and mounts["/scratch"]["Type"] == "tmpfs"
    # In use: not dangling, not removable, not pruned.
    with pytest.raises(errors.Conflict, match=f"^remove data: volume is in use - \\[{cid}\\]$"):
        await client.volume_remove("data")
    assert (await client.volumes_prune({"all": ["true"]}))["VolumesDeleted"] is None
    dangling = await client.volumes_list({"dangling": ["true"]})
    assert dangling["Volumes"] == []
    # A create that fails leaves no anonymous volume behind.
    with pytest.raises(errors.InvalidParameter):
        await client.container_create(
            "bad",
            {"Image": "busybox", "Cmd": ["true"], "Volumes": {"/v": {}}},
            {"Binds": ["/x:/y:bogus"]},
        )
    assert len((await client.volumes_list())["Volumes"]) == 2


async def test_rm_v_and_auto_removal_take_the_anonymous_volumes(api: Api) -> None:
    client = api.client

    async def volumes() -> set[str]:
        return {v["Name"] for v in (await client.volumes_list())["Volumes"]}

    body = {"Image": "busybox", "Cmd": ["true"], "Volumes": {"/v": {}}}
    kept = await client.container_create("kept", body, {"Binds": ["named:/named"]})
    await client.container_remove("kept")  # without -v: they stay
    assert len(await volumes()) == 2
    removed = await client.container_create("removed", body, {"Binds": ["named:/named"]})
    anonymous = {m["Name"] for m in (await client.container_inspect(removed))["Mounts"]} - {"named"}
    await client.container_remove("removed", volumes=True)
    assert anonymous.isdisjoint(await volumes()) and "named" in await volumes()
    auto = await client.container_create("auto", body, {"AutoRemove": True})
    [auto_volume] = [m["Name"] for m in (await client.container_inspect(auto))["Mounts"]]
    await client.container_start("auto")  # (true: it ends, and is removed)
    with anyio.fail_after(5):
        while auto_volume in await volumes():
            await anyio.sleep(0.02)
    assert kept not in {c["Id"] for c in await client.containers_list(all=True)}


async def test_volumes_from_takes_another_containers_mounts(api: Api) -> None:
    client = api.client
    body = {"Image": "busybox", "Cmd": ["true"], "Volumes": {"/cache": {}}}
    await client.container_create("src", body, {"Binds": ["named:/data"]})
    dst = await client.container_create(
        "dst", {"Image": "busybox", "Cmd": ["true"]}, {"VolumesFrom": ["src:ro"]}
    )
    source = {m["Destination"]: m for m in (await client.container_inspect("src"))["Mounts"]}
    taken = {m["Destination"]: m for m in (await client.container_inspect(dst))["Mounts"]}
    assert set(taken) == {"/cache", "/data"}
    assert all(taken[d]["Name"] == source[d]["Name"] and not taken[d]["RW"] for d in taken)
    with pytest.raises(errors.NotFound, match="^No such container: nope$"):
        await client.container_create("x2", {"Image": "busybox", "Cmd": ["true"]},
                                      {"VolumesFrom": ["nope"]})  # fmt: skip
    with pytest.raises(errors.InvalidParameter, match="^invalid mode: rshared$"):
        await client.container_create("x3", {"Image": "busybox", "Cmd": ["true"]},
                                      {"VolumesFrom": ["src:rshared"]})  # fmt: skip
    # The source's anonymous volume is in use by dst too: rm -v of src keeps it.
    await client.container_remove("src", volumes=True)
    assert source["/cache"]["Name"] in {v["Name"] for v in (await client.volumes_list())["Volumes"]}
