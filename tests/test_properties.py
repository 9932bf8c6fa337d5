"""Property-based test of the engine against a simple model (hypothesis stateful testing).

Rules create containers under each restart policy (``no``, ``always``, ``unless-stopped``,
``on-failure`` with a retry limit), start them (alone, concurrently, with a fault injected in
any phase), stop, kill (with KILL, TERM, or a signal the process ignores), pause, unpause and
remove them, make processes exit, close stdin at random points, move the clock, and close and
reopen the daemon on the same roots and fakes (processes may die while it is down); after every
step the engine must agree with the model, and no fake resource (mount, network sandbox,
address, runtime process) may be held by a container that is not running.

The restart rules are dockerd's, as ``asyncstart.restart`` implements them: a stop or kill
cancels the policy until the next user start (in memory only: a reopened daemon's manager is a
fresh one); ``unless-stopped`` does not restart a container a user stopped or signalled;
``on-failure`` restarts a non-zero exit while fewer than ``MaximumRetryCount`` restarts were
made (0: no limit); a user start resets the count. A daemon that opens starts, as a user would,
the stopped containers its fresh managers would restart (dockerd's restore).

Hypothesis rules are synchronous, so the engine runs in an anyio blocking portal kept open for
the whole run — once on asyncio, once on trio. ``ASYNCSTART_PROPERTY_EXAMPLES`` sets the number
of examples per backend, to search longer locally (with ``--timeout=0``: shrinking a failure
found in a long search can outlast pytest-timeout's limit, which hypothesis then reports as a
flaky test).
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

import asyncstart
from asyncstart import FakeClock, FakeMounter, FakeNetwork, FakeRuntime, errors

FAULTS = {
    "mount": ("mounter", "mount", "overlay: device busy", 128, errors.SystemError),
    "network": ("network", "setup", "netlink: no buffer space", 128, errors.SystemError),
    "create": ("runtime", "create", 'exec: "x": executable file not found in $PATH', 127,
               errors.InvalidParameter),
    "start": ("runtime", "start", "runc: start failed", 128, errors.SystemError),
}  # fmt: skip
LIVE = ("running", "paused")
POLICIES = ("no", "always", "unless-stopped", "on-failure")
#: Exit codes of the fake process for the signals the kill rule sends (None: it ignores it).
KILLED_BY = {"KILL": 137, "TERM": 143, "WINCH": None}


@dataclass
class Model:
    id: str
    policy: str
    #: ``MaximumRetryCount`` (on-failure only; 0: no limit).
    max_retries: int = 0
    status: str = "created"
    exit_code: int = 0
    restart_count: int = 0
    #: The restart manager was cancelled by a stop or kill since the last user start.
    cancelled: bool = False
    #: dockerd's ``HasBeenManuallyStopped`` (a stop or kill since the last user start).
    manually_stopped: bool = False

    def user_start(self) -> None:
        """dockerd's ``ResetRestartManager``: a user start, even one that fails."""
        self.restart_count, self.cancelled, self.manually_stopped = 0, False, False

    def signalled(self) -> None:
        """A stop or a kill (no stop signal is configured: every signal cancels the policy)."""
        self.cancelled = self.manually_stopped = True

    def restarts_after(self, code: int) -> bool:
        if self.cancelled or self.policy == "no":
            return False
        if self.policy == "always":
            return True
        if self.policy == "unless-stopped":
            return not self.manually_stopped
        limit = self.max_retries
        return code != 0 and (limit == 0 or self.restart_count < limit)

    def exits(self, code: int) -> None:
        restarts = self.restarts_after(code)
        self.status = "restarting" if restarts else "exited"
        self.exit_code = code
        self.restart_count += restarts


class EngineMachine(RuleBasedStateMachine):
    backend = "asyncio"
    names = Bundle("names")

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.root = tempfile.mkdtemp(prefix="asyncstart-prop-")
        self.clock = FakeClock()
        self.runtime = FakeRuntime(clock=self.clock)
        self.mounter = FakeMounter()
        self.network = FakeNetwork()
        self.model: dict[str, Model] = {}
        self.counter = 0
        #: stdin closes each process had when the current daemon adopted it, by (id, pid).
        self.stdin_closes_before: dict[tuple[str, int], int] = {}
        self._open()

    def _open(self) -> None:
        config = asyncstart.DaemonConfig(
            data_root=f"{self.root}/data",
            exec_root=f"{self.root}/exec",
            runtime="fake",
            fsync=False,
        )
        self._daemon_cm = self.portal.wrap_async_context_manager(
            asyncstart.open_daemon(
                config,
                runtime=self.runtime,
                mounter=self.mounter,
                network=self.network,
                clock=self.clock,
            )
        )
        self.daemon = self._daemon_cm.__enter__()

    def _close(self) -> None:
        self._daemon_cm.__exit__(None, None, None)

    def teardown(self) -> None:
        self._close()
        self._portal_cm.__exit__(None, None, None)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------

    def call(self, fn: Any, *args: Any) -> Any:
        return self.portal.call(fn, *args)

    def expect_error(self, error: type[errors.DockerError], fn: Any, *args: Any) -> str:
        try:
            self.call(fn, *args)
        except error as exc:
            return exc.message
        raise AssertionError(f"{fn.__name__}{args} did not raise {error.__name__}")

    def named(self, *statuses: str) -> list[str]:
        return sorted(name for name, m in self.model.items() if m.status in statuses)

    def pick(self, data: st.DataObject, *statuses: str) -> str:
        return data.draw(st.sampled_from(self.named(*statuses)), label="name")

    async def _until(self, action: str, count: int, trigger: Any, *args: Any) -> None:
        """Run ``trigger`` (sync or async) and wait, on events, never on time, for ``count``
        container events ``action`` (an engine that never sends them fails in 10 s)."""
        with anyio.fail_after(10):
            async with self.daemon.subscribe_events() as events:
                result = trigger(*args)
                if inspect.isawaitable(result):
                    await result
                seen = 0
                while seen < count:
                    event = await events.receive()
                    if event["Type"] == "container" and event["Action"] == action:
                        seen += 1

    # -- rules ------------------------------------------------------------------------------

    @rule(
        target=names,
        policy=st.sampled_from(POLICIES),
        retries=st.integers(min_value=0, max_value=3),
        stdin=st.booleans(),
    )
    def create(self, policy: str, retries: int, stdin: bool) -> str:
        self.counter += 1
        name = f"box{self.counter}"  # not hex: a removed name must not read as an ID prefix
        retries = retries if policy == "on-failure" else 0
        cid = self.call(
            lambda: self.daemon.container_create(
                name=name,
                config={"Image": "busybox", "Cmd": ["sleep", "infinity"], "OpenStdin": stdin},
                host_config={"RestartPolicy": {"Name": policy, "MaximumRetryCount": retries}},
            )
        )
        self.model[name] = Model(cid, policy, max_retries=retries)
        return name

    @rule(name=names, fault=st.sampled_from([None, *FAULTS]))
    def start(self, name: str, fault: str | None) -> None:
        model = self.model[name]
        if model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_start, name)
        elif model.status == "paused":
            self.expect_error(errors.Conflict, self.daemon.container_start, name)
        elif model.status in ("running", "restarting"):
            self.expect_error(errors.NotModified, self.daemon.container_start, name)
        elif model.status == "dead":
            self.expect_error(errors.Conflict, self.daemon.container_start, name)
        elif fault is not None:
            driver, phase, message, code, error = FAULTS[fault]
            getattr(self, driver).faults.inject(phase, message, container_id=model.id)
            assert message in self.expect_error(error, self.daemon.container_start, name)
            model.user_start()
            # A runtime error always sets its code (dockerd's setExitCodeFromError); any other
            # failed start sets 128 only over a clean previous exit.
            if driver == "runtime" or model.exit_code == 0:
                model.exit_code = code
        else:
            self.call(self.daemon.container_start, name)
            model.user_start()
            model.status, model.exit_code = "running", 0

    @precondition(lambda self: self.named("created", "exited"))
    @rule(data=st.data(), n=st.integers(min_value=2, max_value=4))
    def concurrent_start(self, data: st.DataObject, n: int) -> None:
        name = self.pick(data, "created", "exited")
        model = self.model[name]
        before = self.runtime.creates[model.id]

        async def starts() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(self.daemon.container_start, name)

        self.call(starts)
        assert self.runtime.creates[model.id] == before + 1
        model.user_start()
        model.status, model.exit_code = "running", 0

    @rule(name=names)
    def stop(self, name: str) -> None:
        model = self.model[name]
        if model.status in LIVE:
            self.call(self.daemon.container_stop, name)
            model.signalled()
            model.exits(143)
        elif model.status == "restarting":
            self.call(self.daemon.container_stop, name)
            model.signalled()
            model.status = "exited"
        elif model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_stop, name)
        else:
            self.expect_error(errors.NotModified, self.daemon.container_stop, name)

    @rule(name=names, signal=st.sampled_from(sorted(KILLED_BY)))
    def kill(self, name: str, signal: str) -> None:
        model = self.model[name]
        code = KILLED_BY[signal]
        if model.status in LIVE:
            model.signalled()
            if code is None:  # ignored; a paused process is thawed to get it, as dockerd
                self.call(self.daemon.container_kill, name, signal)
                model.status = "running"
            else:
                # Only a KILL is answered at the exit: wait for it.
                self.call(self._until, "die", 1, self.daemon.container_kill, name, signal)
                model.exits(code)
        elif model.status == "restarting":
            self.call(self.daemon.container_kill, name, signal)
            model.signalled()
            model.status = "exited"
        elif model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_kill, name, signal)
        else:
            self.expect_error(errors.Conflict, self.daemon.container_kill, name, signal)

    @precondition(lambda self: self.named(*LIVE))
    @rule(data=st.data(), code=st.sampled_from([0, 1]) | st.integers(min_value=0, max_value=255))
    def process_exits(self, data: st.DataObject, code: int) -> None:
        self.exit_process(self.pick(data, *LIVE), code)

    def exit_process(self, name: str, code: int) -> None:
        model = self.model[name]
        self.call(self._until, "die", 1, self.runtime.exit, model.id, code)
        model.exits(code)

    @precondition(lambda self: self.named("restarting"))
    @rule()
    def time_passes(self) -> None:
        due = self.named("restarting")
        self.call(self._until, "start", len(due), self.clock.advance, 120.0)
        for name in due:
            self.model[name].status, self.model[name].exit_code = "running", 0

    @rule(name=names)
    def pause(self, name: str) -> None:
        model = self.model[name]
        if model.status == "running":
            self.call(self.daemon.container_pause, name)
            model.status = "paused"
        elif model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_pause, name)
        else:
            self.expect_error(errors.Conflict, self.daemon.container_pause, name)

    @rule(name=names)
    def unpause(self, name: str) -> None:
        model = self.model[name]
        if model.status == "paused":
            self.call(self.daemon.container_unpause, name)
            model.status = "running"
        elif model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_unpause, name)
        else:
            self.expect_error(errors.SystemError, self.daemon.container_unpause, name)

    @rule(name=names)
    def close_stdin(self, name: str) -> None:
        model = self.model[name]
        if model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_close_stdin, name)
        else:
            self.call(self.daemon.container_close_stdin, name)

    @precondition(lambda self: self.named("created", "exited", "dead", "removed"))
    @rule(data=st.data())
    def wait_not_running(self, data: st.DataObject) -> None:
        name = self.pick(data, "created", "exited", "dead", "removed")
        model = self.model[name]
        if model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_wait, name)
        else:
            result = self.call(self.daemon.container_wait, name)
            assert result["StatusCode"] == model.exit_code

    @rule(name=consumes(names), force=st.booleans(), fail=st.booleans())
    def remove(self, name: str, force: bool, fail: bool) -> None:
        model = self.model[name]
        busy = model.status in (*LIVE, "restarting")
        if model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_remove, name, force)
        elif busy and not force:
            self.expect_error(errors.Conflict, self.daemon.container_remove, name, False)
        else:
            if model.status in LIVE:
                model.exit_code = 137
            if fail:
                self.mounter.faults.inject("remove", "device busy", container_id=model.id)
                self.expect_error(errors.SystemError, self.daemon.container_remove, name, force)
                model.status = "dead"
            else:
                self.call(self.daemon.container_remove, name, force)
                model.status = "removed"

    @rule(data=st.data())
    def reopen(self, data: st.DataObject) -> None:
        live = self.named(*LIVE)
        lost = data.draw(st.sets(st.sampled_from(live)) if live else st.just(set()), label="lost")
        self.reopen_losing(lost)

    def reopen_losing(self, lost: set[str]) -> None:
        """Close the daemon and open a new one on the same roots, fakes and clock; the
        processes of the containers in ``lost`` die while no daemon watches them."""
        self._close()
        for name in lost:
            del self.runtime.processes[self.model[name].id]
        self._open()
        self.stdin_closes_before = {
            (cid, process.pid): process.stdin_closes
            for cid, process in self.runtime.processes.items()
        }
        for model in self.model.values():
            model.cancelled = False  # the manager is not persisted (nor is it by dockerd)
        for name in lost:
            self.model[name].exits(255)  # its exit code is lost: dockerd's 255
        for model in self.model.values():
            # dockerd's restore: a stopped container that ran is started, as by a user, if its
            # (fresh) restart manager would restart it now.
            if model.status == "exited" and model.restarts_after(model.exit_code):
                model.user_start()
                model.status, model.exit_code = "running", 0

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def engine_agrees_with_model(self) -> None:
        async def observe() -> dict[str, tuple[str, int, int] | None]:
            seen: dict[str, tuple[str, int, int] | None] = {}
            for name in self.model:
                try:
                    shown = await self.daemon.container_inspect(name)
                except errors.NotFound:
                    seen[name] = None
                else:
                    state = shown["State"]
                    seen[name] = (state["Status"], state["ExitCode"], shown["RestartCount"])
            return seen

        expected = {
            name: None if m.status == "removed" else (m.status, m.exit_code, m.restart_count)
            for name, m in self.model.items()
        }
        assert self.call(observe) == expected

    @invariant()
    def only_running_containers_hold_resources(self) -> None:
        live = {m.id for m in self.model.values() if m.status in LIVE}
        assert set(self.mounter.refs) == live
        assert set(self.network.sandboxes) == live
        assert len(self.network.addresses()) == len(live)
        assert self.runtime.live() == live
        assert set(self.runtime.processes) == live
        # Stdin is closed at most once per process by each daemon that runs it.
        for cid, process in self.runtime.processes.items():
            before = self.stdin_closes_before.get((cid, process.pid), 0)
            assert process.stdin_closes - before <= 1


class AsyncioMachine(EngineMachine):
    backend = "asyncio"


class TrioMachine(EngineMachine):
    backend = "trio"


_settings = settings(
    max_examples=int(os.environ.get("ASYNCSTART_PROPERTY_EXAMPLES", "25")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("machine", [AsyncioMachine, TrioMachine], ids=["asyncio", "trio"])
def test_engine_matches_model(machine: type[EngineMachine]) -> None:
    machine.TestCase.settings = _settings
    machine.TestCase().runTest()


# -- pinned runs ----------------------------------------------------------------------------
# A path the search takes only now and then, run on purpose: the model and the engine must
# agree on it too.


@pytest.mark.parametrize("machine", [AsyncioMachine, TrioMachine], ids=["asyncio", "trio"])
def test_a_reopen_brings_back_always_but_not_a_signalled_unless_stopped(
    machine: type[EngineMachine],
) -> None:
    run = machine()
    try:
        names = [run.create(policy=p, retries=0, stdin=False) for p in ("always", "unless-stopped")]
        for name in names:
            run.start(name, None)
            run.kill(name, "WINCH")  # ignored by the process; the user stopped it all the same
        run.pause(names[1])
        run.kill(names[1], "WINCH")  # thawed to get it, as dockerd
        run.reopen_losing(set(names))  # both processes died while no daemon watched
        # The cancelled policies were the old daemon's: always restarts, and unless-stopped
        # does not restart a container its user stopped.
        assert [run.model[name].status for name in names] == ["restarting", "exited"]
        run.engine_agrees_with_model()
        run.only_running_containers_hold_resources()
        run.time_passes()
        assert [run.model[name].status for name in names] == ["running", "exited"]
        run.engine_agrees_with_model()
        run.only_running_containers_hold_resources()
    finally:
        run.teardown()


# -- a signal, then a reopen -----------------------------------------------------------------
# dockerd writes the container to disk when a signal sets HasBeenManuallyStopped
# (killWithSignal's CheckpointTo), and when it thaws a paused container to deliver one: a
# daemon reopened next must know both.


@dataclass
class Fakes:
    """Fake drivers and a clock that outlive daemons opened on them, on the same roots."""

    root: Path
    clock: FakeClock
    runtime: FakeRuntime
    mounter: FakeMounter
    network: FakeNetwork

    @asynccontextmanager
    async def open(self) -> AsyncIterator[asyncstart.Daemon]:
        config = asyncstart.DaemonConfig(
            data_root=self.root / "data", exec_root=self.root / "exec", runtime="fake", fsync=False
        )
        async with asyncstart.open_daemon(
            config,
            runtime=self.runtime,
            mounter=self.mounter,
            network=self.network,
            clock=self.clock,
        ) as daemon:
            yield daemon


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    clock = FakeClock()
    return Fakes(tmp_path, clock, FakeRuntime(clock=clock), FakeMounter(), FakeNetwork())


@pytest.mark.anyio
async def test_reopen_after_a_signal_keeps_unless_stopped_from_restarting(fakes: Fakes) -> None:
    async with fakes.open() as daemon:
        cid = await daemon.container_create(
            "web",
            {"Image": "busybox", "Cmd": ["sleep", "infinity"]},
            {"RestartPolicy": {"Name": "unless-stopped"}},
        )
        await daemon.container_start("web")
        await daemon.container_kill("web", "WINCH")  # ignored by the process: it runs on
    async with fakes.open() as daemon, daemon.subscribe_events() as events:
        fakes.runtime.exit(cid, 1)
        async for event in events:
            if event["Action"] == "die":
                break
        # The user signalled it: unless-stopped does not bring it back.
        assert (await daemon.container_inspect("web"))["State"]["Status"] == "exited"


@pytest.mark.anyio
async def test_reopen_after_a_signal_thawed_a_paused_container_sees_it_running(
    fakes: Fakes,
) -> None:
    async with fakes.open() as daemon:
        await daemon.container_create("web", {"Image": "busybox", "Cmd": ["sleep", "infinity"]})
        await daemon.container_start("web")
        await daemon.container_pause("web")
        await daemon.container_kill("web", "WINCH")  # thaws it; the process ignores the signal
        assert (await daemon.container_inspect("web"))["State"]["Status"] == "running"
    async with fakes.open() as daemon:
        assert (await daemon.container_inspect("web"))["State"]["Status"] == "running"
        await daemon.container_pause("web")
        assert (await daemon.container_inspect("web"))["State"]["Status"] == "paused"
