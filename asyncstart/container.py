"""What an actor keeps of its container, and how a start, an exit or a stop change it.

:class:`ContainerState` holds one container's record and lifecycle with everything that goes
with them — the replies parked on it, its timers, its stdio, the steps its running process
holds — and the changes the engine makes to them at each moment of a container's life: the
start saga run and settled, the runtime's start and exit settled, signals, pause, removal.
Each of those saves the record and announces the events dockerd would.

It is the model half of the actor (as h11's ``ConnectionState`` beside its ``Connection``):
:class:`~asyncstart.actor.ContainerActor` adds the mailbox's order and the request handlers,
and nothing but a container's actor holds its state.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import msgspec

from . import errors
from ._log import get_logger
from .attach import ContainerIO
from .clock import Clock
from .config import HostConfig, validate_host_config
from .events import EventBus, container_event, network_events
from .images import MountDriver
from .lifecycle import PROCESS_STATES, Lifecycle, LifecycleEvent, Request, State, refusal
from .mailbox import Dispatcher, Mailbox, Timers, Waiters
from .network import NetworkDriver
from .network.resolver import Resolver
from .record import (
    ContainerRecord,
    exited,
    persisted_state,
    start_failed,
    started,
    wait_result,
)
from .restart import RestartManager, exits_on_next
from .runtime import Runtime, StateInfo
from .runtime.control import ProcessControl
from .saga import Saga, StartFailed
from .steps import StartContext, Step
from .store import RecordStore
from .views import ContainerSnapshot, format_time

__all__ = ["ActorServices", "ContainerState"]

log = get_logger("asyncstart.actor")

_E = LifecycleEvent


@dataclass(frozen=True, slots=True)
class ActorServices:
    """What the daemon lends every actor."""

    runtime: Runtime
    mounter: MountDriver
    saga: Saga
    records: RecordStore
    bus: EventBus
    clock: Clock
    task_group: anyio.abc.TaskGroup
    #: The tasks that serve the actors' mailboxes.
    dispatcher: Dispatcher
    #: Called once the container is removed, so the daemon drops it from its index.
    forget: Callable[[ContainerRecord], None]
    stop_timeout: float = 10.0
    #: For ``docker network connect``/``disconnect`` of a running container.
    network: NetworkDriver | None = None
    resolver: Resolver | None = None


class ContainerState:
    """One container's state and its changes; see the module docstring."""

    def __init__(self, record: ContainerRecord, services: ActorServices) -> None:
        self._record = record
        self.services = services
        self._process = ProcessControl(services.runtime)
        self._lifecycle = Lifecycle(
            record.id, State(record.state), ran_before=record.has_been_started_before
        )
        self._restart = RestartManager(record.host_config.restart_policy)
        self._restart.restart_count = record.restart_count
        #: Attached clients, input kept for a process that does not exist yet, stdin's close.
        self._io = ContainerIO(record.id, self._process, open_stdin=record.config.open_stdin)
        self._ctx: StartContext | None = None
        self._done: list[Step] = []
        self._started_at = 0.0
        #: The HostConfig check_settings passed (None: none yet).
        self._checked: HostConfig | None = None
        self._mailbox = Mailbox(record.id)
        self._timers = Timers(self._mailbox, services.clock, services.task_group)
        self._waiters = Waiters()
        if self._lifecycle.state in PROCESS_STATES:
            # Reopened on a live process: all a start does is held, and undone at its exit.
            self._ctx = StartContext(record, pid=record.pid, network=record.network_settings)
            self._done = [step for _, step in services.saga.steps]
            self._started_at = services.clock.now()
            self._io.adopted()

    @property
    def id(self) -> str:
        return self._record.id

    def snapshot(self) -> ContainerSnapshot:
        """The record and lifecycle now, copied: what the daemon reads (list, inspect, ...)."""
        return ContainerSnapshot(msgspec.structs.replace(self._record), self._lifecycle.copy())

    def record(self) -> ContainerRecord:
        """The record now, copied (its settings, for a caller that needs no state)."""
        return msgspec.structs.replace(self._record)

    def check_settings(self) -> None:
        """dockerd's ``verifyContainerSettings`` before a start: its 400 for a ``HostConfig``
        this engine refuses (a record of an older daemon's). A ``HostConfig`` is checked once:
        the check depends on it alone, and an update replaces it."""
        host_config = self._record.host_config
        if host_config is not self._checked:
            validate_host_config(host_config)
            self._checked = host_config

    def running_spec(self) -> dict[str, Any] | None:
        """The ``process`` and ``root`` of the OCI spec the running process was started with,
        if this daemon started it."""
        ctx = self._ctx
        if ctx is None or ctx.running is None or not self._lifecycle.running:
            return None
        spec: dict[str, Any] = msgspec.json.decode(ctx.running)
        return spec

    @property
    def last_start(self) -> dict[str, float]:
        """Seconds spent in each phase of the latest start."""
        return dict(self._ctx.durations) if self._ctx is not None else {}

    def _emit(self, action: str, **extra: str) -> None:
        container_event(self.services.bus, self._record, action, **extra)

    def check(self, request: Request, reference: str = "") -> None:
        """Raise dockerd's error if the container's state refuses ``request`` (``reference``:
        the name the client used)."""
        refused = refusal(request, self._lifecycle)
        if refused is not None:
            raise refused.exception(
                id=self.id,
                name=self._record.name,
                reference=reference or self.id,
                status=self._lifecycle.status,
            )

    async def resize(self, height: int, width: int) -> None:
        """Give the running process's terminal a new size (409 unless it runs; nothing
        without a terminal). No state changes: not through the mailbox."""
        self.check(Request.RESIZE)
        await self._process.resize(self.id, height, width)

    async def _save(self) -> None:
        self._record.state = persisted_state(self._lifecycle)
        await self.services.records.save(self._record)

    async def _save_quietly(self) -> None:
        """Save where no caller can be told of a failure (runtime reports, timers)."""
        try:
            await self._save()
        except errors.DockerError as exc:
            log.error("container.save_failed", container_id=self.id, error=exc.message)

    async def _start_saga(self, ctx: StartContext) -> None:
        ctx.stdio = self._io.hub
        self._ctx = ctx
        try:
            self._done = await self.services.saga.run(ctx, self._lifecycle.enter_phase)
        except StartFailed as failure:
            await self._start_failed(ctx, failure)
            return
        self._started_at = self.services.clock.now()
        self._io.process_created(self.services.task_group)

    async def _start_failed(self, ctx: StartContext, failure: StartFailed) -> None:
        self._io.start_failed()
        await self.services.saga.undo(ctx, failure.done)
        after_restart = self._lifecycle.via_restart
        self._lifecycle.handle(_E.FAILED)
        self._record = start_failed(
            self._record,
            error=failure.error.message,
            exit_code=ctx.exit_code,
            after_restart=after_restart,
        )
        await self._save_quietly()
        self._waiters.fail("start", failure.error)
        if after_restart:
            # dockerd's SetStopped after a failed restart wakes those waiting for the stop.
            self._waiters.resolve("exit", wait_result(self._record))
        if self._record.host_config.auto_remove:
            await self._remove_now()

    async def _on_started(self, info: StateInfo) -> None:
        assert self._ctx is not None
        ctx = self._ctx
        self._lifecycle.handle(_E.STARTED)
        ctx.durations["running"] = self.services.clock.now() - self._started_at
        self._record = started(
            self._record,
            pid=info.pid,
            started_at=format_time(info.at or time.time()),
            network=ctx.network or {},
        )
        await self._save_quietly()
        network_events(self.services.bus, self._record, "connect")
        self._emit("start")
        self._waiters.resolve("start")
        # To the microsecond: n / 1000 prints as n's decimal, as round(ms, 3) would, at a
        # fraction of round's cost (a decimal conversion each).
        phases = {f"{phase}_ms": int(s * 1e6) / 1000 for phase, s in ctx.durations.items()}
        log.info("container.started", container_id=self.id, pid=info.pid, **phases)

    async def _on_exited(self, info: StateInfo) -> None:
        if self._ctx is not None:
            await self.services.saga.undo(self._ctx, self._done)
        self._io.run_ended()
        network_events(self.services.bus, self._record, "disconnect")
        ran_for = self.services.clock.now() - self._started_at
        delay = self._restart.should_restart(
            info.exit_code,
            manually_stopped=self._record.has_been_manually_stopped,
            ran_for=ran_for,
        )
        self._lifecycle.handle(_E.EXITED, restart=delay is not None)
        self._record = exited(
            self._record,
            exit_code=info.exit_code,
            finished_at=format_time(info.at or time.time()),
            oom_killed=info.oom_killed,
            restarting=delay is not None,
        )
        if delay is not None:
            # Armed before the die event is published: whoever sees the event sees the timer.
            self._timers.arm("restart", delay)
        await self._save_quietly()
        self._emit("die", exitCode=str(info.exit_code), execDuration=str(int(ran_for)))
        if self._waiters.waiting("stop"):
            self._timers.disarm("stop-timeout")
            self._emit("stop")
            self._waiters.resolve("stop")
        self._waiters.resolve("kill")
        self._waiters.resolve("exit", wait_result(self._record))
        log.info(
            "container.exited", container_id=self.id, exit_code=info.exit_code, restart_in=delay
        )
        removal_due = self._waiters.waiting("removal") and self._lifecycle.state is State.EXITED
        if removal_due or (delay is None and self._record.host_config.auto_remove):
            await self._remove_now()

    def _cancel_restart(self) -> None:
        """A stop, kill or remove while a restart is pending: it will not happen."""
        self._restart.cancel()
        self._timers.disarm("restart")
        self._lifecycle.handle(_E.CANCEL_RESTART)
        self._record.has_been_manually_stopped = True
        # dockerd's SetStopped: those waiting for the container to stop are answered.
        self._waiters.resolve("exit", wait_result(self._record))

    def _exits_on_next(self, signal: int) -> bool:
        return exits_on_next(signal, self._record.config.stop_signal)

    async def _signal(self, signal: int, *, resume: bool) -> None:
        """dockerd's ``killWithSignal`` for a live process."""
        if self._exits_on_next(signal):
            self._restart.cancel()
        self._record.has_been_manually_stopped = True
        # Written before the signal, as dockerd's CheckpointTo: a daemon reopened next knows
        # the user signalled it (unless-stopped stays down).
        await self._save_quietly()
        await self._process.kill(self.id, signal)
        self._emit("kill", signal=str(signal))
        if resume:
            # A frozen process cannot act on the signal: thaw it, as dockerd does (its
            # resumed task announces the unpause).
            await self._process.resume(self.id)
            if self._lifecycle.state is State.PAUSED:  # (a stop has moved it on already)
                self._lifecycle.handle(_E.UNPAUSE)
                await self._save_quietly()
            self._emit(_E.UNPAUSE.value)

    async def _pause_or_resume(
        self, call: Callable[[str], Awaitable[None]], event: LifecycleEvent
    ) -> None:
        """Freeze or thaw the process, then move the lifecycle and announce it."""
        await call(self.id)
        self._lifecycle.handle(event)
        await self._save()
        self._emit(event.value)

    async def _remove_now(self) -> None:
        self._lifecycle.handle(_E.REMOVE)
        services = self.services
        try:
            await self._save()
            await services.runtime.delete(self.id, force=True)
            await services.mounter.remove(self.id)
            await services.records.delete(self.id)
        except errors.DockerError as exc:
            self._lifecycle.handle(_E.REMOVE_FAILED)
            self._record.error = exc.message
            error = errors.SystemError(f"unable to remove container {self.id}: {exc.message}")
            self._waiters.fail("removal", error)
            self._waiters.resolve("removed", wait_result(self._record))
            log.error("container.remove_failed", container_id=self.id, error=exc.message)
            return
        self._lifecycle.handle(_E.REMOVED)
        services.forget(self._record)
        self._emit("destroy")
        result = wait_result(self._record)
        self._waiters.resolve("removal")
        self._waiters.resolve("removed", result)
        self._waiters.resolve("exit", result)
        self._mailbox.stop_taking()
