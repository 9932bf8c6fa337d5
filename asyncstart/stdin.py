"""Closing a container's stdin that may be asked for before the process exists. Sans-io.

A client attached with stdin can reach EOF before the start has created the process. The
close must then wait for the process to be ready, and be dropped if the create fails — without
ever blocking the create path, and exactly once (Docker #28658: ``docker run -i`` hung when the
close raced the start). Each of the three events — ``request``, ``ready``, ``failed`` — is a
plain method that returns whether the caller must perform the close *now*; no task waits.
"""

from __future__ import annotations

from .lifecycle import SingletonEnum

__all__ = ["StdinCloser", "StdinState"]


class StdinState(SingletonEnum):
    WAITING = "waiting"  # no process yet, no close asked for
    CLOSE_PENDING = "close-pending"  # close asked for, process not ready yet
    READY = "ready"  # process ready, stdin open
    CLOSED = "closed"  # closed (exactly once)
    ABANDONED = "abandoned"  # the create failed or the process is gone: nothing to close


_S = StdinState
_TABLE: dict[tuple[StdinState, str], tuple[StdinState, bool]] = {
    # (state, event): (next state, close now?)
    (_S.WAITING, "request"): (_S.CLOSE_PENDING, False),
    (_S.WAITING, "ready"): (_S.READY, False),
    (_S.WAITING, "failed"): (_S.ABANDONED, False),
    (_S.CLOSE_PENDING, "request"): (_S.CLOSE_PENDING, False),
    (_S.CLOSE_PENDING, "ready"): (_S.CLOSED, True),
    (_S.CLOSE_PENDING, "failed"): (_S.ABANDONED, False),
    (_S.READY, "request"): (_S.CLOSED, True),
    (_S.READY, "ready"): (_S.READY, False),
    (_S.READY, "failed"): (_S.ABANDONED, False),
    (_S.CLOSED, "request"): (_S.CLOSED, False),
    (_S.CLOSED, "ready"): (_S.CLOSED, False),
    (_S.CLOSED, "failed"): (_S.CLOSED, False),
    (_S.ABANDONED, "request"): (_S.ABANDONED, False),
    (_S.ABANDONED, "ready"): (_S.ABANDONED, False),
    (_S.ABANDONED, "failed"): (_S.ABANDONED, False),
}


class StdinCloser:
    """One-shot, idempotent stdin close for one process; see the module docstring."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = StdinState.WAITING

    def _step(self, event: str) -> bool:
        self.state, close_now = _TABLE[self.state, event]
        return close_now

    def request(self) -> bool:
        """A client asked to close stdin. True: close it now."""
        return self._step("request")

    def ready(self) -> bool:
        """The process exists. True: a close was asked for earlier; close it now."""
        return self._step("ready")

    def failed(self) -> None:
        """The create failed (or the process is gone): drop any pending close."""
        self._step("failed")
