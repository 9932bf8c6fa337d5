"""Fault injection for the fake drivers: make a named phase fail, for one container or any."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import errors

__all__ = ["FaultPlan"]


@dataclass(slots=True)
class _Fault:
    phase: str
    message: str
    container_id: str | None
    remaining: int
    error: Callable[[str], errors.DockerError]


@dataclass(slots=True)
class FaultPlan:
    """Faults armed by tests; each driver calls :meth:`check` at the top of every phase."""

    #: The error an injected fault raises unless ``inject`` names another.
    default_error: Callable[[str], errors.DockerError] = errors.SystemError
    _faults: list[_Fault] = field(default_factory=list)

    def inject(
        self,
        phase: str,
        message: str,
        *,
        container_id: str | None = None,
        times: int = 1,
        error: Callable[[str], errors.DockerError] | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``phase`` (for ``container_id``, or any) fail."""
        self._faults.append(
            _Fault(phase, message, container_id, times, error or self.default_error)
        )

    def check(self, phase: str, container_id: str) -> None:
        """Raise the armed fault for this phase and container, if any, and use it up."""
        for fault in self._faults:
            if fault.phase == phase and fault.container_id in (None, container_id):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                raise fault.error(fault.message)

    def clear(self) -> None:
        self._faults.clear()
