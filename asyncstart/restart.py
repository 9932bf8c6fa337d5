"""The restart manager: dockerd's restart policies and backoff. Sans-io.

It only decides; the actor keeps the timer. The decision follows dockerd's ``ShouldRestart``:
the delay starts at 100 ms and doubles up to one minute, and falls back to 100 ms when the
process ran for ten seconds or more. A cancelled manager never restarts again; a user start
replaces it with a fresh one (dockerd's ``ResetRestartManager``).
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field

from .config import RestartPolicy
from .signals import parse_signal

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_START",
    "RESET_AFTER",
    "RestartManager",
    "exits_on_next",
    "starts_with_the_daemon",
]

BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_MULTIPLIER = 2
#: A process that ran this long resets the backoff.
RESET_AFTER = 10.0


@dataclass(slots=True)
class RestartManager:
    """Decides whether, and after how long, an exited container restarts."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    restart_count: int = 0
    delay: float = 0.0
    cancelled: bool = False

    def should_restart(
        self, exit_code: int, *, manually_stopped: bool, ran_for: float
    ) -> float | None:
        """Return the delay before the restart, or ``None`` not to restart.

        ``manually_stopped`` matters for ``unless-stopped`` only; a user stop of an ``always``
        container is honoured because the stop cancels the manager (dockerd's ``ExitOnNext``).
        """
        name = self.policy.name
        if name in ("", "no") or self.cancelled:
            return None
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        if self.delay == 0.0:
            self.delay = BACKOFF_START
        elif self.delay < BACKOFF_MAX:
            self.delay *= BACKOFF_MULTIPLIER
        self.delay = min(self.delay, BACKOFF_MAX)

        if name == "always":
            restart = True
        elif name == "unless-stopped":
            restart = not manually_stopped
        elif name == "on-failure":
            limit = self.policy.maximum_retry_count
            restart = exit_code != 0 and (limit == 0 or self.restart_count < limit)
        else:
            restart = False
        if not restart:
            return None
        self.restart_count += 1
        return self.delay

    def should_restart_again(self) -> float:
        """The delay for a restart that was pending when the daemon stopped."""
        return self.delay or BACKOFF_START

    def cancel(self) -> None:
        """No restart from now on (a user stop or kill); only a user start undoes it."""
        self.cancelled = True


def starts_with_the_daemon(
    policy: RestartPolicy, exit_code: int, *, manually_stopped: bool, restart_count: int
) -> bool:
    """dockerd's restore: a stopped container that has run before is started when the daemon
    opens if a fresh restart manager would restart it now (dockerd's ``ShouldRestart``; a
    user's stop cancelled the manager that was, not this one): ``always`` even after a user's
    stop, ``unless-stopped`` unless a user stopped it, ``on-failure`` after a failure with
    retries left."""
    manager = RestartManager(policy, restart_count=restart_count)
    verdict = manager.should_restart(exit_code, manually_stopped=manually_stopped, ran_for=0)
    return verdict is not None


def exits_on_next(signal: int, stop_signal: str) -> bool:
    """dockerd's ``ExitOnNext`` rule: whether sending ``signal`` to a container whose stop
    signal is ``stop_signal`` cancels its restart policy (KILL, or the stop signal, does)."""
    return (
        not stop_signal
        or signal == _signal.SIGKILL
        or signal == parse_signal(stop_signal, default=_signal.SIGTERM)
    )
