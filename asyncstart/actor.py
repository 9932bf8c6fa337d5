"""One actor per container: the only place that changes a container's state.

An actor is a task with a :class:`~asyncstart.mailbox.Mailbox`. Requests (start, stop, kill,
...), the runtime's ``StateChanged`` reports and the actor's own timers all arrive there and are
handled one at a time, so a container never sees two operations interleave — dockerd's
per-container lock, without a lock. Different containers' actors run concurrently.

A request's reply may be *parked* (:class:`~asyncstart.mailbox.Waiters`): a start is answered
when the runtime reports the process started, a stop when it reports the exit. While a start
waits for that report (state ``spec-ready``), other requests are deferred until it is over, as
dockerd's lock would make them wait; a second start joins the first (one runtime create).

What a state refuses is the table :data:`~asyncstart.lifecycle.REFUSALS`; how a start, an exit
and a failed start change the record are the pure functions of :mod:`asyncstart.record`; the
steps run in a :class:`~asyncstart.saga.Saga`. Outside the mailbox, the daemon sees a container
only through :meth:`ContainerActor.snapshot`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
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
from .attach import StdioHub
from .clock import Clock
from .events import EventBus
from .images import MountDriver
from .lifecycle import PROCESS_STATES, Lifecycle, LifecycleEvent, Request, State, refusal
from .mailbox import Call, Mailbox, Pending, Reply, RuntimeReport, Timers, Waiters
from .record import (
    ContainerRecord,
    exited,
    persisted_state,
    start_failed,
    started,
    wait_result,
)
from .restart import RestartManager
from .runtime import Runtime, StateInfo
from .runtime.control import ProcessControl
from .saga import Saga, StartFailed
from .signals import parse_signal
from .stdin import StdinCloser
from .steps import StartContext, Step, container_stdio
from .store import RecordStore
from .views import format_time, inspect_view

__all__ = ["ActorServices", "ContainerActor", "ContainerSnapshot", "Pending"]

log = structlog.get_logger("asyncstart.actor")

_E = LifecycleEvent
#: The event that closes each phase of the start saga (the last one closes on ``STARTED``).
_PHASE_DONE = {State.MOUNTING: _E.MOUNTED, State.NETWORKING: _E.NETWORKED}


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


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    """A container as it was when the snapshot was taken; read it, never change it."""

    record: ContainerRecord
    lifecycle: Lifecycle

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def process_exists(self) -> bool:
        """Whether the container's process lives (running, paused or stopping)."""
        return self.lifecycle.state in PROCESS_STATES

    def inspect(self) -> dict[str, Any]:
        """dockerd's inspect document."""
        return inspect_view(self.record, self.lifecycle)


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
        #: The closer for the next (or current) process's stdin.
        self._stdin = StdinCloser()
        #: Attached clients and input kept for a process that does not exist yet.
        self._stdio = StdioHub()
        self._ctx: StartContext | None = None
        self._done: list[Step] = []
        self._started_at = 0.0
        self._mailbox = Mailbox(record.id)
        self._timers = Timers(self._mailbox, services.clock, services.task_group)
        self._waiters = Waiters()
        if self._lifecycle.state in PROCESS_STATES:
            # Reopened on a live process: all a start does is held, and undone at its exit.
            self._ctx = StartContext(record, pid=record.pid, network=record.network_settings)
            self._done = [step for _, step in services.saga.steps]
            self._started_at = services.clock.now()
            self._stdin.ready()
            self._stdio.ready = True

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
        mailbox = self._mailbox
        while self._lifecycle.state is not State.REMOVED:
            try:
                message = await mailbox.receive()
            except anyio.EndOfStream:
                break
            await self._dispatch(message)
            while self._lifecycle.state is not State.SPEC_READY and (
                call := mailbox.next_deferred()
            ):
                await self._dispatch(call)
        # Whatever is still queued gets an answer, never silence.
        mailbox.close(self._answer_when_gone)

    def _answer_when_gone(self, call: Call) -> dict[str, Any] | None:
        if call.handler == self._h_wait and call.args == ("removed",):
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
        elif self._lifecycle.state is State.SPEC_READY and message.handler != self._h_start:
            self._mailbox.defer(message)  # as dockerd's lock: after the start is decided
        else:
            try:
                await message.handler(message.reply, *message.args)
            except errors.DockerError as exc:
                message.reply.fail(exc)
            except Exception as exc:
                log.exception("actor.request_failed", container_id=self.id)
                message.reply.fail(errors.SystemError(f"{type(exc).__name__}: {exc}"))

    async def _call(self, handler: Callable[..., Awaitable[None]], *args: Any) -> Any:
        return await self._mailbox.request(handler, *args).wait()

    def state_changed(self, info: StateInfo) -> None:
        """The runtime's report, queued (never blocks the runtime)."""
        if not self._mailbox.post(RuntimeReport(info)):
            log.debug("actor.report_after_remove", container_id=self.id, state=info.state)

    def close(self) -> None:
        """Stop taking messages (daemon shutdown)."""
        self._mailbox.stop_taking()

    # -- the public face, used by the daemon ------------------------------------------------

    async def start(self, checkpoint: str | None = None, checkpoint_dir: str | None = None) -> None:
        await self._call(self._h_start, checkpoint, checkpoint_dir)

    async def stop(self, timeout: float | None = None) -> None:
        await self._call(self._h_stop, timeout)

    async def kill(self, signal: int, reference: str) -> None:
        await self._call(self._h_kill, signal, reference)

    async def restart(self, timeout: float | None = None) -> None:
        """Stop (if it runs), start, then announce the restart, as ``docker restart``."""
        with contextlib.suppress(errors.NotModified):
            await self.stop(timeout)
        with contextlib.suppress(errors.NotModified):
            await self.start()
        self._emit("restart")

    async def pause(self) -> None:
        await self._call(self._h_pause)

    async def unpause(self) -> None:
        await self._call(self._h_unpause)

    async def remove(self, force: bool, reference: str) -> None:
        await self._call(self._h_remove, force, reference)

    def wait_pending(self, condition: str) -> Pending:
        """Queue a wait and return at once; ``await pending.wait()`` for the result. A request
        made after this returns is ordered after the wait (a start cannot slip past it)."""
        return self._mailbox.request(self._h_wait, condition)

    async def adopt_process(self) -> bool:
        """Reopened on a container recorded as running: take its process back under watch.
        False if there is none (it died while no daemon watched: its code is lost, 255)."""
        adopted: bool = await self._call(self._h_adopt)
        return adopted

    async def write_stdin(self, data: bytes) -> None:
        """An attached client's input: to the process now, or once it exists."""
        if not self._record.config.open_stdin:
            return  # as dockerd: input to a container without an open stdin is dropped

        async def write(chunk: bytes) -> None:
            await self._process.write_stdin(self.id, chunk)

        await self._stdio.write(data, write)

    async def close_stdin(self) -> None:
        """Close the process's stdin now, or as soon as it is ready; never waits for it."""
        if self._stdin.request():
            await self._process.close_stdin(self.id)

    def attach(self, streams: frozenset[str]) -> MemoryObjectReceiveStream[tuple[str, bytes]]:
        """Subscribe a client to the output of ``streams`` (of this run, or the next one)."""
        receive = self._stdio.subscribe(streams)
        self._emit("attach")
        return receive

    def detach(self, receive: MemoryObjectReceiveStream[tuple[str, bytes]]) -> None:
        self._stdio.unsubscribe(receive)

    @property
    def last_start(self) -> dict[str, float]:
        """Seconds spent in each phase of the latest start."""
        return dict(self._ctx.durations) if self._ctx is not None else {}

    # -- helpers ----------------------------------------------------------------------------

    def _emit(self, action: str, **extra: str) -> None:
        record = self._record
        attributes = dict(record.config.labels)
        if image := record.config.image or record.image:
            attributes["image"] = image  # the name it was created with, as dockerd
        attributes["name"] = record.name.lstrip("/")
        attributes.update(extra)
        self.services.bus.publish("container", action, self.id, attributes)

    def _emit_network(self, action: str) -> None:
        """dockerd's network events: ``connect`` at start, ``disconnect`` when it is released."""
        for name in self._record.network_settings.get("Networks", {}):
            network_id = hashlib.sha256(name.encode()).hexdigest()
            attributes = {"container": self.id, "name": name, "type": name}
            self.services.bus.publish("network", action, network_id, attributes)

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

    def _enter(self, phase: State) -> None:
        """The saga is about to run a step of ``phase``: close the phases before it."""
        while self._lifecycle.state is not phase:
            self._lifecycle.handle(_PHASE_DONE[self._lifecycle.state])

    async def _start_saga(self, ctx: StartContext) -> None:
        ctx.stdin = self._stdin
        ctx.stdio = self._stdio
        self._ctx = ctx
        try:
            self._done = await self.services.saga.run(ctx, self._enter)
        except StartFailed as failure:
            await self._start_failed(ctx, failure)
            return
        self._started_at = self.services.clock.now()
        if ctx.record.config.open_stdin:
            self.services.task_group.start_soon(self._feed_stdin, ctx)
        else:
            ctx.stdin.ready()  # nothing to feed, and a close of no stdin is a no-op

    async def _feed_stdin(self, ctx: StartContext) -> None:
        """After the start: input sent before the process existed, in order, then a pending
        EOF. In its own task, so a process that does not read never blocks the actor."""

        async def write(data: bytes) -> None:
            await self._process.write_stdin(self.id, data)

        try:
            await ctx.stdio.process_ready(write)
            if ctx.stdin.ready():
                await self._process.close_stdin(self.id)
        except errors.DockerError as exc:
            log.debug("stdin.feed_failed", container_id=self.id, error=exc.message)

    async def _start_failed(self, ctx: StartContext, failure: StartFailed) -> None:
        ctx.stdin.failed()
        self._stdin = StdinCloser()
        self._stdio.run_ended()
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
        self._emit_network("connect")
        self._emit("start")
        self._waiters.resolve("start")
        log.info(
            "container.started",
            container_id=self.id,
            state=self._lifecycle.state.value,
            pid=info.pid,
            **{f"{phase}_ms": round(s * 1000, 3) for phase, s in ctx.durations.items()},
        )

    async def _on_exited(self, info: StateInfo) -> None:
        if self._ctx is not None:
            await self.services.saga.undo(self._ctx, self._done)
        self._stdin = StdinCloser()
        self._stdio.run_ended()
        self._emit_network("disconnect")
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
            "container.exited",
            container_id=self.id,
            state=self._lifecycle.state.value,
            exit_code=info.exit_code,
            restart_in=delay,
        )
        removal_due = self._waiters.waiting("removal") and self._lifecycle.state is State.EXITED
        if removal_due or (delay is None and self._record.host_config.auto_remove):
            await self._remove_now()

    async def _h_adopt(self, reply: Reply) -> None:
        if self._lifecycle.state not in PROCESS_STATES:
            reply.set(False)
            return
        stdio = container_stdio(self._record, self.services.records.log_path, self._stdio.publish)
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
        """dockerd's ``ExitOnNext`` rule: which signals cancel the restart policy."""
        stop_signal = self._record.config.stop_signal
        return (
            not stop_signal
            or signal == _signal.SIGKILL
            or signal == parse_signal(stop_signal, default=_signal.SIGTERM)
        )

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
