"""A running process's controls, with the runtime's failures worded as dockerd words them.

The runtime raises :class:`~asyncstart.runtime.base.RuntimeFailure` with its own message; here,
once, at the driver's edge, it becomes the error dockerd answers for that operation
(``Cannot kill container <id>: ...``), so the engine above never rewords a runtime error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .. import errors
from .._log import get_logger
from .base import Runtime, RuntimeFailure

__all__ = ["ProcessControl"]

log = get_logger("asyncstart.runtime")

#: How runtimes say the process is gone (runc: "container not running").
_PROCESS_GONE = ("not running", "no such process")


class ProcessControl:
    """Signals, freezing and stdin of containers' processes (dockerd's errors)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def kill(self, container_id: str, signal: int) -> None:
        """Signal the process. One that has just exited, its exit not yet reported (runc
        reports it once the output is drained), is no error: as dockerd, the exit that is on
        its way answers whoever waits for it."""
        try:
            await self.runtime.kill(container_id, signal)
        except RuntimeFailure as exc:
            if any(gone in exc.message.lower() for gone in _PROCESS_GONE):
                log.warning("kill.process_gone", container_id=container_id, error=exc.message)
                return
            raise errors.SystemError(
                f"Cannot kill container {container_id}: {exc.message}"
            ) from exc

    async def pause(self, container_id: str) -> None:
        with _worded(errors.SystemError, f"cannot pause container {container_id}"):
            await self.runtime.pause(container_id)

    async def resume(self, container_id: str) -> None:
        with _worded(errors.SystemError, f"Cannot unpause container {container_id}"):
            await self.runtime.resume(container_id)

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        with _worded(errors.SystemError, f"Cannot update container {container_id}"):
            await self.runtime.update(container_id, resources)

    async def write_stdin(self, container_id: str, data: bytes) -> None:
        with _worded(errors.Conflict, f"cannot write to the stdin of {container_id}"):
            await self.runtime.write_stdin(container_id, data)

    async def resize(self, container_id: str, height: int, width: int) -> None:
        with _worded(errors.SystemError, f"cannot resize container {container_id}"):
            await self.runtime.resize(container_id, height, width)

    def watch_output(self, container_id: str, wanted: bool) -> None:
        """Whether attached clients want the process's output now (a runtime whose output
        costs nothing to watch, or that always watches it, ignores this)."""
        self.runtime.watch_output(container_id, wanted)

    async def close_stdin(self, container_id: str) -> None:
        """Close the process's stdin. A process already gone has none to close: as dockerd,
        that is not an error for the client whose input ended."""
        try:
            await self.runtime.close_stdin(container_id)
        except RuntimeFailure as exc:
            log.debug("stdin.close_failed", container_id=container_id, error=exc.message)


@contextlib.contextmanager
def _worded(kind: type[errors.DockerError], prefix: str) -> Iterator[None]:
    """A runtime failure inside becomes ``kind("<prefix>: <the runtime's message>")``."""
    try:
        yield
    except RuntimeFailure as exc:
        raise kind(f"{prefix}: {exc.message}") from exc
