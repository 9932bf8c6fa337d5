"""An in-memory OCI runtime: deterministic, fast, with fault injection. Public.

Used by the tests and the engine-overhead benchmark, never in place of the real runtime. It
behaves like a process would, from the container's arguments:

* ``true`` / ``false`` / ``sh -c "exit N"`` exit at once with 0 / 1 / N;
* ``sleep N`` exits 0 after N seconds of the runtime's clock (``sleep infinity`` never);
* ``cat`` with an open stdin echoes its input and exits 0 when its stdin is closed;
* anything else runs until signalled, or until a test calls :meth:`FakeRuntime.exit`.

What a process prints (``cat``'s echo, or :meth:`FakeRuntime.output` from a test) goes to the
attached clients and to the container's json-file log, through the writer the real runtime uses.

Signals are honoured as by a process with default handlers: a terminating signal ends it with
``128 + signal`` (KILL gives 137, TERM 143); ``SIGCHLD``, ``SIGWINCH``, ``SIGURG`` and ``SIGCONT``
are ignored; while paused (frozen), signals wait for the resume, KILL included.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal as _signal
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc
import msgspec

from ..clock import Clock, SystemClock
from ..faults import FaultPlan
from ..logs import JsonFileWriter
from .base import Bundle, Console, RuntimeBackend, RuntimeFailure, StateInfo, Stdio

__all__ = ["FakeProcess", "FakeRuntime"]

_IGNORED = frozenset({_signal.SIGCHLD, _signal.SIGWINCH, _signal.SIGURG, _signal.SIGCONT})


@dataclass(slots=True)
class FakeProcess:
    container_id: str
    pid: int
    args: list[str]
    stdio: Stdio
    #: Its ``config.json`` as the runtime would be given it, encoded (bytes, not the spec's
    #: dicts and lists: thousands of fake containers keep no objects the collector must walk),
    #: but for the seccomp filter: the one every start shares, kept by reference.
    config: bytes
    seccomp: object = None
    status: Literal["created", "running", "paused", "stopped"] = "created"
    exit_code: int | None = None
    stdin_closes: int = 0
    #: The terminal's size (rows, columns) as last resized.
    size: tuple[int, int] | None = None
    pending_signals: list[int] = field(default_factory=list)
    timer: anyio.CancelScope | None = None
    #: Its json-file log, opened at its first output and closed when it ends.
    log: JsonFileWriter | None = None
    #: The limits of each ``update``, in order.
    updates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def spec(self) -> dict[str, Any]:
        """The OCI spec it was created with (decoded anew at each use; its seccomp filter is
        the one every start shares: read it, never edit it)."""
        spec: dict[str, Any] = msgspec.json.decode(self.config)
        if self.seccomp is not None:
            spec["linux"]["seccomp"] = self.seccomp
        return spec

    def close_log(self) -> None:
        log, self.log = self.log, None
        if log is not None:
            log.close()


async def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await anyio.wait_writable(fd)
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


async def _read(fd: int) -> bytes:
    while True:
        try:
            await anyio.wait_readable(fd)
        except PermissionError:  # (not pollable: /dev/null, a file)
            return os.read(fd, 65536)
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            continue


class FakeRuntime:
    """See the module docstring. ``delays`` maps a phase to seconds of the runtime's clock."""

    name = "fake"

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        delays: dict[str, float] | None = None,
        first_pid: int = 1000,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.delays = dict(delays or {})
        self.faults = FaultPlan(default_error=RuntimeFailure)
        #: Every exec run: (container ID, its OCI process).
        self.execs: list[tuple[str, dict[str, Any]]] = []
        self.processes: dict[str, FakeProcess] = {}
        #: How many times each container was created (the engine must create once per start).
        self.creates: collections.Counter[str] = collections.Counter()
        #: Checkpoints that :meth:`create` can restore from.
        self.checkpoints: set[str] = set()
        #: The last exit reported for each container (kept after delete, for replays).
        self.exits: dict[str, StateInfo] = {}
        self._next_pid = first_pid
        self._backend: RuntimeBackend | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self,
        backend: RuntimeBackend,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self._backend = backend
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    # -- helpers ---------------------------------------------------------------------------

    async def _phase(self, phase: str, container_id: str) -> None:
        delay = self.delays.get(phase, 0.0)
        if delay:
            await self.clock.sleep_until(self.clock.now() + delay)
        self.faults.check(phase, container_id)

    def _process(self, container_id: str) -> FakeProcess:
        process = self.processes.get(container_id)
        if process is None:
            raise RuntimeFailure(f"container {container_id} does not exist")
        return process

    def _report(self, container_id: str, info: StateInfo) -> None:
        assert self._backend is not None, "FakeRuntime.run() is not running"
        self._backend.state_changed(container_id, info)

    def _output(self, process: FakeProcess, stream: str, data: bytes) -> None:
        """As the real runtime's pumps: to attached clients, then to the log."""
        stdio = process.stdio
        if stdio.on_output is not None:
            stdio.on_output(stream, data)
        if stdio.log_path:
            if process.log is None:
                process.log = JsonFileWriter(stdio.log_path, stdio.log_options)
            process.log.write(stream, data)

    def _finish(self, process: FakeProcess, exit_code: int) -> None:
        if process.status == "stopped":
            return
        process.close_log()  # as the pumps end before the exit is reported
        process.status = "stopped"
        process.exit_code = exit_code
        if process.timer is not None:
            process.timer.cancel()
        info = StateInfo("exit", pid=process.pid, exit_code=exit_code, at=time.time())
        self.exits[process.container_id] = info
        self._report(process.container_id, info)

    async def _exit_after(self, process: FakeProcess, seconds: float) -> None:
        with anyio.CancelScope() as scope:
            process.timer = scope
            await self.clock.sleep_until(self.clock.now() + seconds)
            self._finish(process, 0)

    def _run_program(self, process: FakeProcess) -> None:
        args = process.args
        program = args[0].rsplit("/", 1)[-1] if args else ""
        if program == "true":
            self._finish(process, 0)
        elif program == "false":
            self._finish(process, 1)
        elif program == "sh" and len(args) == 3 and args[1] == "-c":
            words = shlex.split(args[2])
            if len(words) == 2 and words[0] == "exit" and words[1].isdigit():
                self._finish(process, int(words[1]) & 0xFF)
        elif program == "cat" and process.stdin_closes:
            self._finish(process, 0)  # its stdin was closed before it ran: EOF at once
        elif program == "sleep" and len(args) == 2 and args[1] != "infinity":
            assert self._tg is not None
            self._tg.start_soon(self._exit_after, process, float(args[1]))

    def _deliver(self, process: FakeProcess, signal: int) -> None:
        if signal in _IGNORED:
            return
        if process.status == "paused":
            process.pending_signals.append(signal)
            return
        self._finish(process, 128 + signal)

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
        binary: str | None = None,
    ) -> int:
        await self._phase("create", container_id)
        if checkpoint is not None and checkpoint not in self.checkpoints:
            raise RuntimeFailure(
                f"failed to restore container {container_id}: checkpoint {checkpoint} "
                f"does not exist in {checkpoint_dir or 'the default directory'}"
            )
        stale = self.processes.get(container_id)
        if stale is not None and stale.status != "stopped":
            raise RuntimeFailure(f"container with id exists: {container_id}")
        process_spec = bundle.spec.get("process", {})
        args = list(process_spec.get("args", [])) if isinstance(process_spec, dict) else []
        self._next_pid += 1
        spec, seccomp = bundle.spec, None
        if "seccomp" in spec.get("linux", {}):
            linux = dict(spec["linux"])
            seccomp = linux.pop("seccomp")
            spec = {**spec, "linux": linux}
        self.processes[container_id] = FakeProcess(
            container_id,
            self._next_pid,
            args,
            stdio,
            msgspec.json.encode(spec),
            seccomp,
        )
        self.creates[container_id] += 1
        return self._next_pid

    async def start(self, container_id: str) -> None:
        await self._phase("start", container_id)
        process = self._process(container_id)
        if process.status != "created":
            raise RuntimeFailure(f"cannot start a container that has {process.status}")
        process.status = "running"
        self._report(container_id, StateInfo("start", pid=process.pid, at=time.time()))
        self._run_program(process)

    async def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: tuple[int, int, int],
        console: Console | None = None,
    ) -> int:
        """A few programs, played (``echo``, ``cat``, ``env``, ``pwd``, ``id -u``, ``true``,
        ``false``, ``sh -c "exit N"``, ``sleep N``); anything else is not found (127)."""
        await self._phase("exec", container_id)
        if self._process(container_id).status != "running":
            raise RuntimeFailure("cannot exec in a container that is not running")
        self.execs.append((container_id, process))
        if process.get("terminal"):  # a pseudo-terminal of its own, as the real one's
            master, slave = os.openpty()
            if console is not None:
                console(master, None)
            else:
                os.close(master)
            stdio = (slave, slave, slave)
            try:
                return await self._play(process, stdio)
            finally:
                os.close(slave)
        return await self._play(process, stdio)

    async def _play(self, process: dict[str, Any], stdio: tuple[int, int, int]) -> int:
        args = [str(arg) for arg in process.get("args") or []]
        program = args[0].rsplit("/", 1)[-1] if args else ""
        out, err = stdio[1], stdio[2]
        if program == "echo":
            await _write(out, (" ".join(args[1:]) + "\n").encode())
        elif program == "env":
            await _write(out, "".join(f"{item}\n" for item in process.get("env") or ()).encode())
        elif program == "pwd":
            await _write(out, f"{process.get('cwd', '/')}\n".encode())
        elif program == "id" and args[1:] == ["-u"]:
            await _write(out, f"{(process.get('user') or {}).get('uid', 0)}\n".encode())
        elif program == "cat":
            while data := await _read(stdio[0]):
                await _write(out, data)
        elif program == "sleep" and len(args) == 2:
            await anyio.sleep(float(args[1]))
        elif program == "false":
            return 1
        elif program == "sh" and args[1:2] == ["-c"] and args[2:3] and args[2].startswith("exit "):
            return int(args[2].split()[1]) & 0xFF
        elif program != "true":
            await _write(err, f"exec: {args[0] if args else ''}: not found\n".encode())
            return 127
        return 0

    async def pids(self, container_id: str) -> list[int]:
        return [self._process(container_id).pid]

    async def kill(self, container_id: str, signal: int) -> None:
        await self._phase("kill", container_id)
        process = self._process(container_id)
        if process.status == "stopped":
            raise RuntimeFailure("container not running")
        self._deliver(process, signal)

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        await self._phase("update", container_id)
        process = self._process(container_id)
        if process.status not in ("running", "paused"):
            raise RuntimeFailure(f"container not running: {process.status}")
        process.updates.append(resources)

    async def pause(self, container_id: str) -> None:
        await self._phase("pause", container_id)
        process = self._process(container_id)
        if process.status != "running":
            raise RuntimeFailure(f"container not running: {process.status}")
        process.status = "paused"

    async def resume(self, container_id: str) -> None:
        await self._phase("resume", container_id)
        process = self._process(container_id)
        if process.status != "paused":
            raise RuntimeFailure("container not paused")
        process.status = "running"
        pending, process.pending_signals = process.pending_signals, []
        for signal in pending:
            self._deliver(process, signal)

    async def write_stdin(self, container_id: str, data: bytes) -> None:
        process = self._process(container_id)
        if process.stdin_closes:
            raise RuntimeFailure("stdin is closed")
        program = process.args[0].rsplit("/", 1)[-1] if process.args else ""
        if program == "cat":
            self._output(process, "stdout", data)  # cat echoes its input

    def watch_output(self, container_id: str, wanted: bool) -> None:
        """Output is pumped in any case (it is logged from the same reads)."""

    async def resize(self, container_id: str, height: int, width: int) -> None:
        process = self._process(container_id)
        if process.status not in ("running", "paused"):
            raise RuntimeFailure("container not running")
        process.size = (height, width)

    async def close_stdin(self, container_id: str) -> None:
        process = self._process(container_id)
        process.stdin_closes += 1
        program = process.args[0].rsplit("/", 1)[-1] if process.args else ""
        if program == "cat" and process.status == "running":
            self._finish(process, 0)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        await self._phase("delete", container_id)
        process = self.processes.get(container_id)
        if process is None:
            return
        if process.status != "stopped" and process.status != "created" and not force:
            raise RuntimeFailure(f"cannot delete container {container_id} that is not stopped")
        if process.timer is not None:
            process.timer.cancel()
        process.close_log()
        del self.processes[container_id]

    async def restore(self, container_id: str, stdio: Stdio) -> StateInfo | None:
        process = self.processes.get(container_id)
        if process is None or process.status in ("stopped", "created"):
            self.processes.pop(container_id, None)
            return None
        process.close_log()
        process.stdio = stdio
        return StateInfo("start", pid=process.pid)

    async def cleanup(self, keep: set[str]) -> None:
        for container_id in set(self.processes) - keep:
            self.processes.pop(container_id).close_log()

    # -- for tests -------------------------------------------------------------------------

    def exit(self, container_id: str, exit_code: int) -> None:
        """Make the container's process exit now with ``exit_code`` (as if it returned)."""
        process = self._process(container_id)
        if process.status == "created":
            raise RuntimeFailure("process has not started")
        self._finish(process, exit_code)

    def output(self, container_id: str, stream: str, data: bytes) -> None:
        """Make the running process print ``data`` on ``stream`` (``stdout`` or ``stderr``)."""
        process = self._process(container_id)
        if process.status != "running":
            raise RuntimeFailure(f"container {container_id} is not running")
        self._output(process, stream, data)

    def replay_exit(self, container_id: str) -> None:
        """Report the last exit again (runtimes may deliver an exit twice)."""
        info = self.exits.get(container_id)
        if info is None:
            raise RuntimeFailure("process has not exited")
        self._report(container_id, info)

    def live(self) -> set[str]:
        """Containers whose process exists and has not exited."""
        return {cid for cid, p in self.processes.items() if p.status != "stopped"}
