"""Hostile input and bad luck (issue 10): each case here failed on an earlier main."""

from __future__ import annotations

import io
import time

import anyio
import pytest
import structlog

from asyncstart import errors
from asyncstart.logconfig import configure_logging
from asyncstart.runtime import StateInfo

from .conftest import Engine, OpenEngine
from .helpers import create

pytestmark = pytest.mark.anyio


async def test_force_remove_as_the_process_exits_succeeds(engine: Engine) -> None:
    """``rm -f`` sent as the process exits: the runtime says "not running" to the KILL while
    the exit is still on its way (runc reports it once the output is drained). dockerd takes
    that as success; it was a 500 "could not kill" and the container stayed."""
    daemon, runtime = engine.daemon, engine.runtime
    cid = await create(daemon, "web")
    await daemon.container_start("web")
    process = runtime.processes[cid]
    process.status = "stopped"  # dead; its exit not reported yet
    runtime.exits[cid] = StateInfo("exit", pid=process.pid, exit_code=0, at=time.time())
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_remove, "web", True)
        await anyio.wait_all_tasks_blocked()
        runtime.replay_exit(cid)  # the exit arrives
    with pytest.raises(errors.NotFound):
        await daemon.container_inspect("web")


async def test_a_kill_that_races_the_exit_is_answered_by_the_exit(engine: Engine) -> None:
    daemon, runtime = engine.daemon, engine.runtime
    cid = await create(daemon, "web")
    await daemon.container_start("web")
    process = runtime.processes[cid]
    process.status = "stopped"
    runtime.exits[cid] = StateInfo("exit", pid=process.pid, exit_code=0, at=time.time())
    result: list[dict[str, object]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_kill, "web", "KILL")
        await anyio.wait_all_tasks_blocked()
        runtime.replay_exit(cid)
        result.append(await daemon.container_wait("web"))
    assert result == [{"StatusCode": 0}]


def _fail() -> None:
    raise ValueError("the cause")


def test_logged_exceptions_carry_their_type_and_traceback() -> None:
    """They were logged as the literal text ``exc_info=True``."""
    out = io.StringIO()
    configure_logging("info", out)
    try:
        log = structlog.get_logger("asyncstart.test")
        try:
            _fail()
        except ValueError:
            log.exception("something.failed", container_id="c")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "exc_info=True" not in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: the cause" in text


async def test_a_record_that_does_not_decode_is_quarantined_and_the_rest_served(
    open_engine: OpenEngine,
) -> None:
    """One truncated ``container.json`` (power loss, a full disk) made the daemon refuse to
    start. Now it is moved aside, loudly, and every other container is served."""
    async with open_engine() as engine:
        good = await create(engine.daemon, "good")
        bad = await create(engine.daemon, "bad")
        await engine.daemon.container_start("good")
    containers = engine.root / "data" / "containers"
    record = containers / bad / "container.json"
    torn = record.read_bytes()[:40]
    record.write_bytes(torn)
    async with open_engine(runtime=engine.runtime, mounter=engine.mounter) as engine:
        shown = await engine.daemon.container_inspect("good")
        assert shown["Id"] == good and shown["State"]["Running"]
        with pytest.raises(errors.NotFound):
            await engine.daemon.container_inspect("bad")
        # The name is free again; the damaged record is kept for a person to look at.
        await create(engine.daemon, "bad")
    assert not (containers / bad).exists()
    kept = list((engine.root / "data" / "quarantine").iterdir())
    assert [p.name.split(".")[0] for p in kept] == [bad]
    assert (kept[0] / "container.json").read_bytes() == torn
    assert engine.mounter.layers.get(bad) is not None, "its layer is left for a person"
