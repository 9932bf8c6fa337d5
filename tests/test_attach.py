"""Attach on the fake runtime: input before or after the start, EOF in any order, output fan-out."""

from __future__ import annotations

import itertools

import anyio
import pytest

from asyncstart import errors

from .conftest import Engine

pytestmark = pytest.mark.anyio

STEPS = ("send", "eof", "start")


async def _cat(engine: Engine) -> str:
    return await engine.daemon.container_create(
        config={"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True}
    )


# Every order of start among the client's input and its EOF (input after EOF: see below).
ORDERS = [o for o in itertools.permutations(STEPS) if o.index("send") < o.index("eof")]


@pytest.mark.parametrize("order", ORDERS)
async def test_cat_echoes_and_exits_whatever_the_order(
    engine: Engine, order: tuple[str, ...]
) -> None:
    daemon = engine.daemon
    cid = await _cat(engine)
    output: list[tuple[str, bytes]] = []
    async with daemon.container_attach(cid, stdin=True) as session:

        async def read() -> None:
            async for item in session:
                output.append(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            for step in order:
                if step == "send":
                    await session.send(b"hello\n")
                elif step == "eof":
                    await session.send_eof()
                else:
                    await daemon.container_start(cid)
    assert output == [("stdout", b"hello\n")]
    assert await daemon.container_wait(cid) == {"StatusCode": 0}
    assert engine.runtime.exits[cid].exit_code == 0


async def test_input_after_eof_is_refused_and_output_fans_out(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await _cat(engine)
    await daemon.container_start(cid)
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    async with daemon.container_attach(cid, stdin=True) as a, daemon.container_attach(cid) as b:

        async def read(name: str, session) -> None:  # type: ignore[no-untyped-def]
            async for _, data in session:
                seen[name].append(data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "a", a)
            tg.start_soon(read, "b", b)
            await a.send(b"one\n")
            with pytest.raises(errors.InvalidParameter):
                await b.send(b"b has no stdin\n")
            await a.send_eof()
            with pytest.raises(errors.Conflict, match="stdin"):
                await a.send(b"late\n")
    assert seen == {"a": [b"one\n"], "b": [b"one\n"]}


async def test_a_failed_start_ends_the_attached_stream(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await _cat(engine)
    engine.runtime.faults.inject("create", "exec: cat: permission denied")
    async with daemon.container_attach(cid, stdin=True) as session:
        with pytest.raises(errors.InvalidParameter):
            await daemon.container_start(cid)
        with anyio.fail_after(5):
            assert [item async for item in session] == []


async def test_the_hub_says_when_output_is_wanted() -> None:
    """The first client to come and the last to go are told to the runtime (which fetches
    output only while someone wants it); a run's end lets every client go."""
    from asyncstart.attach import StdioHub

    told: list[bool] = []
    hub = StdioHub(watching=told.append)
    first = hub.subscribe(frozenset({"stdout"}))
    second = hub.subscribe(frozenset({"stderr"}))
    assert told == [True]
    hub.unsubscribe(first)
    assert told == [True]
    hub.publish("stderr", b"x")
    assert second.receive_nowait() == ("stderr", b"x")
    hub.unsubscribe(second)
    assert told == [True, False]
    third = hub.subscribe(frozenset({"stdout"}))
    hub.run_ended()
    assert told == [True, False, True, False]
    with pytest.raises(anyio.EndOfStream):
        third.receive_nowait()
