"""The runc runtime: the :class:`~asyncstart.runtime.base.Runtime` interface on the ``runc`` binary.

Each container has a bundle directory (:mod:`.bundle`, where the engine says), its stdio
(:mod:`.stdio`) and an init process watched by pidfd (:mod:`.reaper`); runc is driven through
:mod:`.runc_cli`.
Every error from runc is a :class:`RuntimeFailure` carrying runc's own message, which the engine
maps to dockerd's exit codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._log import get_logger
from ..fsdirs import spread_subdirectories
from .base import Bundle, Console, RuntimeBackend, RuntimeFailure, StateInfo, Stdio
from .bundle import BundleDir
from .reaper import InitProcess, child_subreaper, reap, reap_exec_leftovers
from .runc_cli import (
    RuncCli,
    RuntimeChoice,
    is_crun,
    runc_error,
    runtime_env,
    starts_in_one_call,
)
from .seccomp_cache import FilterCache, FilterKey
from .stdio import ConsoleSocket, ContainerStdio

__all__ = ["RuncRuntime"]

log = get_logger("asyncstart.runtime.runc")


#: The kernel's ``PID_MAX_LIMIT`` (64-bit): no cgroup can hold more pids.
PID_MAX_LIMIT = 1 << 22


@dataclass(slots=True)
class _Container:
    bundle: BundleDir
    runtime: RuntimeChoice
    init: InitProcess
    stdio: ContainerStdio
    #: Its process runs (``run --detach`` or a restore); else ``start`` runs the runtime's.
    running: bool = False
    #: An exec ran in it: a helper of the runtime's may have been orphaned to the daemon.
    exec_ran: bool = False

    @property
    def pid(self) -> int:
        return self.init.pid

    def close(self) -> None:
        self.stdio.close()
        self.init.close()


#: What :func:`runc_error` answers for a log without an error.
_NO_ERROR = "\x00"


class RuncRuntime:
    """Runs containers with the ``runc`` binary; see the module docstring.

    ``state_root`` is runc's ``--root``; ``binary`` and ``runtime_args`` (global flags) are the
    daemon's default runtime; ``no_pivot_root`` (or ``DOCKER_RAMDISK`` in the environment) makes
    runc use ``MS_MOVE`` instead of ``pivot_root``, for a root on a ramdisk.
    """

    name = "runc"

    def __init__(
        self,
        state_root: Path,
        *,
        binary: str = "runc",
        runtime_args: tuple[str, ...] = (),
        no_pivot_root: bool = False,
        runtimes: Sequence[Sequence[str]] = (),
    ) -> None:
        self.state_root = state_root
        #: Every (path, *flags) a container may be run with: asked for their containers after
        #: a restart.
        self.runtimes = [tuple(entry) for entry in runtimes if entry]
        self.binary = binary
        self.runtime_args = runtime_args
        self.no_pivot_root = no_pivot_root or bool(os.environ.get("DOCKER_RAMDISK"))
        self._cli = RuncCli(state_root, binary, runtime_args)
        #: crun's compiled seccomp programs, handed back to it.
        self._filters = FilterCache()
        self._containers: dict[str, _Container] = {}
        self._backend: RuntimeBackend | None = None
        #: run()'s task group while it serves (None before and after).
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self,
        backend: RuntimeBackend,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled: pump the containers' output and report their exits."""
        self.state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        spread_subdirectories(self.state_root)  # the runtime's directory per container
        self._backend = backend
        try:
            with child_subreaper():
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    task_status.started()
                    await anyio.sleep_forever()
        finally:
            self._tg = None
            # The containers live on (as with dockerd's live-restore); this process lets go of
            # them, so that a daemon opened later is their only reader and writer.
            for box in self._containers.values():
                box.close()
            self._containers.clear()

    def _box(self, container_id: str) -> _Container:
        box = self._containers.get(container_id)
        if box is None:
            raise RuntimeFailure(f"container {container_id} does not exist")
        return box

    def _runtime(self, container_id: str) -> RuntimeChoice:
        box = self._containers.get(container_id)
        return box.runtime if box else RuntimeChoice()

    def _watch(self, container_id: str, box: _Container) -> None:
        assert self._tg is not None, "RuncRuntime.run() is not running"
        self._containers[container_id] = box
        box.stdio.start_pumps(self._tg)

    async def _monitor(self, container_id: str, box: _Container) -> None:
        with box.init.watch:
            code = await box.init.wait()
            # As dockerd waits for the streams: the die comes after the last line is logged
            # (bounded: a child the process left behind may hold the pipes open).
            with anyio.move_on_after(2):
                await box.stdio.drained.wait()
            assert self._backend is not None
            info = StateInfo("exit", pid=box.init.pid, exit_code=code, at=time.time())
            self._backend.state_changed(container_id, info)

    # -- create ----------------------------------------------------------------------------

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
        """The container, created and started by one ``runc run --detach`` (or ``restore``
        from a checkpoint; crun: created only, see ``starts_in_one_call``); the output is
        pumped from now. The start is reported by :meth:`start`: nothing else runs between
        create and start, so the second runc (about 10 ms at every start) is spared."""
        directory = BundleDir(bundle.path)
        runtime = RuntimeChoice(binary, tuple(runtime_args))
        for attempt in range(2):
            directory.make()
            box = self._new_box(directory, runtime, stdio, bool(checkpoint))
            try:
                await self._spawn(container_id, bundle, box, checkpoint, checkpoint_dir)
                break
            except BaseException as exc:
                # A create that fails leaves nothing: fds, runc state, bundle. That also
                # clears a stale runc container with this ID (a crashed daemon's), which is
                # replaced: the create is tried once more. (No "runc state" on the happy path.)
                with anyio.CancelScope(shield=True):
                    await self._discard(container_id, box)
                directory.remove()
                stale = isinstance(exc, RuntimeFailure) and "exists" in exc.message
                if attempt or not stale:
                    raise
        self._watch(container_id, box)
        return box.pid

    def _new_box(
        self, directory: BundleDir, runtime: RuntimeChoice, stdio: Stdio, restoring: bool
    ) -> _Container:
        """How a container about to be created is held (here: FIFOs, pidfd on its init)."""
        box = _Container(directory, runtime, InitProcess(), ContainerStdio(stdio))
        box.running = restoring or starts_in_one_call(self._cli.binary_of(runtime))
        return box

    async def _discard(self, container_id: str, box: _Container) -> None:
        """Undo a create that failed: our ends, then whatever the runtime made."""
        box.close()
        await self._delete_leftover(container_id, box.runtime)

    async def _spawn(
        self,
        container_id: str,
        bundle: Bundle,
        box: _Container,
        checkpoint: str | None,
        checkpoint_dir: str | None,
    ) -> None:
        learn = self._write_bundle(box.bundle, bundle, box.runtime, bool(checkpoint))
        with box.stdio.child_ends(box.bundle) as child:
            await self._cli.create(
                container_id,
                box.bundle.path,
                runtime=box.runtime,
                pid_file=box.bundle.pid_file,
                log_file=box.bundle.runc_log,
                fds=child.fds,
                console_socket=child.console.path if child.console else None,
                checkpoint=checkpoint,
                checkpoint_dir=checkpoint_dir,
                no_pivot=self.no_pivot_root,
                start=box.running,
            )
            box.stdio.take_console(child)
        box.init.open(box.bundle.read_pid())
        self._filters.learn(learn, self.state_root / container_id)

    def _write_bundle(
        self, directory: BundleDir, bundle: Bundle, runtime: RuntimeChoice, restoring: bool
    ) -> FilterKey | None:
        """Write the bundle's ``config.json`` (with crun's seccomp program for its profile if
        one is kept); what to learn from the create (see :class:`FilterCache`)."""
        binary = self._cli.binary_of(runtime)
        spec, learn = self._filters.prepare(binary, bundle.spec, restoring=restoring)
        directory.write(spec, owner=bundle.owner, runtime=runtime)
        return learn

    async def _delete_leftover(self, container_id: str, runtime: RuntimeChoice) -> None:
        """Delete whatever any runtime has under this ID (and reap its init if it is ours):
        a crashed daemon's container may be another runtime's than this one's."""
        asked = set()
        for choice in [runtime, *self._choices()]:
            binary = self._cli.binary_of(choice)
            if binary in asked:  # (the same binary lists the same containers)
                continue
            asked.add(binary)
            state = await self._cli.state(container_id, runtime=choice)
            if state is not None:
                await self._cli.quietly("delete", "--force", container_id, runtime=choice)
                await reap(int(state.get("pid", 0)))
                return

    # -- the running process ---------------------------------------------------------------

    async def start(self, container_id: str) -> None:
        """Starts the process if :meth:`create` did not (crun), reports the start, then the
        exit when it comes."""
        box = self._box(container_id)
        if not box.running:
            await self._cli.checked("start", container_id, runtime=box.runtime)
            box.running = True
        assert self._backend is not None and self._tg is not None
        info = StateInfo("start", pid=box.init.pid, at=time.time())
        self._backend.state_changed(container_id, info)
        self._tg.start_soon(self._monitor, container_id, box)

    async def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: tuple[int, int, int],
        console: Console | None = None,
    ) -> int:
        """``runc exec --process``: runc stays the process's parent, forwards signals and exits
        with its code. A terminal: ``--tty`` with a console socket. Cancelled: runc is told to
        stop (it passes SIGTERM on), then killed."""
        bundle = self.state_root.parent / container_id
        fd, name = tempfile.mkstemp(dir=bundle, prefix="exec-", suffix=".json")
        log_file = Path(name[: -len(".json")] + ".log")
        with os.fdopen(fd, "w") as file:
            json.dump(process, file)
        terminal = bool(process.get("terminal"))
        runtime = self._runtime(container_id)
        # crun takes a console socket while it waits for the process; runc only when it
        # detaches: without one it proxies the container's terminal to its own stdio, which is
        # then a terminal of the daemon's (and told of a new size by SIGWINCH).
        proxied = terminal and not is_crun(self._cli.binary_of(runtime))
        with contextlib.ExitStack() as stack:
            extra: list[str] = []
            socket_ = stack.enter_context(ConsoleSocket()) if terminal and not proxied else None
            if socket_ is not None:
                extra = ["--tty", "--console-socket", socket_.path]
            if proxied:
                master, slave = os.openpty()
                stack.callback(os.close, slave)
                stdio = (slave, slave, slave)
            argv = self._cli.argv("exec", *extra, "--process", name, container_id,
                                  runtime=runtime, log_file=log_file)  # fmt: skip
            try:
                box = self._containers.get(container_id)
                if box is not None:
                    box.exec_ran = True
                code = await self._exec(argv, stdio, socket_, console, master if proxied else None)
                # An error in runc's log: it failed to start the process (which did not run).
                failed = await anyio.to_thread.run_sync(runc_error, log_file, _NO_ERROR)
            finally:
                for path in (name, log_file):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                # (the runtime's helper that joined the container may have been orphaned to us)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(reap_exec_leftovers)
        if failed != _NO_ERROR:
            raise RuntimeFailure(failed)
        return code

    async def _exec(
        self,
        argv: list[str],
        stdio: tuple[int, int, int],
        socket_: ConsoleSocket | None,
        console: Console | None,
        master: int | None,
    ) -> int:
        try:
            runner = await anyio.open_process(argv, stdin=stdio[0], stdout=stdio[1],
                                              stderr=stdio[2], env=runtime_env())  # fmt: skip
        except OSError as exc:
            raise RuntimeFailure(f"failed to run {argv[0]}: {exc.strerror}") from exc
        try:
            if socket_ is not None:
                with contextlib.suppress(RuntimeFailure, OSError):
                    master = await anyio.to_thread.run_sync(socket_.receive)
                    if console is not None:
                        console(master, None)
                    else:
                        os.close(master)
            elif master is not None and console is not None:  # (runc's proxied terminal)
                console(master, lambda: runner.send_signal(signal.SIGWINCH))
            elif master is not None:
                os.close(master)
            return await runner.wait()
        finally:
            with anyio.CancelScope(shield=True):
                if runner.returncode is None:
                    runner.terminate()
                    with anyio.move_on_after(2):
                        await runner.wait()
                if runner.returncode is None:
                    runner.kill()
                    await runner.wait()

    async def pids(self, container_id: str) -> list[int]:
        """``runc ps --format json``: every process in the container's cgroup."""
        result = await self._cli.run(
            "ps", "--format", "json", container_id, runtime=self._runtime(container_id)
        )
        if result.returncode != 0:
            message = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise RuntimeFailure(f"runc ps failed: {message}")
        try:
            return [int(pid) for pid in json.loads(result.stdout or b"[]") or []]
        except (ValueError, TypeError) as exc:
            raise RuntimeFailure(f"runc ps: unreadable answer: {exc}") from exc

    async def kill(self, container_id: str, signal: int) -> None:
        """``runc kill`` with ``signal``."""
        box = self._box(container_id)
        if box.exec_ran:  # an exec helper that died since: reaped, or the init could not end
            await anyio.to_thread.run_sync(reap_exec_leftovers)
        await self._cli.checked("kill", container_id, str(signal), runtime=box.runtime)

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """``runc update --resources``: the file is kept in the bundle, beside config.json.

        crun (1.8) cannot lift a pids limit (it writes -1 as is, which the kernel refuses):
        it gets the kernel's most pids possible instead, which no limit is below."""
        box = self._box(container_id)
        pids = resources.get("pids")
        if pids and pids["limit"] < 0 and is_crun(self._cli.binary_of(box.runtime)):
            resources = {**resources, "pids": {"limit": PID_MAX_LIMIT}}
        path = box.bundle.path / "resources.json"
        await anyio.to_thread.run_sync(path.write_bytes, json.dumps(resources).encode())
        await self._cli.checked(
            "update", "--resources", str(path), container_id, runtime=box.runtime
        )

    async def pause(self, container_id: str) -> None:
        """``runc pause``."""
        await self._cli.checked("pause", container_id, runtime=self._runtime(container_id))

    async def resume(self, container_id: str) -> None:
        """``runc resume``."""
        await self._cli.checked("resume", container_id, runtime=self._runtime(container_id))

    async def write_stdin(self, container_id: str, data: bytes) -> None:
        """Write to the process's stdin (FIFO or pty)."""
        await self._box(container_id).stdio.write_stdin(data)

    async def close_stdin(self, container_id: str) -> None:
        """Close the process's stdin (^D on a pty)."""
        self._box(container_id).stdio.close_stdin()

    def watch_output(self, container_id: str, wanted: bool) -> None:
        """Output is pumped in any case (it is logged from the same reads)."""

    async def resize(self, container_id: str, height: int, width: int) -> None:
        """The terminal's new size, on the pty master."""
        self._box(container_id).stdio.resize(height, width)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """``runc delete``, then reap the init and remove the bundle."""
        await self._cli.delete(container_id, runtime=self._runtime(container_id), force=force)
        box = self._containers.pop(container_id, None)
        if box is not None:
            box.init.watch.cancel()
            # Reap it if the monitor did not (a force delete of a process that never started
            # or that the monitor was not watching any more).
            await box.init.reap()
            box.close()
            box.bundle.remove()

    # -- after a daemon restart ------------------------------------------------------------

    async def restore(self, container_id: str, stdio: Stdio) -> StateInfo | None:
        """Take a live container back (pidfd, FIFOs reopened); delete a dead one. Asked of
        the runtime its bundle says it was created with (runc or crun)."""
        runtime = BundleDir(self.state_root.parent / container_id).runtime()
        state = await self._cli.state(container_id, runtime=runtime)
        if state is None:
            return None
        if state.get("status") not in ("running", "paused"):
            # runc reports pid 0 for a stopped container: the pid file still knows it.
            dead = BundleDir(Path(state.get("bundle", "/nonexistent")))
            pid = dead.read_pid() if dead.pid_file.is_file() else 0
            await self._cli.quietly("delete", "--force", container_id, runtime=runtime)
            await reap(pid)
            return None
        bundle = BundleDir(Path(state["bundle"]))
        box = _Container(bundle, runtime, InitProcess(), ContainerStdio(stdio), True)
        try:
            box.init.open(int(state["pid"]))
        except ProcessLookupError:
            await self._cli.quietly("delete", "--force", container_id, runtime=runtime)
            return None
        box.stdio.reopen(bundle)
        self._watch(container_id, box)
        assert self._tg is not None
        self._tg.start_soon(self._monitor, container_id, box)
        return StateInfo("start", pid=box.init.pid)

    async def cleanup(self, keep: set[str]) -> None:
        """Delete every container of the state root (and its bundle) not in ``keep``, asking
        each runtime the daemon knows (each lists only its own)."""
        for runtime in self._choices():
            for entry in await self._cli.containers(runtime=runtime):
                if entry["id"] not in keep:
                    log.info("runtime.cleanup", container_id=entry["id"], status=entry["status"])
                    bundle = BundleDir(Path(entry["bundle"]))
                    await self._cli.quietly("delete", "--force", entry["id"], runtime=runtime)
                    await reap(int(entry.get("pid", 0)))
                    bundle.remove()

    def _choices(self) -> list[RuntimeChoice]:
        """The daemon's runtime, then each other binary it may run containers with."""
        choices, seen = [RuntimeChoice()], {self.binary}
        for binary, *flags in self.runtimes:
            if binary not in seen:
                seen.add(binary)
                choices.append(RuntimeChoice(binary, tuple(flags)))
        return choices
