"""The engine's loggers: silent unless the program asks.

structlog, unconfigured, prints every event to stdout, debug included: an embedded engine
would then write about ten lines per start into a program that never asked for them. So each
of the engine's loggers decides at every call:

- the program configured structlog (``structlog.is_configured()``): the event goes through the
  program's own processors, under the logger's name (``asyncstart.<module>``);
- it did not: the event goes to the standard ``logging`` module's logger of that name, whose
  level and handlers the program controls — unconfigured, Python shows warnings and above
  only (its last-resort handler), and ``logging.getLogger("asyncstart")`` governs them all.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]

_TO_STDLIB: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.stdlib.add_log_level,
    structlog.processors.format_exc_info,
    structlog.processors.KeyValueRenderer(key_order=["event"]),
]


class EngineLogger:
    """A logger of the engine's: structlog's when the program configured it, else the
    standard library's of the same name (see the module docstring)."""

    __slots__ = ("_name", "_stdlib", "_structlog")

    def __init__(self, name: str) -> None:
        self._name = name
        self._structlog: Any = structlog.get_logger(name)
        self._stdlib: Any = structlog.wrap_logger(
            logging.getLogger(name),
            processors=_TO_STDLIB,
            wrapper_class=structlog.stdlib.BoundLogger,
        )

    def _target(self) -> Any:
        return self._structlog if structlog.is_configured() else self._stdlib

    def debug_enabled(self) -> bool:
        """Whether a debug event would go anywhere now: a caller with several to log may skip
        making them (True where the program's logger cannot tell)."""
        if structlog.is_configured():
            bound = self._structlog.bind()
            check = getattr(bound, "is_enabled_for", None) or getattr(bound, "isEnabledFor", None)
            return True if check is None else bool(check(logging.DEBUG))
        return bool(self._stdlib.isEnabledFor(logging.DEBUG))

    def debug(self, event: str, **kw: Any) -> None:
        self._target().debug(event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._target().info(event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._target().warning(event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._target().error(event, **kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._target().exception(event, **kw)


def get_logger(name: str) -> EngineLogger:
    """The engine's logger called ``name`` (``asyncstart.<module>``)."""
    return EngineLogger(name)
