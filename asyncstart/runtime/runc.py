"""The runc runtime: OCI bundles, stdio FIFOs, ``runc create``/``start``, exit monitoring.

Exit monitoring: the daemon makes itself a *child subreaper*. ``runc create`` forks the
container's init and exits; the orphaned init is then re-parented to the daemon, which opens a
pidfd on it at create time and, once the pidfd is readable, reaps it with ``waitpid`` — so every
exit code is delivered (a signal gives 128 + signal), with no polling and no extra process per
container. The cost: a daemon restart loses the parent link, so a reopened daemon learns *that*
a process ended (pidfd) but not its code; a per-container monitor process would keep it.

Every error from runc is translated into :class:`RuntimeFailure` carrying runc's own message
(from its JSON log), which the engine maps to dockerd's exit codes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import structlog

from .base import Bundle, RuntimeBackend, RuntimeFailure, StateInfo, Stdio

__all__ = ["RuncRuntime"]

log = structlog.get_logger("asyncstart.runtime.runc")

_PR_SET_CHILD_SUBREAPER = 36
_MAX_LOG_LINE = 16 * 1024
_RUNTIME_FILE = "runtime.json"


def _bundle_runtime(bundle: Path) -> tuple[str | None, tuple[str, ...]]:
    """The runtime binary and flags a bundle was created with (defaults if not recorded)."""
    try:
        recorded = json.loads((bundle / _RUNTIME_FILE).read_text())
        return recorded.get("binary"), tuple(recorded.get("args", ()))
    except (OSError, ValueError):
        return None, ()


@dataclass(slots=True)
class _Container:
    bundle: Path
    pid: int = 0
    pidfd: int = -1
    stdin: int = -1  # our write end of the stdin FIFO
    readers: list[int] = field(default_factory=list)
    log_path: str | None = None
    on_output: Callable[[str, bytes], None] | None = None
    #: The runtime binary that created it (``HostConfig.Runtime``) and its global flags: the
    #: same drive it afterwards.
    binary: str | None = None
    global_args: tuple[str, ...] = ()
    #: stdio is a pty master (Config.Tty), not FIFOs.
    tty: bool = False
    #: Whether the last input written ended a line (a terminal's ^D ends input only there).
    at_line_start: bool = True
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    #: Output streams still being copied; the exit is reported once they are drained.
    pumping: int = 0
    drained: anyio.Event = field(default_factory=anyio.Event)


def _set_subreaper() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _runc_error(log_file: Path, fallback: str) -> str:
    """The last error runc wrote to its JSON log, else ``fallback``."""
    message = ""
    with contextlib.suppress(OSError):
        for line in log_file.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = entry.get("msg", "")
    return message or fallback.strip() or "runc failed"


class RuncRuntime:
    """Runs containers with the ``runc`` binary; see the module docstring."""

    name = "runc"

    def __init__(
        self,
        state_root: Path,
        *,
        binary: str = "runc",
        runtime_args: tuple[str, ...] = (),
        no_pivot_root: bool = False,
    ) -> None:
        self.state_root = state_root
        self.binary = binary
        self.runtime_args = runtime_args
        self.no_pivot_root = no_pivot_root or bool(os.environ.get("DOCKER_RAMDISK"))
        self._containers: dict[str, _Container] = {}
        self._backend: RuntimeBackend | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self,
        backend: RuntimeBackend,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        _set_subreaper()
        self.state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._backend = backend
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            # The containers live on (as with dockerd's live-restore); this process lets go of
            # them, so that a daemon opened later is their only reader and writer.
            for box in self._containers.values():
                self._close(box)
            self._containers.clear()

    # -- running runc ----------------------------------------------------------------------

    async def _runc(
        self, *args: str, log_file: Path | None = None, binary: str | None = None, **fds: int
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [binary or self.binary, "--root", str(self.state_root)]
        if log_file is not None:
            argv += ["--log", str(log_file), "--log-format", "json"]
        argv += list(args)
        try:
            return await anyio.run_process(
                argv,
                check=False,
                stdin=fds.get("stdin", subprocess.DEVNULL),
                stdout=fds.get("stdout", subprocess.PIPE),
                stderr=fds.get("stderr", subprocess.PIPE),
            )
        except OSError as exc:
            raise RuntimeFailure(f"failed to run {argv[0]}: {exc.strerror}") from exc

    async def _checked(self, *args: str, container_id: str) -> None:
        box = self._containers.get(container_id)
        result = await self._runc(*self._global(box), *args, binary=box.binary if box else None)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise RuntimeFailure(f"runc {args[0]} failed: {message}")

    # -- stdio -----------------------------------------------------------------------------

    @staticmethod
    def _fifo(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.mkfifo(path, 0o600)

    def _open_stdio(self, bundle: Path, stdio: Stdio, box: _Container) -> dict[str, int]:
        """Make the FIFOs; keep our ends in ``box``, return the child's ends."""
        child: dict[str, int] = {}
        for stream in ("stdout", "stderr"):
            path = bundle / f"init-{stream}"
            self._fifo(path)
            box.readers.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
            child[stream] = os.open(path, os.O_WRONLY)
        if stdio.open_stdin:
            path = bundle / "init-stdin"
            self._fifo(path)
            read_end = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            box.stdin = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            flags = fcntl.fcntl(read_end, fcntl.F_GETFL)
            fcntl.fcntl(read_end, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
            child["stdin"] = read_end
        return child

    async def _pump(self, box: _Container, fd: int, stream: str) -> None:
        """Copy one output FIFO into the json-file log until the container closes it."""
        log_path = box.log_path
        pending = b""
        # A local append-only file: writes of a few lines never stall the loop noticeably.
        log_file = open(log_path, "ab") if log_path else None  # noqa: SIM115, ASYNC230
        try:
            while True:
                await anyio.wait_readable(fd)
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EIO:  # a pty whose other side is closed: the end
                        break
                    raise
                if not chunk:
                    break
                if box.on_output is not None:
                    box.on_output(stream, chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if log_file is not None:
                    for line in lines:
                        log_file.write(_json_log(line + b"\n", stream))
                    # As dockerd's json-file: a line longer than 16 KiB is logged in parts
                    # (memory stays bounded whatever the container prints).
                    while len(pending) >= _MAX_LOG_LINE:
                        log_file.write(_json_log(pending[:_MAX_LOG_LINE], stream))
                        pending = pending[_MAX_LOG_LINE:]
                    log_file.flush()
                elif len(pending) >= _MAX_LOG_LINE:
                    pending = b""
            if pending and log_file is not None:
                log_file.write(_json_log(pending, stream))
        finally:
            os.close(fd)
            if log_file is not None:
                log_file.close()
            box.pumping -= 1
            if box.pumping == 0:
                box.drained.set()

    # -- the runtime interface -------------------------------------------------------------

    async def create(
        self,
        container_id: str,
        bundle: Bundle,
        stdio: Stdio,
        *,
        checkpoint: str | None = None,
        checkpoint_dir: str | None = None,
        runtime_args: tuple[str, ...] = (),
        no_pivot_root: bool = False,
        binary: str | None = None,
    ) -> int:
        path = bundle.path
        for attempt in range(2):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            box = _Container(
                path,
                log_path=stdio.log_path,
                on_output=stdio.on_output,
                binary=binary,
                global_args=tuple(runtime_args),
            )
            try:
                await self._spawn(
                    container_id, bundle, stdio, box, checkpoint, checkpoint_dir, no_pivot_root
                )
                break
            except BaseException as exc:
                # A create that fails leaves nothing: fds, runc state, bundle. That also
                # clears a stale runc container with this ID (a crashed daemon's), which is
                # replaced: the create is tried once more. (No "runc state" on the happy path.)
                self._close(box)
                with anyio.CancelScope(shield=True):
                    await self._delete_leftover(container_id, box)
                shutil.rmtree(path, ignore_errors=True)
                stale = isinstance(exc, RuntimeFailure) and "exists" in exc.message
                if attempt or not stale:
                    raise
        self._containers[container_id] = box
        assert self._tg is not None, "RuncRuntime.run() is not running"
        box.pumping = len(box.readers)
        for fd, stream in zip(box.readers, ("stdout", "stderr")[: len(box.readers)], strict=True):
            self._tg.start_soon(self._pump, box, fd, stream)
        box.readers = []
        return box.pid

    async def _spawn(
        self,
        container_id: str,
        bundle: Bundle,
        stdio: Stdio,
        box: _Container,
        checkpoint: str | None,
        checkpoint_dir: str | None,
        no_pivot_root: bool,
    ) -> None:
        """Write the bundle and run ``runc create`` (or ``restore``); fill in ``box``."""
        path = bundle.path
        os.chmod(path, 0o700)
        if bundle.owner is not None:
            os.chown(path, *bundle.owner)
        tmp = path / "config.json.tmp"
        tmp.write_text(json.dumps(bundle.spec))
        os.replace(tmp, path / "config.json")
        # Which runtime drives this container, for a daemon that reopens on it later.
        (path / _RUNTIME_FILE).write_text(
            json.dumps({"binary": box.binary, "args": list(box.global_args)})
        )
        pid_file = path / "init.pid"
        log_file = path / "runc.log"
        extra = ["--no-pivot"] if (no_pivot_root or self.no_pivot_root) else []
        if checkpoint:
            images = os.path.join(checkpoint_dir or "", checkpoint)
            args = ["restore", "--detach", "--image-path", images, "--bundle", str(path),
                    "--pid-file", str(pid_file), *extra, container_id]  # fmt: skip
        else:
            args = ["create", "--bundle", str(path), "--pid-file", str(pid_file), *extra,
                    container_id]  # fmt: skip
        console: socket.socket | None = None
        if stdio.tty:
            # runc hands the pty's master over a unix socket; the connection waits in the
            # backlog until runc create has returned, so no task needs to accept meanwhile.
            # (In a short temporary directory: a socket path is limited to 107 bytes.)
            console_dir = tempfile.mkdtemp(prefix="asyncstart-pty-")
            console_path = os.path.join(console_dir, "pty.sock")
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            console.bind(console_path)
            console.listen(1)
            args[-1:-1] = ["--console-socket", console_path]
            child: dict[str, int] = {}
        else:
            child = self._open_stdio(path, stdio, box)
        try:
            result = await self._runc(
                *self._global(box), *args, log_file=log_file, binary=box.binary, **child
            )
            if result.returncode != 0:
                stderr = (result.stderr or b"").decode(errors="replace")
                raise RuntimeFailure(_runc_error(log_file, stderr))
            if console is not None:
                self._take_console(console, box, stdio)
        finally:
            for fd in child.values():
                os.close(fd)
            if console is not None:
                console.close()
                shutil.rmtree(console_dir, ignore_errors=True)
        box.pid = int(pid_file.read_text())
        box.pidfd = os.pidfd_open(box.pid)

    @staticmethod
    def _take_console(console: socket.socket, box: _Container, stdio: Stdio) -> None:
        console.settimeout(5)
        connection, _ = console.accept()
        with connection:
            _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
        if not fds:
            raise RuntimeFailure("runc sent no console")
        master = fds[0]
        os.set_blocking(master, False)
        box.tty = True
        box.readers.append(master)  # a terminal has one output stream: stdout
        if stdio.open_stdin:
            box.stdin = os.dup(master)

    def _global(self, box: _Container | None) -> tuple[str, ...]:
        """The runtime's global flags: the daemon's, then the container's runtime's."""
        return (*self.runtime_args, *(box.global_args if box else ()))

    async def start(self, container_id: str) -> None:
        box = self._box(container_id)
        await self._checked("start", container_id, container_id=container_id)
        assert self._backend is not None and self._tg is not None
        self._backend.state_changed(container_id, StateInfo("start", pid=box.pid, at=time.time()))
        self._tg.start_soon(self._monitor, container_id, box)

    async def _monitor(self, container_id: str, box: _Container) -> None:
        with box.scope:
            await anyio.wait_readable(box.pidfd)
            code = _exit_code(box.pidfd)
            # As dockerd waits for the streams: the die comes after the last line is logged
            # (bounded: a child the process left behind may hold the pipes open).
            with anyio.move_on_after(2):
                await box.drained.wait()
            assert self._backend is not None
            info = StateInfo("exit", pid=box.pid, exit_code=code, at=time.time())
            self._backend.state_changed(container_id, info)

    def _box(self, container_id: str) -> _Container:
        box = self._containers.get(container_id)
        if box is None:
            raise RuntimeFailure(f"container {container_id} does not exist")
        return box

    async def kill(self, container_id: str, signal: int) -> None:
        self._box(container_id)
        await self._checked("kill", container_id, str(signal), container_id=container_id)

    async def pause(self, container_id: str) -> None:
        await self._checked("pause", container_id, container_id=container_id)

    async def resume(self, container_id: str) -> None:
        await self._checked("resume", container_id, container_id=container_id)

    async def write_stdin(self, container_id: str, data: bytes) -> None:
        box = self._box(container_id)
        view = memoryview(data)
        while view:
            if box.stdin < 0:
                raise RuntimeFailure("stdin is closed")
            await anyio.wait_writable(box.stdin)
            try:
                written = os.write(box.stdin, view)
                box.at_line_start = bytes(view[written - 1 : written]) == b"\n" if written else True
                view = view[written:]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise RuntimeFailure("the container closed its stdin") from None

    async def close_stdin(self, container_id: str) -> None:
        box = self._box(container_id)
        if box.stdin >= 0:
            if box.tty:
                # A terminal cannot be half-closed: end the input as a typist would (^D;
                # twice after a partial line, where the first only flushes the line).
                with contextlib.suppress(OSError):
                    os.write(box.stdin, b"\x04" if box.at_line_start else b"\x04\x04")
            os.close(box.stdin)
            box.stdin = -1

    def _close(self, box: _Container) -> None:
        for fd in (*box.readers, box.stdin, box.pidfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        box.readers, box.stdin, box.pidfd = [], -1, -1

    async def _run_quietly(self, *args: str, binary: str | None = None) -> None:
        with contextlib.suppress(RuntimeFailure):
            await self._runc(*args, binary=binary)

    async def _delete_leftover(self, container_id: str, box: _Container) -> None:
        """Delete whatever runc has under this ID (and reap its init if it is ours)."""
        args = self._global(box)
        result = await self._runc(*args, "state", container_id, binary=box.binary)
        if result.returncode != 0:
            return
        pid = int(json.loads(result.stdout).get("pid", 0))
        await self._run_quietly(*args, "delete", "--force", container_id, binary=box.binary)
        await _reap(pid)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        box = self._containers.get(container_id)
        args = ["delete", *(["--force"] if force else []), container_id]
        result = await self._runc(*self._global(box), *args, binary=box.binary if box else None)
        if result.returncode != 0:
            message = (result.stderr or b"").decode(errors="replace")
            if "not exist" not in message and "not found" not in message:
                raise RuntimeFailure(f"runc delete failed: {message.strip()}")
        self._containers.pop(container_id, None)
        if box is not None:
            box.scope.cancel()
            # Reap it if the monitor did not (a force delete of a process that never started
            # or that the monitor was not watching any more).
            await _reap(box.pid, box.pidfd)
            self._close(box)
            shutil.rmtree(box.bundle, ignore_errors=True)

    async def restore(self, container_id: str, stdio: Stdio) -> StateInfo | None:
        result = await self._runc("state", container_id)
        if result.returncode != 0:
            return None
        state = json.loads(result.stdout)
        if state.get("status") not in ("running", "paused"):
            # runc reports pid 0 for a stopped container: the pid file still knows it.
            pid_file = Path(state.get("bundle", "/nonexistent")) / "init.pid"
            pid = int(pid_file.read_text()) if pid_file.is_file() else 0
            await self._run_quietly("delete", "--force", container_id)
            await _reap(pid)
            return None
        bundle = Path(state["bundle"])
        binary, flags = _bundle_runtime(bundle)
        box = _Container(bundle, pid=int(state["pid"]), log_path=stdio.log_path,
                         on_output=stdio.on_output, binary=binary, global_args=flags)  # fmt: skip
        try:
            box.pidfd = os.pidfd_open(box.pid)
        except ProcessLookupError:
            await self._run_quietly("delete", "--force", container_id)
            return None
        # The FIFOs are still there: read the output again, keep the stdin writable.
        for stream in ("stdout", "stderr"):
            with contextlib.suppress(OSError):
                box.readers.append(os.open(bundle / f"init-{stream}", os.O_RDONLY | os.O_NONBLOCK))
        if stdio.open_stdin:
            with contextlib.suppress(OSError):
                box.stdin = os.open(bundle / "init-stdin", os.O_WRONLY | os.O_NONBLOCK)
        self._containers[container_id] = box
        assert self._tg is not None
        box.pumping = len(box.readers)
        if not box.readers:
            box.drained.set()
        for fd, stream in zip(box.readers, ("stdout", "stderr")[: len(box.readers)], strict=True):
            self._tg.start_soon(self._pump, box, fd, stream)
        box.readers = []
        self._tg.start_soon(self._monitor, container_id, box)
        return StateInfo("start", pid=box.pid)

    async def cleanup(self, keep: set[str]) -> None:
        result = await self._runc("list", "--format", "json")
        for entry in json.loads(result.stdout or b"null") or []:
            if entry["id"] not in keep:
                log.info("runtime.cleanup", container_id=entry["id"], status=entry["status"])
                binary, flags = _bundle_runtime(Path(entry["bundle"]))
                await self._run_quietly(
                    *self.runtime_args, *flags, "delete", "--force", entry["id"], binary=binary
                )
                await _reap(int(entry.get("pid", 0)))
                shutil.rmtree(entry["bundle"], ignore_errors=True)


def _exit_code(pidfd: int) -> int:
    """Reap the process behind ``pidfd`` (by the pidfd, never by a pid number that may have
    been reused) and return its exit code: 128 + signal if killed, 255 if unknown (it is not
    this process's child, as after a daemon restart)."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return 255
    if result is None:
        return 255
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return 128 + result.si_status


async def _reap(pid: int, pidfd: int = -1) -> None:
    """Collect a dead container init that is this daemon's child (it is a subreaper), so no
    zombie is left; a process that is not its child is someone else's to reap."""
    if pid <= 0:
        return
    owned = pidfd < 0
    if owned:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
    try:
        with anyio.move_on_after(2):
            await anyio.wait_readable(pidfd)  # runc delete kills; the death follows shortly
        _exit_code(pidfd)
    finally:
        if owned:
            os.close(pidfd)


def _json_log(data: bytes, stream: str) -> bytes:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    entry = {"log": data.decode(errors="replace"), "stream": stream, "time": now}
    return json.dumps(entry).encode() + b"\n"
