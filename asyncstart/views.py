"""How dockerd shows a container: the ``inspect`` document and the ``ps`` row. Pure functions."""

from __future__ import annotations

import copy
import datetime as _dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .clock import utc_second
from .filters import Filters, container_matches
from .lifecycle import PROCESS_STATES, Lifecycle, State
from .mounts import inspect_entry
from .record import ZERO_TIME, ContainerRecord
from .restart import starts_with_the_daemon
from .security import parse_security_opt
from .spec import process_args

__all__ = [
    "ContainerSnapshot",
    "DaemonStatistics",
    "format_time",
    "human_duration",
    "inspect_view",
    "list_view",
    "parse_time",
    "ps_rows",
]


def format_time(timestamp: float) -> str:
    """Go's ``time.RFC3339Nano`` in UTC, to the microsecond: trailing zeros of the fraction
    trimmed. (On every start's path: the date and time to the second come from a small cache,
    the microseconds are added.)"""
    fraction_of_second, whole = math.modf(timestamp)  # (rounded as datetime rounds it)
    second, micro = int(whole), round(fraction_of_second * 1e6)
    if micro == 1_000_000:
        second, micro = second + 1, 0
    fraction = f"{micro:06d}".rstrip("0")
    return f"{utc_second(second)}.{fraction}Z" if fraction else f"{utc_second(second)}Z"


def parse_time(text: str) -> float:
    """Inverse of :func:`format_time` (0.0 for the zero time)."""
    if text == ZERO_TIME:
        return 0.0
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def human_duration(seconds: float) -> str:
    """go-units ``HumanDuration``, as ``docker ps`` prints it."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)  # go-units rounds half up, not half to even
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _state(record: ContainerRecord, lifecycle: Lifecycle) -> dict[str, Any]:
    state = lifecycle.state
    return {
        "Status": lifecycle.status,
        "Running": lifecycle.running,
        "Paused": state is State.PAUSED,
        "Restarting": lifecycle.restarting,
        "OOMKilled": record.oom_killed,
        "Dead": state is State.DEAD,
        "Pid": record.pid,
        "ExitCode": record.exit_code,
        "Error": record.error,
        "StartedAt": record.started_at,
        "FinishedAt": record.finished_at,
    }


def _host_config(record: ContainerRecord) -> dict[str, Any]:
    """Every field of dockerd's ``HostConfig``; the runtime by name even when the container
    runs the default one."""
    document: dict[str, Any] = msgspec.to_builtins(record.host_config)
    document["Runtime"] = record.host_config.effective_runtime
    return document


def inspect_view(record: ContainerRecord, lifecycle: Lifecycle) -> dict[str, Any]:
    """The document ``GET /containers/{id}/json`` returns."""
    args = process_args(record.config)
    # A copy: whoever edits the document must not edit the container's record.
    network = copy.deepcopy(record.network_settings)
    return {
        "Id": record.id,
        "Created": record.created,
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": _state(record, lifecycle),
        "Image": record.image,
        "ResolvConfPath": network.get("ResolvConfPath", ""),
        "HostnamePath": network.get("HostnamePath", ""),
        "HostsPath": network.get("HostsPath", ""),
        "LogPath": "",
        "Name": record.name,
        "RestartCount": record.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        # dockerd keeps the profile SecurityOpt names from create; a start on a host without
        # AppArmor (the profile not applied) clears it.
        "AppArmorProfile": ""
        if record.has_been_started_before
        else parse_security_opt(record.host_config.security_opt).apparmor,
        "ExecIDs": None,
        "HostConfig": _host_config(record),
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "Mounts": [inspect_entry(point) for point in record.mount_points or ()],
        "Config": msgspec.to_builtins(record.config),
        "NetworkSettings": {
            "SandboxID": "",
            "SandboxKey": network.get("SandboxKey", ""),
            "Ports": network.get("Ports", {}),
            "Gateway": network.get("Gateway", ""),
            "IPAddress": network.get("IPAddress", ""),
            "IPPrefixLen": network.get("IPPrefixLen", 0),
            "MacAddress": network.get("MacAddress", ""),
            "Networks": network.get("Networks") or _configured_networks(record),
        },
    }


def _status_text(record: ContainerRecord, lifecycle: Lifecycle, now: float) -> str:
    state = lifecycle.state
    status = lifecycle.status
    if status in ("running", "paused"):
        text = "Up " + human_duration(now - parse_time(record.started_at))
        return text + " (Paused)" if state is State.PAUSED else text
    if status == "restarting":
        ago = human_duration(now - parse_time(record.finished_at))
        return f"Restarting ({record.exit_code}) {ago} ago"
    if status == "removing":
        return "Removal In Progress"
    if status == "dead":
        return "Dead"
    if record.started_at == ZERO_TIME:
        return "Created"
    if record.finished_at == ZERO_TIME:
        return ""
    ago = human_duration(now - parse_time(record.finished_at))
    return f"Exited ({record.exit_code}) {ago} ago"


def list_view(record: ContainerRecord, lifecycle: Lifecycle, now: float) -> dict[str, Any]:
    """One row of ``GET /containers/json``."""
    args = process_args(record.config)
    # A copy: whoever edits the document must not edit the container's record.
    network = copy.deepcopy(record.network_settings)
    return {
        "Id": record.id,
        "Names": [record.name],
        # As dockerd: the name the container was created with; the resolved ID beside it.
        "Image": record.config.image or record.image,
        "ImageID": record.image if record.image.startswith("sha256:") else "",
        "Command": " ".join(args),
        "Created": int(parse_time(record.created)),
        "Ports": _port_rows(network.get("Ports", {})),
        "Labels": dict(record.config.labels),
        "State": lifecycle.status,
        "Status": _status_text(record, lifecycle, now),
        "HostConfig": {"NetworkMode": record.host_config.network_mode},
        "NetworkSettings": {"Networks": network.get("Networks") or _configured_networks(record)},
        "Mounts": [inspect_entry(point) for point in record.mount_points or ()],
    }


#: What ``docker ps`` lists without ``--all``.
_LISTED_BY_DEFAULT = ("running", "paused", "restarting")


def ps_rows(
    snapshots: Iterable[ContainerSnapshot],
    *,
    all: bool,
    limit: int,
    wanted: Filters,
    now: float,
) -> list[dict[str, Any]]:
    """``docker ps``: newest first; stopped ones only with ``all``, a ``limit`` or a status
    filter; at most ``limit`` rows (if positive)."""
    rows = []
    for snapshot in sorted(snapshots, key=lambda s: s.record.created, reverse=True):
        status = snapshot.lifecycle.status
        if not (all or limit > 0 or wanted.get("status")) and status not in _LISTED_BY_DEFAULT:
            continue
        if not container_matches(snapshot.record, status, wanted):
            continue
        rows.append(list_view(snapshot.record, snapshot.lifecycle, now))
        if 0 < limit <= len(rows):
            break
    return rows


def _port_rows(ports: dict[str, list[dict[str, str]] | None]) -> list[dict[str, Any]]:
    """``NetworkSettings.Ports`` as ``docker ps`` lists them (an exposed port that is not
    published: its number and protocol only, as dockerd)."""
    rows: list[dict[str, Any]] = []
    for spec, bindings in ports.items():
        number, _, proto = spec.partition("/")
        if not bindings:
            rows.append({"PrivatePort": int(number), "Type": proto or "tcp"})
        for binding in bindings or ():
            rows.append(
                {
                    "IP": binding["HostIp"],
                    "PrivatePort": int(number),
                    "PublicPort": int(binding["HostPort"]),
                    "Type": proto or "tcp",
                }
            )
    return rows


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    """A container as it was when the snapshot was taken; read it, never change it."""

    record: ContainerRecord
    lifecycle: Lifecycle

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def process_exists(self) -> bool:
        """Whether the container's process lives (running, paused or stopping)."""
        return self.lifecycle.state in PROCESS_STATES

    @property
    def starts_with_the_daemon(self) -> bool:
        """Stopped after it ran, with a restart policy that starts it when a daemon opens."""
        record = self.record
        return (
            self.lifecycle.state is State.EXITED
            and self.lifecycle.ran_before
            and starts_with_the_daemon(
                record.host_config.restart_policy,
                record.exit_code,
                manually_stopped=record.has_been_manually_stopped,
                restart_count=record.restart_count,
            )
        )

    def inspect(self) -> dict[str, Any]:
        """dockerd's inspect document."""
        return inspect_view(self.record, self.lifecycle)


@dataclass(frozen=True, slots=True)
class DaemonStatistics:
    """The daemon's counts, as ``docker info`` shows them."""

    containers: int
    running: int
    paused: int
    stopped: int
    #: Events a subscriber too slow to read them lost.
    events_dropped: int

    @classmethod
    def of(cls, snapshots: Iterable[ContainerSnapshot], *, events_dropped: int) -> DaemonStatistics:
        snapshots = list(snapshots)
        running = sum(1 for s in snapshots if s.process_exists)
        paused = sum(1 for s in snapshots if s.lifecycle.state is State.PAUSED)
        return cls(
            containers=len(snapshots),
            running=running - paused,
            paused=paused,
            stopped=len(snapshots) - running,
            events_dropped=events_dropped,
        )


# -- networks -------------------------------------------------------------------------------


def endpoint_view(
    config: Mapping[str, Any], live: Mapping[str, Any] | None, dns_names: Sequence[str] = ()
) -> dict[str, Any]:
    """dockerd's ``EndpointSettings``: what the client asked (``config``), and what the
    running container has (``live``: its address..., None when it does not run)."""
    live = live or {}
    return {
        "IPAMConfig": config.get("IPAMConfig"),
        "Links": config.get("Links"),
        "Aliases": config.get("Aliases"),
        "MacAddress": live.get("MacAddress", ""),
        "DriverOpts": None,
        "GwPriority": 0,
        "NetworkID": config.get("NetworkID", ""),
        "EndpointID": live.get("EndpointID", ""),
        "Gateway": live.get("Gateway", ""),
        "IPAddress": live.get("IPAddress", ""),
        "IPPrefixLen": live.get("IPPrefixLen", 0),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": list(dns_names) or None,
    }


def _configured_networks(record: ContainerRecord) -> dict[str, Any]:
    """The networks of a container that does not run: what it asked of each."""
    joined = joined_networks(record.endpoints, record.host_config.network_mode)
    return {name: endpoint_view(config, None) for name, config in joined.items()}


#: The files that name a container on its network, bind-mounted over its own: where, and the
#: ``NetworkSettings`` key of the file on the host.
NETWORK_FILES = (
    ("/etc/hostname", "HostnamePath"),
    ("/etc/hosts", "HostsPath"),
    ("/etc/resolv.conf", "ResolvConfPath"),
)


def network_files(network_settings: Mapping[str, Any]) -> dict[str, str]:
    """The container's network files that exist: target -> host path."""
    return {target: network_settings[key] for target, key in NETWORK_FILES
            if network_settings.get(key)}  # fmt: skip


def joined_networks(endpoints: Mapping[str, Any] | None, mode: str) -> dict[str, Any]:
    """The networks a container is to join, by name: its ``endpoints`` (a record from before
    these were kept has none: its ``NetworkMode``'s network)."""
    if endpoints is not None:
        return dict(endpoints)
    key = network_key(mode)
    return {} if key.startswith("container:") else {key: {}}


def network_key(mode: str) -> str:
    """The network ``HostConfig.NetworkMode`` names (``default`` is the bridge)."""
    return "bridge" if mode in ("", "default") else mode
