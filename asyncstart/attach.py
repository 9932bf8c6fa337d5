"""Attaching to a container: its output fanned out to clients, their input to its stdin.

One :class:`StdioHub` per container outlives its runs. Output of a run goes to every attached
client until the run ends (then their streams end). Input sent before the process exists is kept
and written, in order, as soon as the runtime has created it — before a pending stdin close is
carried out — so ``echo hi | docker run -i busybox cat`` prints ``hi`` whatever the order of the
client's EOF and the start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import errors
from ._log import get_logger
from .detach import DetachableInput
from .stdin import StdinCloser

__all__ = [
    "AttachSession",
    "ContainerIO",
    "StdinSink",
    "StdioHub",
]

log = get_logger("asyncstart.attach")

Output = tuple[str, bytes]


class StdioHub:
    """``watching`` is told when the first client comes and the last goes: output is only
    fetched from a container while someone attached wants it."""

    def __init__(self, buffer: int = 1024, watching: Callable[[bool], None] | None = None) -> None:
        self._buffer = buffer
        self._watching = watching
        self._clients: dict[MemoryObjectSendStream[Output], frozenset[str]] = {}
        self._pending: list[bytes] = []
        #: True while a process exists and its stdin takes writes directly.
        self.ready = False

    # -- output ----------------------------------------------------------------------------

    def subscribe(self, streams: frozenset[str]) -> MemoryObjectReceiveStream[Output]:
        send, receive = anyio.create_memory_object_stream[Output](self._buffer)
        self._clients[send] = streams
        if len(self._clients) == 1:
            self._watch(True)
        return receive

    def unsubscribe(self, receive: MemoryObjectReceiveStream[Output]) -> None:
        receive.close()
        # Its sending end is dropped now (not at the next output), so the count is right.
        for client in [c for c in self._clients if c.statistics().open_receive_streams == 0]:
            client.close()
            del self._clients[client]
        if not self._clients:
            self._watch(False)

    def _watch(self, wanted: bool) -> None:
        if self._watching is not None:
            self._watching(wanted)

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
                if not self._clients:
                    self._watch(False)

    def run_ended(self) -> None:
        """The process ended: every attached client's stream ends."""
        self.ready = False
        self._pending.clear()
        for client in self._clients:
            client.close()
        if self._clients:
            self._clients.clear()
            self._watch(False)

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


class StdinSink(Protocol):
    """Where a container's input goes (the runtime's process controls)."""

    async def write_stdin(self, container_id: str, data: bytes) -> None: ...

    async def close_stdin(self, container_id: str) -> None: ...

    def watch_output(self, container_id: str, wanted: bool) -> None: ...


class ContainerIO:
    """A container's standard streams across its runs: the :class:`StdioHub`, and the one-shot
    stdin close of the current run (:class:`~asyncstart.stdin.StdinCloser`), so a client's EOF
    that comes before the process exists is carried out once it does, or dropped if the start
    fails — without the start ever waiting for it."""

    def __init__(self, container_id: str, sink: StdinSink, *, open_stdin: bool) -> None:
        self._container_id = container_id
        self._sink = sink
        self._open_stdin = open_stdin
        self.hub = StdioHub(watching=lambda wanted: sink.watch_output(container_id, wanted))
        self._closer = StdinCloser()

    def adopted(self) -> None:
        """Reopened on a live process: its stdin takes input and closes directly."""
        self._closer.ready()
        self.hub.ready = True

    # -- clients ---------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """An attached client's input: to the process now, or once it exists."""
        if not self._open_stdin:
            return  # as dockerd: input to a container without an open stdin is dropped
        await self.hub.write(data, self._write)

    async def close_stdin(self) -> None:
        """Close the process's stdin now, or as soon as it is ready; never waits for it."""
        if self._closer.request():
            await self._sink.close_stdin(self._container_id)

    async def _write(self, data: bytes) -> None:
        await self._sink.write_stdin(self._container_id, data)

    # -- runs ------------------------------------------------------------------------------

    def process_created(self, task_group: anyio.abc.TaskGroup) -> None:
        """The start succeeded. Input kept for the process, then a pending close, are fed in a
        task of their own: a process that does not read never blocks the caller."""
        if self._open_stdin:
            task_group.start_soon(self._feed, self._closer)
        else:
            self._closer.ready()  # nothing to feed, and a close of no stdin is a no-op

    async def _feed(self, closer: StdinCloser) -> None:
        try:
            await self.hub.process_ready(self._write)
            if closer.ready():
                await self._sink.close_stdin(self._container_id)
        except errors.DockerError as exc:
            log.debug("stdin.feed_failed", container_id=self._container_id, error=exc.message)

    def start_failed(self) -> None:
        """The create failed: a pending close is dropped, attached clients' streams end."""
        self._closer.failed()
        self.run_ended()

    def run_ended(self) -> None:
        """The process is gone: the next run gets a fresh stdin; attached streams end."""
        self._closer = StdinCloser()
        self.hub.run_ended()


class AttachSession:
    """One attached client: its input to the container, the container's output to it.

    ``tty``: the output is one raw stream (a terminal's), not stdout and stderr apart.
    """

    def __init__(
        self,
        io: ContainerIO,
        output: MemoryObjectReceiveStream[Output],
        stdin: bool,
        *,
        tty: bool,
        once: bool,
        detach_keys: bytes = b"",
    ) -> None:
        self._io = io
        self._output = output
        self._stdin = stdin
        self._once = once
        self.tty = tty
        self._input = DetachableInput(detach_keys)

    @property
    def detached(self) -> bool:
        """The client sent its detach keys: its attachment ends, the process runs on."""
        return self._input.detached

    async def send(self, data: bytes) -> bool:
        """Input for the process; True once the client's detach keys came (what follows them
        is dropped, what came before goes on)."""
        if not self._stdin:
            raise errors.InvalidParameter("attached without stdin")
        if data := self._input.take(data):
            await self._io.write_stdin(data)
        return self._input.detached

    async def send_eof(self) -> None:
        """Close the container's stdin — now, or once its process is ready."""
        if self._stdin:
            await self._io.close_stdin()

    async def end_of_input(self) -> bool:
        """The client's input ended. dockerd's rule: with ``StdinOnce`` and no TTY (``docker
        run -i``) the container's stdin closes and the output goes on (True); otherwise the
        attach should end (False)."""
        if self._once and not self.tty:
            await self.send_eof()
            return True
        return False

    def __aiter__(self) -> AsyncIterator[Output]:
        return self._output.__aiter__()
