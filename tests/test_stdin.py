"""The stdin-close-after-ready race, sans-io and through the engine, in every order."""

from __future__ import annotations

import itertools

import anyio
import pytest

from asyncstart import errors
from asyncstart.stdin import StdinCloser, StdinState

from .conftest import Engine, OpenEngine
from .helpers import next_action

pytestmark = pytest.mark.anyio


def _play(order: tuple[str, ...]) -> tuple[list[str], StdinState]:
    closer = StdinCloser()
    closes = []
    for event in order:
        if event == "request" and closer.request():
            closes.append("at-request")
        elif event == "ready" and closer.ready():
            closes.append("at-ready")
        elif event == "failed":
            closer.failed()
    return closes, closer.state


@pytest.mark.parametrize("order", list(itertools.permutations(("request", "ready", "failed"))))
def test_every_order_of_close_ready_failure(order: tuple[str, ...]) -> None:
    closes, _ = _play(order)
    position = {event: i for i, event in enumerate(order)}
    # A close happens only if the process became ready before it failed, and then exactly once.
    ready_before_failure = position["ready"] < position["failed"]
    request_before_failure = position["request"] < position["failed"]
    expected = 1 if ready_before_failure and request_before_failure else 0
    assert len(closes) == expected, (order, closes)


@pytest.mark.parametrize("repeats", [1, 2, 5])
def test_close_is_one_shot_and_idempotent(repeats: int) -> None:
    for order in (("ready",) + ("request",) * repeats, ("request",) * repeats + ("ready",)):
        closes, state = _play(order)
        assert len(closes) == 1 and state is StdinState.CLOSED
        assert _play((*order, "ready", "request"))[0] == closes


def test_nothing_happens_without_a_request() -> None:
    assert _play(("ready",)) == ([], StdinState.READY)
    assert _play(("failed", "ready", "request")) == ([], StdinState.ABANDONED)


async def _cat(engine_daemon, name: str) -> str:  # type: ignore[no-untyped-def]
    return str(
        await engine_daemon.container_create(
            name=name, config={"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True}
        )
    )


async def test_close_before_start_closes_once_the_process_is_ready(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        daemon = engine.daemon
        cid = await _cat(daemon, "cat")
        await daemon.container_close_stdin("cat")  # EOF before the start: must not block
        async with daemon.subscribe_events() as events:
            await daemon.container_start("cat")
            await next_action(events, "die")
        assert engine.runtime.exits[cid].exit_code == 0, "cat saw EOF and exited 0"
        assert engine.runtime.creates[cid] == 1


async def test_close_while_the_create_is_under_way(clocked: Engine) -> None:
    daemon, clock = clocked.daemon, clocked.fake_clock
    clocked.runtime.delays["create"] = 1.0
    cid = await _cat(daemon, "cat")
    async with daemon.subscribe_events() as events, anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_start, "cat")
        await clock.wait_sleepers(1)  # the create is in flight
        with anyio.fail_after(5):  # the close returns at once (no clock moves meanwhile)
            await daemon.container_close_stdin("cat")
            await daemon.container_close_stdin("cat")
        clock.advance(1.0)
        die = await next_action(events, "die")
    assert die["Actor"]["Attributes"]["exitCode"] == "0"
    assert clocked.runtime.exits[cid].exit_code == 0


async def test_close_after_running(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        daemon = engine.daemon
        cid = await _cat(daemon, "cat")
        await daemon.container_start("cat")
        process = engine.runtime.processes[cid]
        assert process.stdin_closes == 0 and process.status == "running"
        async with daemon.subscribe_events() as events:
            await daemon.container_close_stdin("cat")
            await daemon.container_close_stdin("cat")
            await next_action(events, "die")
        assert engine.runtime.exits[cid].exit_code == 0


async def test_pending_close_is_dropped_when_the_create_fails(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        daemon = engine.daemon
        cid = await _cat(daemon, "cat")
        await daemon.container_close_stdin("cat")
        engine.runtime.faults.inject("create", "exec: cat: permission denied")
        with pytest.raises(errors.InvalidParameter):
            await daemon.container_start("cat")
        # The next run gets a fresh stdin: nothing closes it behind the client's back.
        await daemon.container_start("cat")
        process = engine.runtime.processes[cid]
        assert process.stdin_closes == 0 and process.status == "running"
        await daemon.container_close_stdin("cat")
        assert process.stdin_closes == 1
