"""A started exec's input and output: the file descriptors its process gets, and what the
daemon reads and writes at their other ends.

Without a TTY: a pipe per attached stream (``/dev/null`` for stdin not attached; an output
not attached is read and dropped, so the process never blocks on it). With one: the runtime
makes the terminal in the container (its devpts, so ``tty`` names it) and hands its master
over; input, output and the size go through the master. Output goes to the attached client
through a bounded stream; detached, it is dropped, as dockerd's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .detach import DetachableInput
from .fdio import chunks

__all__ = ["ExecIO"]

_CHUNK = 32 * 1024


class ExecIO:
    """The daemon's ends of one exec's stdio (see the module docstring)."""

    def __init__(
        self,
        *,
        tty: bool,
        stdin: bool,
        keep_output: bool,
        streams: frozenset[str] = frozenset({"stdout", "stderr"}),
        detach_keys: bytes = b"",
    ) -> None:
        self.tty = tty
        #: The outputs the client attached (a terminal's is stdout); the others are dropped.
        self._streams = streams if not tty or not streams else frozenset({"stdout"})
        #: The client's input; its detach keys end its attachment (the process runs on).
        self._input = DetachableInput(detach_keys)
        #: Called when the client detaches (the daemon's event).
        self.on_detach: Callable[[], None] | None = None
        self._fds: list[int] = []  # the daemon's ends, closed by close()
        self._child: list[int] = []  # the process's ends, closed once it has them
        self._readers: list[tuple[str, int]] = []
        self._stdin: int | None = None
        self._size: tuple[int, int] | None = None
        self._begun = anyio.Event()
        self._on_resize: Callable[[], None] | None = None
        send, receive = anyio.create_memory_object_stream[tuple[str, bytes]](64)
        self._send: MemoryObjectSendStream[tuple[str, bytes]] | None = send if keep_output else None
        self._receive: MemoryObjectReceiveStream[tuple[str, bytes]] = receive
        if not keep_output:
            send.close()
        try:
            self._wants_stdin = stdin
            self._console = anyio.Event()
            if tty:
                # The runtime makes the terminal inside the container and hands its master
                # over (console()); the runtime's own stdio is nothing.
                null = self._devnull()
                self.stdio = (null, null, null)
            else:
                stdin_fd = self._pipe_in() if stdin else self._devnull()
                stdout_w = self._pipe_out("stdout")
                stderr_w = self._pipe_out("stderr")
                self.stdio = (stdin_fd, stdout_w, stderr_w)
            for fd in self._fds:
                os.set_blocking(fd, False)
        except BaseException:
            self.close()
            raise

    def _devnull(self) -> int:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._child.append(fd)
        return fd

    def _pipe_in(self) -> int:
        read, write = os.pipe2(os.O_CLOEXEC)
        self._child.append(read)
        self._fds.append(write)
        self._stdin = write
        return read

    def _pipe_out(self, stream: str) -> int:
        read, write = os.pipe2(os.O_CLOEXEC)
        self._child.append(write)
        self._fds.append(read)
        self._readers.append((stream, read))
        return write

    def begin(self) -> None:
        """The client is ready for output (its stream's head is out): the process may start."""
        self._begun.set()

    async def begun(self) -> None:
        await self._begun.wait()

    def console(self, master: int, on_resize: Callable[[], None] | None = None) -> None:
        """The terminal's master, from the runtime: output and input go through it
        (``on_resize``: what else tells the runtime of a new size)."""
        os.set_blocking(master, False)
        self._on_resize = on_resize
        self._fds.append(master)
        if self._size is not None:
            self.resize(*self._size)
        self._readers.append(("stdout", master))
        self._stdin = master if self._wants_stdin else None
        self._console.set()

    def handed(self) -> None:
        """The process has its ends (or failed to start): the daemon's copies close, so that
        the output ends when the process's last holder does."""
        for fd in self._child:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child.clear()
        self._console.set()  # (a terminal that never came: no output to wait for)

    async def pump(self) -> None:
        """Read every output to its end, into the client's stream (or nowhere)."""
        if self.tty:
            await self._console.wait()
        async with anyio.create_task_group() as tg:
            for stream, fd in self._readers:
                tg.start_soon(self._read, stream, fd)

    async def error(self, message: str) -> None:
        """What the runtime said when the process could not start, on the client's stderr."""
        if self._send is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._send.send(("stderr", message.encode() + b"\n"))

    def finish(self) -> None:
        """No more output: the client's stream ends (once the exit code is known, so that a
        client that asks for it next finds it)."""
        if self._send is not None:
            self._send.close()

    async def _read(self, stream: str, fd: int) -> None:
        async for data in chunks(fd, _CHUNK):
            if self._send is not None and stream in self._streams:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await self._send.send((stream, data))

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        """The process's output, until it ends (reading it lets the process start)."""
        self.begin()
        async with self._receive:
            async for item in self._receive:
                yield item

    @property
    def detached(self) -> bool:
        return self._input.detached

    async def send(self, data: bytes) -> bool:
        """Input for the process (nothing if its stdin is not attached, or closed); True once
        the client's detach keys came (the rest is dropped; ``on_detach`` is called once)."""
        if self._input.detached:
            return True
        data = self._input.take(data)
        if self._input.detached and self.on_detach is not None:
            self.on_detach()
        await self._write(data)
        return self._input.detached

    async def _write(self, data: bytes) -> None:
        if self.tty:
            # Input that comes before the runtime has made the terminal waits for it (else
            # it would be dropped: there is nowhere to write it yet).
            await self._console.wait()
        fd = self._stdin
        view = memoryview(data)
        while view and fd is not None and fd == self._stdin:
            await anyio.wait_writable(fd)
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
            except OSError:  # the process is gone
                return

    def close_stdin(self) -> None:
        """End of input (with a terminal: its EOF character; the terminal stays)."""
        fd, self._stdin = self._stdin, None
        if fd is None:
            return
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(fd, b"\x04")
            return
        with contextlib.suppress(OSError):
            os.close(fd)
        self._fds.remove(fd)

    def resize(self, height: int, width: int) -> None:
        if self.tty and self._fds:
            size = struct.pack("HHHH", height, width, 0, 0)
            fcntl.ioctl(self._fds[0], termios.TIOCSWINSZ, size)
            if self._on_resize is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._on_resize()
        else:
            self._size = (height, width)  # (the terminal is not there yet)

    def close(self) -> None:
        self.finish()
        self.handed()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self._stdin = None
