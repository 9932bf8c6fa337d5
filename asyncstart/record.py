"""What the daemon keeps about a container, and how a start, an exit or a failed start change it.

Sans-io: the changes are pure functions from a record and the facts of the moment to the new
record, so the rules dockerd applies at each of these moments (which exit code a failed start
leaves, what an exit clears) read in one place and are tested without an engine.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .config import Config, HostConfig
from .ids import random_hex
from .lifecycle import Lifecycle, State, docker_status
from .mounts import MountPoint

__all__ = [
    "EXIT_UNKNOWN",
    "ZERO_TIME",
    "ContainerRecord",
    "exited",
    "new_id",
    "persisted_state",
    "start_failed",
    "started",
    "wait_result",
]

#: How Go prints its zero ``time.Time``; dockerd shows it for times that never happened.
ZERO_TIME = "0001-01-01T00:00:00Z"
#: dockerd's exit code for a start that failed for no reason the runtime explained.
EXIT_UNKNOWN = 128


class ContainerRecord(msgspec.Struct, kw_only=True, gc=False):
    """Everything the daemon persists about one container."""

    id: str
    name: str
    created: str
    image: str
    config: Config
    host_config: HostConfig
    #: A stable lifecycle state (the start saga's inner states are never written).
    state: str = "created"
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    has_been_started_before: bool = False
    has_been_manually_stopped: bool = False
    restart_count: int = 0
    network_settings: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The networks it is to join at start, by name: what the client asked of each endpoint
    #: (``EndpointsConfig``: aliases, address) and the network's ID. None: a record of an
    #: older daemon (its ``NetworkMode``'s network).
    endpoints: dict[str, dict[str, Any]] | None = None
    #: What it mounts (binds, volumes — their sources made at create — and tmpfs mounts from
    #: ``Mounts``), in mounting order. None: a record of an older daemon (its binds then).
    mount_points: list[MountPoint] | None = None


def new_id() -> str:
    """64 random hex digits whose short form is not all digits (it would read as a number)."""
    while True:
        candidate = random_hex(32)
        if not candidate[:12].isdigit():
            return candidate


def persisted_state(lifecycle: Lifecycle) -> str:
    """The state written to disk: a daemon killed mid-start reopens with the container as it
    was before the start, a stopping one as running, one being removed as dead (dockerd marks
    ``Dead`` before it starts to delete)."""
    if lifecycle.state is State.REMOVING:
        return "dead"
    # Otherwise what Docker shows, as it was before any start under way.
    return docker_status(lifecycle.state, ran_before=lifecycle.ran_before)


def started(
    record: ContainerRecord, *, pid: int, started_at: str, network: dict[str, Any]
) -> ContainerRecord:
    """The runtime reported ``StateChanged(start, pid)``: the last run's outcome is cleared."""
    return msgspec.structs.replace(
        record,
        pid=pid,
        started_at=started_at,
        exit_code=0,
        error="",
        oom_killed=False,
        has_been_started_before=True,
        network_settings=network,
    )


def exited(
    record: ContainerRecord,
    *,
    exit_code: int,
    finished_at: str,
    oom_killed: bool,
    restarting: bool,
) -> ContainerRecord:
    """The process ended (``restarting``: the restart policy brings it back)."""
    return msgspec.structs.replace(
        record,
        pid=0,
        exit_code=exit_code,
        finished_at=finished_at,
        oom_killed=record.oom_killed or oom_killed,
        # The network is gone; the files that named the container stay (dockerd's paths).
        network_settings={
            key: value for key, value in record.network_settings.items() if key.endswith("Path")
        },
        restart_count=record.restart_count + 1 if restarting else record.restart_count,
    )


def start_failed(
    record: ContainerRecord, *, error: str, exit_code: int, after_restart: bool
) -> ContainerRecord:
    """A start failed with ``error``; ``exit_code`` is the runtime's verdict (0: none).

    dockerd's rule: without a verdict, a container that last exited cleanly gets 128; a failed
    policy restart keeps the exit code of the run that ended, and so does any earlier non-zero
    one.
    """
    code = record.exit_code
    if exit_code:
        code = exit_code
    elif code == 0 and not after_restart:
        code = EXIT_UNKNOWN
    return msgspec.structs.replace(record, error=error, pid=0, exit_code=code)


def wait_result(record: ContainerRecord) -> dict[str, Any]:
    """What ``docker wait`` answers: the exit code, and the error of a failed start."""
    result: dict[str, Any] = {"StatusCode": record.exit_code}
    if record.error:
        result["Error"] = {"Message": record.error}
    return result
