"""structlog set-up for programs that run the engine (the CLI, benchmarks).

The library itself never configures logging: an embedding program owns that. This helper is for
asyncstart's own entry points: key-value lines at ``level`` and above to ``stream``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import structlog
from structlog.typing import EventDict

from .clock import utc_second

__all__ = ["configure_logging", "render_key_values"]


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    structlog.configure(
        processors=[
            # log.exception(): the exception's type, message and traceback, not "exc_info=True".
            structlog.processors.format_exc_info,
            render_key_values,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def render_key_values(_logger: object, method: str, event_dict: EventDict) -> str:
    """One line: ``timestamp='…Z' level='info' event='…'``, then the event's other keys in
    the order given, each ``key=repr(value)`` (structlog's ``TimeStamper``, ``add_log_level``
    and ``KeyValueRenderer`` in one step: the engine logs a line at every start)."""
    now = time.time()
    second = int(now)
    stamp = f"{utc_second(second)}.{int((now - second) * 1_000_000):06d}Z"
    event = event_dict.pop("event", None)
    level = "warning" if method == "warn" else method  # (as structlog's add_log_level)
    head = f"timestamp='{stamp}' level={level!r} event={event!r}"
    return " ".join([head, *[f"{key}={value!r}" for key, value in event_dict.items()]])
