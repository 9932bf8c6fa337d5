"""A container's standard streams: FIFOs or a pty, stdin writes and close, output pumping.

Without a terminal, the streams are FIFOs in the bundle (``init-std{in,out,err}``): runc gets
the process's ends, the daemon keeps its own, and a reopened daemon can open them again. With
one (``Config.Tty``), runc sends the pty's master over a console socket; output is then a
single stream and input is written to the master.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import struct
import tempfile
import termios
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import anyio
import anyio.abc

from ..fdio import chunks
from ..logs import JsonFileWriter
from .base import RuntimeFailure, Stdio
from .bundle import BundleDir

__all__ = ["ChildStdio", "ConsoleSocket", "ContainerStdio"]

_OUTPUT = ("stdout", "stderr")


def _make_fifo(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.mkfifo(path, 0o600)


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class ConsoleSocket:
    """A listening unix socket on which runc sends a container's pty master.

    It lives in a short temporary directory: a socket path is limited to 107 bytes. runc's
    connection waits in the backlog until ``runc create`` has returned, so nothing needs to
    accept meanwhile.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="asyncstart-pty-")
        #: The socket's path, for ``runc --console-socket``.
        self.path = os.path.join(self._dir, "pty.sock")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.bind(self.path)
            self._socket.listen(1)
        except BaseException:
            self.close()
            raise

    def receive(self) -> int:
        """The pty master runc sent (non-blocking); waits at most 5 s for runc's connection."""
        self._socket.settimeout(5)
        connection, _ = self._socket.accept()
        with connection:
            _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
        if not fds:
            raise RuntimeFailure("runc sent no console")
        master = fds[0]
        os.set_blocking(master, False)
        return master

    def close(self) -> None:
        """Close the socket and remove its directory."""
        self._socket.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(slots=True)
class ChildStdio:
    """The process's side of its stdio while runc creates it."""

    #: runc's ``stdin``/``stdout``/``stderr`` (the FIFOs' process ends), passed on to the process.
    fds: dict[str, int] = field(default_factory=dict)
    #: Where runc sends the pty master instead (a terminal).
    console: ConsoleSocket | None = None


@dataclass(slots=True)
class ContainerStdio:
    """The daemon's ends of one container's standard streams, and where its output goes."""

    wanted: Stdio
    #: Our write end of the process's stdin (the FIFO, or a dup of the pty master); -1: none.
    stdin: int = -1
    #: Our stdio is a pty master, not FIFOs.
    tty: bool = False
    #: The pty master, kept for resizes; -1: none.
    console: int = -1
    #: Whether the last input written ended a line (a terminal's ^D ends input only there).
    at_line_start: bool = True
    #: Output fds not yet handed to a pump, with their stream.
    readers: list[tuple[str, int]] = field(default_factory=list)
    #: Output streams still being copied; the exit is reported once they are drained.
    pumping: int = 0
    #: The container's log, shared by its streams (one writer decides rotations); opened by
    #: the first pump, closed by the last.
    log: JsonFileWriter | None = None
    drained: anyio.Event = field(default_factory=anyio.Event)

    # -- setting up ------------------------------------------------------------------------

    @contextlib.contextmanager
    def child_ends(self, bundle: BundleDir) -> Iterator[ChildStdio]:
        """Make the process's stdio for ``runc create``: a console socket for a terminal, else
        the FIFOs (our ends kept here). The process's ends are closed when the block ends: runc
        has passed them on by then."""
        if self.wanted.tty:
            with ConsoleSocket() as console:
                yield ChildStdio(console=console)
            return
        child = ChildStdio()
        try:
            for stream in _OUTPUT:
                path = bundle.fifo(stream)
                _make_fifo(path)
                self.readers.append((stream, os.open(path, os.O_RDONLY | os.O_NONBLOCK)))
                child.fds[stream] = os.open(path, os.O_WRONLY)
            if self.wanted.open_stdin:
                path = bundle.fifo("stdin")
                _make_fifo(path)
                read_end = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                child.fds["stdin"] = read_end
                # Both ends open non-blocking, the reader first (a blocking open would wait for
                # the other end); the process's end then blocks on reads, as a stdin should.
                self.stdin = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                flags = fcntl.fcntl(read_end, fcntl.F_GETFL)
                fcntl.fcntl(read_end, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
            yield child
        finally:
            _close_all(child.fds.values())

    def take_console(self, child: ChildStdio) -> None:
        """After ``runc create``: take the pty master runc sent, if it was asked for one."""
        if child.console is None:
            return
        master = child.console.receive()
        self.tty = True
        self.console = os.dup(master)
        self.readers.append(("stdout", master))  # a terminal has one output stream
        if self.wanted.open_stdin:
            self.stdin = os.dup(master)

    def reopen(self, bundle: BundleDir) -> None:
        """After a daemon restart: open the FIFOs that are still there again."""
        for stream in _OUTPUT:
            with contextlib.suppress(OSError):
                path = bundle.fifo(stream)
                self.readers.append((stream, os.open(path, os.O_RDONLY | os.O_NONBLOCK)))
        if self.wanted.open_stdin:
            with contextlib.suppress(OSError):
                self.stdin = os.open(bundle.fifo("stdin"), os.O_WRONLY | os.O_NONBLOCK)

    # -- output ----------------------------------------------------------------------------

    def start_pumps(self, tg: anyio.abc.TaskGroup) -> None:
        """Copy every output stream in its own task until the container closes it."""
        readers, self.readers = self.readers, []
        self.pumping = len(readers)
        if not readers:
            self.drained.set()
        for stream, fd in readers:
            tg.start_soon(self._pump, fd, stream)

    async def _pump(self, fd: int, stream: str) -> None:
        try:
            if self.wanted.log_path and self.log is None:
                self.log = JsonFileWriter(self.wanted.log_path, self.wanted.log_options)
            log_file = self.log
            async for chunk in chunks(fd):  # (to the end: EOF, or a pty's other side closed)
                if self.wanted.on_output is not None:
                    self.wanted.on_output(stream, chunk)
                if log_file is not None:
                    log_file.write(stream, chunk)
        finally:
            os.close(fd)
            self.pumping -= 1
            if self.pumping == 0:
                log_file, self.log = self.log, None
                try:
                    if log_file is not None:
                        log_file.close()
                finally:
                    self.drained.set()

    # -- input -----------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Write all of ``data`` to the process's stdin, waiting while the pipe is full."""
        view = memoryview(data)
        while view:
            if self.stdin < 0:
                raise RuntimeFailure("stdin is closed")
            await anyio.wait_writable(self.stdin)
            try:
                written = os.write(self.stdin, view)
                self.at_line_start = (
                    bytes(view[written - 1 : written]) == b"\n" if written else True
                )
                view = view[written:]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise RuntimeFailure("the container closed its stdin") from None

    def resize(self, height: int, width: int) -> None:
        """Give the terminal a new size (rows, columns); nothing without one."""
        if self.console >= 0:
            fcntl.ioctl(self.console, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close_stdin(self) -> None:
        """End the process's input (EOF); nothing if it is closed already."""
        if self.stdin < 0:
            return
        if self.tty:
            # A terminal cannot be half-closed: end the input as a typist would (^D; twice
            # after a partial line, where the first only flushes the line).
            with contextlib.suppress(OSError):
                os.write(self.stdin, b"\x04" if self.at_line_start else b"\x04\x04")
        os.close(self.stdin)
        self.stdin = -1

    def close(self) -> None:
        """Let go of every fd not handed to a pump (the pumps close their own)."""
        _close_all([fd for _, fd in self.readers] + [self.stdin, self.console])
        self.readers, self.stdin, self.console = [], -1, -1
