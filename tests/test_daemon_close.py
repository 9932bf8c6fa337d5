"""Callers outside the daemon are answered when it closes: nobody is left waiting on an actor
that is gone, whether the daemon's block ends or its scope is cancelled mid-request."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asyncstart import errors
from asyncstart.runtime.fake import FakeRuntime

from .conftest import OpenEngine

pytestmark = pytest.mark.anyio

SLEEPER = {"Image": "busybox", "Cmd": ["sleep", "infinity"]}


async def _outcome(call: Any, done: anyio.Event, into: list[object]) -> None:
    try:
        into.append(await call())
    except errors.DockerError as exc:
        into.append(exc)
    finally:
        done.set()


async def test_a_wait_parked_when_the_daemon_closes_is_answered(open_engine: OpenEngine) -> None:
    got: list[object] = []
    done = anyio.Event()
    async with anyio.create_task_group() as outside:
        async with open_engine() as engine:
            cid = await engine.daemon.container_create(config=SLEEPER)
            await engine.daemon.container_start(cid)
            outside.start_soon(_outcome, lambda: engine.daemon.container_wait(cid), done, got)
            await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):
            await done.wait()
    assert len(got) == 1 and isinstance(got[0], errors.Unavailable), got
    assert (got[0].status, str(got[0])) == (503, "the daemon is shutting down")


async def test_a_request_in_flight_when_the_daemon_is_cancelled_is_answered(
    open_engine: OpenEngine,
) -> None:
    runtime = FakeRuntime(delays={"create": 3600})  # a start that never gets past create
    got: list[object] = []
    done = anyio.Event()
    async with anyio.create_task_group() as outside:
        with anyio.CancelScope() as daemon_scope:
            async with open_engine(runtime=runtime) as engine:
                cid = await engine.daemon.container_create(config=SLEEPER)
                outside.start_soon(_outcome, lambda: engine.daemon.container_start(cid), done, got)
                await anyio.wait_all_tasks_blocked()
                daemon_scope.cancel()
                await anyio.sleep_forever()
        with anyio.fail_after(5):
            await done.wait()
    assert len(got) == 1 and isinstance(got[0], errors.Unavailable), got
    assert (got[0].status, str(got[0])) == (503, "the daemon is shutting down")


async def test_a_request_after_the_daemon_closed_is_told_so(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        cid = await engine.daemon.container_create(config=SLEEPER)
    with pytest.raises(errors.Unavailable, match="^the daemon is shutting down$"):
        await engine.daemon.container_start(cid)
