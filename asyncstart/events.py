"""The event bus: Docker-shaped event messages, fanned out to subscribers.

Publishing never blocks the engine: each subscriber has a bounded buffer, and a subscriber that
falls that far behind loses events (counted in :attr:`EventBus.dropped`) rather than stalling
every container — dockerd's publisher likewise gives up on a slow subscriber. The last events
are kept for ``since`` queries.
"""

from __future__ import annotations

import collections
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from .record import ContainerRecord

__all__ = ["EventBus", "container_event", "network_event", "network_events"]

Message = dict[str, Any]


class EventBus:
    def __init__(self, *, buffer: int = 1024, history: int = 256) -> None:
        self._buffer = buffer
        self._subscribers: set[MemoryObjectSendStream[Message]] = set()
        self._history: collections.deque[Message] = collections.deque(maxlen=history)
        self.dropped = 0

    @property
    def listeners(self) -> int:
        """How many subscribers are listening (``docker info``'s ``NEventsListener``)."""
        return len(self._subscribers)

    def publish(
        self,
        type_: str,
        action: str,
        actor_id: str,
        attributes: Mapping[str, str],
    ) -> Message:
        """Build the message dockerd would send and hand it to every subscriber."""
        now = time.time_ns()
        message: Message = {
            "status": action,
            "id": actor_id,
            "from": attributes.get("image", ""),
            "Type": type_,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": dict(attributes)},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        if type_ != "container":
            for legacy in ("status", "id", "from"):
                del message[legacy]
        self._history.append(message)
        for stream in self._subscribers:
            try:
                stream.send_nowait(message)
            except anyio.WouldBlock:
                self.dropped += 1
        return message

    @asynccontextmanager
    async def replay(
        self, since: float, until: float, keep: Callable[[Message], bool]
    ) -> AsyncIterator[AsyncIterator[Message]]:
        """dockerd's ``/events``: the kept events published since ``since`` (the history),
        then live ones, ending at ``until`` (0: never). Subscribed and the history taken in one
        step, on entering: every event is in exactly one of the two."""
        async with self.subscribe() as live:
            backlog = list(self._history) if since or until else []
            yield _replayed(backlog, live, since, until, keep)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[Message]]:
        """Receive every event published while the context is open."""
        send, receive = anyio.create_memory_object_stream[Message](self._buffer)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()


def _within(message: Message, since: float, until: float) -> bool:
    at = message["timeNano"] / 1e9
    return not ((since and at < since) or (until and at > until))


async def _replayed(
    backlog: list[Message],
    live: MemoryObjectReceiveStream[Message],
    since: float,
    until: float,
    keep: Callable[[Message], bool],
) -> AsyncIterator[Message]:
    for old in backlog:
        if _within(old, since, until) and keep(old):
            yield old
    while True:
        # A deadline per receive, never a cancel scope around a yield: a consumer that breaks
        # out of its loop would leave that scope open on its own task.
        remaining = until - time.time() if until else math.inf
        if remaining <= 0:
            return
        message: Message | None = None
        with anyio.move_on_after(remaining):
            try:
                message = await live.receive()
            except anyio.EndOfStream:
                return
        if message is None:
            return
        if _within(message, 0, until) and keep(message):
            yield message


def container_event(bus: EventBus, record: ContainerRecord, action: str, **extra: str) -> None:
    """Publish a container event with dockerd's attributes: labels, image, name, ``extra``."""
    attributes = dict(record.config.labels)
    if image := record.config.image or record.image:
        attributes["image"] = image  # the name it was created with, as dockerd
    attributes["name"] = record.name.lstrip("/")
    attributes.update(extra)
    bus.publish("container", action, record.id, attributes)


def network_events(bus: EventBus, record: ContainerRecord, action: str) -> None:
    """dockerd's network events for each network the container is on: ``connect`` at start,
    ``disconnect`` when it is released."""
    for name, endpoint in record.network_settings.get("Networks", {}).items():
        network_id = endpoint.get("NetworkID") or hashlib.sha256(name.encode()).hexdigest()
        network_event(bus, network_id, name, record.id, action)


def network_event(
    bus: EventBus, network_id: str, name: str, container_id: str, action: str
) -> None:
    """One network event about a container (its ``type`` the network's driver)."""
    driver = {"host": "host", "none": "null"}.get(name, "bridge")
    attributes = {"container": container_id, "name": name, "type": driver}
    bus.publish("network", action, network_id, attributes)
