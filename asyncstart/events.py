"""The event bus: Docker-shaped event messages, fanned out to subscribers.

Publishing never blocks the engine: each subscriber has a bounded buffer, and a subscriber that
falls that far behind loses events (counted in :attr:`EventBus.dropped`) rather than stalling
every container — dockerd's publisher likewise gives up on a slow subscriber. The last events
are kept for ``since`` queries.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["EventBus"]

Message = dict[str, Any]


class EventBus:
    def __init__(self, *, buffer: int = 1024, history: int = 256) -> None:
        self._buffer = buffer
        self._subscribers: set[MemoryObjectSendStream[Message]] = set()
        self._history: collections.deque[Message] = collections.deque(maxlen=history)
        self.dropped = 0

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

    def history(self) -> list[Message]:
        """The last events published, oldest first."""
        return list(self._history)

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
