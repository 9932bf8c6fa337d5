"""Attaching to a container: its output fanned out to clients, their input to its stdin.

One :class:`StdioHub` per container outlives its runs. Output of a run goes to every attached
client until the run ends (then their streams end). Input sent before the process exists is kept
and written, in order, as soon as the runtime has created it — before a pending stdin close is
carried out — so ``echo hi | docker run -i busybox cat`` prints ``hi`` whatever the order of the
client's EOF and the start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["StdioHub"]

Output = tuple[str, bytes]


class StdioHub:
    def __init__(self, buffer: int = 1024) -> None:
        self._buffer = buffer
        self._clients: dict[MemoryObjectSendStream[Output], frozenset[str]] = {}
        self._pending: list[bytes] = []
        #: True while a process exists and its stdin takes writes directly.
        self.ready = False

    # -- output ----------------------------------------------------------------------------

    def subscribe(self, streams: frozenset[str]) -> MemoryObjectReceiveStream[Output]:
        send, receive = anyio.create_memory_object_stream[Output](self._buffer)
        self._clients[send] = streams
        return receive

    def unsubscribe(self, receive: MemoryObjectReceiveStream[Output]) -> None:
        receive.close()

    def publish(self, stream: str, data: bytes) -> None:
        """Called by the runtime for each chunk of output; never blocks it."""
        for client, streams in list(self._clients.items()):
            if stream not in streams:
                continue
            try:
                client.send_nowait((stream, data))
            except anyio.WouldBlock:
                pass  # a client that does not read loses output rather than stall the container
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                del self._clients[client]

    def run_ended(self) -> None:
        """The process ended: every attached client's stream ends."""
        self.ready = False
        self._pending.clear()
        for client in self._clients:
            client.close()
        self._clients.clear()

    # -- input -----------------------------------------------------------------------------

    async def write(self, data: bytes, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Write to the process's stdin now, or keep it until the process exists."""
        if self.ready:
            await write(data)
        else:
            self._pending.append(data)

    async def process_ready(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """The process exists: write what was kept, in order, then take writes directly."""
        while self._pending:
            await write(self._pending.pop(0))
        self.ready = True
