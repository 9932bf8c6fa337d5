"""Edges of the actor found in review: every request is answered, nothing wedges or leaks."""

from __future__ import annotations

from collections.abc import Awaitable

import anyio
import pytest

from asyncstart import FakeMounter, FakeNetwork, FakeRuntime, errors
from asyncstart.mailbox import SERVING_TASK
from asyncstart.runtime.fake import FakeProcess

from .conftest import Engine, OpenEngine
from .helpers import create, next_action

pytestmark = pytest.mark.anyio


async def test_a_stop_whose_kill_fails_answers_and_the_daemon_lives_on(clocked: Engine) -> None:
    daemon = clocked.daemon
    cid = await create(daemon, "web")
    await daemon.container_start("web")
    clocked.runtime.faults.inject("kill", "kill failed", times=2)
    with pytest.raises(errors.SystemError, match=f"^cannot stop container: {cid}: Cannot kill"):
        await daemon.container_stop("web", timeout=0)
    assert (await daemon.container_inspect("web"))["State"]["Running"]
    await daemon.container_stop("web")  # the runtime works again
    assert (await daemon.container_inspect("web"))["State"]["ExitCode"] == 143


async def test_requests_queued_behind_a_remove_are_answered(clocked: Engine) -> None:
    daemon = clocked.daemon
    await create(daemon, "web")
    clocked.runtime.delays["delete"] = 1.0
    answers: dict[str, object] = {}

    async def ask(key: str, call: object) -> None:
        try:
            answers[key] = await call  # type: ignore[misc]
        except errors.DockerError as exc:
            answers[key] = type(exc).__name__

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, "rm", daemon.container_remove("web"))
        await clocked.fake_clock.wait_sleepers(1)  # the remove waits in the runtime's delete
        tg.start_soon(ask, "wait", daemon.container_wait("web", "removed"))
        tg.start_soon(ask, "stop", daemon.container_stop("web"))
        await anyio.wait_all_tasks_blocked()
        clocked.fake_clock.advance(1.0)
    assert answers == {"rm": None, "wait": {"StatusCode": 0}, "stop": "NotFound"}


class _LeakyMounter(FakeMounter):
    async def mount(self, container_id: str) -> str:
        raise OSError(5, "Input/output error")


async def test_a_foreign_error_in_a_step_fails_the_start_without_wedging(
    open_engine: OpenEngine,
) -> None:
    async with open_engine(mounter=_LeakyMounter()) as engine:
        daemon = engine.daemon
        await create(daemon, "web")
        with pytest.raises(errors.SystemError, match="OSError"):
            await daemon.container_start("web")
        state = (await daemon.container_inspect("web"))["State"]
        assert (state["Status"], state["ExitCode"]) == ("created", 128)
        with anyio.fail_after(5):  # answered, not deferred forever
            await daemon.container_remove("web")


async def test_reopen_gives_back_what_a_lost_process_held(open_engine: OpenEngine) -> None:
    runtime, mounter, network = FakeRuntime(), FakeMounter(), FakeNetwork()
    drivers = {"runtime": runtime, "mounter": mounter, "network": network}
    async with open_engine(**drivers) as engine:
        cid = await create(engine.daemon, "web")
        await engine.daemon.container_start("web")
    del runtime.processes[cid]  # died while no daemon watched
    async with open_engine(**drivers) as engine:
        state = (await engine.daemon.container_inspect("web"))["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 255)
        assert not mounter.mounted(cid) and cid not in network.sandboxes
        await engine.daemon.container_start("web")
        assert mounter.refs[cid] == 1


async def test_close_stdin_of_a_process_adopted_on_reopen(open_engine: OpenEngine) -> None:
    runtime = FakeRuntime()
    async with open_engine(runtime=runtime) as engine:
        cid = await engine.daemon.container_create(
            name="cat", config={"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True}
        )
        await engine.daemon.container_start("cat")
    async with open_engine(runtime=runtime) as engine:
        async with engine.daemon.subscribe_events() as events:
            await engine.daemon.container_close_stdin("cat")
            await next_action(events, "die")
        assert runtime.exits[cid].exit_code == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_waiters_on_a_restarting_container_are_answered_when_it_is_stopped(
    clocked: Engine, how: str
) -> None:
    daemon = clocked.daemon
    cid = await create(daemon, "web", RestartPolicy={"Name": "always"})
    results: list[object] = []

    async def wait() -> None:
        results.append(await daemon.container_wait("web"))

    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        clocked.runtime.exit(cid, 3)
        await next_action(events, "die")
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert results == []
        await getattr(daemon, f"container_{how}")("web")
    assert results == [{"StatusCode": 3}]


async def test_a_wait_sent_during_a_start_waits_for_the_exit(clocked: Engine) -> None:
    daemon = clocked.daemon
    clocked.runtime.delays["create"] = 1.0
    cid = await create(daemon, "web")
    results: list[object] = []

    async def wait() -> None:
        results.append(await daemon.container_wait("web"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_start, "web")
        await clocked.fake_clock.wait_sleepers(1)  # the create is under way
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        clocked.fake_clock.advance(1.0)
        await anyio.wait_all_tasks_blocked()
        assert results == [], "the container runs now: the wait is for its exit"
        clocked.runtime.exit(cid, 6)
    assert results == [{"StatusCode": 6}]


async def test_force_remove_whose_kill_fails_is_an_error(engine: Engine) -> None:
    daemon = engine.daemon
    await create(daemon, "web")
    await daemon.container_start("web")
    engine.runtime.faults.inject("kill", "permission denied")
    with pytest.raises(errors.SystemError, match='^cannot remove container "/web": could not kill'):
        await daemon.container_remove("web", force=True)
    assert (await daemon.container_inspect("web"))["State"]["Running"]


class _LosesStartReports(FakeRuntime):
    """Reports the exit of a process whose start it never reported."""

    async def start(self, container_id: str) -> None:
        process: FakeProcess = self.processes[container_id]
        process.status = "running"
        self._finish(process, 3)


async def test_an_exit_reported_before_the_start_counts_as_both(open_engine: OpenEngine) -> None:
    async with open_engine(runtime=_LosesStartReports()) as engine:
        daemon = engine.daemon
        cid = await create(daemon, "web")
        async with daemon.subscribe_events() as events:
            await daemon.container_start("web")
            await next_action(events, "die")
        state = (await daemon.container_inspect("web"))["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 3)
        assert not engine.mounter.mounted(cid) and engine.network.sandboxes == {}


async def test_a_failed_start_keeps_an_earlier_non_zero_exit_code(engine: Engine) -> None:
    daemon = engine.daemon
    await create(daemon, "job", "false")
    async with daemon.subscribe_events() as events:
        await daemon.container_start("job")
        await next_action(events, "die")
    engine.mounter.faults.inject("mount", "no space left on device")
    with pytest.raises(errors.SystemError):
        await daemon.container_start("job")
    state = (await daemon.container_inspect("job"))["State"]
    assert (state["ExitCode"], state["Error"]) == (1, "no space left on device")


async def test_idle_containers_keep_no_task_and_one_busy_holds_up_no_other(
    clocked: Engine,
) -> None:
    daemon = clocked.daemon
    outcomes: list[str] = []
    ids = [await create(daemon, f"c{n}") for n in range(48)]
    async with anyio.create_task_group() as tg:
        for cid in ids[:40]:
            tg.start_soon(daemon.container_start, cid)
    await daemon.container_stop(ids[0], timeout=0)
    await anyio.wait_all_tasks_blocked()
    # Created, running and exited alike: no task of their own. The tasks that served the
    # starts (40 at once at most) wait for the next messages, whoever they are for.
    assert _serving_tasks() <= 40 < len(ids)
    clocked.runtime.delays["delete"] = 1.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: daemon.container_remove(ids[41]))
        await clocked.fake_clock.wait_sleepers(1)  # the remove waits in the runtime's delete
        # Queued behind the remove: taken after it, in turn (404: the container is gone).
        late = daemon.container_rename(ids[41], "late")
        tg.start_soon(lambda: _outcome(late, outcomes))
        await anyio.wait_all_tasks_blocked()  # (asked: queued behind the remove)
        # Another container's request does not wait behind it.
        with anyio.fail_after(5):
            await daemon.container_rename(ids[42], "renamed")
        assert outcomes == []
        clocked.fake_clock.advance(1.0)
    assert outcomes == ["NotFound"]
    assert (await daemon.container_inspect("renamed"))["Id"] == ids[42]
    with pytest.raises(errors.NotFound):
        await daemon.container_inspect(ids[41])


async def _outcome(call: Awaitable[object], into: list[str]) -> None:
    try:
        await call
        into.append("ok")
    except errors.DockerError as exc:
        into.append(type(exc).__name__)


def _serving_tasks() -> int:
    return sum(1 for task in anyio.get_running_tasks() if task.name == SERVING_TASK)


async def test_an_export_while_the_container_is_being_removed_is_refused(clocked: Engine) -> None:
    daemon = clocked.daemon
    cid = await create(daemon, "web")
    clocked.runtime.delays["delete"] = 1.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: daemon.container_remove("web"))
        await clocked.fake_clock.wait_sleepers(1)  # the remove waits in the runtime's delete
        with pytest.raises(errors.Conflict, match=f"^You cannot export container {cid} which"):
            await daemon.container_export("web")
        clocked.fake_clock.advance(1.0)
