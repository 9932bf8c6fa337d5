"""Restart policies and backoff, pure and through the engine on a fake clock (no sleeps)."""

from __future__ import annotations

import anyio
import pytest

from asyncstart import FakeMounter, FakeNetwork, FakeRuntime, errors
from asyncstart.config import RestartPolicy
from asyncstart.restart import RestartManager

from .conftest import Engine, OpenEngine
from .helpers import create, next_action

pytestmark = pytest.mark.anyio


def test_backoff_doubles_to_a_minute_and_resets_after_ten_seconds() -> None:
    manager = RestartManager(RestartPolicy(name="always"))
    delays = [manager.should_restart(0, manually_stopped=False, ran_for=1) for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 60.0 and max(d or 0 for d in delays) == 60.0
    assert manager.should_restart(0, manually_stopped=False, ran_for=10) == 0.1


@pytest.mark.parametrize(
    ("policy", "code", "stopped", "restarts"),
    [
        ("no", 1, False, False),
        ("always", 0, False, True),
        ("always", 0, True, True),  # a manual stop cancels the manager instead
        ("unless-stopped", 0, False, True),
        ("unless-stopped", 0, True, False),
        ("on-failure", 0, False, False),
        ("on-failure", 3, False, True),
    ],
)
def test_policies(policy: str, code: int, stopped: bool, restarts: bool) -> None:
    manager = RestartManager(RestartPolicy(name=policy))
    delay = manager.should_restart(code, manually_stopped=stopped, ran_for=0)
    assert (delay is not None) is restarts


def test_on_failure_counts_and_cancel_is_final() -> None:
    manager = RestartManager(RestartPolicy(name="on-failure", maximum_retry_count=2))
    results = [manager.should_restart(1, manually_stopped=False, ran_for=0) for _ in range(3)]
    assert [r is not None for r in results] == [True, True, False]
    manager = RestartManager(RestartPolicy(name="always"))
    manager.cancel()
    assert manager.should_restart(1, manually_stopped=False, ran_for=0) is None


async def test_always_restarts_with_backoff(clocked: Engine) -> None:
    daemon, clock, runtime = clocked.daemon, clocked.fake_clock, clocked.runtime
    cid = await create(daemon, "web", RestartPolicy={"Name": "always"})
    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        for delay, count in ((0.1, 1), (0.2, 2), (0.4, 3)):
            runtime.exit(cid, 1)
            await next_action(events, "die")
            state = (await daemon.container_inspect("web"))["State"]
            assert state["Status"] == "restarting" and state["Restarting"] and state["Running"]
            assert not clocked.mounter.mounted(cid), "resources are released between runs"
            clock.advance(delay - 0.01)
            clock.advance(0.01)
            await next_action(events, "start")
            info = await daemon.container_inspect("web")
            assert info["RestartCount"] == count and info["State"]["Status"] == "running"
        # A run of ten seconds resets the backoff.
        clock.advance(10)
        runtime.exit(cid, 1)
        await next_action(events, "die")
        clock.advance(0.1)
        await next_action(events, "start")
    assert runtime.creates[cid] == 5


async def test_user_stop_cancels_a_pending_restart(clocked: Engine) -> None:
    daemon, clock = clocked.daemon, clocked.fake_clock
    cid = await create(daemon, "web", RestartPolicy={"Name": "always"})
    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        clocked.runtime.exit(cid, 2)
        await next_action(events, "die")
        await daemon.container_stop("web")
        await next_action(events, "stop")
        clock.advance(120)
    state = (await daemon.container_inspect("web"))["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 2)
    assert clocked.runtime.creates[cid] == 1


async def test_stop_of_an_always_container_does_not_restart_it(clocked: Engine) -> None:
    daemon, clock = clocked.daemon, clocked.fake_clock
    cid = await create(daemon, "web", RestartPolicy={"Name": "always"})
    await daemon.container_start("web")
    await daemon.container_stop("web")
    clock.advance(120)
    assert (await daemon.container_inspect("web"))["State"]["Status"] == "exited"
    # A user start resets the manager: the policy applies again.
    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        clocked.runtime.exit(cid, 0)
        await next_action(events, "die")
        assert (await daemon.container_inspect("web"))["State"]["Status"] == "restarting"
        clock.advance(0.1)
        await next_action(events, "start")


async def test_on_failure_limit_and_user_start_resets_count(clocked: Engine) -> None:
    daemon, clock = clocked.daemon, clocked.fake_clock
    cid = await create(daemon, "job", RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 2})
    async with daemon.subscribe_events() as events:
        await daemon.container_start("job")
        for delay in (0.1, 0.2):
            clocked.runtime.exit(cid, 1)
            await next_action(events, "die")
            clock.advance(delay)
            await next_action(events, "start")
        clocked.runtime.exit(cid, 1)
        await next_action(events, "die")
        info = await daemon.container_inspect("job")
        assert info["State"]["Status"] == "exited" and info["RestartCount"] == 2
        await daemon.container_start("job")
        assert (await daemon.container_inspect("job"))["RestartCount"] == 0


async def test_failed_restart_keeps_the_exit_code_and_records_the_error(clocked: Engine) -> None:
    daemon, clock = clocked.daemon, clocked.fake_clock
    cid = await create(daemon, "web", RestartPolicy={"Name": "always"})
    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        clocked.mounter.faults.inject("mount", "overlay went away")
        clocked.runtime.exit(cid, 5)
        await next_action(events, "die")
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_wait, "web")  # returns when the restart gives up
        await anyio.wait_all_tasks_blocked()
        clock.advance(0.1)
    state = (await daemon.container_inspect("web"))["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == (
        "exited",
        5,
        "overlay went away",
    )
    assert not clocked.mounter.mounted(cid)


async def test_remove_force_cancels_a_pending_restart(clocked: Engine) -> None:
    daemon = clocked.daemon
    cid = await create(daemon, "web", RestartPolicy={"Name": "always"})
    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        clocked.runtime.exit(cid, 1)
        await next_action(events, "die")
    with pytest.raises(errors.Conflict, match="container is restarting"):
        await daemon.container_remove("web")
    await daemon.container_remove("web", force=True)
    with pytest.raises(errors.NotFound):
        await daemon.container_inspect(cid)


async def test_a_daemon_that_opens_starts_what_the_restart_policies_say(
    open_engine: OpenEngine,
) -> None:
    """dockerd's restore: ``always`` is started again even after a user's stop,
    ``unless-stopped`` is not, ``on-failure`` is after a non-zero exit (a stop's 143 too);
    ``no``, and a container that never ran, stay as they are."""
    policies = {"always": "always", "unless": "unless-stopped", "failing": "on-failure", "no": "no"}
    drivers = {"runtime": FakeRuntime(), "mounter": FakeMounter(), "network": FakeNetwork()}
    async with open_engine(**drivers) as engine:
        daemon = engine.daemon
        for name, policy in policies.items():
            await create(daemon, name, RestartPolicy={"Name": policy})
            await daemon.container_start(name)
            await daemon.container_stop(name)
        await create(daemon, "never", RestartPolicy={"Name": "always"})
    async with open_engine(**drivers) as engine:
        daemon = engine.daemon
        states = {
            name: (await daemon.container_inspect(name))["State"]["Status"]
            for name in [*policies, "never"]
        }
        assert states == {"always": "running", "unless": "exited", "failing": "running",
                          "no": "exited", "never": "created"}  # fmt: skip
        inspected = await daemon.container_inspect("always")
        assert inspected["RestartCount"] == 0 and inspected["State"]["Pid"] > 0
        # As a user's start: its next stop is a user's stop again, and it stays stopped.
        await daemon.container_stop("always")
        assert (await daemon.container_inspect("always"))["State"]["Status"] == "exited"


async def test_a_container_that_fails_to_start_with_the_daemon_stays_stopped(
    open_engine: OpenEngine,
) -> None:
    runtime, mounter, network = FakeRuntime(), FakeMounter(), FakeNetwork()
    async with open_engine(runtime=runtime, mounter=mounter, network=network) as engine:
        await create(engine.daemon, "web", RestartPolicy={"Name": "always"})
        await engine.daemon.container_start("web")
        await engine.daemon.container_stop("web")
    runtime.faults.inject("create", "exec: no such file")
    async with open_engine(runtime=runtime, mounter=mounter, network=network) as engine:
        state = (await engine.daemon.container_inspect("web"))["State"]
        assert state["Status"] == "exited" and "no such file" in state["Error"]


async def test_a_daemon_that_opens_removes_its_stopped_auto_remove_containers(
    open_engine: OpenEngine,
) -> None:
    """dockerd's restore: a ``--rm`` container whose process does not run is removed, one
    never started too; one that runs stays."""
    runtime, mounter, network = FakeRuntime(), FakeMounter(), FakeNetwork()
    async with open_engine(runtime=runtime, mounter=mounter, network=network) as engine:
        created = await create(engine.daemon, "created", AutoRemove=True)
        running = await create(engine.daemon, "running", AutoRemove=True)
        await engine.daemon.container_start("running")
        kept = await create(engine.daemon, "kept")
    async with open_engine(runtime=runtime, mounter=mounter, network=network) as engine:
        listed = {c["Id"] for c in await engine.daemon.containers_list(all=True)}
        assert listed == {running, kept}, "the created --rm container is gone"
        assert created not in mounter.layers
        assert (await engine.daemon.container_inspect("running"))["State"]["Running"] is True
