"""One actor per container: the only place that changes a container's state.

An actor is a task with a :class:`~asyncstart.mailbox.Mailbox`: requests, the runtime's
``StateChanged`` reports and its timers are handled one at a time (dockerd's per-container lock,
without a lock). A reply may be *parked* until its condition comes (a start until the runtime
reports the process started, a stop until the exit); while a start waits for that report, other
requests are deferred, and a second start joins the first. What a state refuses is the table
:data:`~asyncstart.lifecycle.REFUSALS`; the record's changes are :mod:`asyncstart.record`'s pure
functions; the steps run in a :class:`~asyncstart.saga.Saga`. The daemon reads a container only
through :meth:`ContainerActor.snapshot`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal as _signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from . import errors
from .attach import ContainerIO
from .clock import Clock
from .events import EventBus, container_event, network_events
from .images import MountDriver
from .lifecycle import PROCESS_STATES, Lifecycle, LifecycleEvent, Request, State, refusal
from .mailbox import Call, Handler, Mailbox, Pending, Reply, RuntimeReport, Timers, Waiters
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
from .signals import parse_signal
from .steps import StartContext, Step, container_stdio
from .store import RecordStore
from .views import ContainerSnapshot, format_time

__all__ = ["ActorServices", "ContainerActor", "ContainerSnapshot", "Pending"]

log = structlog.get_logger("asyncstart.actor")

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
    #: Called once the container is removed, so the daemon drops it from its index.
    forget: Callable[[ContainerRecord], None]
    stop_timeout: float = 10.0


class ContainerActor:
    """Owns one container's record and lifecycle; see the module docstring."""

    def __init__(
        self, record: ContainerRecord, services: ActorServices, *, new: bool = False
    ) -> None:
        self._record = record
        self.services = services
        self._process = ProcessControl(services.runtime)
        self._lifecycle = Lifecycle(
            record.id, State(record.state), ran_before=record.has_been_started_before
        )
        #: Just created (not reopened): the actor announces it.
        self._new = new
        self._restart = RestartManager(record.host_config.restart_policy)
        self._restart.restart_count = record.restart_count
        #: Attached clients, input kept for a process that does not exist yet, stdin's close.
        self._io = ContainerIO(record.id, self._process, open_stdin=record.config.open_stdin)
        self._ctx: StartContext | None = None
        self._done: list[Step] = []
        self._started_at = 0.0
        self._mailbox = Mailbox(record.id)
        self._timers = Timers(self._mailbox, services.clock, services.task_group)
        self._waiters = Waiters()
        #: One handler per request: ``handler(reply, *args)``.
        self._handlers: dict[Request, Handler] = {
            Request.START: self._h_start,
            Request.STOP: self._h_stop,
            Request.KILL: self._h_kill,
            Request.PAUSE: self._h_pause,
            Request.UNPAUSE: self._h_unpause,
            Request.REMOVE: self._h_remove,
            Request.WAIT: self._h_wait,
            Request.ADOPT: self._h_adopt,
        }
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
        return ContainerSnapshot(
            msgspec.structs.replace(self._record), dataclasses.replace(self._lifecycle)
        )

    # -- the task ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The actor's task: handle messages until the container is removed."""
        if self._new:
            self._emit("create")
        if self._lifecycle.state is State.RESTARTING:
            # Reopened while a restart was pending: its timer died with the old daemon.
            self._timers.arm("restart", self._restart.should_restart_again())
        task_status.started()
        await self._mailbox.serve(
            self._dispatch,
            holding=lambda: self._lifecycle.state is State.SPEC_READY,
            finished=lambda: self._lifecycle.state is State.REMOVED,
            answer=self._answer_when_gone,  # whatever is still queued: never silence
        )

    def _answer_when_gone(self, call: Call) -> dict[str, Any] | None:
        if call.request is Request.WAIT and call.args == ("removed",):
            return wait_result(self._record)
        return None  # 404

    async def _dispatch(self, message: Call | RuntimeReport | Any) -> None:
        if not isinstance(message, Call):
            # Nobody waits on a report or a timer: a failure is logged, and the actor goes on.
            try:
                if isinstance(message, RuntimeReport):
                    await self._on_report(message.info)
                elif self._timers.fired(message):
                    await self._on_timer(message.kind)
            except Exception:
                log.exception("actor.event_failed", container_id=self.id, message=repr(message))
        elif self._lifecycle.state is State.REMOVED:
            message.reply.fail(errors.NotFound(f"No such container: {self.id}"))
        elif self._lifecycle.state is State.SPEC_READY and message.request is not Request.START:
            self._mailbox.defer(message)  # as dockerd's lock: after the start is decided
        else:
            await self._mailbox.answer(message, self._handlers[message.request], self.id)

    def state_changed(self, info: StateInfo) -> None:
        """The runtime's report, queued (never blocks the runtime)."""
        if not self._mailbox.post(RuntimeReport(info)):
            log.debug("actor.report_after_remove", container_id=self.id, state=info.state)

    def close(self) -> None:
        """Stop taking messages (daemon shutdown)."""
        self._mailbox.stop_taking()

    # -- the public face, used by the daemon ------------------------------------------------

    async def request(self, request: Request, *args: Any) -> Any:
        """Ask, through the mailbox, and wait for the answer (dockerd's error if refused)."""
        return await self._mailbox.request(request, *args).wait()

    def request_pending(self, request: Request, *args: Any) -> Pending:
        """Ask and return at once; ``await pending.wait()`` for the answer. A request made
        after this returns is ordered after it (a start cannot slip past a wait)."""
        return self._mailbox.request(request, *args)

    async def restart(self, timeout: float | None = None) -> None:
        """Stop (if it runs), start, then announce the restart, as ``docker restart``."""
        with contextlib.suppress(errors.NotModified):
            await self.request(Request.STOP, timeout)
        with contextlib.suppress(errors.NotModified):
            await self.request(Request.START, None, None)
        self._emit("restart")

    @property
    def io(self) -> ContainerIO:
        """Attach here: clients' input and the container's output (no state changes)."""
        return self._io

    def attach(self, streams: frozenset[str]) -> MemoryObjectReceiveStream[tuple[str, bytes]]:
        """Subscribe a client to the output of ``streams`` (of this run, or the next one)."""
        receive = self._io.hub.subscribe(streams)
        self._emit("attach")
        return receive

    def detach(self, receive: MemoryObjectReceiveStream[tuple[str, bytes]]) -> None:
        self._io.hub.unsubscribe(receive)

    @property
    def last_start(self) -> dict[str, float]:
        """Seconds spent in each phase of the latest start."""
        return dict(self._ctx.durations) if self._ctx is not None else {}

    # -- helpers ----------------------------------------------------------------------------

    def _emit(self, action: str, **extra: str) -> None:
        container_event(self.services.bus, self._record, action, **extra)

    def _check(self, request: Request, reference: str = "") -> None:
        """Raise dockerd's error if the container's state refuses ``request``."""
        refused = refusal(request, self._lifecycle)
        if refused is not None:
            raise refused.exception(
                id=self.id,
                name=self._record.name,
                reference=reference or self.id,
                status=self._lifecycle.status,
            )

    async def _save(self) -> None:
        self._record.state = persisted_state(self._lifecycle)
        await self.services.records.save(self._record)

    async def _save_quietly(self) -> None:
        """Save where no caller can be told of a failure (runtime reports, timers)."""
        try:
            await self._save()
        except errors.DockerError as exc:
            log.error("container.save_failed", container_id=self.id, error=exc.message)

    # -- start ------------------------------------------------------------------------------

    async def _h_start(
        self, reply: Reply, checkpoint: str | None, checkpoint_dir: str | None
    ) -> None:
        if self._lifecycle.state is State.SPEC_READY:
            self._waiters.park("start", reply)  # a start is in flight: answer with it
            return
        self._check(Request.START)
        # A user start resets the restart policy's count and backoff (ResetRestartManager).
        self._restart = RestartManager(self._record.host_config.restart_policy)
        self._record.restart_count = 0
        self._record.has_been_manually_stopped = False
        self._lifecycle.handle(_E.START)
        self._waiters.park("start", reply)
        await self._start_saga(StartContext(self._record, checkpoint, checkpoint_dir))

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

    # -- runtime reports -------------------------------------------------------------------

    async def _on_report(self, info: StateInfo) -> None:
        state = self._lifecycle.state
        ctx = self._ctx
        if info.state == "start":
            if state is State.SPEC_READY and ctx is not None and info.pid == ctx.pid:
                await self._on_started(info)
            else:
                log.debug("runtime.stray_start", container_id=self.id, pid=info.pid)
        elif info.state == "exit":
            if state in PROCESS_STATES and info.pid == self._record.pid:
                await self._on_exited(info)
            elif state is State.SPEC_READY and ctx is not None and info.pid == ctx.pid:
                # The start report was lost or overtaken: the process did start, then ended.
                await self._on_started(StateInfo("start", pid=info.pid, at=info.at))
                await self._on_exited(info)
            else:
                log.debug("runtime.duplicate_exit", container_id=self.id, pid=info.pid)
        elif info.state == "oom":
            self._record.oom_killed = True
            self._emit("oom")

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
        phases = {f"{phase}_ms": round(s * 1000, 3) for phase, s in ctx.durations.items()}
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

    async def _h_adopt(self, reply: Reply) -> None:
        if self._lifecycle.state not in PROCESS_STATES:
            reply.set(False)
            return
        stdio = container_stdio(self._record, self.services.records.log_path, self._io.hub.publish)
        if await self.services.runtime.restore(self.id, stdio) is not None:
            reply.set(True)
            return
        # Taken as an exit, so that what its start took is given back as at any exit.
        lost = StateInfo("exit", pid=self._record.pid, exit_code=255, at=time.time())
        await self._on_exited(lost)
        reply.set(False)

    # -- timers -----------------------------------------------------------------------------

    async def _on_timer(self, kind: str) -> None:
        state = self._lifecycle.state
        if kind == "restart" and state is State.RESTARTING:
            self._lifecycle.handle(_E.RESTART_DUE)
            log.info("container.restarting", container_id=self.id, count=self._record.restart_count)
            await self._start_saga(StartContext(self._record))
        elif kind == "stop-timeout" and state is State.STOPPING:
            try:
                await self._signal(_signal.SIGKILL, resume=False)
            except errors.SystemError as exc:
                error = errors.SystemError(f"cannot stop container: {self.id}: {exc.message}")
                self._waiters.fail("stop", error)

    def _cancel_restart(self) -> None:
        """A stop, kill or remove while a restart is pending: it will not happen."""
        self._restart.cancel()
        self._timers.disarm("restart")
        self._lifecycle.handle(_E.CANCEL_RESTART)
        self._record.has_been_manually_stopped = True
        # dockerd's SetStopped: those waiting for the container to stop are answered.
        self._waiters.resolve("exit", wait_result(self._record))

    # -- stop, kill, pause -----------------------------------------------------------------

    def _exits_on_next(self, signal: int) -> bool:
        return exits_on_next(signal, self._record.config.stop_signal)

    async def _signal(self, signal: int, *, resume: bool) -> None:
        """dockerd's ``killWithSignal`` for a live process."""
        if self._exits_on_next(signal):
            self._restart.cancel()
        self._record.has_been_manually_stopped = True
        await self._process.kill(self.id, signal)
        self._emit("kill", signal=str(signal))
        if resume:
            # A frozen process cannot act on the signal: thaw it, as dockerd does.
            await self._process.resume(self.id)
            if self._lifecycle.state is State.PAUSED:
                self._lifecycle.handle(_E.UNPAUSE)

    async def _h_stop(self, reply: Reply, timeout: float | None) -> None:
        state = self._lifecycle.state
        if state is State.RESTARTING:
            self._cancel_restart()
            await self._save()
            self._emit("stop")
            reply.set()
            return
        self._check(Request.STOP)
        self._waiters.park("stop", reply)
        config = self._record.config
        if timeout is None:
            timeout = config.stop_timeout
        if timeout is None:
            timeout = self.services.stop_timeout
        stop_signal = parse_signal(config.stop_signal or None, default=_signal.SIGTERM)
        if state is not State.STOPPING:  # a second stop signals again, as dockerd's does
            self._lifecycle.handle(_E.STOP)
        try:
            await self._signal(stop_signal, resume=state is State.PAUSED)
        except errors.SystemError:
            timeout = min(timeout, 2.0) if timeout >= 0 else 2.0
        if timeout >= 0:
            self._timers.arm("stop-timeout", timeout)

    async def _h_kill(self, reply: Reply, signal: int, reference: str) -> None:
        state = self._lifecycle.state
        if state is State.RESTARTING:
            if self._exits_on_next(signal):
                self._cancel_restart()
                await self._save()
            reply.set()
            return
        self._check(Request.KILL, reference)
        await self._signal(signal, resume=state is State.PAUSED and self._exits_on_next(signal))
        if signal == _signal.SIGKILL:
            self._waiters.park("kill", reply)  # KILL means kill and wait (dockerd)
        else:
            reply.set()

    async def _h_pause(self, reply: Reply) -> None:
        self._check(Request.PAUSE)
        await self._pause_or_resume(self._process.pause, _E.PAUSE)
        reply.set()

    async def _h_unpause(self, reply: Reply) -> None:
        self._check(Request.UNPAUSE)
        await self._pause_or_resume(self._process.resume, _E.UNPAUSE)
        reply.set()

    async def _pause_or_resume(
        self, call: Callable[[str], Awaitable[None]], event: LifecycleEvent
    ) -> None:
        """Freeze or thaw the process, then move the lifecycle and announce it."""
        await call(self.id)
        self._lifecycle.handle(event)
        await self._save()
        self._emit(event.value)

    # -- wait and remove -------------------------------------------------------------------

    async def _h_wait(self, reply: Reply, condition: str) -> None:
        if condition == "removed":
            self._waiters.park("removed", reply)
        elif condition == "next-exit" or self._lifecycle.running:
            self._waiters.park("exit", reply)
        else:
            reply.set(wait_result(self._record))

    async def _h_remove(self, reply: Reply, force: bool, reference: str) -> None:
        state = self._lifecycle.state
        self._check(Request.FORCE_REMOVE if force else Request.REMOVE, reference)
        if state is State.RESTARTING:
            self._cancel_restart()
        elif state in PROCESS_STATES:
            try:
                await self._signal(_signal.SIGKILL, resume=state is State.PAUSED)
            except errors.SystemError as exc:
                raise errors.SystemError(
                    f'cannot remove container "{self._record.name}": could not kill: {exc.message}'
                ) from exc
            self._waiters.park("removal", reply)  # answered once the process has exited
            return
        self._waiters.park("removal", reply)
        await self._remove_now()

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
