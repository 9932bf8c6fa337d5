"""conmon as every container's monitor: the runtime interface on runc or crun, with a small
process per container that outlives the engine (podman's and CRI-O's ``conmon``).

The engine runs ``conmon`` (``--sync``: it stays the engine's child, watched by a pidfd from
the moment it exists; the engine writes its pid file), which runs the OCI runtime's ``create``
and reports the init's pid on a sync pipe; the engine then runs ``start`` itself. A container
that no one needs connected before its process runs (no stdin, no attached client) is created
and started by one ``run --detach``: conmon's ``create`` is turned into it by a shell line
(:data:`_RUN_DETACHED`; on crun, by the shell of its launcher), which costs far less than a
second runtime process (and on crun saves 6-10 ms: its ``create`` is that much slower). conmon
reaps whatever comes to it, so an init that ends before crun's own child has exited is not lost
(without a monitor, crun creates then starts: see ``starts_in_one_call``). From then on
conmon, not the engine, holds the container's standard streams:

- it writes stdout and stderr to the container's log in the ``k8s-file`` format (read by
  :mod:`asyncstart.logs.reader`), so output written while no engine runs is kept;
- it serves the **attach socket** (``<bundle>/attach``, ``SOCK_SEQPACKET``): each message it
  sends is a stream byte (2 stdout, 3 stderr) and the data; what a client sends goes to the
  stdin. conmon writes to its clients with blocking writes, so a connection the engine reads
  late would hold the container up: the engine connects only while clients are attached
  (``watch_output``), or for the container's life if it has a stdin. A container whose stdin
  is not ``StdinOnce`` is run with ``--leave-stdin-open``, so a connection that ends — an
  engine that dies — does not close it; a ``StdinOnce`` one has its stdin closed when the
  engine shuts its half of the connection (or dies), as dockerd closes it;
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
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from .._log import get_logger
from ..store import write_atomic
from .base import Bundle, RuntimeBackend, RuntimeFailure, StateInfo, Stdio
from .bundle import BundleDir
from .reaper import InitProcess, exit_code
from .runc import RuncRuntime, _Container
from .runc_cli import RuntimeChoice, create_failure, executable, launcher, runtime_environb
from .spawn import read_output, spawn

__all__ = ["ConmonRuntime", "conmon_binary", "monitorable"]

log = get_logger("asyncstart.runtime.conmon")

#: conmon's attach framing: the first byte of each message it sends names the stream.
_STREAMS = {2: "stdout", 3: "stderr"}
#: conmon reads and sends at most this much per message (its ``CONN_SOCK_BUF_SIZE``).
_MESSAGE = 32768
#: conmon's control FIFO message for a terminal resize.
_RESIZE = 1
#: The runtime conmon runs, as ``sh -c _RUN_DETACHED <runtime> <n> <runtime args> create ...``:
#: the runtime with its subcommand, the n-th argument after n, turned from ``create`` into
#: ``run --detach`` (conmon has no other way to say it; every other argument goes as it came).
_RUN_DETACHED = (
    'n=$1; shift; i=0; for arg do shift; i=$((i + 1)); '
    'if [ "$i" = "$n" ] && [ "$arg" = create ]; then set -- "$@" run --detach; '
    'else set -- "$@" "$arg"; fi; done; exec "$0" "$@"'
)  # fmt: skip


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
    clients, input for the process.

    conmon writes output to its attach clients with blocking writes: a connection whose reader
    lags stalls conmon, and then the container. So a container without stdin is connected only
    while clients are attached (``watch_output``); one with stdin stays connected (the
    connection is its stdin: for a ``StdinOnce`` one, its end closes the stdin)."""

    def __init__(self, wanted: Stdio, bundle: BundleDir) -> None:
        self.wanted = wanted
        self._bundle = bundle
        self._socket: socket.socket | None = None
        #: Set when the current connection's pump has ended.
        self._pumped: anyio.Event | None = None
        self._input_open = wanted.open_stdin
        #: Whether the last input written ended a line (a terminal's ^D ends input only there).
        self._at_line_start = True

    @property
    def needed(self) -> bool:
        """Whether the connection must stay: it carries the process's stdin."""
        return self.wanted.open_stdin

    def open(self, tg: anyio.abc.TaskGroup) -> None:
        """Connect (through ``/proc/self/fd``, whatever the bundle path's length: a socket path
        is limited to 107 bytes) and pump the output in a task, if not connected already."""
        if self._socket is not None:
            return
        directory = os.open(self._bundle.path, os.O_PATH | os.O_CLOEXEC)
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            connection.settimeout(1)  # conmon accepts at once; a full backlog is not waited on
            connection.connect(f"/proc/self/fd/{directory}/attach")
        except OSError as exc:
            connection.close()
            raise RuntimeFailure(f"cannot reach the container's monitor: {exc}") from exc
        finally:
            os.close(directory)
        connection.setblocking(False)
        self._socket, self._pumped = connection, anyio.Event()
        tg.start_soon(self._pump, connection, self._pumped)

    async def _pump(self, connection: socket.socket, pumped: anyio.Event) -> None:
        """Hand every chunk of output to the attached clients until the connection ends."""
        try:
            while True:
                await anyio.wait_readable(connection)
                try:
                    message = connection.recv(_MESSAGE + 1)
                except BlockingIOError:
                    continue
                if not message:
                    break
                stream = _STREAMS.get(message[0])
                if stream is not None and self.wanted.on_output is not None:
                    self.wanted.on_output(stream, message[1:])
        except (OSError, anyio.ClosedResourceError):
            pass  # closed here, or conmon is gone
        finally:
            if self._socket is connection:
                self._socket = None
            connection.close()
            pumped.set()

    async def drained(self) -> None:
        """Wait until conmon has closed the connection (the output has all come)."""
        if self._pumped is not None:
            await self._pumped.wait()

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

    async def close_input(self) -> None:
        """End the process's input: ^D on a terminal (twice after a partial line), else the
        engine's half of the connection is shut, on which conmon closes the stdin. A stdin
        that is not ``StdinOnce`` stays open, as dockerd keeps it (conmon was told to)."""
        connection = self._socket
        if connection is None or not self._input_open:
            return
        if not self.wanted.stdin_once and not self.wanted.tty:
            raise RuntimeFailure("stdin stays open: the container is not StdinOnce")
        if self.wanted.tty:
            await self.write(b"\x04" if self._at_line_start else b"\x04\x04")
        else:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_WR)
        self._input_open = False

    def close(self) -> None:
        """Let go of the connection (its pump ends)."""
        connection, self._socket = self._socket, None
        if connection is not None:
            anyio.notify_closing(connection)
            connection.close()


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
    #: The create started its process too (``run --detach``): ``start`` only reports it.
    detached: bool = False
    #: When its start was reported: no exit is reported earlier than that.
    started_at: float = 0.0
    #: A task waits for conmon's end (only that task waits on its pidfd, and reaps it).
    watched: bool = False
    #: An exec ran in it: a helper of the runtime's may have been orphaned to the daemon.
    exec_ran: bool = False
    #: Deleted: its end is reported to no one.
    deleted: bool = False

    def close(self) -> None:
        self.attach.close()
        self.conmon.close()

    @property
    def conmon_pid_file(self) -> Path:
        return self.bundle.path / "conmon.pid"


class ConmonRuntime(RuncRuntime):
    """Runs containers with runc or crun under conmon; see the module docstring.

    As :class:`RuncRuntime` (``state_root`` is the runtime's ``--root``); ``conmon`` is
    conmon's binary. Exit files go to ``<state_root>/../conmon-exits``.
    """

    def __init__(self, state_root: Path, *, conmon: str = "conmon", **kwargs: object) -> None:
        super().__init__(state_root, **kwargs)  # type: ignore[arg-type]
        self.conmon = conmon
        self.exit_dir = state_root.parent / "conmon-exits"
        #: Containers whose output attached clients want (``watch_output``).
        self._watched: set[str] = set()

    async def run(
        self,
        backend: RuntimeBackend,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self.exit_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await super().run(backend, task_status=task_status)

    def _monitored(self, container_id: str) -> _Monitored | None:
        box = self._containers.get(container_id)
        return box if isinstance(box, _Monitored) else None

    def _adopt(self, container_id: str, box: _Monitored) -> None:
        """Connected (if its stdin or attached clients need it), then known as running."""
        self._connect(container_id, box)
        self._containers[container_id] = box  # type: ignore[assignment]

    def _connect(self, container_id: str, box: _Monitored) -> None:
        assert self._tg is not None, "ConmonRuntime.run() is not running"
        if box.attach.needed or container_id in self._watched:
            box.attach.open(self._tg)

    def watch_output(self, container_id: str, wanted: bool) -> None:
        """Connect to the container's conmon while clients are attached (a container with
        stdin stays connected)."""
        if wanted:
            self._watched.add(container_id)
        else:
            self._watched.discard(container_id)
        box = self._monitored(container_id)
        if box is None or box.attach.needed:
            return
        if not wanted:
            box.attach.close()
            return
        try:
            self._connect(container_id, box)
        except RuntimeFailure as exc:  # conmon is ending: so is the attached clients' stream
            log.debug("conmon.attach_failed", container_id=container_id, error=exc.message)

    # -- create ----------------------------------------------------------------------------

    def _new_box(  # type: ignore[override]
        self, directory: BundleDir, runtime: RuntimeChoice, stdio: Stdio, restoring: bool
    ) -> _Monitored | _Container:
        """A container under conmon, unless its log needs the engine (``monitorable``)."""
        if not monitorable(stdio):
            return super()._new_box(directory, runtime, stdio, restoring)
        attach = _AttachConnection(stdio, directory)
        return _Monitored(directory, runtime, attach, running=restoring)

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
        if box.conmon.pidfd >= 0:  # (else conmon never ran, or was reaped already)
            # Killed, with the runtime it may still be running (its parent-death signal):
            # nothing goes on creating after this.
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(box.conmon.pidfd, signal.SIGKILL)
            with anyio.move_on_after(5):
                await box.conmon.wait()
        box.close()
        await self._delete_leftover(container_id, box.runtime)
        self._forget_files(container_id)

    def _watch(self, container_id: str, box: _Monitored | _Container) -> None:
        """conmon's output pumped from now on; its exit watched from the start (a restore
        runs at once)."""
        if isinstance(box, _Container):
            super()._watch(container_id, box)
            return
        self._adopt(container_id, box)
        if box.running:
            self._watch_exit(container_id, box)

    def _watch_exit(self, container_id: str, box: _Monitored) -> None:
        """Its process runs: from now on a task waits for conmon's end."""
        assert self._tg is not None, "ConmonRuntime.run() is not running"
        box.running = True
        self._tg.start_soon(self._watch_conmon, container_id, box)

    async def _launch(
        self,
        container_id: str,
        bundle: Bundle,
        box: _Monitored,
        checkpoint: str | None,
        checkpoint_dir: str | None,
    ) -> None:
        learn = self._write_bundle(box.bundle, bundle, box.runtime, bool(checkpoint))
        with contextlib.suppress(FileNotFoundError):
            (self.exit_dir / container_id).unlink()
        options, log_path = box.attach.wanted.log_options, box.attach.wanted.log_path
        if log_path and options.max_size > 0:
            # conmon counts from 0 whatever the file holds: a log already full starts over
            # now, as dockerd's would at its next entry.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(log_path).st_size >= options.max_size:
                    os.truncate(log_path, 0)
        # Nothing to connect before the process runs: one runc creates and starts it.
        box.detached = (
            not checkpoint and not box.attach.needed and container_id not in self._watched
        )
        argv = self._argv(container_id, box, checkpoint, checkpoint_dir)
        sync_read, sync_write = os.pipe2(os.O_CLOEXEC)
        output = -1
        try:
            try:
                conmon, output = spawn(
                    argv,
                    cwd=box.bundle.path,  # (where conmon would write an ``oom`` file without -0)
                    # (conmon passes its environment on to the runtime.)
                    env={**runtime_environb(), b"_OCI_SYNCPIPE": b"%d" % sync_write},
                    pass_fds=(sync_write,),
                )
            except OSError as exc:
                raise RuntimeFailure(f"failed to run conmon: {exc.strerror or exc}") from exc
            finally:
                os.close(sync_write)
            # With --sync, conmon is this process's child for its whole life: watched by a
            # pidfd from now (before any await; on failure, killed and reaped here: nothing
            # else knows it), and named by a pid file for a later daemon. (It runs the create
            # in a child of its own.)
            try:
                box.conmon.open(conmon)
            except OSError as exc:
                _kill_child(conmon)
                raise RuntimeFailure(f"failed to watch conmon: {exc.strerror or exc}") from exc
            try:
                write_atomic(box.conmon_pid_file, b"%d" % conmon, fsync=False)
            except OSError as exc:
                raise RuntimeFailure(f"failed to write conmon's pid file: {exc}") from exc
            pid, message = await _read_sync(sync_read)
        finally:
            os.close(sync_read)
            # What conmon said before it let go of its standard streams: its own early errors.
            said = read_output(output).decode(errors="replace").strip() if output >= 0 else ""
        if pid <= 0:
            if not message and said:
                raise RuntimeFailure(f"conmon failed: {said}")
            command = "restore" if checkpoint else "create"
            binary = self._cli.binary_of(box.runtime)
            raise create_failure(box.bundle.runc_log, message, binary, command)
        box.pid = pid
        self._filters.learn(learn, self.state_root / container_id)
        self._connect(container_id, box)  # before it runs: no output is missed

    def _argv(
        self,
        container_id: str,
        box: _Monitored,
        checkpoint: str | None,
        checkpoint_dir: str | None,
    ) -> list[str]:
        """conmon's command line: the runtime (through its launcher, as runtime arguments),
        the bundle, where the pids, exit code, log and sockets go, and the stdio asked for."""
        binary = self._cli.binary_of(box.runtime)
        runtime_args = [
            "--root", str(self.state_root),
            "--log", str(box.bundle.runc_log), "--log-format", "json",
            *self.runtime_args, *box.runtime.flags,
        ]  # fmt: skip
        prefix: tuple[str, ...]
        if box.detached:  # (the subcommand comes right after the runtime arguments)
            # crun's launcher is a shell already: the same shell turns create into run.
            wrapper = launcher(binary, then=_RUN_DETACHED) or ("sh", "-c", _RUN_DETACHED)
            prefix = (*wrapper, binary, str(len(runtime_args) + 1))
        else:
            wrapper = launcher(binary)
            prefix = (*wrapper, binary) if wrapper else ()
        runtime_args[:0] = prefix[1:]
        path = executable(prefix[0] if prefix else binary)  # (conmon does not search PATH)
        wanted = box.attach.wanted
        options = wanted.log_options
        argv = [
            self.conmon, "--api-version", "1",
            "-c", container_id, "-u", container_id, "-n", container_id,
            "-r", path, "-b", str(box.bundle.path),
            "-p", str(box.bundle.pid_file), "--sync",
            "-0", str(box.bundle.path),
            "--exit-dir", str(self.exit_dir), "--full-attach",
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
        """``start`` (unless the create started it: a restore, a ``run --detach``), then the
        start is reported, and conmon is watched for the exit."""
        box = self._monitored(container_id)
        if box is None:
            await super().start(container_id)
            return
        if not box.running:
            if not box.detached:
                await self._cli.checked("start", container_id, runtime=box.runtime)
            self._watch_exit(container_id, box)
        assert self._backend is not None
        box.started_at = time.time()
        self._backend.state_changed(
            container_id, StateInfo("start", pid=box.pid, at=box.started_at)
        )

    async def _watch_conmon(self, container_id: str, box: _Monitored) -> None:
        """conmon ends once the container has ended and its output is logged: the exit is
        reported with the code conmon wrote and the time it wrote it (not if the container
        was deleted meanwhile). This task alone waits on conmon's pidfd, and reaps it."""
        box.watched = True
        try:
            await box.conmon.wait()
        finally:
            box.conmon.close()
        if box.deleted:
            return
        with anyio.move_on_after(2):
            await box.attach.drained()
        ended = self._ended(container_id, box)
        assert self._backend is not None
        if ended.oom_killed:  # as dockerd: the oom event, then the exit that says so
            oom = StateInfo("oom", pid=box.pid, at=ended.at)
            self._backend.state_changed(container_id, oom)
        self._backend.state_changed(container_id, ended)

    def _ended(self, container_id: str, box: _Monitored) -> StateInfo:
        """The exit as conmon recorded it: the code it wrote and when, and whether the
        memory cgroup killed a process (its ``oom`` file); 255 and now if it wrote no code
        (it was killed). A process that ended before its start was reported (it may end at
        once) is said to end when it was reported started, as dockerd's never ends earlier."""
        path = self.exit_dir / container_id
        try:
            code, at = int(path.read_text().strip()), path.stat().st_mtime
        except (OSError, ValueError):
            code, at = 255, time.time()
        at = max(at, box.started_at)
        oom = (box.bundle.path / "oom").exists()
        return StateInfo("exit", pid=box.pid, exit_code=code, at=at, oom_killed=oom)

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
        await box.attach.close_input()

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
        # (Gone already if the runtime stopped serving meanwhile: a daemon closing mid-start.)
        self._containers.pop(container_id, None)
        box.deleted = True
        box.attach.close()
        if not box.watched:
            # Never started: conmon ends now that its container is gone; reaped when it does,
            # by a task, or here (within 2 s) if the runtime has stopped serving and let go of
            # the pidfd: by the pid, while it is still this process's child.
            if self._tg is not None and box.conmon.pidfd >= 0:
                self._tg.start_soon(_reap, box.conmon)
            elif box.conmon.pidfd >= 0 or _conmon_child(box.conmon.pid, self.conmon):
                await box.conmon.reap()
                box.conmon.close()
        self._forget_files(container_id)
        box.bundle.remove()

    def _forget_files(self, container_id: str) -> None:
        """Remove the exit file of a container."""
        with contextlib.suppress(FileNotFoundError):
            (self.exit_dir / container_id).unlink()

    # -- after a daemon restart ------------------------------------------------------------

    async def restore(self, container_id: str, stdio: Stdio) -> StateInfo | None:
        """Take a container back from its conmon: connected and watched again if it runs,
        else reported ended with its true exit code and time (its leftovers deleted)."""
        bundle = BundleDir(self.state_root.parent / container_id)
        box = _Monitored(bundle, bundle.runtime(), _AttachConnection(stdio, bundle))
        try:
            conmon_pid = int(box.conmon_pid_file.read_text())
        except (OSError, ValueError):
            # Not created under conmon (an engine without a monitor made it), or gone.
            return await super().restore(container_id, stdio)
        with contextlib.suppress(OSError, ValueError):
            box.pid = bundle.read_pid()
        with contextlib.suppress(OSError):
            box.conmon.open(conmon_pid)
        if box.conmon.pidfd >= 0 and _conmon_child(conmon_pid, self.conmon) == "Z":
            # It ended while no daemon of this process watched it (an earlier one had made it
            # a child of this process): reaped now, not left a zombie; its exit file says why.
            exit_code(box.conmon.pidfd)  # (conmon's own; the container's is in its exit file)
            box.conmon.close()
        if box.conmon.pidfd >= 0 and not _is_conmon_of(conmon_pid, container_id, self.conmon):
            box.conmon.close()  # its pid is another process's now
        if box.conmon.pidfd >= 0 and box.pid > 0:
            try:
                self._adopt(container_id, box)
            except RuntimeFailure:
                box.attach.close()  # conmon is ending: its exit file follows
                with anyio.move_on_after(2):
                    await anyio.wait_readable(box.conmon.pidfd)
            else:
                self._watch_exit(container_id, box)
                return StateInfo("start", pid=box.pid)
        box.close()
        ended = self._ended(container_id, box)
        await self._cli.quietly("delete", "--force", container_id, runtime=box.runtime)
        self._forget_files(container_id)
        bundle.remove()
        return ended

    async def cleanup(self, keep: set[str]) -> None:
        """As :meth:`RuncRuntime.cleanup` (each stray's conmon ends with it), and the exit
        files of containers not kept."""
        await super().cleanup(keep)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(self.exit_dir):
                if entry not in keep:
                    with contextlib.suppress(OSError):
                        os.unlink(self.exit_dir / entry)


def _kill_child(pid: int) -> None:
    """Kill and reap a child of this process that is not watched (its pid is still its own:
    it is not reaped)."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


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


def _is_conmon_of(pid: int, container_id: str, binary: str) -> bool:
    """Whether ``pid`` is conmon for this container (a pid may have been reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    program = os.path.basename(binary).encode()
    return os.path.basename(argv[0]) == program and container_id.encode() in argv


def _conmon_child(pid: int, binary: str) -> str:
    """The state letter of ``pid`` if it is a conmon that is this process's child (``Z``: it
    ended; a child's pid cannot be reused before it is reaped), else ""."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    name, _, rest = stat.partition(" (")[2].rpartition(") ")
    fields = rest.split()
    mine = name == os.path.basename(binary)[:15] and fields[1:2] == [str(os.getpid())]
    return fields[0] if mine and fields else ""


async def _reap(conmon: InitProcess) -> None:
    """Wait for a conmon of this engine to end, however long, and reap it."""
    try:
        await conmon.wait()
    finally:
        conmon.close()
