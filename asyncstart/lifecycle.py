"""The container lifecycle as data. Sans-io: no anyio, no clock, no files.

The whole state machine is the :data:`TRANSITIONS` table: ``state -> event -> next state``.
Where one event can lead to two states (a failed start lands in ``created`` if the container
never ran and in ``exited`` if it did), the table holds a :class:`Branch` that names the fact
deciding between them, so the table stays the single source of truth — the diagram in the docs
is rendered from it by ``scripts/render_lifecycle.py``.

Anything not in the table raises :class:`InvalidTransition`, naming the container, the state
and the event. The actor (``asyncstart.actor``) is the only caller.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "TRANSITIONS",
    "Branch",
    "Event",
    "InvalidTransition",
    "Lifecycle",
    "State",
]


class State(enum.Enum):
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


class Event(enum.Enum):
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
TRANSITIONS: Mapping[State, Mapping[Event, State | Branch]] = {
    State.CREATED: {
        Event.START: State.MOUNTING,
        Event.REMOVE: State.REMOVING,
    },
    State.MOUNTING: {
        Event.MOUNTED: State.NETWORKING,
        Event.FAILED: _START_FAILED,
    },
    State.NETWORKING: {
        Event.NETWORKED: State.SPEC_READY,
        Event.FAILED: _START_FAILED,
    },
    State.SPEC_READY: {
        Event.STARTED: State.RUNNING,
        Event.FAILED: _START_FAILED,
    },
    State.RUNNING: {
        Event.STOP: State.STOPPING,
        Event.EXITED: _PROCESS_EXITED,
        Event.PAUSE: State.PAUSED,
    },
    State.PAUSED: {
        Event.UNPAUSE: State.RUNNING,
        Event.STOP: State.STOPPING,
        Event.EXITED: _PROCESS_EXITED,
    },
    State.STOPPING: {
        Event.EXITED: _PROCESS_EXITED,
    },
    State.EXITED: {
        Event.START: State.MOUNTING,
        Event.REMOVE: State.REMOVING,
    },
    State.RESTARTING: {
        Event.RESTART_DUE: State.MOUNTING,
        Event.CANCEL_RESTART: State.EXITED,
    },
    State.REMOVING: {
        Event.REMOVED: State.REMOVED,
        Event.REMOVE_FAILED: State.DEAD,
    },
    State.DEAD: {
        Event.REMOVE: State.REMOVING,
    },
    State.REMOVED: {},
}

#: States in which the container's process exists (and holds its mount and network).
PROCESS_STATES = frozenset({State.RUNNING, State.PAUSED, State.STOPPING})
#: States of the start saga.
STARTING_STATES = frozenset({State.MOUNTING, State.NETWORKING, State.SPEC_READY})


class InvalidTransition(Exception):
    """An event that the lifecycle table does not allow in the current state."""

    def __init__(self, container_id: str, state: State, event: Event) -> None:
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

    def can(self, event: Event) -> bool:
        """Whether ``event`` is allowed now."""
        return event in TRANSITIONS[self.state]

    def handle(self, event: Event, *, restart: bool = False) -> State:
        """Apply ``event``; return the new state or raise :class:`InvalidTransition`.

        ``restart`` is the restart manager's decision and only matters for :attr:`Event.EXITED`.
        """
        target = TRANSITIONS[self.state].get(event)
        if target is None:
            raise InvalidTransition(self.container_id, self.state, event)
        if isinstance(target, Branch):
            facts = {"ran_before": self.ran_before, "restart": restart}
            target = target.then if facts[target.on] else target.otherwise
        if event is Event.RESTART_DUE:
            self.via_restart = True
        elif event in (Event.STARTED, Event.FAILED):
            self.via_restart = False
        if event is Event.STARTED:
            self.ran_before = True
        self.state = target
        return target

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
