"""The library API on fake drivers: what a Docker user sees, status codes and messages included."""

from __future__ import annotations

import anyio
import pytest

from asyncstart import errors
from asyncstart.config import Config
from asyncstart.views import parse_time

from .conftest import Engine, OpenEngine
from .helpers import actions, create, next_action

pytestmark = pytest.mark.anyio

NOT_FOUND_MSG = "executable file not found in $PATH"


async def test_create_start_inspect_list(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    assert len(cid) == 64 and int(cid, 16) >= 0
    created = await daemon.container_inspect("web")
    assert created["State"]["Status"] == "created"
    assert created["State"]["StartedAt"] == "0001-01-01T00:00:00Z"
    assert created["Name"] == "/web" and created["Config"]["Hostname"] == cid[:12]
    assert await daemon.containers_list() == []
    assert [row["Status"] for row in await daemon.containers_list(all=True)] == ["Created"]

    await daemon.container_start("web")
    info = await daemon.container_inspect(cid[:10])
    state = info["State"]
    assert state["Status"] == "running" and state["Running"] is True
    assert state["Pid"] == engine.runtime.processes[cid].pid
    assert state["StartedAt"].endswith("Z") and state["StartedAt"] > info["Created"]
    assert info["Path"] == "sleep" and info["Args"] == ["infinity"]
    assert info["NetworkSettings"]["IPAddress"] in engine.network.addresses()
    rows = await daemon.containers_list()
    assert [(r["Id"], r["Names"], r["State"]) for r in rows] == [(cid, ["/web"], "running")]
    assert rows[0]["Status"].startswith("Up ")
    assert engine.mounter.mounted(cid)


async def test_lookup_by_id_name_and_prefix(engine: Engine) -> None:
    daemon = engine.daemon
    ids = [await create(daemon, f"c{i}") for i in range(40)]
    for cid in ids:
        assert (await daemon.container_inspect(cid))["Id"] == cid
        assert (await daemon.container_inspect(cid[:12]))["Id"] == cid
    assert (await daemon.container_inspect("/c7"))["Id"] == ids[7]
    # Two IDs among 40 share a first hex digit for sure: an ambiguous prefix is a 400.
    firsts = [cid[0] for cid in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(
        errors.InvalidParameter, match=f"^multiple IDs found with provided prefix: {shared}$"
    ):
        await daemon.container_inspect(shared)
    with pytest.raises(errors.NotFound, match="^No such container: nope$") as info:
        await daemon.container_start("nope")
    assert info.value.status == 404
    with pytest.raises(errors.InvalidParameter, match='^invalid name or ID supplied: ""$'):
        await daemon.container_start("")


async def test_a_name_that_is_another_containers_id_prefix_wins(engine: Engine) -> None:
    first = await create(engine.daemon)
    second = await create(engine.daemon, first[:6])
    assert (await engine.daemon.container_inspect(first[:6]))["Id"] == second
    assert (await engine.daemon.container_inspect(first))["Id"] == first


async def test_names_are_validated_and_unique(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    with pytest.raises(errors.Conflict) as info:
        await create(daemon, "/web")
    assert str(info.value) == (
        f'Conflict. The container name "/web" is already in use by container "{cid}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
    for bad in ("a", "-x", "we/b", "..", "x y"):
        with pytest.raises(errors.InvalidParameter, match=r"^Invalid container name \("):
            await create(daemon, bad)
    generated = await create(daemon)
    assert (await daemon.container_inspect(generated))["Name"].count("_") == 1
    # A failed create leaves the name free.
    engine.mounter.faults.inject("create", "disk full")
    with pytest.raises(errors.SystemError):
        await create(daemon, "again")
    await create(daemon, "again")


async def test_create_validates_config(engine: Engine) -> None:
    daemon = engine.daemon
    with pytest.raises(errors.InvalidParameter, match="^No command specified$"):
        await daemon.container_create(config={"Image": "busybox"})
    with pytest.raises(errors.InvalidParameter, match="Cmd"):
        await daemon.container_create(config={"Image": "busybox", "Cmd": "sleep"})
    with pytest.raises(errors.InvalidParameter, match="unknown policy 'sometimes'"):
        await create(daemon, None, RestartPolicy={"Name": "sometimes"})
    with pytest.raises(errors.InvalidParameter, match="can't create 'AutoRemove' container"):
        await create(daemon, None, AutoRemove=True, RestartPolicy={"Name": "always"})
    cid = await daemon.container_create(config=Config(image="busybox", cmd=["true"]))
    assert (await daemon.container_inspect(cid))["Config"]["Cmd"] == ["true"]


async def test_start_state_errors(engine: Engine) -> None:
    daemon = engine.daemon
    await create(daemon, "web")
    await daemon.container_start("web")
    with pytest.raises(errors.NotModified, match="^container is already running$") as info:
        await daemon.container_start("web")
    assert info.value.status == 304
    await daemon.container_pause("web")
    with pytest.raises(
        errors.Conflict, match="^cannot start a paused container, try unpause instead$"
    ):
        await daemon.container_start("web")
    with pytest.raises(errors.InvalidParameter, match="experimental"):
        await daemon.container_start("web", checkpoint="cp1")


async def test_concurrent_starts_create_once(engine: Engine) -> None:
    daemon = engine.daemon
    engine.runtime.delays["create"] = 0.01
    cid = await create(daemon, "web")
    outcomes: list[str] = []

    async def start() -> None:
        try:
            await daemon.container_start("web")
            outcomes.append("ok")
        except errors.NotModified:
            outcomes.append("not-modified")

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(start)
    assert engine.runtime.creates[cid] == 1
    assert outcomes == ["ok"] * 5, "starts that overlap the first one return once it runs"
    with pytest.raises(errors.NotModified):
        await daemon.container_start("web")


async def test_many_containers_start_concurrently(clocked: Engine) -> None:
    daemon, clock = clocked.daemon, clocked.fake_clock
    clocked.runtime.delays["create"] = 1.0
    ids = [await create(daemon) for _ in range(50)]
    async with anyio.create_task_group() as tg:
        for cid in ids:
            tg.start_soon(daemon.container_start, cid)
        await anyio.wait_all_tasks_blocked()
        assert clock.sleepers == 50, "all 50 creates are under way at once"
        clock.advance(1.0)
    assert clocked.daemon.statistics().running == 50
    assert len(clocked.network.addresses()) == 50


@pytest.mark.parametrize(
    ("faulty", "phase", "message", "code", "error"),
    [
        ("mounter", "mount", "overlay: no space left", 128, errors.SystemError),
        ("network", "setup", "netlink: operation not supported", 128, errors.SystemError),
        ("runtime", "create", f'exec: "nope": {NOT_FOUND_MSG}', 127, errors.InvalidParameter),
        ("runtime", "create", "exec: /bin/x: permission denied", 126, errors.InvalidParameter),
        ("runtime", "create", "mount /etc/x: not a directory", 127, errors.InvalidParameter),
        ("runtime", "start", "runc start: some failure", 128, errors.SystemError),
    ],
)
async def test_failed_start_undoes_and_records(
    engine: Engine, faulty: str, phase: str, message: str, code: int, error: type[Exception]
) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    getattr(engine, faulty).faults.inject(phase, message)
    async with daemon.subscribe_events() as events:
        with pytest.raises(error) as info:
            await daemon.container_start("web")
        assert message in str(info.value)
        assert "start" not in actions(events)
    state = (await daemon.container_inspect("web"))["State"]
    assert state["Status"] == "created" and state["ExitCode"] == code
    assert message in state["Error"] and state["Pid"] == 0 and not state["Running"]
    assert not engine.mounter.mounted(cid)
    assert engine.network.sandboxes == {}
    assert engine.runtime.live() == set() and cid not in engine.runtime.processes
    # The next start works and clears the error.
    await daemon.container_start("web")
    state = (await daemon.container_inspect("web"))["State"]
    assert state["Status"] == "running" and state["Error"] == "" and state["ExitCode"] == 0


async def test_failed_start_after_a_run_shows_exited(engine: Engine) -> None:
    daemon = engine.daemon
    await create(daemon, "job", "true")
    await daemon.container_start("job")
    assert (await daemon.container_wait("job"))["StatusCode"] == 0
    engine.network.faults.inject("setup", "no address left")
    with pytest.raises(errors.SystemError):
        await daemon.container_start("job")
    state = (await daemon.container_inspect("job"))["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == (
        "exited",
        128,
        "no address left",
    )
    assert (await daemon.container_wait("job")) == {
        "StatusCode": 128,
        "Error": {"Message": "no address left"},
    }


async def test_failing_undo_does_not_stop_the_rest(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    engine.runtime.faults.inject("create", "boom")
    engine.network.faults.inject("teardown", "teardown broke")
    with pytest.raises(errors.SystemError, match="^boom$"):
        await daemon.container_start("web")
    assert not engine.mounter.mounted(cid), "the mount is undone although the network undo failed"


async def test_exit_codes_events_and_wait(engine: Engine) -> None:
    daemon = engine.daemon
    async with daemon.subscribe_events() as events:
        cid = await create(daemon, "job", "sh", "-c", "exit 3")
        await daemon.container_start("job")
        die = await next_action(events, "die")
    assert die["Actor"]["Attributes"] == {
        "image": "busybox",
        "name": "job",
        "exitCode": "3",
        "execDuration": "0",
    }
    assert die["Type"] == "container" and die["id"] == cid and die["scope"] == "local"
    assert die["timeNano"] // 1_000_000_000 == die["time"]
    assert await daemon.container_wait("job") == {"StatusCode": 3}
    state = (await daemon.container_inspect("job"))["State"]
    # As times, not strings: RFC 3339 drops a fraction's trailing zeros (".0192Z").
    assert state["Status"] == "exited"
    assert parse_time(state["FinishedAt"]) >= parse_time(state["StartedAt"])
    rows = await daemon.containers_list(all=True, filters={"exited": ["3"]})
    assert [r["Status"].startswith("Exited (3)") for r in rows] == [True]
    assert not engine.mounter.mounted(cid) and engine.network.sandboxes == {}


async def test_leaving_an_event_stream_mid_loop_leaves_the_task_whole(engine: Engine) -> None:
    """Breaking out of ``async for`` inside ``async with daemon.events()`` (live events, no
    ``until``) used to leave the stream's cancel scope open on the consumer's task."""
    daemon = engine.daemon
    await create(daemon, "first")
    async with daemon.events() as events:
        await daemon.container_start("first")
        async for event in events:
            if event["Action"] == "start":
                break
    with anyio.fail_after(5):  # a cancel scope of the task's own, after the stream's
        await create(daemon, "second")
        await daemon.container_start("second")
    assert (await daemon.container_inspect("second"))["State"]["Running"]


async def test_wait_conditions(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    assert await daemon.container_wait("web") == {"StatusCode": 0}  # not running yet
    await daemon.container_start("web")
    results: dict[str, dict[str, object]] = {}

    async def wait(condition: str) -> None:
        results[condition] = await daemon.container_wait("web", condition)

    async with anyio.create_task_group() as tg:
        for condition in ("not-running", "next-exit", "removed"):
            await tg.start(_started, wait, condition)
        await anyio.wait_all_tasks_blocked()
        assert results == {}
        async with daemon.subscribe_events() as events:
            engine.runtime.exit(cid, 7)
            await next_action(events, "die")
        await anyio.wait_all_tasks_blocked()
        assert results == {"not-running": {"StatusCode": 7}, "next-exit": {"StatusCode": 7}}
        await daemon.container_remove("web")
    assert results["removed"] == {"StatusCode": 7}
    with pytest.raises(errors.InvalidParameter, match='^invalid condition: "soon"$'):
        await daemon.container_wait(cid, "soon")


async def _started(fn, *args, task_status=anyio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
    task_status.started()
    await fn(*args)


async def test_stop_sends_term_then_kill(clocked: Engine) -> None:
    daemon, clock = clocked.daemon, clocked.fake_clock
    cid = await create(daemon, "web")
    await daemon.container_start("web")
    async with daemon.subscribe_events() as events:
        await daemon.container_stop("web")
        assert actions(events) == ["kill", "die", "stop"]
    assert (await daemon.container_inspect("web"))["State"]["ExitCode"] == 143

    # A process that ignores TERM (here: a stop signal it ignores) is killed at the timeout.
    cid = await daemon.container_create(
        name="stubborn",
        config={"Image": "busybox", "Cmd": ["sleep", "infinity"], "StopSignal": "SIGWINCH"},
    )
    await daemon.container_start("stubborn")
    async with daemon.subscribe_events() as events, anyio.create_task_group() as tg:
        tg.start_soon(daemon.container_stop, "stubborn", 5)
        await next_action(events, "kill")
        clock.advance(4.9)
        await anyio.wait_all_tasks_blocked()
        assert cid in clocked.runtime.live()
        clock.advance(0.1)
        kill = await next_action(events, "kill")
        assert kill["Actor"]["Attributes"]["signal"] == "9"
    assert (await daemon.container_inspect("stubborn"))["State"]["ExitCode"] == 137
    with pytest.raises(errors.NotModified, match="^container is already stopped$"):
        await daemon.container_stop("stubborn")


async def test_kill(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    with pytest.raises(errors.Conflict) as info:
        await daemon.container_kill("web")
    assert str(info.value) == f"cannot kill container: web: container {cid} is not running"
    await daemon.container_start("web")
    await daemon.container_kill("web", "SIGWINCH")  # ignored by the process
    assert cid in engine.runtime.live()
    with pytest.raises(errors.InvalidParameter, match="^Invalid signal: SIGNOPE$"):
        await daemon.container_kill("web", "SIGNOPE")
    await daemon.container_kill("web")  # KILL waits for the exit
    state = (await daemon.container_inspect("web"))["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 137)


async def test_pause_unpause(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    with pytest.raises(errors.Conflict, match=f"^container {cid} is not running$"):
        await daemon.container_pause("web")
    await daemon.container_start("web")
    await daemon.container_pause("web")
    assert engine.runtime.processes[cid].status == "paused"
    info = await daemon.container_inspect("web")
    assert info["State"]["Status"] == "paused" and info["State"]["Running"] is True
    with pytest.raises(errors.Conflict, match=f"^container {cid} is already paused$"):
        await daemon.container_pause("web")
    with pytest.raises(errors.Conflict, match="must be unpaused first"):
        await daemon.container_remove("web")
    rows = await daemon.containers_list()
    assert rows[0]["Status"].endswith("(Paused)")
    await daemon.container_unpause("web")
    with pytest.raises(errors.SystemError, match=f"^Container {cid} is not paused$"):
        await daemon.container_unpause("web")
    # A paused container can be stopped: the signal is delivered once it is thawed, and the
    # thaw is announced (dockerd's resumed task: unpause), as is the kill of a paused one.
    await daemon.container_pause("web")
    async with daemon.subscribe_events() as events:
        await daemon.container_stop("web")
        assert actions(events) == ["kill", "unpause", "die", "stop"]
    assert (await daemon.container_inspect("web"))["State"]["ExitCode"] == 143
    await daemon.container_start("web")
    await daemon.container_pause("web")
    async with daemon.subscribe_events() as events:
        await daemon.container_kill("web")
        assert actions(events) == ["kill", "unpause", "die"]
    assert (await daemon.container_inspect("web"))["State"]["ExitCode"] == 137


async def test_remove(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    await daemon.container_start("web")
    with pytest.raises(errors.Conflict) as info:
        await daemon.container_remove("web")
    assert str(info.value) == (
        'cannot remove container "/web": container is running: stop the container before '
        "removing or force remove"
    )
    async with daemon.subscribe_events() as events:
        await daemon.container_remove("web", force=True)
        assert actions(events) == ["kill", "die", "destroy"]
    with pytest.raises(errors.NotFound):
        await daemon.container_inspect(cid)
    assert cid not in engine.mounter.layers and not (engine.root / "data/containers" / cid).exists()
    await create(daemon, "web")  # the name is free again


async def test_remove_failure_leaves_the_container_dead(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    engine.mounter.faults.inject("remove", "device or resource busy")
    with pytest.raises(errors.SystemError, match="device or resource busy"):
        await daemon.container_remove("web")
    state = (await daemon.container_inspect("web"))["State"]
    assert state["Status"] == "dead" and state["Dead"] is True
    with pytest.raises(errors.Conflict, match="marked for removal"):
        await daemon.container_start("web")
    await daemon.container_remove("web")
    with pytest.raises(errors.NotFound):
        await daemon.container_inspect(cid)


async def test_auto_remove(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "once", "true", AutoRemove=True)
    async with daemon.subscribe_events() as events:
        await daemon.container_start("once")
        await next_action(events, "destroy")
    with pytest.raises(errors.NotFound):
        await daemon.container_inspect(cid)


async def test_duplicate_exits_are_ignored(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web", "sh", "-c", "exit 4")
    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        await next_action(events, "die")
        engine.runtime.replay_exit(cid)
        await daemon.container_start("web")  # a fresh run
        await next_action(events, "die")
        engine.runtime.replay_exit(cid)
        await anyio.wait_all_tasks_blocked()
        assert actions(events) == []
    assert (await daemon.container_inspect("web"))["State"]["ExitCode"] == 4


async def test_checkpoint_reaches_the_runtime(open_engine: OpenEngine) -> None:
    async with open_engine(experimental=True) as engine:
        daemon = engine.daemon
        cid = await create(daemon, "web")
        with pytest.raises(errors.SystemError, match="checkpoint cp1 does not exist"):
            await daemon.container_start("web", checkpoint="cp1")
        assert not engine.mounter.mounted(cid) and engine.network.sandboxes == {}
        engine.runtime.checkpoints.add("cp1")
        await daemon.container_start("web", checkpoint="cp1", checkpoint_dir="/tmp/cps")
        with pytest.raises(errors.InvalidParameter, match="Invalid container name"):
            await daemon.container_start("web", checkpoint="../x")


async def test_reopen_sees_every_container(open_engine: OpenEngine) -> None:
    from asyncstart import FakeMounter, FakeNetwork, FakeRuntime

    runtime, mounter, network = FakeRuntime(), FakeMounter(), FakeNetwork()
    async with open_engine(runtime=runtime, mounter=mounter, network=network) as engine:
        daemon = engine.daemon
        running = await create(daemon, "running")
        exited = await create(daemon, "exited", "sh", "-c", "exit 9")
        gone = await create(daemon, "gone")
        await create(daemon, "created")
        for name in ("running", "exited", "gone"):
            await daemon.container_start(name)
    # "gone"'s process dies while no daemon watches it.
    del runtime.processes[gone]
    async with open_engine(runtime=runtime, mounter=mounter, network=network) as engine:
        daemon = engine.daemon
        statuses = {r["Names"][0]: r["State"] for r in await daemon.containers_list(all=True)}
        assert statuses == {
            "/running": "running",
            "/exited": "exited",
            "/gone": "exited",
            "/created": "created",
        }
        assert (await daemon.container_inspect(exited))["State"]["ExitCode"] == 9
        assert (await daemon.container_inspect(gone))["State"]["ExitCode"] == 255
        # The live one is still managed: stopping it releases what its start took.
        await daemon.container_stop(running)
        assert not mounter.mounted(running) and running not in network.sandboxes
        with pytest.raises(errors.Conflict, match="already in use"):
            await create(daemon, "created")


async def test_list_filters_and_limit(engine: Engine) -> None:
    daemon = engine.daemon
    a = await daemon.container_create(
        name="aa", config={"Image": "busybox", "Cmd": ["true"], "Labels": {"tier": "web"}}
    )
    b = await create(daemon, "bb")
    await daemon.container_start("bb")
    rows = await daemon.containers_list(all=True)
    assert [r["Id"] for r in rows] == [b, a], "newest first"
    assert [r["Id"] for r in await daemon.containers_list(all=True, limit=1)] == [b]
    assert [
        r["Id"] for r in await daemon.containers_list(filters={"label": ["tier=web"]}, all=True)
    ] == [a]
    assert [
        r["Id"] for r in await daemon.containers_list(filters={"status": {"created": True}})
    ] == [a]
    assert [r["Id"] for r in await daemon.containers_list(filters={"name": ["bb"]})] == [b]
    with pytest.raises(errors.InvalidParameter, match="invalid filter 'colour'"):
        await daemon.containers_list(filters={"colour": ["red"]})


async def test_a_caller_that_goes_away_does_not_disturb_the_operation(engine: Engine) -> None:
    daemon = engine.daemon
    engine.runtime.delays["create"] = 0.05
    cid = await create(daemon, "web")
    with anyio.move_on_after(0.01):
        await daemon.container_start("web")
    # The start goes on without its caller; a second start joins it.
    await daemon.container_start("web")
    assert engine.runtime.creates[cid] == 1
    assert (await daemon.container_inspect("web"))["State"]["Running"]


async def test_generated_names_never_run_out(engine: Engine) -> None:
    names = set()
    for _ in range(600):  # more than the plain adjective_noun combinations
        cid = await engine.daemon.container_create(config={"Image": "busybox", "Cmd": ["true"]})
        names.add((await engine.daemon.container_inspect(cid))["Name"])
    assert len(names) == 600


async def test_network_connect_and_disconnect_events(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    async with daemon.subscribe_events() as events:
        await daemon.container_start("web")
        await daemon.container_stop("web")
        seen = []
        while True:
            try:
                event = events.receive_nowait()
            except anyio.WouldBlock:
                break
            seen.append((event["Type"], event["Action"]))
            if event["Type"] == "network":
                assert event["Actor"]["Attributes"] == {
                    "container": cid,
                    "name": "bridge",
                    "type": "bridge",
                }
                assert "status" not in event
    assert seen == [
        ("network", "connect"),
        ("container", "start"),
        ("container", "kill"),
        ("network", "disconnect"),
        ("container", "die"),
        ("container", "stop"),
    ]


async def test_restart(engine: Engine) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    async with daemon.subscribe_events() as events:
        await daemon.container_restart("web")  # not running: just started
        assert actions(events) == ["start", "restart"]
        first_pid = (await daemon.container_inspect("web"))["State"]["Pid"]
        await daemon.container_restart("web", timeout=1)
        assert actions(events) == ["kill", "die", "stop", "start", "restart"]
    state = (await daemon.container_inspect("web"))["State"]
    assert state["Running"] and state["Pid"] != first_pid
    assert engine.runtime.creates[cid] == 2
    engine.mounter.faults.inject("mount", "no space left on device")
    with pytest.raises(errors.SystemError, match="^Cannot restart container web: no space"):
        await daemon.container_restart("web", timeout=1)
    with pytest.raises(errors.NotFound):
        await daemon.container_restart("nope")
