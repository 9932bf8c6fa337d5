"""conmon as every container's monitor: the runtime interface on runc or crun, with a small
process per container that outlives the engine (podman's and CRI-O's ``conmon``).

The engine runs ``conmon``, which runs the OCI runtime's ``create`` and reports the init's pid
on a sync pipe; the engine then runs ``start`` itself. From then on conmon, not the engine,
holds the container's standard streams:

- it writes stdout and stderr to the container's log in the ``k8s-file`` format (read by
  :mod:`asyncstart.logs.reader`), so output written while no engine runs is kept;
- it serves the **attach socket** (``<bundle>/attach``, ``SOCK_SEQPACKET``): the engine keeps
  one connection per container, reads the output from it for attached clients (each message
  is a stream byte, 2 stdout or 3 stderr, then the data) and writes input to it. A container
  whose stdin is not ``StdinOnce`` is run with ``--leave-stdin-open``, so a connection that
  ends — an engine that dies — does not close it; a ``StdinOnce`` one has its stdin closed
  when the engine shuts its half of the connection, as dockerd closes it;
- it waits for the init (it is its subreaper), then writes the exit code to
  ``<exit dir>/<id>`` (and ``<bundle>/oom`` if the memory cgroup killed a process: dockerd's
  ``OOMKilled``) and exits. The engine watches conmon by pidfd: when conmon ends, the
  exit file has the code, and its time of change the ``FinishedAt``;
- a terminal is conmon's too (``-t``); a resize is written to its control FIFO
  (``<bundle>/ctl``).

After a daemon restart the engine finds each container's conmon by its pid file, checks it
is that container's conmon, connects to the attach socket again and watches it; a container
that ended meanwhile is reported with the code and time from its exit file.

A bundle without a conmon pid file was created by an engine without a monitor: it is taken
back by :class:`~asyncstart.runtime.runc.RuncRuntime`'s own means (FIFOs, pidfd on the init).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import structlog

from .base import Bundle, RuntimeBackend, RuntimeFailure, StateInfo, Stdio
from .bundle import BundleDir
from .reaper import InitProcess
from .runc import RuncRuntime, _Container
from .runc_cli import RuntimeChoice, create_failure, launcher

__all__ = ["ConmonRuntime", "conmon_binary", "monitorable"]

log = structlog.get_logger("asyncstart.runtime.conmon")

#: conmon's attach framing: the first byte of each message it sends names the stream.
_STREAMS = {2: "stdout", 3: "stderr"}
#: conmon reads and sends at most this much per message (its ``CONN_SOCK_BUF_SIZE``).
_MESSAGE = 32768
#: conmon's control FIFO message for a terminal resize.
_RESIZE = 1


def monitorable(stdio: Stdio) -> bool:
    """Whether conmon can keep this container's log as asked. conmon rotates a log only by
    starting it over (``--log-size-max``: dockerd's ``max-file`` 1); a log that keeps older
    files (``max-file`` > 1) is written by the engine, from FIFOs, as without a monitor."""
    return stdio.log_options.max_size <= 0 or stdio.log_options.max_file <= 1


def conmon_binary() -> str | None:
    """The ``conmon`` on this host's PATH, or None."""
    return shutil.which("conmon")


class _AttachConnection:
    """The engine's connection to one container's conmon attach socket: output for attached
    clients, input for the process."""

    def __init__(self, wanted: Stdio) -> None:
        self.wanted = wanted
        self._socket: socket.socket | None = None
        self._input_open = wanted.open_stdin
        #: Whether the last input written ended a line (a terminal's ^D ends input only there).
        self._at_line_start = True
        #: Set when conmon has closed the connection (the container is gone).
        self.drained = anyio.Event()

    def connect(self, bundle: BundleDir) -> None:
        """Connect to the socket in the bundle, whatever the bundle's path length (through
        ``/proc/self/fd``: a socket path is limited to 107 bytes)."""
        directory = os.open(bundle.path, os.O_PATH | os.O_CLOEXEC)
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            connection.connect(f"/proc/self/fd/{directory}/attach")
        except OSError as exc:
            connection.close()
            raise RuntimeFailure(f"cannot reach the container's monitor: {exc.strerror}") from exc
        finally:
            os.close(directory)
        connection.setblocking(False)
        self._socket = connection

    async def pump(self) -> None:
        """Hand every chunk of output to the attached clients until conmon closes."""
        connection = self._socket
        try:
            while connection is not None:
                await anyio.wait_readable(connection)
                try:
                    message = connection.recv(_MESSAGE + 1)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not message:
                    break
                stream = _STREAMS.get(message[0])
                if stream is None:
                    continue
                if self.wanted.on_output is not None:
                    self.wanted.on_output(stream, message[1:])
        finally:
            self.drained.set()

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the process's stdin, in messages conmon reads whole."""
        view = memoryview(data)
        while view:
            connection = self._socket
            if connection is None or not self._input_open:
                raise RuntimeFailure("stdin is closed")
            await anyio.wait_writable(connection)
            try:
                sent = connection.send(view[:_MESSAGE])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise RuntimeFailure(f"the container's monitor is gone: {exc.strerror}") from None
            self._at_line_start = bytes(view[sent - 1 : sent]) == b"\n" if sent else True
            view = view[sent:]

    def close_input(self) -> None:
        """End the process's input: ^D on a terminal (twice after a partial line), else the
        engine's half of the connection is shut, on which conmon closes the stdin (not for a
        stdin it was told to leave open: dockerd keeps a non-``StdinOnce`` stdin open too)."""
        connection = self._socket
        if connection is None or not self._input_open:
            return
        if self.wanted.open_stdin and not self.wanted.stdin_once and not self.wanted.tty:
            raise RuntimeFailure("stdin stays open: the container is not StdinOnce")
        self._input_open = False
        with contextlib.suppress(OSError):
            if self.wanted.tty:
                connection.send(b"\x04" if self._at_line_start else b"\x04\x04")
            else:
                connection.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _tell(control: Path, kind: int, height: int, width: int) -> None:
    """Write one message to conmon's control FIFO (never blocks: conmon holds it open)."""
    try:
        fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeFailure(f"the container's monitor is gone: {exc.strerror}") from exc
    try:
        os.write(fd, f"{kind} {height} {width}\n".encode())
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Monitored:
    """A container under conmon, as the engine knows it."""

    bundle: BundleDir
    runtime: RuntimeChoice
    attach: _AttachConnection
    #: conmon's pid and a pidfd on it: it ends once the container has ended.
    conmon: InitProcess = field(default_factory=InitProcess)
    #: The container's init.
    pid: int = 0
    #: Its process runs (a restore, or ``start`` has run).
    running: bool = False

    def close(self) -> None:
        self.attach.close()
        self.conmon.close()

    @property
    def conmon_pid_file(self) -> Path:
        return self.bundle.path / "conmon.pid"


class ConmonRuntime(RuncRuntime):
    """Runs containers with runc or crun under conmon; see the module docstring.

    As :class:`RuncRuntime` (``state_root`` is the runtime's ``--root``); ``conmon`` is
    conmon's binary. Exit files go to ``<state_root>/../conmon-exits``, conmon's socket
    links to ``<state_root>/../conmon-attach``.
    """

    def __init__(self, state_root: Path, *, conmon: str = "conmon", **kwargs: object) -> None:
        super().__init__(state_root, **kwargs)  # type: ignore[arg-type]
        self.conmon = conmon
        self.exit_dir = state_root.parent / "conmon-exits"
        self.socket_dir = state_root.parent / "conmon-attach"

    async def run(
        self,
        backend: RuntimeBackend,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        for directory in (self.exit_dir, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        await super().run(backend, task_status=task_status)

    def _monitored(self, container_id: str) -> _Monitored | None:
        box = self._containers.get(container_id)
        return box if isinstance(box, _Monitored) else None

    def _adopt(self, container_id: str, box: _Monitored) -> None:
        assert self._tg is not None, "ConmonRuntime.run() is not running"
        self._containers[container_id] = box  # type: ignore[assignment]
        self._tg.start_soon(box.attach.pump)

    # -- create ----------------------------------------------------------------------------

    def _new_box(  # type: ignore[override]
        self, directory: BundleDir, runtime: RuntimeChoice, stdio: Stdio, restoring: bool
    ) -> _Monitored | _Container:
        """A container under conmon, unless its log needs the engine (``monitorable``)."""
        if not monitorable(stdio):
            return super()._new_box(directory, runtime, stdio, restoring)
        return _Monitored(directory, runtime, _AttachConnection(stdio), running=restoring)

    async def _spawn(
        self,
        container_id: str,
        bundle: Bundle,
        box: _Monitored | _Container,
        checkpoint: str | None,
        checkpoint_dir: str | None,
    ) -> None:
        if isinstance(box, _Container):
            await super()._spawn(container_id, bundle, box, checkpoint, checkpoint_dir)
        else:
            await self._launch(container_id, bundle, box, checkpoint, checkpoint_dir)

    async def _discard(self, container_id: str, box: _Monitored | _Container) -> None:
        """A failed create under conmon: the runtime's container is deleted, conmon ends with
        it and is reaped, its files go."""
        if isinstance(box, _Container):
            await super()._discard(container_id, box)
            return
        box.attach.close()
        await self._delete_leftover(container_id, box.runtime)
        await box.conmon.reap()
        box.close()
        self._forget_files(container_id)

    def _watch(self, container_id: str, box: _Monitored | _Container) -> None:
        """conmon's output pumped from now on; its exit watched from the start (a restore
        runs at once)."""
        if isinstance(box, _Container):
            super()._watch(container_id, box)
            return
        self._adopt(container_id, box)
        if box.running:
            assert self._tg is not None
            self._tg.start_soon(self._watch_conmon, container_id, box)

    async def _launch(
        self,
        container_id: str,
        bundle: Bundle,
        box: _Monitored,
        checkpoint: str | None,
        checkpoint_dir: str | None,
    ) -> None:
        box.bundle.write(bundle.spec, owner=bundle.owner, runtime=box.runtime)
        with contextlib.suppress(FileNotFoundError):
            (self.exit_dir / container_id).unlink()
        argv = self._argv(container_id, box, checkpoint, checkpoint_dir)
        sync_read, sync_write = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                result = await anyio.run_process(
                    argv,
                    check=False,
                    cwd=box.bundle.path,  # (where conmon would write an ``oom`` file without -0)
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "_OCI_SYNCPIPE": str(sync_write)},
                    pass_fds=(sync_write,),
                )
            except OSError as exc:
                raise RuntimeFailure(f"failed to run conmon: {exc.strerror}") from exc
            finally:
                os.close(sync_write)
            if result.returncode != 0:
                message = (result.stderr or result.stdout).decode(errors="replace").strip()
                raise RuntimeFailure(f"conmon failed: {message}")
            # conmon's parent has written the pid file and gone; its daemon half (re-parented
            # to this process, the subreaper) runs the create.
            with contextlib.suppress(OSError, ValueError):
                box.conmon.open(int(box.conmon_pid_file.read_text()))
            pid, message = await _read_sync(sync_read)
        finally:
            os.close(sync_read)
        if pid <= 0:
            command = "restore" if checkpoint else "create"
            binary = box.runtime.binary or self.binary
            raise create_failure(box.bundle.runc_log, message, binary, command)
        if box.conmon.pidfd < 0:
            raise RuntimeFailure("conmon left no pid file")
        box.pid = pid
        box.attach.connect(box.bundle)

    def _argv(
        self,
        container_id: str,
        box: _Monitored,
        checkpoint: str | None,
        checkpoint_dir: str | None,
    ) -> list[str]:
        """conmon's command line: the runtime (through its launcher, as runtime arguments),
        the bundle, where the pids, exit code, log and sockets go, and the stdio asked for."""
        binary = box.runtime.binary or self.binary
        prefix = launcher(binary)
        runtime_args = [
            *prefix[1:],
            *((binary,) if prefix else ()),
            "--root", str(self.state_root),
            "--log", str(box.bundle.runc_log), "--log-format", "json",
            *self.runtime_args, *box.runtime.flags,
        ]  # fmt: skip
        executable = shutil.which(prefix[0] if prefix else binary) or binary
        wanted = box.attach.wanted
        options = wanted.log_options
        argv = [
            self.conmon, "--api-version", "1",
            "-c", container_id, "-u", container_id, "-n", container_id,
            "-r", executable, "-b", str(box.bundle.path),
            "-p", str(box.bundle.pid_file), "-P", str(box.conmon_pid_file),
            "-0", str(box.bundle.path),
            "--exit-dir", str(self.exit_dir), "--socket-dir-path", str(self.socket_dir),
            "-l", f"k8s-file:{wanted.log_path}" if wanted.log_path else "none",
            "--log-level", "error",
        ]  # fmt: skip
        for arg in runtime_args:
            argv += ["--runtime-arg", arg]
        if options.max_size > 0 and options.max_file <= 1:
            argv += ["--log-size-max", str(options.max_size)]
        if wanted.open_stdin:
            argv.append("-i")
            if not wanted.stdin_once:
                argv.append("--leave-stdin-open")
        if wanted.tty:
            argv.append("-t")
        if self.no_pivot_root:
            argv.append("--no-pivot")
        if checkpoint:
            argv += ["--restore", os.path.join(checkpoint_dir or "", checkpoint)]
        return argv

    # -- the running process ---------------------------------------------------------------

    async def start(self, container_id: str) -> None:
        """``start`` (unless the create started it: a restore), then the start is reported,
        and conmon is watched for the exit."""
        box = self._monitored(container_id)
        if box is None:
            await super().start(container_id)
            return
        if not box.running:
            await self._cli.checked("start", container_id, runtime=box.runtime)
            box.running = True
            assert self._tg is not None
            self._tg.start_soon(self._watch_conmon, container_id, box)
        assert self._backend is not None
        self._backend.state_changed(container_id, StateInfo("start", pid=box.pid, at=time.time()))

    async def _watch_conmon(self, container_id: str, box: _Monitored) -> None:
        """conmon ends once the container has ended and its output is logged: the exit is
        reported with the code conmon wrote and the time it wrote it."""
        with box.conmon.watch:
            await box.conmon.wait()
            with anyio.move_on_after(2):
                await box.attach.drained.wait()
            code, at = self._exit_file(container_id)
            assert self._backend is not None
            oom = (box.bundle.path / "oom").exists()
            if oom:  # as dockerd: the oom event, then the exit that says so
                self._backend.state_changed(container_id, StateInfo("oom", pid=box.pid, at=at))
            info = StateInfo("exit", pid=box.pid, exit_code=code, at=at, oom_killed=oom)
            self._backend.state_changed(container_id, info)

    def _exit_file(self, container_id: str) -> tuple[int, float]:
        """The exit code conmon wrote, and when; 255 and now if it wrote none (it was
        killed)."""
        path = self.exit_dir / container_id
        try:
            return int(path.read_text().strip()), path.stat().st_mtime
        except (OSError, ValueError):
            return 255, time.time()

    async def write_stdin(self, container_id: str, data: bytes) -> None:
        box = self._monitored(container_id)
        if box is None:
            await super().write_stdin(container_id, data)
            return
        await box.attach.write(data)

    async def close_stdin(self, container_id: str) -> None:
        box = self._monitored(container_id)
        if box is None:
            await super().close_stdin(container_id)
            return
        box.attach.close_input()

    async def resize(self, container_id: str, height: int, width: int) -> None:
        """A terminal's new size, through conmon's control FIFO."""
        box = self._monitored(container_id)
        if box is None:
            await super().resize(container_id, height, width)
            return
        if box.attach.wanted.tty:
            _tell(box.bundle.path / "ctl", _RESIZE, height, width)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """The runtime's ``delete``; conmon ends with the container (reaped here if it is
        this engine's), then its files and the bundle go."""
        box = self._monitored(container_id)
        if box is None:
            await super().delete(container_id, force=force)
            self._forget_files(container_id)
            return
        await self._cli.delete(container_id, runtime=box.runtime, force=force)
        del self._containers[container_id]
        box.conmon.watch.cancel()
        await box.conmon.reap()
        box.close()
        self._forget_files(container_id)
        box.bundle.remove()

    def _forget_files(self, container_id: str) -> None:
        """Remove the exit file and conmon's socket link of a container."""
        for path in (self.exit_dir / container_id, self.socket_dir / container_id):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- after a daemon restart ------------------------------------------------------------

    async def restore(self, container_id: str, stdio: Stdio) -> StateInfo | None:
        """Take a container back from its conmon: connected and watched again if it runs,
        else reported ended with its true exit code and time (its leftovers deleted)."""
        bundle = BundleDir(self.state_root.parent / container_id)
        box = _Monitored(bundle, bundle.runtime(), _AttachConnection(stdio))
        try:
            conmon_pid = int(box.conmon_pid_file.read_text())
        except (OSError, ValueError):
            # Not created under conmon (an engine without a monitor made it), or gone.
            return await super().restore(container_id, stdio)
        with contextlib.suppress(OSError, ValueError):
            box.pid = bundle.read_pid()
        if _is_conmon_of(conmon_pid, container_id):
            with contextlib.suppress(ProcessLookupError):
                box.conmon.open(conmon_pid)
        if box.conmon.pidfd >= 0 and box.pid > 0:
            try:
                box.attach.connect(bundle)
            except RuntimeFailure:
                box.close()  # conmon is ending: its exit file follows
                await _wait_gone(conmon_pid)
            else:
                box.running = True
                self._adopt(container_id, box)
                assert self._tg is not None
                self._tg.start_soon(self._watch_conmon, container_id, box)
                return StateInfo("start", pid=box.pid)
        box.close()
        code, at = self._exit_file(container_id)
        oom = (bundle.path / "oom").exists()
        await self._cli.quietly("delete", "--force", container_id, runtime=box.runtime)
        self._forget_files(container_id)
        bundle.remove()
        return StateInfo("exit", pid=box.pid, exit_code=code, at=at, oom_killed=oom)

    async def cleanup(self, keep: set[str]) -> None:
        """As :meth:`RuncRuntime.cleanup` (each stray's conmon ends with it), and the exit
        files and socket links of containers not kept."""
        await super().cleanup(keep)
        for directory in (self.exit_dir, self.socket_dir):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.listdir(directory):
                    if entry not in keep:
                        with contextlib.suppress(OSError):
                            os.unlink(directory / entry)


async def _read_sync(fd: int) -> tuple[int, str]:
    """conmon's first sync-pipe message (``{"data": pid}``, or ``-1`` and a message), or
    (0, "") if conmon ended without one."""
    os.set_blocking(fd, False)
    received = b""
    while b"\n" not in received:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            break
        received += chunk
    line = received.split(b"\n", 1)[0]
    if not line:
        return 0, ""
    try:
        message = json.loads(line)
        return int(message.get("data", 0)), str(message.get("message", ""))
    except (ValueError, AttributeError):
        return 0, line.decode(errors="replace")


def _is_conmon_of(pid: int, container_id: str) -> bool:
    """Whether ``pid`` is conmon for this container (a pid may have been reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]) == b"conmon" and container_id.encode() in argv


async def _wait_gone(pid: int) -> None:
    """Wait (up to 2 s) for a process that is not this engine's child to end."""
    with contextlib.suppress(OSError):
        fd = os.pidfd_open(pid)
        try:
            with anyio.move_on_after(2):
                await anyio.wait_readable(fd)
        finally:
            os.close(fd)
