"""Signal names and numbers as the Docker API accepts them (``KILL``, ``SIGKILL``, ``9``)."""

from __future__ import annotations

import re
import signal as _signal

from . import errors

__all__ = ["parse_signal"]

_REALTIME = re.compile(r"SIGRT(?P<base>MIN|MAX)(?P<offset>[+-]\d+)?")


def parse_signal(value: str | int | None, default: int = _signal.SIGKILL) -> int:
    """Return the signal number, or raise 400 as dockerd does for an unknown signal."""
    if value is None or value == "":
        return int(default)
    if isinstance(value, int):
        number = value
    elif value.isdigit():
        number = int(value)
    else:
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if realtime := _REALTIME.fullmatch(name):
            # dockerd's map names them by offset: RTMIN+3, RTMAX-1.
            base = _signal.SIGRTMIN if realtime["base"] == "MIN" else _signal.SIGRTMAX
            number = int(base) + int(realtime["offset"] or 0)
            if not _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
                raise errors.InvalidParameter(f"Invalid signal: {value}")
        else:
            try:
                number = int(_signal.Signals[name])
            except KeyError:
                raise errors.InvalidParameter(f"Invalid signal: {value}") from None
    if not 0 < number < _signal.NSIG:
        raise errors.InvalidParameter(f"Invalid signal: {value}")
    return number
