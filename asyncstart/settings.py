"""dockerd's platform checks at create (``verifyPlatformContainerSettings``), and the rule that
every setting the engine holds is applied or refused — never accepted and ignored.

Pure: what the machine offers comes in as ``HostFacts`` (dockerd's ``sysinfo``), gathered once
by the daemon, so each check is a plain function of the request and those facts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from . import errors
from .config import Config, HostConfig, not_applied, parse_host_config, validate_host_config

__all__ = [
    "DEFAULT_SHM_SIZE",
    "MAX_ID",
    "HostFacts",
    "apply_update",
    "fill_defaults",
    "format_id_list",
    "parse_id_list",
    "refuse_health_check",
    "validate_platform",
]

#: dockerd's ``DefaultShmSize``: 64 MiB.
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
#: dockerd's ``linuxMinMemory``.
_MIN_MEMORY = 6 * 1024 * 1024
#: The largest uid/gid a process can have ((uid_t)-1 is "no change").
MAX_ID = 2**32 - 2
#: dockerd's ``maxHostnameLen`` (HOST_NAME_MAX).
_MAX_HOSTNAME = 64


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What create's checks need to know of the machine."""

    #: Online CPUs (Go's ``runtime.NumCPU``): the ceiling of ``NanoCpus``.
    cpus: int = 1
    #: The CPUs and memory nodes a container may be pinned to (the root cpuset).
    cpuset_cpus: frozenset[int] = frozenset({0})
    cpuset_mems: frozenset[int] = frozenset({0})
    #: A unified (v2) cgroup hierarchy: containers get a private cgroup namespace by default.
    cgroup2: bool = False
    #: The blkio controller can weigh (CFQ/BFQ ``weight`` files).
    blkio_weight: bool = False
    #: Swap is accounted (``memory.memsw.*``): ``MemorySwap`` can be limited.
    swap_limit: bool = True
    #: The memory controller takes ``swappiness`` and can leave the OOM killer off (cgroup v1
    #: only: runc writes neither on v2).
    memory_swappiness: bool = True
    oom_kill_disable: bool = True
    #: Containers run in a user namespace (``userns-remap``).
    userns: bool = False


#: Settings a container may carry that the engine does not apply: accepted only with the values
#: that ask for nothing (what clients send by default), else refused with a 400.
_NOT_APPLIED: dict[str, tuple[Any, ...]] = {
    "Privileged": (False,),
    "Devices": (None, []),
    "DeviceCgroupRules": (None, []),
    "DeviceRequests": (None, []),
    "BlkioWeightDevice": (None, []),
    "BlkioDeviceReadBps": (None, []),
    "BlkioDeviceWriteBps": (None, []),
    "BlkioDeviceReadIOps": (None, []),
    "BlkioDeviceWriteIOps": (None, []),
    "Init": (None, False),
    "Cgroup": ("",),
    # Real-time CPU time needs a budget in every parent cgroup (dockerd's daemon-wide
    # cpu-rt-runtime), which the engine does not hand out.
    "CpuRealtimePeriod": (0,),
    "CpuRealtimeRuntime": (0,),
    "CpuCount": (0,),
    "CpuPercent": (0,),
}
_CONFIG_NOT_APPLIED: dict[str, tuple[Any, ...]] = {
    "MacAddress": ("",),
    "NetworkDisabled": (False,),
}

_PID_MODES = ("", "host")
_IPC_MODES = ("", "private", "shareable", "host", "none")
_UTS_MODES = ("", "host")
_CGROUPNS_MODES = ("", "host", "private")
_ISOLATIONS = ("", "default")


def _wire(struct: Config | HostConfig) -> dict[str, Any]:
    fields = type(struct).__struct_encode_fields__
    return {
        wire: getattr(struct, name)
        for name, wire in zip(struct.__struct_fields__, fields, strict=True)
    }


def _refuse_not_applied(section: str, values: dict[str, Any], table: dict[str, Any]) -> None:
    for key, neutral in table.items():
        if values[key] not in neutral:
            raise not_applied(section, key, values[key])


_LIST_ITEM = re.compile(r"(\d+)(?:-(\d+))?")


def parse_id_list(text: str) -> frozenset[int]:
    """A cpuset list (``0-2,4``) as a set; ``ValueError`` if malformed."""
    ids: set[int] = set()
    for item in text.split(",") if text else ():
        match = _LIST_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"invalid format: {text}")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low:
            raise ValueError(f"invalid range format: {item}")
        ids.update(range(low, high + 1))
    return frozenset(ids)


def _cpuset(value: str, available: frozenset[int], what: str) -> None:
    try:
        wanted = parse_id_list(value)
    except ValueError as exc:
        raise errors.InvalidParameter(f"Invalid value {value} for cpuset {what}: {exc}") from None
    if not wanted <= available:
        noun = "CPUs" if what == "cpus" else "memory nodes"
        raise errors.InvalidParameter(
            f"Requested {noun} are not available - requested {value}, "
            f"available: {format_id_list(available)}"
        )


def format_id_list(ids: Iterable[int]) -> str:
    """A set as the kernel writes cpuset lists: ``0-3,6``."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _resources(host: HostConfig, facts: HostFacts) -> None:
    """``verifyPlatformContainerResources``: what dockerd refuses, in its order. (What it
    discards with a warning because the kernel cannot do it, this engine refuses.)"""
    if host.memory > 0 and host.memory_swap > 0 and host.memory_swap < host.memory:
        raise errors.InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if host.memory == 0 and host.memory_swap > 0:
        raise errors.InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    if host.memory > 0 and host.memory_swap not in (0, -1) and not facts.swap_limit:
        raise errors.InvalidParameter(
            "Your kernel does not support swap limit capabilities or the cgroup is not mounted."
        )
    swappiness = host.memory_swappiness
    if swappiness is not None and swappiness != -1 and not 0 <= swappiness <= 100:
        raise errors.InvalidParameter(
            f"Invalid value: {swappiness}, valid memory swappiness range is 0-100"
        )
    if swappiness is not None and swappiness != -1 and not facts.memory_swappiness:
        raise errors.InvalidParameter(
            "Your kernel does not support memory swappiness capabilities or the cgroup is not "
            "mounted."
        )
    if host.oom_kill_disable and not facts.oom_kill_disable:
        raise errors.InvalidParameter("Your kernel does not support OomKillDisable.")
    if 0 < host.memory_reservation < _MIN_MEMORY:
        raise errors.InvalidParameter("Minimum memory reservation allowed is 6MB")
    if 0 < host.memory < host.memory_reservation:
        raise errors.InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )
    if host.nano_cpus > 0 and host.cpu_period > 0:
        raise errors.InvalidParameter(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set"
        )
    if host.nano_cpus > 0 and host.cpu_quota > 0:
        raise errors.InvalidParameter(
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set"
        )
    if host.nano_cpus and not 0 < host.nano_cpus <= facts.cpus * 10**9:
        raise errors.InvalidParameter(
            f"range of CPUs is from 0.01 to {facts.cpus}.00, as there are only {facts.cpus} "
            "CPUs available"
        )
    if host.cpu_period and not 1000 <= host.cpu_period <= 1_000_000:
        raise errors.InvalidParameter(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if 0 < host.cpu_quota < 1000:
        raise errors.InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if host.cpuset_cpus:
        _cpuset(host.cpuset_cpus, facts.cpuset_cpus, "cpus")
    if host.cpuset_mems:
        _cpuset(host.cpuset_mems, facts.cpuset_mems, "mems")
    if host.blkio_weight and not facts.blkio_weight:
        raise errors.InvalidParameter(
            "Your kernel does not support Block I/O weight or the cgroup is not mounted."
        )
    if host.blkio_weight and not 10 <= host.blkio_weight <= 1000:
        raise errors.InvalidParameter("Range of blkio weight is from 10 to 1000")


def _modes(host: HostConfig, facts: HostFacts) -> None:
    """The namespace modes: dockerd's "invalid ... mode" for what no dockerd accepts, the
    engine's refusal for joining another container's namespace (not applied yet)."""
    for key, value, valid, what, joinable in (
        ("IpcMode", host.ipc_mode, _IPC_MODES, "IPC", True),
        ("PidMode", host.pid_mode, _PID_MODES, "PID", True),
        ("UTSMode", host.uts_mode, _UTS_MODES, "UTS", False),
    ):
        if joinable and value.startswith("container:") and value != "container:":
            raise not_applied("HostConfig", key, value)
        if value not in valid:
            raise errors.InvalidParameter(f"invalid {what} mode: {value}")
    if host.cgroupns_mode not in _CGROUPNS_MODES:
        raise errors.InvalidParameter(f"invalid cgroup namespace mode: {host.cgroupns_mode}")
    if host.userns_mode not in ("", "host"):
        raise errors.InvalidParameter(f"invalid USER mode: {host.userns_mode}")
    if host.userns_mode == "host" and facts.userns:
        raise not_applied("HostConfig", "UsernsMode", host.userns_mode)
    if facts.userns and host.pid_mode == "host":
        raise errors.InvalidParameter(
            "cannot share the host PID namespace when user namespaces are enabled"
        )


def _storage_opt(host: HostConfig) -> None:
    for key in host.storage_opt or {}:
        if key.lower() == "size":
            raise errors.InvalidParameter(
                "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"
            )
        raise errors.InvalidParameter(f"Unknown option {key.lower()}")


def _user(user: str) -> None:
    """A numeric uid or gid must be one a process can have (names are looked up at start, in
    the image's /etc/passwd and /etc/group)."""
    for part in user.split(":", 1):
        if part.isdigit() and int(part) > MAX_ID:
            raise errors.InvalidParameter(
                f"invalid user {user!r}: {part} is not a valid uid or gid (0 to {MAX_ID})"
            )


def _decode_checks(config: Config, host: HostConfig) -> None:
    """What dockerd's ``runconfig`` refuses as it decodes the request (so these come first)."""
    if host.uts_mode == "host" and config.hostname:
        raise errors.InvalidParameter("conflicting options: hostname and the UTS mode")
    if host.uts_mode == "host" and config.domainname:
        raise errors.InvalidParameter("conflicting options: domainname and the UTS mode")
    if host.isolation not in _ISOLATIONS:
        raise errors.InvalidParameter(
            f"invalid isolation ({host.isolation}): linux only supports 'default'"
        )
    if host.links:
        mode = host.network_mode
        if mode == "host":
            raise errors.InvalidParameter(
                "conflicting options: host type networking can't be used with links. "
                "This would result in undefined behavior"
            )
        if mode.startswith("container:"):
            raise errors.InvalidParameter(
                "conflicting options: container type network can't be used with links. "
                "This would result in undefined behavior"
            )
        for link in host.links:
            parse_link(link)
    if host.io_maximum_bandwidth:
        raise errors.InvalidParameter(
            "invalid option: QoS maximum bandwidth configuration is not supported on linux"
        )
    if host.io_maximum_iops:
        raise errors.InvalidParameter(
            "invalid option: QoS maximum IOPs configuration is not supported on linux"
        )


def parse_link(link: str) -> tuple[str, str]:
    """A legacy link, ``name[:alias]`` (or dockerd's stored ``/name:/parent/alias``): the
    linked container's name and the alias it goes by (its name if none)."""
    name, _, alias = link.partition(":")
    name, alias = name.strip("/"), alias.rsplit("/", 1)[-1]
    if not name or ":" in alias:
        raise errors.InvalidParameter(f"invalid link format: {link!r}")
    return name, alias or name


def refuse_health_check(config: Config) -> None:
    """Health checks are not run: a check asked for — by the request or, once merged, by the
    image's ``HEALTHCHECK`` — is refused (``--no-healthcheck`` is the way to run without)."""
    test = (config.healthcheck or {}).get("Test")
    if test not in (None, [], ["NONE"]):
        raise not_applied("Config", "Healthcheck", config.healthcheck)


def validate_platform(config: Config, host: HostConfig, facts: HostFacts) -> None:
    """dockerd's platform checks, then the engine's: every setting held is applied or refused.

    400 (``InvalidParameter``) on violation. Call it before the hostname is defaulted."""
    _decode_checks(config, host)
    if len(config.hostname.encode()) > _MAX_HOSTNAME:
        raise errors.InvalidParameter(
            f'hostname "{config.hostname}" is too long (maximum {_MAX_HOSTNAME} bytes)'
        )
    _user(config.user)
    if len(host.console_size) != 2 or min(host.console_size) < 0:
        raise errors.InvalidParameter(
            f"invalid ConsoleSize {host.console_size}: expected [height, width], not negative"
        )
    for group in host.group_add or ():
        if group.isdigit() and int(group) > MAX_ID:
            raise errors.InvalidParameter(f"invalid group {group!r}: not a valid gid")
    _resources(host, facts)
    _modes(host, facts)
    _storage_opt(host)
    for key in host.annotations or {}:
        if key == "":
            raise errors.InvalidParameter(
                "invalid Annotations: the empty string is not permitted as an annotation key"
            )
    refuse_health_check(config)
    _refuse_not_applied("Config", _wire(config), _CONFIG_NOT_APPLIED)
    _refuse_not_applied("HostConfig", _wire(host), _NOT_APPLIED)


def fill_defaults(host: HostConfig, facts: HostFacts, *, runtime: str, masked: Iterable[str],
                  readonly: Iterable[str]) -> None:  # fmt: skip
    """What dockerd fills in at create (``adaptContainerSettings``), so inspect shows the
    container as it runs: the IPC and cgroup namespace modes, the shm size, the OOM killer,
    the runtime (``runtime``: the daemon's default), the masked and read-only paths."""
    host.runtime = host.runtime or runtime
    host.ipc_mode = host.ipc_mode or "private"
    host.cgroupns_mode = host.cgroupns_mode or ("private" if facts.cgroup2 else "host")
    host.shm_size = host.shm_size or DEFAULT_SHM_SIZE
    if host.memory > 0 and host.memory_swap == 0:
        # dockerd's default: as much swap as memory (memory + swap twice the memory), or no
        # limit where swap is not accounted.
        host.memory_swap = host.memory * 2 if facts.swap_limit else -1
    if host.oom_kill_disable is None:
        host.oom_kill_disable = False
    if host.memory_swappiness == -1:
        host.memory_swappiness = None
    if host.pids_limit is not None and host.pids_limit <= 0:
        host.pids_limit = None
    if host.masked_paths is None:
        host.masked_paths = list(masked)
    if host.readonly_paths is None:
        host.readonly_paths = list(readonly)


#: What ``docker update`` changes (dockerd's ``UpdateContainer``), by wire name; a zero (or,
#: for ``PidsLimit``, a null) leaves the value as it is.
_UPDATABLE = frozenset({
    "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuShares", "NanoCpus", "CpuPeriod",
    "CpuQuota", "CpusetCpus", "CpusetMems", "Memory", "MemorySwap", "MemoryReservation",
    "CpuRealtimePeriod", "CpuRealtimeRuntime", "PidsLimit", "RestartPolicy",
})  # fmt: skip
_UNSET = HostConfig()


def apply_update(host: HostConfig, body: Mapping[str, Any], facts: HostFacts) -> HostConfig:
    """``docker update``: the container's ``host`` with the update ``body`` (dockerd's
    ``UpdateConfig``: resources and a restart policy) merged as dockerd's ``UpdateContainer``
    merges it.

    The update's own values get create's checks (400); conflicts with what the container
    has are dockerd's 409s. A setting dockerd's update would accept and drop (swappiness,
    ulimits…) is refused (400): it would not be applied. The merged result must still be
    something the engine applies."""
    update = parse_host_config(dict(body))
    validate_host_config(update)
    given = _wire(update)
    unset = _wire(_UNSET)
    for key, value in given.items():
        if key not in _UPDATABLE and value != unset[key]:
            raise errors.InvalidParameter(
                f"{key} cannot be changed by docker update (dockerd would not apply it)"
            )
    _resources(update, facts)
    for message, conflict in (
        ("Nano CPUs cannot be updated as CPU Period has already been set",
         update.nano_cpus > 0 and host.cpu_period > 0),
        ("Nano CPUs cannot be updated as CPU Quota has already been set",
         update.nano_cpus > 0 and host.cpu_quota > 0),
        ("CPU Period cannot be updated as NanoCPUs has already been set",
         update.cpu_period > 0 and host.nano_cpus > 0),
        ("CPU Quota cannot be updated as NanoCPUs has already been set",
         update.cpu_quota > 0 and host.nano_cpus > 0),
    ):  # fmt: skip
        if conflict:
            raise errors.Conflict(f"Conflicting options: {message}")
    if update.memory and update.memory > host.memory_swap and update.memory_swap == 0:
        raise errors.Conflict(
            "Memory limit should be smaller than already set memoryswap limit, update the "
            "memoryswap at the same time"
        )
    changes: dict[str, Any] = {}
    for name, wire in zip(HostConfig.__struct_fields__, HostConfig.__struct_encode_fields__,
                          strict=True):  # fmt: skip
        if wire in _UPDATABLE and wire not in ("PidsLimit", "RestartPolicy"):
            value = getattr(update, name)
            if value not in (0, "", None):
                changes[name] = value
    if "PidsLimit" in body and update.pids_limit is not None:
        changes["pids_limit"] = update.pids_limit if update.pids_limit > 0 else None
    if update.restart_policy.name:
        if host.auto_remove and update.restart_policy.name != "no":
            raise errors.Conflict(
                "Restart policy cannot be updated because AutoRemove is enabled for the container"
            )
        changes["restart_policy"] = update.restart_policy
    merged = msgspec.structs.replace(host, **changes)
    _resources(merged, facts)
    _refuse_not_applied("HostConfig", _wire(merged), _NOT_APPLIED)
    return merged
