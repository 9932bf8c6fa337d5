"""Property-based test of the engine against a simple model (hypothesis stateful testing).

Rules create, start (alone, concurrently, with a fault injected in any phase), stop, kill,
pause, unpause, remove containers, make processes exit, close stdin at random points and move
the clock; after every step the engine must agree with the model, and no fake resource (mount,
network sandbox, address, runtime process) may be held by a container that is not running.

Hypothesis rules are synchronous, so the engine runs in an anyio blocking portal kept open for
the whole run — once on asyncio, once on trio.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
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


@dataclass
class Model:
    id: str
    policy: str
    status: str = "created"
    exit_code: int = 0
    #: The restart manager was cancelled by a stop or kill since the last user start.
    cancelled: bool = False


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
        self.model: dict[str, Model] = {}
        self.counter = 0

    def teardown(self) -> None:
        self._daemon_cm.__exit__(None, None, None)
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

    def _exited_by_signal(self, model: Model, code: int) -> None:
        model.status, model.exit_code, model.cancelled = "exited", code, True

    async def _until(self, action: str, count: int, trigger: Any, *args: Any) -> None:
        """Run ``trigger`` and wait (on events, not time) for ``count`` events ``action``."""
        async with self.daemon.subscribe_events() as events:
            trigger(*args)
            seen = 0
            while seen < count:
                if (await events.receive())["Action"] == action:
                    seen += 1

    # -- rules ------------------------------------------------------------------------------

    @rule(target=names, policy=st.sampled_from(["no", "always"]), stdin=st.booleans())
    def create(self, policy: str, stdin: bool) -> str:
        self.counter += 1
        name = f"box{self.counter}"  # not hex: a removed name must not read as an ID prefix
        cid = self.call(
            lambda: self.daemon.container_create(
                name=name,
                config={"Image": "busybox", "Cmd": ["sleep", "infinity"], "OpenStdin": stdin},
                host_config={"RestartPolicy": {"Name": policy}},
            )
        )
        self.model[name] = Model(cid, policy)
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
            # A runtime error always sets its code (dockerd's setExitCodeFromError); any other
            # failed start sets 128 only over a clean previous exit.
            if driver == "runtime" or model.exit_code == 0:
                model.exit_code = code
        else:
            self.call(self.daemon.container_start, name)
            model.status, model.exit_code, model.cancelled = "running", 0, False

    @rule(name=names, n=st.integers(min_value=2, max_value=4))
    def concurrent_start(self, name: str, n: int) -> None:
        model = self.model[name]
        if model.status not in ("created", "exited"):
            return
        before = self.runtime.creates[model.id]

        async def starts() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(self.daemon.container_start, name)

        self.call(starts)
        assert self.runtime.creates[model.id] == before + 1
        model.status, model.exit_code, model.cancelled = "running", 0, False

    @rule(name=names)
    def stop(self, name: str) -> None:
        model = self.model[name]
        if model.status in LIVE:
            self.call(self.daemon.container_stop, name)
            self._exited_by_signal(model, 143)
        elif model.status == "restarting":
            self.call(self.daemon.container_stop, name)
            model.status, model.cancelled = "exited", True
        elif model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_stop, name)
        else:
            self.expect_error(errors.NotModified, self.daemon.container_stop, name)

    @rule(name=names)
    def kill(self, name: str) -> None:
        model = self.model[name]
        if model.status in LIVE:
            self.call(self.daemon.container_kill, name)
            self._exited_by_signal(model, 137)
        elif model.status == "restarting":
            self.call(self.daemon.container_kill, name)
            model.status, model.cancelled = "exited", True
        elif model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_kill, name)
        else:
            self.expect_error(errors.Conflict, self.daemon.container_kill, name)

    @rule(name=names, code=st.integers(min_value=0, max_value=255))
    def process_exits(self, name: str, code: int) -> None:
        model = self.model[name]
        if model.status != "running":
            return
        self.call(self._until, "die", 1, self.runtime.exit, model.id, code)
        restarts = model.policy == "always" and not model.cancelled
        model.status, model.exit_code = ("restarting" if restarts else "exited"), code

    @precondition(lambda self: any(m.status == "restarting" for m in self.model.values()))
    @rule()
    def time_passes(self) -> None:
        due = sum(1 for m in self.model.values() if m.status == "restarting")
        self.call(self._until, "start", due, self.clock.advance, 120.0)
        for model in self.model.values():
            if model.status == "restarting":
                model.status, model.exit_code = "running", 0

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

    @rule(name=names)
    def wait_not_running(self, name: str) -> None:
        model = self.model[name]
        if model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_wait, name)
        elif model.status not in (*LIVE, "restarting"):
            result = self.call(self.daemon.container_wait, name)
            assert result["StatusCode"] == model.exit_code

    @rule(name=consumes(names), force=st.booleans(), fail=st.booleans())
    def remove(self, name: str, force: bool, fail: bool) -> None:
        model = self.model[name]
        if model.status == "removed":
            self.expect_error(errors.NotFound, self.daemon.container_remove, name, force)
            return
        busy = model.status in (*LIVE, "restarting")
        if busy and not force:
            self.expect_error(errors.Conflict, self.daemon.container_remove, name, False)
            return
        if busy and model.status != "restarting":
            model.exit_code = 137
        if fail:
            self.mounter.faults.inject("remove", "device busy", container_id=model.id)
            self.expect_error(errors.SystemError, self.daemon.container_remove, name, force)
            model.status = "dead"
            return
        self.call(self.daemon.container_remove, name, force)
        model.status = "removed"

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def engine_agrees_with_model(self) -> None:
        async def observe() -> dict[str, tuple[str, int] | None]:
            seen: dict[str, tuple[str, int] | None] = {}
            for name in self.model:
                try:
                    state = (await self.daemon.container_inspect(name))["State"]
                except errors.NotFound:
                    seen[name] = None
                else:
                    seen[name] = (state["Status"], state["ExitCode"])
            return seen

        expected = {
            name: None if m.status == "removed" else (m.status, m.exit_code)
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
        assert all(p.stdin_closes <= 1 for p in self.runtime.processes.values())


class AsyncioMachine(EngineMachine):
    backend = "asyncio"


class TrioMachine(EngineMachine):
    backend = "trio"


_settings = settings(
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("machine", [AsyncioMachine, TrioMachine], ids=["asyncio", "trio"])
def test_engine_matches_model(machine: type[EngineMachine]) -> None:
    machine.TestCase.settings = _settings
    machine.TestCase().runTest()
