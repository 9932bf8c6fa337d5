"""A running process's controls, with the runtime's failures worded as dockerd words them.

The runtime raises :class:`~asyncstart.runtime.base.RuntimeFailure` with its own message; here,
once, at the driver's edge, it becomes the error dockerd answers for that operation
(``Cannot kill container <id>: ...``), so the engine above never rewords a runtime error.
"""

from __future__ import annotations

import structlog

from .. import errors
from .base import Runtime, RuntimeFailure

__all__ = ["ProcessControl"]

log = structlog.get_logger("asyncstart.runtime")


class ProcessControl:
    """Signals, freezing and stdin of containers' processes (dockerd's errors)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def kill(self, container_id: str, signal: int) -> None:
        try:
            await self.runtime.kill(container_id, signal)
        except RuntimeFailure as exc:
            raise errors.SystemError(
                f"Cannot kill container {container_id}: {exc.message}"
            ) from exc

    async def pause(self, container_id: str) -> None:
        try:
            await self.runtime.pause(container_id)
        except RuntimeFailure as exc:
            raise errors.SystemError(
                f"cannot pause container {container_id}: {exc.message}"
            ) from exc

    async def resume(self, container_id: str) -> None:
        try:
            await self.runtime.resume(container_id)
        except RuntimeFailure as exc:
            raise errors.SystemError(
                f"Cannot unpause container {container_id}: {exc.message}"
            ) from exc

    async def write_stdin(self, container_id: str, data: bytes) -> None:
        try:
            await self.runtime.write_stdin(container_id, data)
        except RuntimeFailure as exc:
            raise errors.Conflict(
                f"cannot write to the stdin of {container_id}: {exc.message}"
            ) from exc

    async def close_stdin(self, container_id: str) -> None:
        """Close the process's stdin. A process already gone has none to close: as dockerd,
        that is not an error for the client whose input ended."""
        try:
            await self.runtime.close_stdin(container_id)
        except RuntimeFailure as exc:
            log.debug("stdin.close_failed", container_id=container_id, error=exc.message)
