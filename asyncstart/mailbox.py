"""An actor's mailbox: requests with one-shot replies, reports, timers and parked answers.

Everything an actor is asked or told arrives here and is taken one message at a time. A request
carries a :class:`Reply` its caller awaits; the actor may answer at once, or *park* the reply in
its :class:`Waiters` under a condition (``"exit"``, ``"stop"``, ...) and answer every reply parked
there when the condition comes. :class:`Timers` deliver their expiry as a message, so a timer is
handled in turn like anything else. A mailbox is served on demand by a :class:`Dispatcher`'s
tasks while it has messages; an idle actor has no task. When the actor ends, :meth:`Mailbox.close`
answers whatever is still queued: a caller is never left waiting. When its daemon closes, the
request being handled, those still queued and the replies parked are answered that the daemon
is shutting down (503).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from . import errors
from ._log import get_logger
from .clock import Clock
from .lifecycle import Request
from .runtime import StateInfo

__all__ = [
    "KEEP_IDLE",
    "SERVING_TASK",
    "Call",
    "Dispatcher",
    "Handler",
    "Mailbox",
    "Message",
    "Owner",
    "Pending",
    "Reply",
    "RuntimeReport",
    "TimerFired",
    "Timers",
    "Waiters",
]


log = get_logger("asyncstart.actor")

#: The name of the tasks that take actors' messages (anyio names a task by its callable else).
SERVING_TASK = "asyncstart.actor"
#: How many of a dispatcher's tasks may wait for a ready mailbox; any more end.
KEEP_IDLE = 128


class Pending(Protocol):
    """A request queued to an actor; ``await pending.wait()`` for its answer."""

    async def wait(self) -> dict[str, Any]: ...


class Reply:
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


#: What runs a request: ``handler(reply, *args)``.
Handler = Callable[..., Awaitable[None]]


@dataclass(slots=True)
class Call:
    """A request: the actor runs its handler for ``request`` with ``reply`` and ``args``."""

    request: Request
    args: tuple[Any, ...]
    reply: Reply


@dataclass(slots=True)
class RuntimeReport:
    """The runtime's ``StateChanged``; nobody waits on it."""

    info: StateInfo


@dataclass(slots=True)
class TimerFired:
    kind: str
    scope: anyio.CancelScope


Message = Call | RuntimeReport | TimerFired


class Waiters:
    """Parked replies, one list per condition, answered together when it comes."""

    __slots__ = ("_table",)

    def __init__(self) -> None:
        self._table: dict[str, list[Reply]] = collections.defaultdict(list)

    def park(self, condition: str, reply: Reply) -> None:
        self._table[condition].append(reply)

    def waiting(self, condition: str) -> bool:
        return bool(self._table.get(condition))

    def resolve(self, condition: str, value: Any = None) -> None:
        for reply in self._table.pop(condition, ()):
            reply.set(value)

    def fail(self, condition: str, error: errors.DockerError) -> None:
        for reply in self._table.pop(condition, ()):
            reply.fail(error)

    def fail_all(self, error: errors.DockerError) -> None:
        """Answer every parked reply with ``error`` (the actor ends)."""
        for condition in list(self._table):
            self.fail(condition, error)


class Owner(Protocol):
    """The actor a mailbox serves (:meth:`Mailbox.serve_on`)."""

    async def handle(self, message: Message) -> None:
        """Handle one message (a request is answered through its reply)."""

    def holding(self) -> bool:
        """Whether deferred requests must keep waiting."""

    def finished(self) -> bool:
        """Whether the actor has ended (its container is gone): nothing more is taken."""

    def answer_when_gone(self, call: Call) -> Any | None:
        """The answer to a request still queued once finished (None: 404)."""

    def mailbox_closed(self, error: errors.DockerError) -> None:
        """The mailbox is closed (finished, or cancelled with its daemon): answer whatever the
        actor still keeps parked with ``error``."""


class Dispatcher:
    """The tasks that serve the mailboxes with messages, for a whole daemon.

    A mailbox that gets a message while idle is put in the ready queue; a serving task takes
    it and handles its messages until none is left, then takes the next ready one. A task
    with nothing to take waits (at most ``keep_idle`` of them; any more end), and is woken
    for the next ready mailbox; when every task is busy, one more is started. Under load a
    task goes from mailbox to mailbox without a wait or a spawn (a spawn costs 27-37 µs
    here, waking a waiting task about a third of it), and an idle actor has no task."""

    __slots__ = ("_idle", "_keep_idle", "_ready", "_tg")

    def __init__(self, task_group: anyio.abc.TaskGroup, *, keep_idle: int = KEEP_IDLE) -> None:
        self._tg = task_group
        self._keep_idle = keep_idle
        self._ready: collections.deque[Mailbox] = collections.deque()
        self._idle: list[anyio.Event] = []  # the waiting tasks' wake-ups

    @property
    def waiting(self) -> int:
        """How many serving tasks wait for a ready mailbox."""
        return len(self._idle)

    def schedule(self, mailbox: Mailbox) -> None:
        self._ready.append(mailbox)
        if self._idle:
            self._idle.pop().set()
        else:
            self._tg.start_soon(self._work, name=SERVING_TASK)

    async def _work(self) -> None:
        while True:
            while self._ready:
                await self._ready.popleft().serve()
            if len(self._idle) >= self._keep_idle:
                return
            wake = anyio.Event()
            self._idle.append(wake)
            try:
                await wake.wait()
            finally:
                if not wake.is_set():  # (cancelled while waiting: no longer to be woken)
                    self._idle.remove(wake)


class Mailbox:
    """The actor's queue (unbounded: senders never block), and requests deferred for later.

    Served on demand (:meth:`serve_on`): a message that finds the mailbox idle has it
    scheduled on the daemon's :class:`Dispatcher`, whose task takes its messages until none
    is left. An idle actor (thousands of them in a daemon) has no task, and keeps a handful
    of objects that the garbage collector walks at every full collection."""

    __slots__ = (
        "_container_id", "_deferred", "_dispatcher", "_owner", "_queue", "_refusal", "_serving",
    )  # fmt: skip

    def __init__(self, container_id: str) -> None:
        self._container_id = container_id
        self._queue: collections.deque[Message] = collections.deque()
        self._deferred: collections.deque[Call] = collections.deque()
        #: What a request gets once no more are taken (None: they are): 404, or 503.
        self._refusal: errors.DockerError | None = None
        self._owner: Owner | None = None
        self._dispatcher: Dispatcher | None = None
        self._serving = False  # (scheduled, or being served)

    def _gone(self) -> errors.NotFound:
        return errors.NotFound(f"No such container: {self._container_id}")

    def serve_on(self, dispatcher: Dispatcher, owner: Owner) -> None:
        """From now on, messages are taken one at a time by ``owner`` in ``dispatcher``'s
        tasks (see the class docstring); those already queued first."""
        self._owner = owner
        self._dispatcher = dispatcher
        if self._queue:
            self._wake()

    def _wake(self) -> None:
        if not self._serving and self._dispatcher is not None:
            self._serving = True
            self._dispatcher.schedule(self)

    def _put(self, message: Message) -> bool:
        if self._refusal is not None:
            return False
        self._queue.append(message)
        self._wake()
        return True

    def request(self, request: Request, *args: Any) -> Reply:
        """Queue a request; the actor takes it after every message queued before."""
        reply = Reply()
        if not self._put(Call(request, args, reply)):
            assert self._refusal is not None
            raise type(self._refusal)(self._refusal.message)  # (a fresh one per caller)
        return reply

    def post(self, message: RuntimeReport | TimerFired) -> bool:
        """Queue a report or a timer's expiry; False once the mailbox is closed."""
        return self._put(message)

    def take_nowait(self) -> Message | None:
        """The oldest queued message, or None if there is none now."""
        return self._queue.popleft() if self._queue else None

    def defer(self, call: Call) -> None:
        """Keep a request for later (taken after each message while the owner is not
        holding), as dockerd's container lock would make it wait."""
        self._deferred.append(call)

    def next_deferred(self) -> Call | None:
        """The oldest deferred request, or None."""
        return self._deferred.popleft() if self._deferred else None

    def stop_taking(self) -> None:
        """No more messages are accepted (the container is gone); those queued are still
        taken."""
        if self._refusal is None:
            self._refusal = self._gone()

    async def serve(self) -> None:
        """Take the queued messages one at a time, each followed by the deferred requests
        while the owner is not holding, until none is left (the next message schedules the
        mailbox again) or the owner has finished: then :meth:`close`. Cancelled with the
        daemon, the request being handled and those queued are answered that the daemon is
        shutting down. A checkpoint before each is handled: a cancelled actor handles nothing
        more (the message taken is answered with the others)."""
        owner = self._owner
        assert owner is not None
        current: Message | None = None
        try:
            while not owner.finished():
                current = self.take_nowait()
                if current is None:
                    if self._refusal is None:
                        self._serving = False  # (idle: no await between this and the end)
                        return
                    break
                await anyio.lowlevel.checkpoint_if_cancelled()
                await owner.handle(current)
                while not owner.holding() and (current := self.next_deferred()) is not None:
                    await owner.handle(current)
                current = None
        except BaseException:
            self.shut_down(current)
            raise
        self._serving = False
        self.close(owner.answer_when_gone)
        owner.mailbox_closed(self._gone())

    def shut_down(self, current: Message | None = None) -> None:
        """The daemon closes: whatever is queued, deferred or parked by the owner is answered
        that the daemon is shutting down (503), as is ``current`` (the request being handled,
        unless its handler answered it) and any request made after this."""
        shutting_down = self._refusal = errors.Unavailable("the daemon is shutting down")
        if isinstance(current, Call):
            current.reply.fail(shutting_down)
        self.close(lambda call: shutting_down)
        if self._owner is not None:
            self._owner.mailbox_closed(shutting_down)

    @staticmethod
    async def answer(
        call: Call, handler: Callable[..., Awaitable[None]], container_id: str
    ) -> None:
        """Run ``handler(reply, *args)``: its error is the reply, a foreign one a 500."""
        try:
            await handler(call.reply, *call.args)
        except errors.DockerError as exc:
            call.reply.fail(exc)
        except Exception as exc:
            log.exception("actor.request_failed", container_id=container_id)
            call.reply.fail(errors.SystemError(f"{type(exc).__name__}: {exc}"))

    def close(self, answer: Callable[[Call], Any | None]) -> None:
        """The actor ends: every request still queued or deferred gets an answer —
        ``answer(call)`` if it gives one (not None; an error is raised to the caller), else
        404 — never silence."""
        self.stop_taking()
        while (message := self.take_nowait()) is not None:
            if isinstance(message, Call):
                self._deferred.append(message)
        while (call := self.next_deferred()) is not None:
            value = answer(call)
            if value is None:
                call.reply.fail(self._gone())
            elif isinstance(value, errors.DockerError):
                call.reply.fail(value)
            else:
                call.reply.set(value)


class Timers:
    """Named timers on the clock whose expiry arrives in the mailbox as :class:`TimerFired`.

    The deadline is computed when a timer is armed, so a test that sees the event announcing
    it can advance a fake clock past it without racing the timer's task.
    """

    def __init__(self, mailbox: Mailbox, clock: Clock, task_group: anyio.abc.TaskGroup) -> None:
        self._mailbox = mailbox
        self._clock = clock
        self._task_group = task_group
        self._scopes: dict[str, anyio.CancelScope] = {}

    def arm(self, kind: str, delay: float) -> None:
        self.disarm(kind)
        scope = anyio.CancelScope()
        self._scopes[kind] = scope
        deadline = self._clock.now() + delay
        self._task_group.start_soon(self._run, kind, scope, deadline)

    def disarm(self, kind: str) -> None:
        scope = self._scopes.pop(kind, None)
        if scope is not None:
            scope.cancel()

    def fired(self, message: TimerFired) -> bool:
        """Whether this expiry is the armed timer's (not one disarmed or re-armed since)."""
        if self._scopes.get(message.kind) is not message.scope:
            return False
        del self._scopes[message.kind]
        return True

    async def _run(self, kind: str, scope: anyio.CancelScope, deadline: float) -> None:
        with scope:
            await self._clock.sleep_until(deadline)
            self._mailbox.post(TimerFired(kind, scope))  # (dropped if the mailbox is closed)
