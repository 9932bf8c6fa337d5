"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from asyncstart import Daemon


async def create(daemon: Daemon, name: str | None = None, *cmd: str, **host: Any) -> str:
    config: dict[str, Any] = {"Image": "busybox", "Cmd": list(cmd or ("sleep", "infinity"))}
    return await daemon.container_create(name=name, config=config, host_config=host)


async def next_action(
    events: MemoryObjectReceiveStream[dict[str, Any]], action: str
) -> dict[str, Any]:
    """The next event with this action (skipping others); waits on the stream, never sleeps."""
    async for event in events:
        if event["Action"] == action:
            return event
    raise AssertionError(f"event stream ended before {action!r}")


def actions(events: MemoryObjectReceiveStream[dict[str, Any]]) -> list[str]:
    """The container events already delivered, without waiting."""
    seen = []
    while True:
        try:
            event = events.receive_nowait()
            if event["Type"] == "container":
                seen.append(event["Action"])
        except anyio.WouldBlock:
            return seen
