"""The runtime interface (libcontainerd's role) and what crosses it.

A runtime creates and runs one process per container from an OCI bundle and reports what
happens to it through :meth:`RuntimeBackend.state_changed`. Implementations: ``fake`` (in
memory, public, for tests and the engine-overhead benchmark); ``runc`` follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio

from .. import errors
from ..logs.options import LogOptions

__all__ = [
    "Bundle",
    "Runtime",
    "RuntimeBackend",
    "RuntimeFailure",
    "StateInfo",
    "Stdio",
    "translate_start_error",
]


@dataclass(frozen=True, slots=True)
class StateInfo:
    """What the runtime reports: ``start`` (with pid), ``exit`` (with exit code), and when."""

    state: Literal["start", "exit", "pause", "resume", "oom"]
    pid: int = 0
    exit_code: int = 0
    #: Wall-clock time it happened, seconds since the epoch (0: the engine stamps it).
    at: float = 0.0
    oom_killed: bool = False


class RuntimeBackend(Protocol):
    def state_changed(self, container_id: str, info: StateInfo) -> None:
        """Called by the runtime; must not block (the engine queues it)."""
        ...


@dataclass(frozen=True, slots=True)
class Stdio:
    """The process's standard streams as the engine wants them."""

    open_stdin: bool = False
    #: The stdin closes when the engine closes it (``StdinOnce``); else it stays open until the
    #: process ends, whoever comes and goes (a monitor keeps it open through engine restarts).
    stdin_once: bool = False
    tty: bool = False
    #: Where the runtime writes stdout/stderr, in dockerd's json-file format (None: discard).
    log_path: str | None = None
    #: How that log is rotated and what its entries carry (``HostConfig.LogConfig``).
    log_options: LogOptions = field(default_factory=LogOptions)
    #: Called with ``(stream, chunk)`` for chunks of output (attached clients; a runtime may
    #: call it only while :meth:`Runtime.watch_output` says they are wanted); must not block.
    on_output: Callable[[str, bytes], None] | None = None


@dataclass(frozen=True, slots=True)
class Bundle:
    """An OCI bundle: its directory and the ``config.json`` to write there."""

    path: Path
    spec: dict[str, Any] = field(default_factory=dict)
    #: (uid, gid) the bundle directory belongs to (the remapped root), else the daemon's.
    owner: tuple[int, int] | None = None


class RuntimeFailure(errors.SystemError):
    """The runtime refused or failed; the message is the runtime's own."""


class Console(Protocol):
    """Where an exec's terminal goes: its master, and how to tell the runtime of a new size
    (None: setting it on the master is enough)."""

    def __call__(self, master: int, on_resize: Callable[[], None] | None) -> None: ...


class Runtime(Protocol):
    """What the engine needs of an OCI runtime."""

    name: str

    async def run(
        self, backend: RuntimeBackend, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Serve until cancelled: watch processes, report through ``backend``."""
        ...

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
        """Create (or restore) the container's process, stopped before exec; return its pid."""
        ...

    async def start(self, container_id: str) -> None:
        """Let the created process run; the runtime then reports ``StateInfo("start", pid)``."""
        ...

    async def kill(self, container_id: str, signal: int) -> None: ...

    async def pause(self, container_id: str) -> None: ...

    async def resume(self, container_id: str) -> None: ...

    async def write_stdin(self, container_id: str, data: bytes) -> None:
        """Write to the process's stdin (created with ``open_stdin``)."""
        ...

    async def close_stdin(self, container_id: str) -> None: ...

    def watch_output(self, container_id: str, wanted: bool) -> None:
        """Attached clients want the container's output (``Stdio.on_output``) from now on, or
        no longer; it may be called before the container exists. Must not block."""
        ...

    async def resize(self, container_id: str, height: int, width: int) -> None:
        """Give the container's terminal a new size (nothing without a terminal)."""
        ...

    async def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: tuple[int, int, int],
        console: Console | None = None,
    ) -> int:
        """Run the OCI ``process`` in the running container, the three file descriptors its
        stdin, stdout and stderr — or, with ``process["terminal"]``, a terminal made in the
        container whose master goes to ``console``; its exit code once it ends. A failure to
        start it is a :class:`RuntimeFailure` with the runtime's message. Cancelled, the
        process is stopped."""
        ...

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Give the running container new cgroup limits (an OCI ``LinuxResources``)."""
        ...

    async def pids(self, container_id: str) -> list[int]:
        """The host pids of the running container's processes (``docker top``)."""
        ...

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Forget the container's runtime state; ``force`` kills a live process first."""
        ...

    async def restore(self, container_id: str, stdio: Stdio) -> StateInfo | None:
        """After a daemon restart: take a live process back under watch (its output to
        ``stdio``) and return its ``start``; if it ended meanwhile, its ``exit`` when the
        runtime knows the code and time (a monitor wrote them), else None. The leftovers of
        an ended one are deleted."""
        ...

    async def cleanup(self, keep: set[str]) -> None:
        """After a daemon restart: delete every container of this runtime not in ``keep``."""
        ...


#: dockerd's exit codes for a process that could not be started.
EXIT_EACCES = 126
EXIT_CMD_NOT_FOUND = 127
EXIT_UNKNOWN = 128


def translate_start_error(message: str) -> tuple[int, errors.DockerError]:
    """dockerd's ``setExitCodeFromError``: the exit code and error class for a start failure.

    The runtime's message decides: permission problems give 126, a missing command or file 127
    (both 400: the container's configuration is at fault), anything else 128 and a 500.
    """
    lower = message.lower()
    if "permission denied" in lower:
        return EXIT_EACCES, errors.InvalidParameter(message)
    if "is a directory" in lower:
        return EXIT_EACCES, errors.InvalidParameter(message + ": permission denied")
    if "not a directory" in lower:
        return EXIT_CMD_NOT_FOUND, errors.InvalidParameter(
            message + ": Are you trying to mount a directory onto a file (or vice-versa)? "
            "Check if the specified host path exists and is the expected type"
        )
    if any(
        needle in lower
        for needle in (
            "executable file not found",
            "no such file or directory",
            "system cannot find the file specified",
            "failed to run runc create/exec call",
        )
    ):
        return EXIT_CMD_NOT_FOUND, errors.InvalidParameter(message)
    return EXIT_UNKNOWN, errors.SystemError(message)
