"""The container lifecycle as data. Sans-io: no anyio, no clock, no files.

The whole state machine is the :data:`TRANSITIONS` table: ``state -> event -> next state``.
Where one event can lead to two states (a failed start lands in ``created`` if the container
never ran and in ``exited`` if it did), the table holds a :class:`Branch` that names the fact
deciding between them, so the table stays the single source of truth — the diagram in the docs
is rendered from it by ``scripts/render_lifecycle.py``.

Anything not in the table raises :class:`InvalidTransition`, naming the container, the state
and the event. The actor (``asyncstart.actor``) is the only caller.

Beside it, :data:`REFUSALS` keeps dockerd's answers to a request the state does not allow
(``docker start`` of a paused container: 409 "cannot start a paused container, ..."), so the
actor's handlers hold no ``if state is ...: raise`` chains.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from . import errors

__all__ = [
    "REFUSALS",
    "TRANSITIONS",
    "Branch",
    "InvalidTransition",
    "Lifecycle",
    "LifecycleEvent",
    "Refusal",
    "Request",
    "SingletonEnum",
    "State",
    "refusal",
]


class SingletonEnum(enum.Enum):
    """An enum whose members hash by identity: they are singletons and compare by identity,
    and ``enum.Enum`` hashes them by name in Python code, a call per table lookup (the
    lifecycle's tables are looked up several times at every start)."""

    __hash__ = object.__hash__


class State(SingletonEnum):
    """Where a container is in its life."""

    CREATED = "created"
    MOUNTING = "mounting"
    NETWORKING = "networking"
    SPEC_READY = "spec-ready"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    EXITED = "exited"
    RESTARTING = "restarting"
    REMOVING = "removing"
    DEAD = "dead"
    #: Terminal: the record is gone. Never persisted.
    REMOVED = "removed"


class LifecycleEvent(SingletonEnum):
    """What can happen to a container."""

    START = "start"
    MOUNTED = "mounted"
    NETWORKED = "networked"
    #: The runtime backend reported ``StateChanged(start, pid)``.
    STARTED = "started"
    FAILED = "failed"
    STOP = "stop"
    #: The runtime backend reported ``StateChanged(exit, code)``.
    EXITED = "exited"
    RESTART_DUE = "restart-due"
    #: A user stop (or remove) while a restart is pending.
    CANCEL_RESTART = "cancel-restart"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    REMOVE = "remove"
    REMOVED = "removed"
    REMOVE_FAILED = "remove-failed"


@dataclass(frozen=True, slots=True)
class Branch:
    """A transition whose target depends on one named fact: ``then`` if true else ``otherwise``."""

    on: str
    then: State
    otherwise: State

    def targets(self) -> tuple[State, State]:
        return (self.then, self.otherwise)


_START_FAILED = Branch("ran_before", then=State.EXITED, otherwise=State.CREATED)
_PROCESS_EXITED = Branch("restart", then=State.RESTARTING, otherwise=State.EXITED)

#: The lifecycle. Keys absent from an inner mapping are invalid transitions.
TRANSITIONS: Mapping[State, Mapping[LifecycleEvent, State | Branch]] = {
    State.CREATED: {
        LifecycleEvent.START: State.MOUNTING,
        LifecycleEvent.REMOVE: State.REMOVING,
    },
    State.MOUNTING: {
        LifecycleEvent.MOUNTED: State.NETWORKING,
        LifecycleEvent.FAILED: _START_FAILED,
    },
    State.NETWORKING: {
        LifecycleEvent.NETWORKED: State.SPEC_READY,
        LifecycleEvent.FAILED: _START_FAILED,
    },
    State.SPEC_READY: {
        LifecycleEvent.STARTED: State.RUNNING,
        LifecycleEvent.FAILED: _START_FAILED,
    },
    State.RUNNING: {
        LifecycleEvent.STOP: State.STOPPING,
        LifecycleEvent.EXITED: _PROCESS_EXITED,
        LifecycleEvent.PAUSE: State.PAUSED,
    },
    State.PAUSED: {
        LifecycleEvent.UNPAUSE: State.RUNNING,
        LifecycleEvent.STOP: State.STOPPING,
        LifecycleEvent.EXITED: _PROCESS_EXITED,
    },
    State.STOPPING: {
        LifecycleEvent.EXITED: _PROCESS_EXITED,
    },
    State.EXITED: {
        LifecycleEvent.START: State.MOUNTING,
        LifecycleEvent.REMOVE: State.REMOVING,
    },
    State.RESTARTING: {
        LifecycleEvent.RESTART_DUE: State.MOUNTING,
        LifecycleEvent.CANCEL_RESTART: State.EXITED,
    },
    State.REMOVING: {
        LifecycleEvent.REMOVED: State.REMOVED,
        LifecycleEvent.REMOVE_FAILED: State.DEAD,
    },
    State.DEAD: {
        LifecycleEvent.REMOVE: State.REMOVING,
    },
    State.REMOVED: {},
}

#: The event that closes each phase of the start saga (the last one closes on ``STARTED``).
_PHASE_DONE = {State.MOUNTING: LifecycleEvent.MOUNTED, State.NETWORKING: LifecycleEvent.NETWORKED}

#: States in which the container's process exists (and holds its mount and network).
PROCESS_STATES = frozenset({State.RUNNING, State.PAUSED, State.STOPPING})
#: States of the start saga.
STARTING_STATES = frozenset({State.MOUNTING, State.NETWORKING, State.SPEC_READY})


class InvalidTransition(Exception):
    """An event that the lifecycle table does not allow in the current state."""

    def __init__(self, container_id: str, state: State, event: LifecycleEvent) -> None:
        super().__init__(
            f"container {container_id[:12]}: cannot handle {event.value!r} in state {state.value!r}"
        )
        self.container_id = container_id
        self.state = state
        self.event = event


@dataclass(slots=True)
class Lifecycle:
    """One container's position in :data:`TRANSITIONS`, plus the two facts branches read.

    ``ran_before`` becomes true the first time the process starts and stays true (dockerd's
    ``HasBeenStartedBefore``); ``via_restart`` is true while a start saga runs because the restart
    policy asked for it, so the container shows as ``restarting`` rather than ``created`` meanwhile.
    """

    container_id: str
    state: State = State.CREATED
    ran_before: bool = False
    via_restart: bool = False

    def handle(self, event: LifecycleEvent, *, restart: bool = False) -> State:
        """Apply ``event``; return the new state or raise :class:`InvalidTransition`.

        ``restart`` is the restart manager's decision; only :attr:`LifecycleEvent.EXITED` reads it.
        """
        target = TRANSITIONS[self.state].get(event)
        if target is None:
            raise InvalidTransition(self.container_id, self.state, event)
        if isinstance(target, Branch):
            facts = {"ran_before": self.ran_before, "restart": restart}
            target = target.then if facts[target.on] else target.otherwise
        if event is LifecycleEvent.RESTART_DUE:
            self.via_restart = True
        elif event in (LifecycleEvent.STARTED, LifecycleEvent.FAILED):
            self.via_restart = False
        if event is LifecycleEvent.STARTED:
            self.ran_before = True
        self.state = target
        return target

    def copy(self) -> Lifecycle:
        """A copy of this position (what a snapshot holds; ``dataclasses.replace`` costs a
        start several microseconds)."""
        twin = object.__new__(Lifecycle)
        for name in self.__slots__:  # (every field: the dataclass's slots)
            setattr(twin, name, getattr(self, name))
        return twin

    def enter_phase(self, phase: State) -> None:
        """The start saga is about to run a step of ``phase``: close the phases before it."""
        while self.state is not phase:
            # Outside the saga's phases nothing closes one: handle() refuses, naming the state.
            self.handle(_PHASE_DONE.get(self.state, LifecycleEvent.NETWORKED))

    @property
    def restarting(self) -> bool:
        """dockerd's ``Restarting``: a policy restart is pending or under way."""
        return self.state is State.RESTARTING or (
            self.state in STARTING_STATES and self.via_restart
        )

    @property
    def running(self) -> bool:
        """dockerd's ``Running``: the process lives, or a policy restart is pending."""
        return self.state in PROCESS_STATES or self.restarting

    @property
    def status(self) -> str:
        """Docker's ``State.Status`` for this position (what ``docker ps`` shows)."""
        return docker_status(self.state, ran_before=self.ran_before, via_restart=self.via_restart)


def docker_status(state: State, *, ran_before: bool, via_restart: bool = False) -> str:
    """Map a lifecycle state onto dockerd's ``State.Status`` vocabulary.

    The start saga's inner states are not visible in Docker: a container being started shows as
    it was before the start (``created`` or ``exited``), or ``restarting`` during a policy restart.
    """
    if state in STARTING_STATES:
        if via_restart:
            return "restarting"
        return "exited" if ran_before else "created"
    if state is State.STOPPING:
        return "running"
    if state is State.REMOVED:
        return "removing"
    status: str = state.value
    return status


class Request(SingletonEnum):
    """What is asked of a container: the Docker verbs (and the daemon's own ``adopt``)."""

    START = "start"
    STOP = "stop"
    KILL = "kill"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    REMOVE = "remove"
    #: ``docker rm --force``: a live container is killed first, so fewer states refuse it.
    FORCE_REMOVE = "force-remove"
    ATTACH = "attach"
    RESIZE = "resize"
    WAIT = "wait"
    #: Reopened on a container recorded as running: take its process back under watch.
    ADOPT = "adopt"
    #: ``docker exec`` (create and start).
    EXEC = "exec"
    #: ``docker rename``.
    RENAME = "rename"
    #: ``docker top``.
    TOP = "top"
    #: ``docker export``.
    EXPORT = "export"
    #: ``docker update``.
    UPDATE = "update"
    #: ``docker network connect`` / ``disconnect``.
    CONNECT = "connect"
    DISCONNECT = "disconnect"


@dataclass(frozen=True, slots=True)
class Refusal:
    """dockerd's answer to a request its state does not allow.

    ``message`` is a template: ``{id}`` (full ID), ``{name}`` (``/name``), ``{reference}`` (what
    the client typed) and ``{status}`` (Docker's ``State.Status``) are filled in.
    """

    error: type[errors.DockerError]
    message: str

    def exception(self, **facts: str) -> errors.DockerError:
        return self.error(self.message.format(**facts))


_ALREADY_RUNNING = Refusal(errors.NotModified, "container is already running")
_MARKED_FOR_REMOVAL = Refusal(
    errors.Conflict, "container is marked for removal and cannot be started"
)
_EXEC_NOT_RUNNING = Refusal(errors.Conflict, "container {id} is not running")
_NETWORK_REMOVAL = Refusal(
    errors.SystemError,
    "Container {id} is marked for removal and cannot be connected or disconnected to the network",
)
_ALREADY_STOPPED = Refusal(errors.NotModified, "container is already stopped")
_KILL_NOT_RUNNING = Refusal(
    errors.Conflict, "cannot kill container: {reference}: container {id} is not running"
)
_PAUSE_NOT_RUNNING = Refusal(errors.Conflict, "container {id} is not running")
_NOT_PAUSED = Refusal(errors.SystemError, "Container {id} is not paused")
_REMOVAL_IN_PROGRESS = Refusal(
    errors.Conflict, "removal of container {reference} is already in progress"
)
_REMOVE_LIVE = Refusal(
    errors.Conflict,
    'cannot remove container "{name}": container is {status}: '
    "stop the container before removing or force remove",
)
_RESTARTING = Refusal(
    errors.Conflict, "Container {id} is restarting, wait until the container is running"
)
_STOPPED = (State.CREATED, State.EXITED, State.REMOVING, State.DEAD)

#: ``request -> state -> refusal``; a state absent from a request's row lets it through. The
#: saga's inner states never meet a request (the actor defers them until the start is decided),
#: except a start in ``spec-ready``, which joins the start in flight.
REFUSALS: Mapping[Request, Mapping[State, Refusal]] = {
    Request.START: {
        State.PAUSED: Refusal(
            errors.Conflict, "cannot start a paused container, try unpause instead"
        ),
        State.RUNNING: _ALREADY_RUNNING,
        State.STOPPING: _ALREADY_RUNNING,
        State.RESTARTING: _ALREADY_RUNNING,
        State.REMOVING: _MARKED_FOR_REMOVAL,
        State.DEAD: _MARKED_FOR_REMOVAL,
    },
    Request.STOP: dict.fromkeys(_STOPPED, _ALREADY_STOPPED),
    Request.KILL: dict.fromkeys(_STOPPED, _KILL_NOT_RUNNING),
    Request.PAUSE: {
        **dict.fromkeys((*_STOPPED, State.STOPPING), _PAUSE_NOT_RUNNING),
        State.RESTARTING: _RESTARTING,
        State.PAUSED: Refusal(errors.Conflict, "container {id} is already paused"),
    },
    Request.UNPAUSE: {state: _NOT_PAUSED for state in State if state is not State.PAUSED},
    Request.REMOVE: {
        State.REMOVING: _REMOVAL_IN_PROGRESS,
        State.RUNNING: _REMOVE_LIVE,
        State.STOPPING: _REMOVE_LIVE,
        State.RESTARTING: _REMOVE_LIVE,
        State.PAUSED: Refusal(
            errors.Conflict,
            'cannot remove container "{name}": container is paused and must be unpaused first',
        ),
    },
    Request.FORCE_REMOVE: {State.REMOVING: _REMOVAL_IN_PROGRESS},
    Request.EXPORT: {
        State.REMOVING: Refusal(
            errors.Conflict, "You cannot export container {id} which is being removed"
        ),
        State.DEAD: Refusal(errors.Conflict, "You cannot export container {id} which is Dead"),
    },
    Request.ATTACH: {
        State.PAUSED: Refusal(
            errors.Conflict, "container {reference} is paused, unpause the container before attach"
        ),
        State.RESTARTING: Refusal(
            errors.Conflict,
            "container {reference} is restarting, wait until the container is running",
        ),
    },
    Request.RESIZE: {
        state: Refusal(errors.Conflict, "Container {id} is not running")
        for state in (*_STOPPED, *STARTING_STATES)
    },
    Request.EXEC: {
        **dict.fromkeys((*_STOPPED, *STARTING_STATES), _EXEC_NOT_RUNNING),
        State.PAUSED: Refusal(
            errors.Conflict, "Container {reference} is paused, unpause the container before exec"
        ),
        State.RESTARTING: Refusal(
            errors.Conflict, "container {id} is restarting, wait until the container is running"
        ),
    },
    Request.TOP: {
        state: Refusal(errors.Conflict, "Container {id} is not running")
        for state in (*_STOPPED, *STARTING_STATES)
    },
    Request.UPDATE: dict.fromkeys(
        (State.REMOVING, State.DEAD),
        Refusal(errors.Conflict, "Container {id} is marked for removal and cannot be updated"),
    ),
    Request.RENAME: dict.fromkeys(
        (State.REMOVING, State.DEAD),
        Refusal(errors.Conflict, "Can't rename container which is dead or marked for removal"),
    ),
    Request.CONNECT: dict.fromkeys((State.REMOVING, State.DEAD), _NETWORK_REMOVAL),
    Request.DISCONNECT: dict.fromkeys((State.REMOVING, State.DEAD), _NETWORK_REMOVAL),
}
#: Requests the daemon checks against what ``inspect`` shows rather than the actor's exact state:
#: there, a start saga run by the restart policy is ``restarting``.
_CHECKED_ON_VIEW = frozenset({Request.ATTACH, Request.RESIZE, Request.EXEC})


def refusal(request: Request, lifecycle: Lifecycle) -> Refusal | None:
    """dockerd's refusal of ``request`` in this position, or None if the request may proceed."""
    state = lifecycle.state
    if request in _CHECKED_ON_VIEW and lifecycle.restarting:
        state = State.RESTARTING
    return REFUSALS.get(request, {}).get(state)
