"""One actor per container: the only place that changes a container's state.

An actor is a task with a mailbox. Requests (start, stop, kill, ...), the runtime's
``StateChanged`` reports and the actor's own timers all arrive there and are handled one at a
time, so a container never sees two operations interleave — dockerd's per-container lock,
without a lock. Different containers' actors run concurrently.

A request's reply may be *parked*: a start is answered when the runtime reports the process
started, a stop when it reports the exit. While a start waits for that report (state
``spec-ready``), other requests to the container are deferred until it is over, as dockerd's
lock would make them wait; a second start joins the first (exactly one runtime create).

The start saga runs the steps in order; on failure it undoes the done ones in reverse order and
records the error as dockerd does. The steps done for a running process are kept and undone
when it exits.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import signal as _signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from . import errors
from .attach import StdioHub
from .clock import Clock
from .events import EventBus
from .images import MountDriver
from .lifecycle import PROCESS_STATES, STARTING_STATES, Event, Lifecycle, State
from .restart import RestartManager
from .runtime import Runtime, RuntimeFailure, StateInfo
from .runtime.base import EXIT_UNKNOWN
from .signals import parse_signal
from .stdin import StdinCloser
from .steps import StartContext, Step
from .store import ContainerRecord, RecordStore
from .views import format_time, inspect_view

__all__ = ["ActorServices", "ContainerActor"]

log = structlog.get_logger("asyncstart.actor")

#: The event that closes each phase of the start saga (the last one closes on ``STARTED``).
_PHASE_DONE = {State.MOUNTING: Event.MOUNTED, State.NETWORKING: Event.NETWORKED}


@dataclass(frozen=True, slots=True)
class ActorServices:
    """What the daemon lends every actor."""

    runtime: Runtime
    mounter: MountDriver
    #: The start saga: each step with the lifecycle state it runs in.
    saga: Sequence[tuple[State, Step]]
    records: RecordStore
    bus: EventBus
    clock: Clock
    task_group: anyio.abc.TaskGroup
    #: Called once the container is removed, so the daemon drops it from its index.
    forget: Callable[[ContainerRecord], None]
    stop_timeout: float = 10.0


class Pending(Protocol):
    """A request queued to an actor; ``await pending.wait()`` for its answer."""

    async def wait(self) -> dict[str, Any]: ...


class _Reply:
    """A one-shot answer to a request; awaited by the caller, set by the actor."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: Any = None
        self._error: errors.DockerError | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: Any = None) -> None:
        if not self.done:
            self._value = value
            self._event.set()

    def fail(self, error: errors.DockerError) -> None:
        if not self.done:
            self._error = error
            self._event.set()

    async def wait(self) -> Any:
        await self._event.wait()
        if self._error is not None:
            # A fresh instance per waiter: several callers may share one failure.
            raise type(self._error)(self._error.message) from self._error
        return self._value


Handler = Callable[..., Awaitable[None]]


@dataclass(slots=True)
class _Call:
    handler: Handler
    args: tuple[Any, ...]
    reply: _Reply


@dataclass(slots=True)
class _RuntimeReport:
    info: StateInfo


@dataclass(slots=True)
class _TimerFired:
    kind: str
    scope: anyio.CancelScope


_Message = _Call | _RuntimeReport | _TimerFired


class ContainerActor:
    """Owns one container's record and lifecycle; see the module docstring."""

    def __init__(self, record: ContainerRecord, services: ActorServices) -> None:
        self.record = record
        self.services = services
        self.lifecycle = Lifecycle(
            record.id,
            State(record.state),
            ran_before=record.has_been_started_before,
        )
        self._restart = RestartManager(record.host_config.restart_policy)
        self._restart.restart_count = record.restart_count
        #: The closer for the next (or current) process's stdin.
        self._stdin = StdinCloser()
        #: Attached clients and input kept for a process that does not exist yet.
        self.stdio = StdioHub()
        self._ctx: StartContext | None = None
        self._done: list[Step] = []
        self._started_at = 0.0
        self._timers: dict[str, anyio.CancelScope] = {}
        self._start_waiters: list[_Reply] = []
        self._stop_waiters: list[_Reply] = []
        self._kill_waiters: list[_Reply] = []
        self._exit_waiters: list[_Reply] = []
        self._removed_waiters: list[_Reply] = []
        self._removals: list[_Reply] = []
        self._deferred: collections.deque[_Call] = collections.deque()
        self._send, self._receive = anyio.create_memory_object_stream[_Message](math.inf)
        if self.lifecycle.state in PROCESS_STATES:
            # Reopened on a live process: all a start does is held, and undone at its exit.
            self._ctx = StartContext(record, pid=record.pid, network=record.network_settings)
            self._done = [step for _, step in services.saga]
            self._started_at = services.clock.now()
            self._stdin.ready()
            self.stdio.ready = True

    @property
    def id(self) -> str:
        return self.record.id

    # -- the task ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The actor's task: handle messages until the container is removed."""
        if self.lifecycle.state is State.RESTARTING:
            # Reopened while a restart was pending: its timer died with the old daemon.
            self._arm("restart", self._restart.should_restart_again())
        task_status.started()
        async with self._receive:
            async for message in self._receive:
                await self._dispatch(message)
                while self._deferred and self.lifecycle.state is not State.SPEC_READY:
                    await self._dispatch(self._deferred.popleft())
                if self.lifecycle.state is State.REMOVED:
                    break
            # Removed: whatever is still queued gets an answer, never silence.
            gone = errors.NotFound(f"No such container: {self.id}")
            while True:
                try:
                    message = self._receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if isinstance(message, _Call):
                    self._deferred.append(message)
            for call in self._deferred:
                if call.handler == self._h_wait and call.args == ("removed",):
                    call.reply.set(self._wait_result())
                else:
                    call.reply.fail(gone)
            self._deferred.clear()

    async def _dispatch(self, message: _Message) -> None:
        if not isinstance(message, _Call):
            # Nobody waits on a report or a timer: a failure is logged, and the actor goes on.
            try:
                if isinstance(message, _RuntimeReport):
                    await self._on_report(message.info)
                elif self._timers.get(message.kind) is message.scope:
                    del self._timers[message.kind]
                    await self._on_timer(message.kind)
            except Exception:
                log.exception("actor.event_failed", container_id=self.id, message=repr(message))
        elif self.lifecycle.state is State.REMOVED:
            message.reply.fail(errors.NotFound(f"No such container: {self.id}"))
        elif self.lifecycle.state is State.SPEC_READY and message.handler != self._h_start:
            self._deferred.append(message)  # as dockerd's lock: after the start is decided
        else:
            try:
                await message.handler(message.reply, *message.args)
            except errors.DockerError as exc:
                message.reply.fail(exc)
            except Exception as exc:
                log.exception("actor.request_failed", container_id=self.id)
                message.reply.fail(errors.SystemError(f"{type(exc).__name__}: {exc}"))

    def _enqueue(self, handler: Handler, *args: Any) -> _Reply:
        """Queue a request; the actor takes it after every request queued before."""
        reply = _Reply()
        try:
            self._send.send_nowait(_Call(handler, args, reply))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise errors.NotFound(f"No such container: {self.id}") from None
        return reply

    async def _call(self, handler: Handler, *args: Any) -> Any:
        return await self._enqueue(handler, *args).wait()

    def state_changed(self, info: StateInfo) -> None:
        """The runtime's report, queued (never blocks the runtime)."""
        try:
            self._send.send_nowait(_RuntimeReport(info))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.debug("actor.report_after_remove", container_id=self.id, state=info.state)

    def close(self) -> None:
        """Stop taking messages (daemon shutdown)."""
        self._send.close()

    # -- the public face, used by the daemon ------------------------------------------------

    async def start(self, checkpoint: str | None = None, checkpoint_dir: str | None = None) -> None:
        await self._call(self._h_start, checkpoint, checkpoint_dir)

    async def stop(self, timeout: float | None = None) -> None:
        await self._call(self._h_stop, timeout)

    async def kill(self, signal: int, reference: str) -> None:
        await self._call(self._h_kill, signal, reference)

    async def pause(self) -> None:
        await self._call(self._h_pause)

    async def unpause(self) -> None:
        await self._call(self._h_unpause)

    async def remove(self, force: bool, reference: str) -> None:
        await self._call(self._h_remove, force, reference)

    def wait_nowait(self, condition: str) -> Pending:
        """Queue a wait and return at once; ``await pending.wait()`` for the result. A request
        made after this returns is ordered after the wait (a start cannot slip past it)."""
        return self._enqueue(self._h_wait, condition)

    async def process_lost(self) -> None:
        """The process died while no daemon watched it (found on reopen); its code is lost."""
        await self._call(self._h_process_lost)

    async def write_stdin(self, data: bytes) -> None:
        """An attached client's input: to the process now, or once it exists."""
        if not self.record.config.open_stdin:
            return  # as dockerd: input to a container without an open stdin is dropped

        async def write(chunk: bytes) -> None:
            await self.services.runtime.write_stdin(self.id, chunk)

        try:
            await self.stdio.write(data, write)
        except RuntimeFailure as exc:
            raise errors.Conflict(f"cannot write to the stdin of {self.id}: {exc.message}") from exc

    async def close_stdin(self) -> None:
        """Close the process's stdin now, or as soon as it is ready; never waits for it."""
        if self._stdin.request():
            try:
                await self.services.runtime.close_stdin(self.id)
            except RuntimeFailure:
                log.debug("stdin.close_failed", container_id=self.id)

    def inspect(self) -> dict[str, Any]:
        return inspect_view(self.record, self.lifecycle)

    @property
    def last_start(self) -> dict[str, float]:
        """Seconds spent in each phase of the latest start."""
        return dict(self._ctx.durations) if self._ctx is not None else {}

    # -- helpers ----------------------------------------------------------------------------

    def emit(self, action: str, **extra: str) -> None:
        attributes = dict(self.record.config.labels)
        if image := self.record.config.image or self.record.image:
            attributes["image"] = image  # the name it was created with, as dockerd
        attributes["name"] = self.record.name.lstrip("/")
        attributes.update(extra)
        self.services.bus.publish("container", action, self.id, attributes)

    def _emit_network(self, action: str) -> None:
        """dockerd's network events: ``connect`` at start, ``disconnect`` when it is released."""
        for name in self.record.network_settings.get("Networks", {}):
            network_id = hashlib.sha256(name.encode()).hexdigest()
            attributes = {"container": self.id, "name": name, "type": name}
            self.services.bus.publish("network", action, network_id, attributes)

    async def _save(self) -> None:
        state = self.lifecycle.state
        if state in STARTING_STATES:
            persisted = "exited" if self.lifecycle.ran_before else "created"
        elif state is State.STOPPING:
            persisted = "running"
        elif state is State.REMOVING:
            persisted = "dead"  # dockerd marks Dead before it starts to delete
        else:
            persisted = state.value
        self.record.state = persisted
        await self.services.records.save(self.record)

    async def _save_quietly(self) -> None:
        """Save where no caller can be told of a failure (runtime reports, timers)."""
        try:
            await self._save()
        except errors.DockerError as exc:
            log.error("container.save_failed", container_id=self.id, error=exc.message)

    def _arm(self, kind: str, delay: float) -> None:
        self._disarm(kind)
        scope = anyio.CancelScope()
        self._timers[kind] = scope
        deadline = self.services.clock.now() + delay
        self.services.task_group.start_soon(self._timer, kind, scope, deadline)

    def _disarm(self, kind: str) -> None:
        scope = self._timers.pop(kind, None)
        if scope is not None:
            scope.cancel()

    async def _timer(self, kind: str, scope: anyio.CancelScope, deadline: float) -> None:
        with scope:
            await self.services.clock.sleep_until(deadline)
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._send.send_nowait(_TimerFired(kind, scope))

    def _wait_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"StatusCode": self.record.exit_code}
        if self.record.error:
            result["Error"] = {"Message": self.record.error}
        return result

    @staticmethod
    def _resolve(replies: list[_Reply], value: Any = None) -> None:
        for reply in replies:
            reply.set(value)
        replies.clear()

    # -- start ------------------------------------------------------------------------------

    async def _h_start(
        self, reply: _Reply, checkpoint: str | None, checkpoint_dir: str | None
    ) -> None:
        state = self.lifecycle.state
        if state is State.SPEC_READY:
            self._start_waiters.append(reply)  # a start is in flight: answer with it
            return
        if state is State.PAUSED:
            raise errors.Conflict("cannot start a paused container, try unpause instead")
        if state in PROCESS_STATES or state is State.RESTARTING:
            raise errors.NotModified("container is already running")
        if state in (State.REMOVING, State.DEAD):
            raise errors.Conflict("container is marked for removal and cannot be started")
        # A user start resets the restart policy's count and backoff (ResetRestartManager).
        self._restart = RestartManager(self.record.host_config.restart_policy)
        self.record.restart_count = 0
        self.record.has_been_manually_stopped = False
        self.lifecycle.handle(Event.START)
        self._start_waiters.append(reply)
        await self._start_saga(StartContext(self.record, checkpoint, checkpoint_dir))

    async def _start_saga(self, ctx: StartContext) -> None:
        ctx.stdin = self._stdin
        ctx.stdio = self.stdio
        self._ctx = ctx
        done: list[Step] = []
        try:
            for phase, step in self.services.saga:
                while self.lifecycle.state is not phase:
                    self.lifecycle.handle(_PHASE_DONE[self.lifecycle.state])
                await self._run_step(step, ctx)
                done.append(step)
        except errors.DockerError as exc:
            await self._abort_start(ctx, done, exc)
        except Exception as exc:
            # A driver let a foreign error through: still a failed start, never a wedged actor.
            log.exception("phase.untranslated_error", container_id=self.id)
            await self._abort_start(ctx, done, errors.SystemError(f"{type(exc).__name__}: {exc}"))
        except BaseException:
            # Cancelled (the daemon is closing): still give back what was taken.
            with anyio.CancelScope(shield=True):
                await self._undo(ctx, done)
            raise
        else:
            self._done = done
            self._started_at = self.services.clock.now()
            if ctx.record.config.open_stdin:
                self.services.task_group.start_soon(self._feed_stdin, ctx)
            else:
                ctx.stdin.ready()  # nothing to feed, and a close of no stdin is a no-op

    async def _feed_stdin(self, ctx: StartContext) -> None:
        """After the start: input sent before the process existed, in order, then a pending
        EOF. In its own task, so a process that does not read never blocks the actor."""
        runtime = self.services.runtime

        async def write(data: bytes) -> None:
            await runtime.write_stdin(self.id, data)

        try:
            if ctx.record.config.open_stdin:
                await ctx.stdio.process_ready(write)
            if ctx.stdin.ready():
                await runtime.close_stdin(self.id)
        except RuntimeFailure as exc:
            log.debug("stdin.feed_failed", container_id=self.id, error=exc.message)

    async def _run_step(self, step: Step, ctx: StartContext) -> None:
        clock = self.services.clock
        began = clock.now()
        log.debug(
            "phase.started", container_id=self.id, phase=step.name, state=self.lifecycle.state.value
        )
        try:
            await step.do(ctx)
        except errors.DockerError as exc:
            duration = clock.now() - began
            log.warning(
                "phase.failed",
                container_id=self.id,
                phase=step.name,
                state=self.lifecycle.state.value,
                duration_ms=round(duration * 1000, 3),
                error=exc.message,
            )
            raise
        duration = clock.now() - began
        phase = self.lifecycle.state.value
        ctx.durations[phase] = ctx.durations.get(phase, 0.0) + duration
        log.debug(
            "phase.complete",
            container_id=self.id,
            phase=step.name,
            state=self.lifecycle.state.value,
            duration_ms=round(duration * 1000, 3),
        )

    async def _undo(self, ctx: StartContext, done: list[Step]) -> None:
        """Undo ``done`` in reverse order; a failing undo is logged and the rest still run."""
        while done:
            step = done.pop()
            try:
                await step.undo(ctx)
            except errors.DockerError as exc:
                log.error(
                    "phase.undo_failed", container_id=self.id, phase=step.name, error=exc.message
                )

    async def _abort_start(
        self, ctx: StartContext, done: list[Step], exc: errors.DockerError
    ) -> None:
        ctx.stdin.failed()
        self._stdin = StdinCloser()
        self.stdio.run_ended()
        await self._undo(ctx, done)
        after_restart = self.lifecycle.via_restart
        self.lifecycle.handle(Event.FAILED)
        record = self.record
        record.error = exc.message
        record.pid = 0
        if ctx.exit_code:
            record.exit_code = ctx.exit_code
        elif record.exit_code == 0 and not after_restart:
            # dockerd's default for a start that failed; a failed policy restart keeps the
            # exit code of the run that ended, and so does any earlier non-zero one.
            record.exit_code = EXIT_UNKNOWN
        await self._save_quietly()
        for waiter in self._start_waiters:
            waiter.fail(exc)
        self._start_waiters.clear()
        if after_restart:
            # dockerd's SetStopped after a failed restart wakes those waiting for the stop.
            self._resolve(self._exit_waiters, self._wait_result())
        if record.host_config.auto_remove:
            await self._remove_now()

    # -- runtime reports -------------------------------------------------------------------

    async def _on_report(self, info: StateInfo) -> None:
        state = self.lifecycle.state
        if info.state == "start":
            if state is State.SPEC_READY and self._ctx is not None and info.pid == self._ctx.pid:
                await self._on_started(info)
            else:
                log.debug("runtime.stray_start", container_id=self.id, pid=info.pid)
        elif info.state == "exit":
            if state in PROCESS_STATES and info.pid == self.record.pid:
                await self._on_exited(info)
            elif state is State.SPEC_READY and self._ctx is not None and info.pid == self._ctx.pid:
                # The start report was lost or overtaken: the process did start, then ended.
                await self._on_started(StateInfo("start", pid=info.pid, at=info.at))
                await self._on_exited(info)
            else:
                log.debug("runtime.duplicate_exit", container_id=self.id, pid=info.pid)
        elif info.state == "oom":
            self.record.oom_killed = True
            self.emit("oom")

    async def _on_started(self, info: StateInfo) -> None:
        assert self._ctx is not None
        ctx = self._ctx
        self.lifecycle.handle(Event.STARTED)
        ctx.durations["running"] = self.services.clock.now() - self._started_at
        record = self.record
        record.pid = info.pid
        record.started_at = format_time(info.at or time.time())
        record.exit_code = 0
        record.error = ""
        record.oom_killed = False
        record.has_been_started_before = True
        record.network_settings = ctx.network or {}
        await self._save_quietly()
        self._emit_network("connect")
        self.emit("start")
        self._resolve(self._start_waiters)
        log.info(
            "container.started",
            container_id=self.id,
            state=self.lifecycle.state.value,
            pid=info.pid,
            **{f"{phase}_ms": round(s * 1000, 3) for phase, s in ctx.durations.items()},
        )

    async def _on_exited(self, info: StateInfo) -> None:
        record = self.record
        if self._ctx is not None:
            await self._undo(self._ctx, self._done)
        self._stdin = StdinCloser()
        self.stdio.run_ended()
        self._emit_network("disconnect")
        ran_for = self.services.clock.now() - self._started_at
        delay = self._restart.should_restart(
            info.exit_code, manually_stopped=record.has_been_manually_stopped, ran_for=ran_for
        )
        self.lifecycle.handle(Event.EXITED, restart=delay is not None)
        record.pid = 0
        record.exit_code = info.exit_code
        record.finished_at = format_time(info.at or time.time())
        record.oom_killed = record.oom_killed or info.oom_killed
        # The network is gone; the files that named the container stay (dockerd's paths).
        record.network_settings = {
            key: value for key, value in record.network_settings.items() if key.endswith("Path")
        }
        if delay is not None:
            record.restart_count += 1
            # Armed before the die event is published: whoever sees the event sees the timer.
            self._arm("restart", delay)
        await self._save_quietly()
        self.emit("die", exitCode=str(info.exit_code), execDuration=str(int(ran_for)))
        result = self._wait_result()
        if self._stop_waiters:
            self._disarm("stop-timeout")
            self.emit("stop")
            self._resolve(self._stop_waiters)
        self._resolve(self._kill_waiters)
        self._resolve(self._exit_waiters, result)
        log.info(
            "container.exited",
            container_id=self.id,
            state=self.lifecycle.state.value,
            exit_code=info.exit_code,
            restart_in=delay,
        )
        removal_due = self._removals and self.lifecycle.state is State.EXITED
        if removal_due or (delay is None and record.host_config.auto_remove):
            await self._remove_now()

    async def _h_process_lost(self, reply: _Reply) -> None:
        if self.lifecycle.state in PROCESS_STATES:
            # Taken as an exit, so that what its start took is given back as at any exit.
            lost = StateInfo("exit", pid=self.record.pid, exit_code=255, at=time.time())
            await self._on_exited(lost)
        reply.set()

    # -- timers -----------------------------------------------------------------------------

    async def _on_timer(self, kind: str) -> None:
        if kind == "restart" and self.lifecycle.state is State.RESTARTING:
            self.lifecycle.handle(Event.RESTART_DUE)
            log.info("container.restarting", container_id=self.id, count=self.record.restart_count)
            await self._start_saga(StartContext(self.record))
        elif kind == "stop-timeout" and self.lifecycle.state is State.STOPPING:
            try:
                await self._signal(_signal.SIGKILL, resume=False)
            except errors.SystemError as exc:
                error = errors.SystemError(f"cannot stop container: {self.id}: {exc.message}")
                for reply in self._stop_waiters:
                    reply.fail(error)
                self._stop_waiters.clear()

    def _cancel_restart(self) -> None:
        """A stop, kill or remove while a restart is pending: it will not happen."""
        self._restart.cancel()
        self._disarm("restart")
        self.lifecycle.handle(Event.CANCEL_RESTART)
        self.record.has_been_manually_stopped = True
        # dockerd's SetStopped: those waiting for the container to stop are answered.
        self._resolve(self._exit_waiters, self._wait_result())

    # -- stop, kill, pause -----------------------------------------------------------------

    def _exits_on_next(self, signal: int) -> bool:
        """dockerd's ``ExitOnNext`` rule: which signals cancel the restart policy."""
        stop_signal = self.record.config.stop_signal
        return (
            not stop_signal
            or signal == _signal.SIGKILL
            or signal == parse_signal(stop_signal, default=_signal.SIGTERM)
        )

    async def _signal(self, signal: int, *, resume: bool) -> None:
        """dockerd's ``killWithSignal`` for a live process."""
        if self._exits_on_next(signal):
            self._restart.cancel()
        self.record.has_been_manually_stopped = True
        try:
            await self.services.runtime.kill(self.id, signal)
        except RuntimeFailure as exc:
            raise errors.SystemError(f"Cannot kill container {self.id}: {exc.message}") from exc
        self.emit("kill", signal=str(signal))
        if resume:
            # A frozen process cannot act on the signal: thaw it, as dockerd does.
            try:
                await self.services.runtime.resume(self.id)
            except RuntimeFailure as exc:
                raise errors.SystemError(
                    f"Cannot unpause container {self.id}: {exc.message}"
                ) from exc
            if self.lifecycle.state is State.PAUSED:
                self.lifecycle.handle(Event.UNPAUSE)

    async def _h_stop(self, reply: _Reply, timeout: float | None) -> None:
        state = self.lifecycle.state
        if state is State.RESTARTING:
            self._cancel_restart()
            await self._save()
            self.emit("stop")
            reply.set()
            return
        if state not in PROCESS_STATES:
            raise errors.NotModified("container is already stopped")
        self._stop_waiters.append(reply)
        config = self.record.config
        if timeout is None:
            timeout = config.stop_timeout
        if timeout is None:
            timeout = self.services.stop_timeout
        stop_signal = parse_signal(config.stop_signal or None, default=_signal.SIGTERM)
        if state is not State.STOPPING:  # a second stop signals again, as dockerd's does
            self.lifecycle.handle(Event.STOP)
        try:
            await self._signal(stop_signal, resume=state is State.PAUSED)
        except errors.SystemError:
            timeout = min(timeout, 2.0) if timeout >= 0 else 2.0
        if timeout >= 0:
            self._arm("stop-timeout", timeout)

    async def _h_kill(self, reply: _Reply, signal: int, reference: str) -> None:
        state = self.lifecycle.state
        if state is State.RESTARTING:
            if self._exits_on_next(signal):
                self._cancel_restart()
                await self._save()
            reply.set()
            return
        if state not in PROCESS_STATES:
            raise errors.Conflict(
                f"cannot kill container: {reference}: container {self.id} is not running"
            )
        await self._signal(signal, resume=state is State.PAUSED and self._exits_on_next(signal))
        if signal == _signal.SIGKILL:
            self._kill_waiters.append(reply)  # KILL means kill and wait (dockerd)
        else:
            reply.set()

    async def _h_pause(self, reply: _Reply) -> None:
        state = self.lifecycle.state
        if state is State.RESTARTING:
            raise errors.Conflict(
                f"Container {self.id} is restarting, wait until the container is running"
            )
        if state is State.PAUSED:
            raise errors.Conflict(f"container {self.id} is already paused")
        if state is not State.RUNNING:
            raise errors.Conflict(f"container {self.id} is not running")
        await self._freeze(self.services.runtime.pause, Event.PAUSE, "cannot pause container")
        reply.set()

    async def _h_unpause(self, reply: _Reply) -> None:
        if self.lifecycle.state is not State.PAUSED:
            raise errors.SystemError(f"Container {self.id} is not paused")
        await self._freeze(self.services.runtime.resume, Event.UNPAUSE, "Cannot unpause container")
        reply.set()

    async def _freeze(
        self, call: Callable[[str], Awaitable[None]], event: Event, failure: str
    ) -> None:
        """Pause or thaw the process, then move the lifecycle and announce it."""
        try:
            await call(self.id)
        except RuntimeFailure as exc:
            raise errors.SystemError(f"{failure} {self.id}: {exc.message}") from exc
        self.lifecycle.handle(event)
        await self._save()
        self.emit(event.value)

    # -- wait and remove -------------------------------------------------------------------

    async def _h_wait(self, reply: _Reply, condition: str) -> None:
        if condition == "removed":
            self._removed_waiters.append(reply)
        elif condition == "next-exit" or self.lifecycle.running:
            self._exit_waiters.append(reply)
        else:
            reply.set(self._wait_result())

    async def _h_remove(self, reply: _Reply, force: bool, reference: str) -> None:
        state = self.lifecycle.state
        if state is State.REMOVING:
            raise errors.Conflict(f"removal of container {reference} is already in progress")
        if state in PROCESS_STATES or state is State.RESTARTING:
            name = self.record.name
            if not force:
                if state is State.PAUSED:
                    raise errors.Conflict(
                        f'cannot remove container "{name}": container is paused and must be '
                        "unpaused first"
                    )
                raise errors.Conflict(
                    f'cannot remove container "{name}": container is {self.lifecycle.status}: '
                    "stop the container before removing or force remove"
                )
            if state is State.RESTARTING:
                self._cancel_restart()
            else:
                try:
                    await self._signal(_signal.SIGKILL, resume=state is State.PAUSED)
                except errors.SystemError as exc:
                    raise errors.SystemError(
                        f'cannot remove container "{name}": could not kill: {exc.message}'
                    ) from exc
                self._removals.append(reply)  # answered once the process has exited
                return
        self._removals.append(reply)
        await self._remove_now()

    async def _remove_now(self) -> None:
        self.lifecycle.handle(Event.REMOVE)
        services = self.services
        try:
            await self._save()
            await services.runtime.delete(self.id, force=True)
            await services.mounter.remove(self.id)
            await services.records.delete(self.id)
        except errors.DockerError as exc:
            self.lifecycle.handle(Event.REMOVE_FAILED)
            self.record.error = exc.message
            error = errors.SystemError(f"unable to remove container {self.id}: {exc.message}")
            for reply in self._removals:
                reply.fail(error)
            self._removals.clear()
            self._resolve(self._removed_waiters, self._wait_result())
            log.error("container.remove_failed", container_id=self.id, error=exc.message)
            return
        self.lifecycle.handle(Event.REMOVED)
        services.forget(self.record)
        self.emit("destroy")
        result = self._wait_result()
        self._resolve(self._removals)
        self._resolve(self._removed_waiters, result)
        self._resolve(self._exit_waiters, result)
        self._send.close()
