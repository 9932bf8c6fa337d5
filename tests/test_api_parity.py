"""``asyncstart.Daemon`` and ``asyncstart.Client`` have the same public methods, parameters,
call shapes and results, but for an explicit allow-list; and every one is fully annotated.

The static half reads the two classes' signatures; the dynamic half calls the methods the
client gained for parity on both sides of a served daemon (fake runtime, asyncio and trio)
and compares what they give.
"""

from __future__ import annotations

import collections.abc
import contextlib
import inspect
import io
import tarfile
import time
import typing
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncstart import Client, Daemon, FakeMounter, errors, serve_api

from .conftest import Engine, OpenEngine
from .helpers import tar_of

# -- the allow-lists ------------------------------------------------------------------------

#: Public on the library only, and why no client has them.
DAEMON_ONLY = {
    # The runtime backend reports in-process through it; a client has nothing to report.
    "state_changed": "the runtime backend's callback",
    # Sync and in-process: the wait is registered when it returns (the API's POST /wait sends
    # its early 200 on it). A client waits with container_wait.
    "container_wait_pending": "registers a wait without awaiting; the API's plumbing",
    # No Engine API route closes stdin alone: a client half-closes an attach (send_eof), which
    # closes it under dockerd's StdinOnce rule only.
    "container_close_stdin": "no Engine API route; an attach's send_eof is the client's way",
    # The in-process event bus; a client (and the API) subscribe with events().
    "subscribe_events": "the in-process bus; events() is on both",
    # Sync counters (DaemonStatistics) for in-process callers; a client reads them in info().
    "statistics": "sync in-process counters; info() has them on both",
    # Sync, the engine's part of info() without the host's facts; info() is on both.
    "system_info": "sync part of info(); info() is on both",
    # A part of version() (its Components); version() is on both.
    "runtime_versions": "part of version(); version() is on both",
}

#: Public on the client only, and why the library has no such method.
CLIENT_ONLY = {
    # Its HTTP connections; a Daemon lives as long as open_daemon's ``async with`` block.
    "aclose": "the client's connections; a Daemon's life is open_daemon's block",
}

#: Shared methods whose parameters differ: (library-only names, client-only names, why).
PARAMETER_DIFFERENCES = {
    # The API's attach replays the log before the stream; a library caller reads
    # container_logs itself.
    "container_attach": (set(), {"logs"}, "the API's log replay"),
    # The tar is ``body`` in the library and ``source`` in the client, which also takes a
    # path, as both image_import's do; positional callers see no difference.
    "container_extract": ({"body"}, {"source"}, "a name each side already documents"),
    # The library's exec_start kept ``detach`` for its callers; exec_start_detached is on both.
    "exec_start": ({"detach"}, set(), "exec_start_detached is on both"),
}

#: Shared methods called differently: (library's shape, client's shape, why).
USAGE_DIFFERENCES = {
    # The library returns the exec's stdio object at once; over the API it is an upgraded
    # connection, held for the ``async with``.
    "exec_start": ("await", "async with", "ExecIO in process, a hijacked connection over HTTP"),
    # The library reads the actor's memory; the client has to ask.
    "container_start_phases": ("sync", "await", "in-process read"),
}


# -- the classes' public faces --------------------------------------------------------------


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def hints(function: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(function)


def usage(function: Callable[..., Any]) -> str:
    """How a caller uses the method: ``await``, ``async for``, ``async with`` or ``sync``."""
    if inspect.iscoroutinefunction(function):
        return "await"
    if inspect.isasyncgenfunction(function):
        return "async for"
    wrapped = getattr(function, "__wrapped__", None)
    if wrapped is not None and inspect.isasyncgenfunction(wrapped):
        return "async with"  # @asynccontextmanager
    result = hints(function)["return"]
    origin = typing.get_origin(result) or result
    if isinstance(origin, type):
        if hasattr(origin, "__aenter__"):
            return "async with"
        if hasattr(origin, "__aiter__"):
            return "async for"
    return "sync"


_ASYNC_ITERATORS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


def shape(kind: Any) -> Any:
    """A result's shape: what is iterated with ``async for`` becomes ``("async for", item)``
    — an async iterator, or one of the package's classes that iterates (a session, a log, a
    pipe) — so that the library's and the client's classes compare by what they give."""
    origin = typing.get_origin(kind)
    if origin is not None:
        args = typing.get_args(kind)
        if origin in _ASYNC_ITERATORS:
            return ("async for", shape(args[0]))
        return (origin, tuple(shape(arg) for arg in args))
    if isinstance(kind, type) and kind.__module__.startswith("asyncstart"):
        if hasattr(kind, "__anext__"):
            return ("async for", shape(hints(kind.__anext__)["return"]))
        if hasattr(kind, "__aiter__"):
            return shape(hints(kind.__aiter__)["return"])
    return kind


def result(function: Callable[..., Any]) -> Any:
    """The shape of what the caller ends up with: awaited, iterated or entered."""
    returned = hints(function)["return"]
    how = usage(function)
    if how == "async with":
        if typing.get_origin(returned) in _ASYNC_ITERATORS:  # @asynccontextmanager's
            return shape(typing.get_args(returned)[0])
        if typing.get_origin(returned) is contextlib.AbstractAsyncContextManager:
            return shape(typing.get_args(returned)[0])
        entered = hints(returned.__aenter__)["return"]
        return shape(returned if entered is typing.Self else entered)
    return shape(returned)


def parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(function).parameters.values() if p.name != "self"]


DAEMON = public_methods(Daemon)
CLIENT = public_methods(Client)
SHARED = sorted(set(DAEMON) & set(CLIENT))


def test_the_same_methods_but_the_allow_list() -> None:
    assert set(DAEMON) - set(CLIENT) == set(DAEMON_ONLY)
    assert set(CLIENT) - set(DAEMON) == set(CLIENT_ONLY)


def test_library_only_methods_say_so() -> None:
    for name in DAEMON_ONLY:
        assert "Library-only" in (DAEMON[name].__doc__ or ""), name
    assert "Client-only" in (CLIENT["aclose"].__doc__ or "")


@pytest.mark.parametrize("name", SHARED)
def test_the_same_parameters(name: str) -> None:
    ours = {p.name: p for p in parameters(DAEMON[name])}
    theirs = {p.name: p for p in parameters(CLIENT[name])}
    only_ours, only_theirs, _ = PARAMETER_DIFFERENCES.get(name, (set(), set(), ""))
    assert (set(ours) - set(theirs), set(theirs) - set(ours)) == (only_ours, only_theirs)
    common = [n for n in ours if n in theirs]
    assert common == [n for n in theirs if n in ours], "the same order"
    for n in common:
        a, b = ours[n], theirs[n]
        assert (a.kind, a.default is a.empty) == (b.kind, b.default is b.empty), (name, n)


@pytest.mark.parametrize("name", SHARED)
def test_the_same_call_shape_and_result(name: str) -> None:
    ours, theirs = usage(DAEMON[name]), usage(CLIENT[name])
    if name in USAGE_DIFFERENCES:
        assert (ours, theirs) == USAGE_DIFFERENCES[name][:2]
        return
    assert ours == theirs
    assert result(DAEMON[name]) == result(CLIENT[name])


@pytest.mark.parametrize(
    ("cls", "name"),
    [(Daemon, name) for name in DAEMON] + [(Client, name) for name in CLIENT],
)
def test_every_public_method_is_fully_annotated(cls: type, name: str) -> None:
    function = getattr(cls, name)
    annotations = hints(function)
    for parameter in parameters(function):
        assert parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD), name
        assert parameter.name in annotations, f"{cls.__name__}.{name}({parameter.name})"
        assert annotations[parameter.name] is not Any, f"{cls.__name__}.{name}({parameter.name})"
    assert "return" in annotations and annotations["return"] is not Any, name


# -- both sides of a served daemon ----------------------------------------------------------


@dataclass
class Both:
    engine: Engine
    daemon: Daemon
    client: Client
    rootfs: Path


@pytest.fixture
async def both(open_engine: OpenEngine, sock: Path, tmp_path: Path) -> AsyncIterator[Both]:
    # The fake mounter's root filesystems under tmp_path: docker cp has files to read there.
    rootfs = tmp_path / "rootfs"
    async with (
        open_engine(mounter=FakeMounter(str(rootfs))) as engine,
        serve_api(engine.daemon, [f"unix://{sock}"]),
        Client(f"unix://{sock}") as client,
    ):
        yield Both(engine, engine.daemon, client, rootfs)


async def _sleeper(both: Both, name: str = "web") -> str:
    config = {"Image": "busybox", "Cmd": ["sleep", "infinity"]}
    return await both.daemon.container_create(name, config)


async def _read(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.anyio
async def test_ping_version_and_info_are_the_apis(both: Both) -> None:
    assert await both.daemon.ping() == await both.client.ping() == "OK"
    assert await both.daemon.version() == await both.client.version()
    await _sleeper(both)
    await both.daemon.container_start("web")
    ours, theirs = await both.daemon.info(), await both.client.info()
    assert ours.keys() == theirs.keys()
    moving = {"SystemTime", "NFd", "NGoroutines", "NEventsListener"}
    assert {k: v for k, v in ours.items() if k not in moving} == {
        k: v for k, v in theirs.items() if k not in moving
    }
    assert (ours["ContainersRunning"], ours["Containers"]) == (1, 1)
    assert both.daemon.system_info().keys() <= ours.keys()


@pytest.mark.anyio
async def test_resize_export_and_a_detached_exec_on_both(both: Both) -> None:
    daemon, client = both.daemon, both.client
    cid = await _sleeper(both)
    for side in (daemon, client):
        with pytest.raises(errors.Conflict, match="is not running"):
            await side.container_resize("web", 24, 80)
    await daemon.container_start("web")
    await daemon.container_resize("web", 24, 80)
    await client.container_resize("web", 33, 101)
    assert both.engine.runtime.processes[cid].size == (33, 101)

    exported = await _read(await daemon.container_export("web"))
    assert exported and await _read(await client.container_export("web")) == exported

    for side in (daemon, client):
        exec_id = await side.exec_create("web", {"Cmd": ["true"]})
        assert await side.exec_start_detached(exec_id) is None
        with anyio.fail_after(10):
            while (await side.exec_inspect(exec_id))["Running"]:
                await anyio.sleep(0.01)
        assert (await side.exec_inspect(exec_id))["ExitCode"] == 0


@pytest.mark.anyio
async def test_export_answers_its_errors_at_the_await_and_announces_itself(both: Both) -> None:
    """As dockerd: refusals before the stream (so at the ``await`` on both sides: nothing to
    iterate), and an ``export`` event once the tar has been read to its end."""
    cid = await _sleeper(both)
    for side in (both.daemon, both.client):
        with pytest.raises(errors.NotFound, match="No such container: nothing"):
            await side.container_export("nothing")
    with anyio.fail_after(10):
        async with (
            both.daemon.events(filters={"event": ["export"]}) as events,
            contextlib.aclosing(events),
        ):
            for side in (both.daemon, both.client):
                stream = await side.container_export("web")
                assert await _read(stream)
                event = await anext(events)
                assert (event["Action"], event["Actor"]["ID"]) == ("export", cid)
    # Closed unread (the library's caller, or the API's when the client has gone): the
    # filesystem mounted for it is unmounted at once, not when the stream is collected.
    stream = await both.daemon.container_export("web")
    assert both.engine.mounter.mounted(cid)
    await stream.aclose()
    assert not both.engine.mounter.mounted(cid)
    # A layer that is gone: dockerd's wrapped 500, at the await on both sides.
    del both.engine.mounter.layers[cid]
    for side in (both.daemon, both.client):
        with pytest.raises(errors.SystemError, match="^Error exporting container web: layer"):
            await side.container_export("web")


@pytest.mark.anyio
async def test_events_enter_alike(both: Both) -> None:
    """``async with x.events() as events``: subscribed once entered, on both sides; a bad
    filter is refused on entering."""
    began = time.time()
    for side in (both.daemon, both.client):
        name = f"ev-{type(side).__name__.lower()}"
        with anyio.fail_after(10):
            async with side.events(filters={"event": ["create"]}) as events:
                await _sleeper(both, name)
                # (aclosing: the library's iterator must be closed before its scope is left.)
                async with contextlib.aclosing(events):
                    event = await anext(events)
                assert event["Actor"]["Attributes"]["name"] == name
        with pytest.raises(errors.InvalidParameter, match="invalid filter 'colour'"):
            async with side.events(filters={"colour": ["red"]}):
                pass
    # The client's is also the plain async iterator it was, ended by ``until``.
    replayed = both.client.events(since=began, until="0s")
    assert [e["Actor"]["Attributes"]["name"] async for e in replayed] == [
        "ev-daemon",
        "ev-client",
    ]
    async with contextlib.aclosing(both.client.events(since=began)) as events:
        assert (await anext(events))["Action"] == "create"


@pytest.mark.anyio
async def test_archive_gives_the_stat_and_the_tar_on_both(both: Both) -> None:
    cid = await _sleeper(both)
    data = both.rootfs / cid / "merged" / "data"
    data.mkdir(parents=True)
    (data / "hello.txt").write_bytes(b"hi\n")
    stat, stream = await both.daemon.container_archive("web", "/data")
    ours = await _read(stream)
    stat_too, stream_too = await both.client.container_archive("web", "/data")
    assert stat_too == stat and stat["name"] == "data"
    theirs = await _read(stream_too)
    for archive in (ours, theirs):
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            assert sorted(tar.getnames()) == ["data", "data/hello.txt"]
            member = tar.extractfile("data/hello.txt")
            assert member is not None and member.read() == b"hi\n"
    # Closed unread: the connection is given back and the client goes on.
    _, unread = await both.client.container_archive("web", "/data")
    await unread.aclose()
    for side in (both.daemon, both.client):
        with pytest.raises(errors.NotFound, match="Could not find the file /nothing"):
            await side.container_archive("web", "/nothing")
    assert await both.client.ping() == "OK"


@pytest.mark.anyio
async def test_images_prune_gives_the_same_lines(both: Both) -> None:
    for side, content in ((both.client, b"one\n"), (both.daemon, b"two\n")):
        image_id = await both.client.image_import(_bytes(tar_of(("etc/x", content))))
        lines = await side.images_prune()
        assert f"Deleted: {image_id}" in lines
        assert all(line.startswith(("Untagged: ", "Deleted: sha256:")) for line in lines)


@pytest.mark.anyio
async def test_logs_with_details_on_both(both: Both) -> None:
    cid = await _sleeper(both)
    await both.daemon.container_start("web")
    both.engine.runtime.output(cid, "stdout", b"line\n")
    ours = [item async for item in both.daemon.container_logs("web", details=True)]
    theirs = [item async for item in both.client.container_logs("web", details=True)]
    assert ours == theirs and ours[-1][1].endswith(b"line\n")


@pytest.mark.anyio
async def test_an_attach_session_is_the_same_on_both(both: Both) -> None:
    """``tty``, ``send`` (True once the detach keys went), ``detached`` and ``end_of_input``
    (dockerd's rule: with StdinOnce and no TTY the stdin closes and the output goes on)."""
    once = {"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True, "StdinOnce": True}
    terminal = {**once, "Tty": True, "StdinOnce": False}
    for side, engine in (("daemon", both.daemon), ("client", both.client)):
        await both.daemon.container_create(f"once-{side}", once)
        await both.daemon.container_create(f"tty-{side}", terminal)
        await both.daemon.container_start(f"once-{side}")
        await both.daemon.container_start(f"tty-{side}")
        with anyio.fail_after(10):
            async with engine.container_attach(f"once-{side}", stdin=True) as session:
                assert (session.tty, session.detached) == (False, False), side
                assert await session.send(b"hello\n") is False
                output = session.__aiter__()
                assert await output.__anext__() == ("stdout", b"hello\n"), side
                assert await session.end_of_input() is True, side
                assert [item async for item in output] == [], side  # (cat ended)
            assert (await both.daemon.container_wait(f"once-{side}"))["StatusCode"] == 0
            async with engine.container_attach(f"tty-{side}", stdin=True) as session:
                assert session.tty is True, side
                assert await session.send(b"a\x10") is False  # (half a sequence: held)
                assert await session.send(b"\x11 never sent") is True, side
                assert session.detached and await session.send(b"more") is True, side
            async with engine.container_attach(f"tty-{side}") as session:
                with pytest.raises(errors.InvalidParameter, match="attached without stdin"):
                    await session.send(b"x")
        info = await both.daemon.container_inspect(f"tty-{side}")
        assert info["State"]["Running"] is True, side  # detached: it runs on
